"""The zygote's memory in huge pages, so that a fork and an exit cost a fraction of what they do.

A child is a fork of the zygote, whose private anonymous memory (torch's own
initialisation, about 150 MiB, and the course's: about 230 MiB in all) is
mapped in 4 KiB pages: a fork copies one page-table entry for each (about
58,000), and the child's exit frees as many, about 10 ms of a child's CPU on
the machines this runs on. Collapsed into 2 MiB pages (`MADV_COLLAPSE`, Linux
6.1 and later, synchronous, whatever the system's transparent-huge-page
setting), the same memory takes one entry per 2 MiB: the fork and the exit
cost under a millisecond. A child that writes to a huge page (a reference
count) still copies only the 4 KiB it wrote (the kernel splits the mapping in
the child first), so nothing is shared that was not shared before: every
child starts from the same copy-on-write snapshot, as without huge pages.

Collapsing costs about 0.25 s a 100 MiB, once, in the zygote, before its first
fork: worth it for a class (`WORTH`), not for one notebook. A kernel without
it (EINVAL), or memory it cannot collapse, leaves the pages as they are: only
the speed differs.
"""
from __future__ import annotations

import ctypes
import os

MADV_COLLAPSE = 25  # include/uapi/asm-generic/mman-common.h
HUGE = 2 << 20
WORTH = 64  # children a run expects before collapsing pays for itself (0.6 s once, about 8 ms a child)


def _madvise():
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.madvise
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def collapse_private_memory(maps: str = "/proc/self/maps") -> int:
    """Collapse every 2 MiB-aligned stretch of this process's private, writable, anonymous
    memory (the heap and anonymous mappings; not stacks, not files) into huge pages; the
    bytes collapsed (0 where the kernel cannot)."""
    if not os.path.exists(maps):
        return 0
    madvise, done = _madvise(), 0
    with open(maps) as f:
        regions = f.read().splitlines()
    for line in regions:
        fields = line.split()
        if len(fields) < 5 or not fields[1].startswith("rw") or fields[1][3] != "p":
            continue
        path = fields[5] if len(fields) > 5 else ""
        if path and path != "[heap]":
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        a, b = (start + HUGE - 1) & ~(HUGE - 1), end & ~(HUGE - 1)
        if b - a < HUGE:
            continue
        if madvise(a, b - a, MADV_COLLAPSE) == 0:
            done += b - a
        elif ctypes.get_errno() == 22 and not done:  # EINVAL at the first try: the kernel has no MADV_COLLAPSE
            return 0
    return done
