"""A seccomp filter for what a child never needs, built with libseccomp (through pyseccomp).

Loaded by each child last, after its namespaces, limits and uid are set
(policy.enter_child_sandbox): from then on these system calls fail with
EPERM (ENOSYS for clone3, so that threads fall back to clone):

* debugging or reading other processes: ptrace, process_vm_readv/writev
* the kernel's keyrings: keyctl, add_key, request_key
* the filesystem tree and namespaces: mount, umount2, pivot_root, move_mount,
  open_tree, fsopen, fsmount, fsconfig, fspick, mount_setattr, unshare, setns,
  and clone with any CLONE_NEW* flag
* the kernel itself: init_module, finit_module, delete_module, kexec_load,
  kexec_file_load, bpf, perf_event_open, userfaultfd, io_uring_setup,
  open_by_handle_at, reboot, swapon, swapoff, acct, quotactl, syslog

Without libseccomp (or pyseccomp) nothing is filtered and `load` says so;
docs/sandbox.md has what the filter adds to the other layers.
"""
from __future__ import annotations

import errno

DENIED = ("ptrace", "process_vm_readv", "process_vm_writev", "keyctl", "add_key", "request_key", "mount", "umount2",
          "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick", "mount_setattr",
          "unshare", "setns", "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
          "perf_event_open", "userfaultfd", "io_uring_setup", "open_by_handle_at", "reboot", "swapon", "swapoff",
          "acct", "quotactl", "syslog")


def build():
    """The filter (a pyseccomp.SyscallFilter), or None when libseccomp is not available."""
    try:
        import pyseccomp as seccomp

        f = seccomp.SyscallFilter(seccomp.ALLOW)
    except Exception:  # noqa: BLE001 - no libseccomp.so.2 or no pyseccomp
        return None
    for name in DENIED:
        try:
            f.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except Exception:  # noqa: BLE001 - a system call this kernel or architecture does not have
            pass
    for name in ("clone",):
        try:
            for bit in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                        0x00000080):
                f.add_rule(seccomp.ERRNO(errno.EPERM), name, seccomp.Arg(0, seccomp.MASKED_EQ, bit, bit))
        except Exception:  # noqa: BLE001
            pass
    try:
        f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags are behind a pointer: make libc use clone
    except Exception:  # noqa: BLE001
        pass
    return f


def load(prebuilt) -> bool:
    """Load a filter made by `build` into this process (and every process it starts)."""
    if prebuilt is None:
        return False
    prebuilt.load()
    return True
