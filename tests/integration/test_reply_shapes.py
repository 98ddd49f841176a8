"""Reply shapes Circus 0.19 gives and scripts read, from a real circusd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from circus_linux.control.client import Client


def test_numprocesses_options_and_an_unknown_command_answer_like_circus(circusd: Any, tmp_path: Path) -> None:
    d = circusd(
        "[watcher:web]\ncmd = sleep 600\nnumprocesses = 2\n"
        f"stdout_stream.class = FileStream\nstdout_stream.filename = {tmp_path}/out.log\n"
    )
    with Client(d.endpoint, timeout=20) as c:
        reply = c.call("numprocesses", name="web")
        assert (reply["numprocesses"], reply["watcher_name"]) == (2, "web")
        opts = c.call("options", name="web")["options"]
        assert opts["stdout_stream_conf"] == {"class": "FileStream", "filename": f"{tmp_path}/out.log"}
        assert opts["stderr_stream_conf"] is None
        bad = c.request("nosuchcommand")
        # The reason names the field, as every control error here does: "command: unknown command: ..."
        assert (bad["status"], bad["errno"]) == ("error", 2)
        assert bad["reason"].endswith("unknown command: 'nosuchcommand'")
