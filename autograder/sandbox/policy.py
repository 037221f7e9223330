"""The isolation policy: what the zygote hides and locks once, what each child enters.

Runs in the zygote (`isolate_zygote`, `pid_namespaces_work`) and in each freshly
forked child (`enter_child_sandbox`); `secret_paths` is computed by the grader.
See docs/sandbox.md for what each layer stops and what it does not.
"""
from __future__ import annotations

import os
import resource
import signal
import stat
import sys
from pathlib import Path

from autograder.sandbox.limits import Limits
from autograder.sandbox import seccomp
from autograder.sandbox.syscalls import (CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, MS_BIND, MS_NODEV, MS_NOEXEC,
                                         MS_NOSUID, MS_PRIVATE, MS_REC, PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG,
                                         all_read_only, drop_capabilities, join_new_session_keyring, mount,
                                         move_mount, open_tree, prctl, setns, unshare)


def hide_path(path: str, blank: str) -> bool:
    """Cover `path` with an empty read-only tmpfs (a folder) or `blank`, a file no one may open."""
    if os.path.isdir(path):
        mount("none", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=8,mode=0755")
    elif os.path.exists(path):
        mount(blank, path, None, MS_BIND)
    else:
        return False
    return True


def blank_file() -> str:
    """A file with mode 000 on a tmpfs of this mount namespace (at /dev/shm, hidden itself)."""
    try:
        mount("none", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=4,mode=0755")
        path = "/dev/shm/.hidden"
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0))
        os.chmod(path, 0)
        return path
    except OSError:
        return "/dev/null"  # reads as empty


def make_reachable(needed: list[str]) -> None:
    """Let an unprivileged child reach `needed` (Python, its libraries) when a
    folder on the way is closed to others (e.g. Python under /root, mode 700):
    cover that folder with a tmpfs open to all, holding only the needed subtrees."""
    for _ in range(8):  # one closed folder per path and round; deeper ones in later rounds
        blocked: dict[str, set[str]] = {}
        for path in needed:
            parts = Path(path).parts
            for i in range(1, len(parts)):
                folder = str(Path(*parts[:i]))
                if not os.stat(folder).st_mode & stat.S_IXOTH:
                    blocked.setdefault(folder, set()).add(str(Path(*parts[:i + 1])))
                    break
        if not blocked:
            return
        for folder, keep in sorted(blocked.items()):
            trees = [(k, open_tree(k)) for k in sorted(keep)]
            mount("none", folder, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
            for k, fd in trees:
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.mkdir(k)
                else:
                    open(k, "w").close()
                move_mount(fd, k)
                os.close(fd)


def python_paths() -> list[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path if p)
    return sorted(os.path.realpath(p) for p in paths if os.path.exists(p))


def secret_paths(course_root: Path | None, *extra) -> list[str]:
    """What a child may not see: the course's secrets, plus `extra` (the runner's
    output, the submissions, --hide)."""
    found: list[Path] = []
    if course_root is not None:
        root = Path(course_root)
        names = ["solutions", "source", ".git", "submitted", "autograded", "feedback", "gradebook.db"]
        found += [root / n for n in names] + sorted(root.glob("*.db")) + sorted(root.glob("*.db-journal"))
    found += [Path(e) for e in extra if e]
    out: list[str] = []
    for p in found:
        real = os.path.realpath(p)
        if real not in out and os.path.exists(real):
            out.append(real)
    return out


def isolate_zygote(hide: list[str]) -> tuple[str, str]:
    """(mode, warning). mode: 'root' (namespaces and a uid per child), 'userns'
    (namespaces in a user namespace, entered by _BOOTSTRAP) or 'rlimits' (resource limits only)."""
    userns = os.environ.pop("AUTOGRADER_USERNS", None)
    try:
        if userns is None and os.geteuid() == 0:
            mode = "root"
        elif userns == "ok":
            mode = "userns"
        else:
            raise OSError(userns or "not root and no user namespace")
        unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        blank = blank_file()
        for path in hide:
            hide_path(path, blank)
        if mode == "root":
            make_reachable(python_paths())
        all_read_only()
        os.chdir("/")
        return mode, ""
    except OSError as exc:
        how = ("run the grader as root, or allow unprivileged user namespaces "
               "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces)")
        return "rlimits", (f"warning: grading sandbox has resource limits only, no namespaces ({exc}); "
                           f"submissions can read and write what this user can: {how}")


def pid_namespaces_work() -> bool:
    """Whether this process may give each child a PID namespace (unshare, fork, setns
    back), tried in a throwaway process: a half-done attempt here would break every fork."""
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
            unshare(CLONE_NEWPID)
            setns(fd, CLONE_NEWPID)
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def apply_limits(limits: Limits, device: str) -> None:
    def lower(which, value):
        soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))

    lower(resource.RLIMIT_CPU, limits.cpu_seconds)
    lower(resource.RLIMIT_FSIZE, limits.file_bytes)
    lower(resource.RLIMIT_NPROC, limits.max_processes)
    lower(resource.RLIMIT_CORE, 0)
    if not device.startswith("cuda"):  # CUDA maps far more address space than it uses
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * resource.getpagesize()
        lower(resource.RLIMIT_AS, vm + limits.memory_bytes)


def paths_under_tmp() -> list[str]:
    """The folders Python needs (its prefix, sys.path) that lie under /tmp, outermost only."""
    inside = sorted(p for p in python_paths() if p.startswith("/tmp/"))
    return [p for i, p in enumerate(inside) if not any(p.startswith(q + "/") for q in inside[:i])]


def _touch(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()


def enter_child_sandbox(z, uid: int, scratch: str | None) -> str:
    """Isolate this freshly forked child; returns its scratch directory (made by
    the zygote, which removes it, when there are no namespaces)."""
    limits = z.limits
    if scratch is None:
        scratch = "/tmp/work"
        unshare(CLONE_NEWNS | CLONE_NEWIPC)  # its own IPC objects, gone with it
        # Python itself (a virtual environment, the package) may live under /tmp: keep those
        # trees (read-only, as the zygote made them) across the private tmpfs.
        keep = [(p, open_tree(p)) for p in z.under_tmp]
        mount("none", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
              f"size={limits.scratch_bytes},nr_inodes=16384,mode=1777")
        for path, fd in keep:
            os.makedirs(path, exist_ok=True) if os.path.isdir(f"/proc/self/fd/{fd}") else _touch(path)
            move_mount(fd, path)
            os.close(fd)
        if z.pidns_fd is not None:
            try:
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            except OSError:
                pass  # the host's /proc stays; the other processes are still out of reach
        os.mkdir(scratch, 0o700)
    if z.drop_uid:
        os.chown(scratch, uid, uid)
    os.chdir(scratch)
    apply_limits(limits, z.device)
    if z.drop_uid:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif z.mode == "userns":
        drop_capabilities()
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
    seccomp.load(z.seccomp)  # last: the calls above are among those it denies
    return scratch


