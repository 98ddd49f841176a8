"""How big a file sink's write(2) calls are: whole batches, unless the kernel's copy of them is measured slow.

A buffered write to ext4 (Linux 6.x, large folios) gets page-cache folios as big as the write allows. Past
32 KiB (order 3) they come from the buddy allocator's high-order blocks, not from the per-CPU lists of
pages freed moments ago. On a VM with free page reporting (virtio-balloon F_REPORTING, as on the
project's Firecracker VM) the free high-order blocks are pages the host has taken back, so the kernel's
copy into them pays a host fault per page: it runs several times slower, and perf inside the guest sees
only a slow copy_folio_from_iter_atomic. Small writes get small folios from the per-CPU lists and dodge
it, but cost more syscalls and more per-call filesystem work when memory is warm.

So a sink writes whole batches and measures the CPU its bigger writes take, by windows of at least WINDOW
bytes (one write can be slowed by an interrupt or a page fault: a warm machine here gave single 512 KiB
writes up to 0.77 ns per byte around a median of 0.23). When a window cost more than SLOW_NS_PER_BYTE, it
writes in SMALL-byte calls for the next SMALL_FOR bytes, then measures whole batches again.

Measured on 2026-11-28 (ad-hoc flood harness, 175 coreutils flooders, 128 MB into one file): a warm
copy costs the writer thread 0.27-0.31 ms/MB in all; in the slow state, 512 KiB writes cost it 1.4-1.7
ms/MB, 32 KiB ones 0.5-0.6; with 8 and 16 KiB calls the whole sink cost more than with 32 KiB. Writing
32 KiB calls all the time cost more on a warm machine (the full comparison of 11:08, bench/README.md).
Pure: the sink passes in the bytes and the CPU nanoseconds (time.thread_time_ns) of each call.
"""

from __future__ import annotations

# Writes of at least this many bytes are measured (a smaller one's CPU time is mostly the syscall's).
MEASURE_FROM = 256 * 1024
# Measured bytes judged together, and the CPU nanoseconds per byte above which they count as slow (a
# warm copy costs about 0.23 here, a cold one 1.3 and more).
WINDOW = 2 * 1024 * 1024
SLOW_NS_PER_BYTE = 0.8
# Bytes per call while small, and how many bytes are written that way before a whole batch is tried again.
SMALL = 32 * 1024
SMALL_FOR = 32 * 1024 * 1024


class WriteSizer:
    """limit() before a write (None: the whole batch in one call); observe() after it."""

    __slots__ = ("_bytes", "_ns", "slow_spells", "small_left")

    def __init__(self) -> None:
        self.small_left = 0  # bytes still to write in SMALL calls
        self.slow_spells = 0  # how many times a slow window sent the sink to small calls
        self._bytes = 0  # the window being measured
        self._ns = 0

    def limit(self) -> int | None:
        return SMALL if self.small_left > 0 else None

    def observe(self, nbytes: int, cpu_ns: int, limit: int | None) -> None:
        """A write of `nbytes` that took `cpu_ns` of the writer thread's CPU, made under `limit`."""
        if limit is not None:
            self.small_left -= nbytes
            return
        if nbytes < MEASURE_FROM:
            return
        self._bytes += nbytes
        self._ns += cpu_ns
        if self._bytes >= WINDOW:
            if self._ns > SLOW_NS_PER_BYTE * self._bytes:
                self.small_left = SMALL_FOR
                self.slow_spells += 1
            self._bytes = self._ns = 0
