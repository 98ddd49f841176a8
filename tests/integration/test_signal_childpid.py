"""`signal` with childpid reaches exactly that descendant of the worker, through a pidfd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import wait_for


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for tid in Path(f"/proc/{pid}/task").iterdir():
        kids.extend(int(x) for x in (tid / "children").read_text().split())
    return kids


def test_childpid_signal_reaches_the_grandchild_only(circusd: Any, tmp_path: Path) -> None:
    # The worker (a shell) starts a child that records USR1 in a file, then waits for it.
    mark = tmp_path / "got-usr1"
    script = tmp_path / "child.sh"
    script.write_text(f"trap 'echo usr1 >> {mark}; exit 0' USR1\nwhile :; do sleep 0.05; done\n")
    d = circusd(
        f"""
[watcher:parent]
cmd = /bin/sh -c "trap 'echo parent-hit >> {mark}' USR1; /bin/sh {script} & wait; sleep 1000"
numprocesses = 1
"""
    )
    (worker,) = wait_for(lambda: d.pids("parent") or None, what="the worker")
    (child,) = wait_for(
        lambda: (
            [c for c in _children(worker) if "child.sh" in Path(f"/proc/{c}/cmdline").read_text()] or None
        ),
        what="the worker's child",
    )
    ok = d.call("signal", name="parent", pid=worker, childpid=child, signum="USR1")
    assert ok["status"] == "ok", ok
    wait_for(lambda: mark.exists() and "usr1" in mark.read_text(), what="the child's USR1 trap")
    assert "parent-hit" not in mark.read_text()
    # A pid that is not under the worker is refused with the field named, and nothing is signalled.
    refused = d.call("signal", name="parent", pid=worker, childpid=1, signum="USR1")
    assert refused["status"] == "error" and "childpid" in refused["reason"], refused
