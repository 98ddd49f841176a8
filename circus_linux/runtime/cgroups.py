"""Per-watcher cgroups for the arbiter: one tree for circusd, a handle per watcher with its fds kept open."""

from __future__ import annotations

import logging
import os
from typing import Any

from circus_linux.kernel import cgroup as kcg

log = logging.getLogger("circus_linux.cgroups")


class WatcherHandle:
    """A watcher's cgroup plus the fds the spawner needs, opened once rather than at every spawn."""

    def __init__(self, cg: kcg.WatcherCgroup) -> None:
        self.cg = cg
        self._dir_fd = cg.dir_fd() if cg.path is not None else None
        self._v1_fds = cg.v1_procs_fds()
        self.backends: dict[str, str] = {}

    def dir_fd(self) -> int | None:
        return self._dir_fd

    def v1_procs_fds(self) -> list[int]:
        return list(self._v1_fds)

    def kill(self) -> None:
        self.cg.kill()

    def populated(self) -> bool:
        return self.cg.populated()

    def close(self) -> None:
        for fd in [self._dir_fd, *self._v1_fds]:
            if fd is not None:
                os.close(fd)
        self._dir_fd = None
        self._v1_fds = []


def _limits(cfg: Any) -> kcg.CgroupLimits:
    lim = cfg.cgroup
    return kcg.CgroupLimits(
        memory_max=lim.memory_max,
        memory_high=lim.memory_high,
        memory_swap_max=lim.memory_swap_max,
        cpu_max=lim.cpu_max,
        cpu_weight=lim.cpu_weight,
        io_weight=lim.io_weight,
        pids_max=lim.pids_max,
    )


class CgroupManager:
    """Builds circusd's cgroup tree and one cgroup per watcher; optional: without it, no placement."""

    def __init__(self, tree: kcg.CgroupTree) -> None:
        self.tree = tree
        self._handles: dict[str, WatcherHandle] = {}

    @classmethod
    def from_config(cls, cfg: Any) -> CgroupManager | None:
        root = getattr(cfg.circus, "cgroup_root", None)
        if root in ("no", "none", "off", "false"):
            return None
        try:
            host = kcg.detect()
            tree = kcg.CgroupTree.build(host, root)
        except kcg.CgroupError as exc:
            log.warning(
                "cgroups unavailable, workers run in circusd's own cgroup (no limits, no tree kill): %s "
                "(set [circus] cgroup_root to a writable cgroup, or run under systemd with Delegate=yes)",
                exc,
            )
            return None
        log.info("cgroups: %r", tree)
        return cls(tree)

    def setup(self) -> None:
        """Nothing beyond the tree built in from_config; kept for the arbiter's lifecycle symmetry."""

    def create(self, cfg: Any) -> WatcherHandle:
        old = self._handles.pop(cfg.name, None)
        if old is not None:
            old.close()
        handle = WatcherHandle(self.tree.watcher(cfg.name))
        self._handles[cfg.name] = handle
        self.apply(cfg)
        return handle

    def apply(self, cfg: Any) -> dict[str, str]:
        handle = self._handles[cfg.name]
        report = handle.cg.apply_limits(_limits(cfg))
        handle.backends = {k: str(v) for k, v in report.items()}
        for limit, backend in handle.backends.items():
            if backend == "unsupported":
                log.warning("watcher %s: %s is not supported by this host's cgroups", cfg.name, limit)
        return handle.backends

    def for_watcher(self, name: str) -> WatcherHandle | None:
        return self._handles.get(name)

    def stats(self, name: str) -> kcg.CgroupStats | None:
        handle = self._handles.get(name)
        return None if handle is None else handle.cg.stats()

    def remove(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is None:
            return
        handle.close()
        try:
            handle.cg.kill()
            handle.cg.wait_empty(5.0)
            handle.cg.remove()
        except kcg.CgroupError as exc:
            log.warning("watcher %s: cgroup not removed: %s", name, exc)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": str(self.tree.mode),
            "v2_root": self.tree.root,
            "v1_roots": dict(self.tree.v1_roots),
            "v1_unavailable": dict(self.tree.v1_errors),
            "limits": {name: h.backends for name, h in self._handles.items()},
        }

    def cleanup(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        try:
            self.tree.destroy()
        except kcg.CgroupError as exc:
            log.warning("cgroup tree not fully removed: %s", exc)
