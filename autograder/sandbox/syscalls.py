"""Linux system calls the sandbox needs, through ctypes (os.unshare and os.setns are Python 3.12+).

Plain wrappers that raise OSError with the call's name; no policy here (see policy.py).
"""
from __future__ import annotations

import ctypes
import os

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
CLONE_NEWIPC = 0x08000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 1, 38, 24
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1
SYS_OPEN_TREE, SYS_MOVE_MOUNT, OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH = 428, 429, 1, 4

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def ok(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def unshare(flags: int) -> None:
    ok(libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, flags: int) -> None:
    ok(libc.setns(ctypes.c_int(fd), ctypes.c_int(flags)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    ok(libc.mount(enc(source), enc(str(target)), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}")


def prctl(option: int, arg: int) -> None:
    ok(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                    ctypes.c_ulong(0)), "prctl")


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def all_read_only() -> None:
    """Every mount of this mount namespace read-only (mount_setattr, Linux 5.12+; else one by one)."""
    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    if libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/", ctypes.c_uint(AT_RECURSIVE),
                     ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))) == 0:
        return
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    for point in points:
        try:
            flags = os.statvfs(point).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
            mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)
        except OSError:
            pass  # an unreachable or locked mount stays as it is


def open_tree(path: str) -> int:
    fd = libc.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD), path.encode(),
                       ctypes.c_uint(OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"open_tree {path}: {os.strerror(e)}")
    return fd


def move_mount(fd: int, target: str) -> None:
    ok(libc.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(fd), b"", ctypes.c_int(AT_FDCWD), target.encode(),
                      ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount {target}")


# keyctl(2): its number differs by architecture (libc has no wrapper; libkeyutils does)
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "ppc64le": 280, "s390x": 280}.get(os.uname().machine)
KEYCTL_JOIN_SESSION_KEYRING = 1


def join_new_session_keyring() -> None:
    """Leave the grader's session keyring for a new, empty, anonymous one."""
    if SYS_KEYCTL is None:
        raise OSError(0, "keyctl: unknown system call number on this architecture")
    if libc.syscall(ctypes.c_long(SYS_KEYCTL), ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), None) < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"keyctl(JOIN_SESSION_KEYRING): {os.strerror(e)}")


def drop_capabilities() -> None:
    for cap in range(64):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            break
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    ok(libc.capset(header, data), "capset")

