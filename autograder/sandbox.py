"""The limited child processes that run the submissions.

A *zygote* is a fresh Python process (exec'd, not forked from the grader, so
it never holds a solution or a gradebook) that imports torch, this package
and the chapter's checks once, receives the check inputs once, isolates
itself, and then forks one child per submission (and again when a cell
killed the child). A fork costs a few milliseconds; an import of torch costs
a second. CUDA is never touched in the zygote: each child initialises it
itself (one start-up per child, never one per check).

Isolation (see docs/sandbox.md for what each layer does and does not stop):

* zygote, once: its own mount namespace and an empty network namespace;
  the course's secrets (solutions/, .git, *.db, nbgrader's folders), the
  runner's output and the submissions are covered by empty mounts; every
  mount is read-only.
* each child: its own PID namespace (killing it kills everything it
  started, so nothing escapes the kill), its own mount namespace with a
  private tmpfs at /tmp (its scratch directory, gone when it ends), a fresh
  /proc, resource limits, then an unprivileged uid of its own (when the
  grader is root; RLIMIT_NPROC then holds) or no capabilities (in a user
  namespace, when it is not), and no_new_privs.

Protocol (grader -> child: pickles the grader wrote itself; child -> grader:
JSON, or JSON followed by the raw bytes of plain tensors (`_pack_answers`,
`from_child`): the grader never runs an unpickler on what a child sends):

    ("cell", index, source)        -> {"kind": "cell", "ok", "error", "stdout"}
    ("visible", index, source)     -> the same, for a check cell's visible tests (see _restore)
    ("call", id, name, arguments)  -> a graded function's outputs, for a visible test the grader runs
    ("vjp", id, grad_outputs)      -> the gradients of that call's inputs
    ("answer", check_name)         -> {"kind": "answers", "answers": [wire, ...]}

The inputs of every check are in the zygote's memory, so a child gets them
for free. Each request has a wall-clock limit. A cell that kills or hangs the
child is skipped: the grader starts a new child, runs the cells before it
again and goes on, so the cell costs only what it defines. A check that
kills or hangs the child costs only that check.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import pickle
import re
import resource
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import torch

from autograder.checks import Case, load_checks
from autograder.execute import new_namespace, run_cell
from autograder.notebook import Cell, code_to_run
from autograder.probes import run_probe

MAX_MESSAGE = 64 << 20  # bytes a child may send in one answer
PIPELINE_BYTES = 64 << 10  # requests sent ahead of their replies (under a socket's buffer)
UID_SLOTS = 4096  # children cycle through uid_base .. uid_base + UID_SLOTS - 1


@dataclass(frozen=True)
class Limits:
    cell_timeout: float = 30.0  # wall-clock seconds for one cell (nbgrader's default)
    check_timeout: float = 60.0  # wall-clock seconds for all cases of one check
    cpu_seconds: int = 600  # RLIMIT_CPU for one child
    memory_bytes: int = 4 << 30  # RLIMIT_AS headroom above the child's size at start (CPU only)
    max_processes: int = 256  # RLIMIT_NPROC, per child uid (holds once the child is not root)
    file_bytes: int = 64 << 20  # RLIMIT_FSIZE: the largest file a child may write
    scratch_bytes: int = 256 << 20  # size of the child's private tmpfs at /tmp
    uid_base: int = 1_900_000_000  # a root grader runs children as uid_base + k (no such user exists)
    hide: tuple[str, ...] = ()  # more paths children must not see (other copies of the course...)
    isolate: bool = True  # False: resource limits only, no namespaces or uid change (debugging)


class ChildLost(Exception):
    """The child died or stopped answering; `reason` says which."""


class SandboxError(RuntimeError):
    """The sandbox itself could not start (not the student's fault)."""


# -- Linux primitives (ctypes: os.unshare and os.setns are Python 3.12+) -------
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 1, 38, 24
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1
SYS_OPEN_TREE, SYS_MOVE_MOUNT, OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH = 428, 429, 1, 4

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _ok(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _unshare(flags: int) -> None:
    _ok(_libc.unshare(ctypes.c_int(flags)), "unshare")


def _setns(fd: int, flags: int) -> None:
    _ok(_libc.setns(ctypes.c_int(fd), ctypes.c_int(flags)), "setns")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _ok(_libc.mount(enc(source), enc(str(target)), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}")


def _prctl(option: int, arg: int) -> None:
    _ok(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                    ctypes.c_ulong(0)), "prctl")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def _all_read_only() -> None:
    """Every mount of this mount namespace read-only (mount_setattr, Linux 5.12+; else one by one)."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    if _libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/", ctypes.c_uint(AT_RECURSIVE),
                     ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))) == 0:
        return
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    for point in points:
        try:
            flags = os.statvfs(point).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
            _mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)
        except OSError:
            pass  # an unreachable or locked mount stays as it is


def _hide(path: str, blank: str) -> bool:
    """Cover `path` with an empty read-only tmpfs (a folder) or `blank`, a file no one may open."""
    if os.path.isdir(path):
        _mount("none", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=8,mode=0755")
    elif os.path.exists(path):
        _mount(blank, path, None, MS_BIND)
    else:
        return False
    return True


def _blank_file() -> str:
    """A file with mode 000 on a tmpfs of this mount namespace (at /dev/shm, hidden itself)."""
    try:
        _mount("none", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=4,mode=0755")
        path = "/dev/shm/.hidden"
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0))
        os.chmod(path, 0)
        return path
    except OSError:
        return "/dev/null"  # reads as empty


def _open_tree(path: str) -> int:
    fd = _libc.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD), path.encode(),
                       ctypes.c_uint(OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"open_tree {path}: {os.strerror(e)}")
    return fd


def _move_mount(fd: int, target: str) -> None:
    _ok(_libc.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(fd), b"", ctypes.c_int(AT_FDCWD), target.encode(),
                      ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount {target}")


def _make_reachable(needed: list[str]) -> None:
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
            trees = [(k, _open_tree(k)) for k in sorted(keep)]
            _mount("none", folder, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
            for k, fd in trees:
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.mkdir(k)
                else:
                    open(k, "w").close()
                _move_mount(fd, k)
                os.close(fd)


def _python_paths() -> list[str]:
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


# -- the zygote ------------------------------------------------------------------
# Run by the zygote before anything else: a user namespace can only be entered by a
# single-threaded process, and importing torch starts a thread. Not root, the zygote
# becomes PID 1 of a PID namespace owned by its user namespace (so that it may
# give each child a PID namespace of its own); this bootstrap process waits for it.
_BOOTSTRAP = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL: it goes when the grader goes
if sys.argv[2] == "isolate" and os.geteuid() != 0:
    uid, gid = os.geteuid(), os.getegid()
    pidns = libc.unshare(0x10000000 | 0x20000000) == 0  # CLONE_NEWUSER | CLONE_NEWPID
    if pidns or libc.unshare(0x10000000) == 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        os.environ["AUTOGRADER_USERNS"] = "ok"
        if pidns:
            pid = os.fork()
            if pid:
                os.close(0)
                os.close(int(sys.argv[1]))
                code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                os._exit(code if code >= 0 else 128 - code)
            libc.prctl(1, 9, 0, 0, 0)
    else:
        os.environ["AUTOGRADER_USERNS"] = "unshare(CLONE_NEWUSER): " + os.strerror(ctypes.get_errno())
from autograder.sandbox import zygote_main
zygote_main()
"""


def _isolate_zygote(hide: list[str]) -> tuple[str, str]:
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
        _unshare(CLONE_NEWNS | CLONE_NEWNET)
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        blank = _blank_file()
        for path in hide:
            _hide(path, blank)
        if mode == "root":
            _make_reachable(_python_paths())
        _all_read_only()
        os.chdir("/")
        return mode, ""
    except OSError as exc:
        how = ("run the grader as root, or allow unprivileged user namespaces "
               "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces)")
        return "rlimits", (f"warning: grading sandbox has resource limits only, no namespaces ({exc}); "
                           f"submissions can read and write what this user can: {how}")


def _pid_namespaces_work() -> bool:
    """Whether this process may give each child a PID namespace (unshare, fork, setns
    back), tried in a throwaway process: a half-done attempt here would break every fork."""
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
            _unshare(CLONE_NEWPID)
            _setns(fd, CLONE_NEWPID)
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


class _Zygote:
    """The zygote's own state (inside the zygote process)."""

    def __init__(self, cfg: dict):
        self.stem, self.device, self.limits = cfg["stem"], cfg["device"], cfg["limits"]
        self.cases: dict[str, list[Case]] = cfg["cases"]
        self.devices: dict[str, list[list[str]]] = cfg["devices"]
        self.helpers: list[str] = cfg.get("helpers", [])
        self.checks = load_checks(self.stem)
        _warm_up(self)  # before isolating: a first import may want to write (e.g. a temporary folder)
        self.pristine = _snapshot()
        # a root grader runs children as a uid of their own, with or without namespaces
        self.drop_uid = os.geteuid() == 0 and "AUTOGRADER_USERNS" not in os.environ
        self.mode, self.warning = (_isolate_zygote(cfg["hide"]) if self.limits.isolate
                                   else ("rlimits", ""))
        self.pidns_fd = None
        if self.mode != "rlimits" and _pid_namespaces_work():
            self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
        self.statuses: dict[int, int] = {}
        self.scratch: dict[int, str] = {}  # pid -> scratch folder, without namespaces (removed when reaped)

    def fork(self, fd: int, uid: int, ctl: socket.socket) -> int:
        scratch = tempfile.mkdtemp(prefix="autograder-") if self.mode == "rlimits" else None
        if self.pidns_fd is not None:
            _unshare(CLONE_NEWPID)
        try:
            pid = os.fork()
        except BaseException:
            if self.pidns_fd is not None:
                _setns(self.pidns_fd, CLONE_NEWPID)
            raise
        if pid == 0:
            try:
                ctl.close()
                _child_main(self, fd, uid, scratch)
            except BaseException:  # noqa: BLE001 - set-up failed: the grader sees exit code 70
                pass
            os._exit(70)
        if self.pidns_fd is not None:
            _setns(self.pidns_fd, CLONE_NEWPID)
        if scratch:
            self.scratch[pid] = scratch
        return pid

    def clean_up(self) -> None:
        """Without namespaces, children's scratch folders are real folders: remove them."""
        for pid in list(self.scratch):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
            shutil.rmtree(self.scratch.pop(pid), ignore_errors=True)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.statuses[pid] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            if pid in self.scratch:
                shutil.rmtree(self.scratch.pop(pid), ignore_errors=True)


def _pristine_objects() -> list:
    import builtins

    import torch.nn.functional

    return [builtins, torch, torch.nn, torch.nn.functional, torch.testing, torch.autograd, torch.linalg,
            torch.special, torch.fft, torch.Tensor, torch.nn.Module]


def _snapshot() -> list[tuple[object, dict]]:
    return [(obj, dict(vars(obj))) for obj in _pristine_objects()]


def _restore(snapshot: list[tuple[object, dict]]) -> None:
    """Undo what graded code did to torch and builtins (patched comparisons, functions,
    Tensor methods) and drop any torch function or dispatch mode it left on."""
    for obj, saved in snapshot:
        now = vars(obj)
        try:  # the common case, checked in C: nothing replaced (and, on a class, nothing added)
            if saved.items() <= now.items() and (not isinstance(obj, type) or len(now) == len(saved)):
                continue
        except Exception:  # noqa: BLE001 - a value whose == is not a bool: compare one by one
            pass
        for key, value in saved.items():
            if now.get(key, _MISSING) is not value:
                try:
                    setattr(obj, key, value)
                except (AttributeError, TypeError):
                    pass
        if isinstance(obj, type):  # a method added to a class overrides the inherited one
            for key in [k for k in now if k not in saved]:
                try:
                    delattr(obj, key)
                except (AttributeError, TypeError):
                    pass
    for length, pop in (("_len_torch_function_stack", "_pop_torch_function_stack"),
                        ("_len_torch_dispatch_stack", "_pop_torch_dispatch_stack")):
        if hasattr(torch._C, length) and hasattr(torch._C, pop):
            while getattr(torch._C, length)() > 0:
                getattr(torch._C, pop)()


_MISSING = object()


def _warm_up(z: _Zygote) -> None:
    """Run what every child runs (a cell, torch.testing, each check's probe on its
    known mistakes for every case, meta cases included), so lazy imports and
    first-call caches (torch.distributed.tensor, meta kernels, decompositions)
    are paid once, here, not in every child (0.5 s a child otherwise)."""
    from autograder.grading import pin_torch_flags

    run_cell(Cell(0, "code", "%matplotlib inline\nimport torch\n"
                             "torch.testing.assert_close(torch.ones(2), torch.ones(2))\n"
                             "assert torch.allclose(torch.ones(2), torch.ones(2))"), new_namespace())
    for name, check in z.checks.items():
        for m in check.mistakes:
            answers = []
            for case in z.cases.get(name, []):
                try:
                    pin_torch_flags()
                    answers.append(run_probe(check, m.impl, case))
                except Exception:  # noqa: BLE001 - a warm-up only
                    pass
            _pack_answers(answers)
    pin_torch_flags()


def zygote_main() -> None:
    """Entry point of the zygote process: `python -c 'from autograder.sandbox import zygote_main; ...'`."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # it goes when the grader goes
    ctl = socket.socket(fileno=int(sys.argv[1]))
    size = struct.unpack("<Q", sys.stdin.buffer.read(8))[0]
    cfg = pickle.loads(sys.stdin.buffer.read(size))  # the grader's own pickle
    torch.set_num_threads(1)
    z = _Zygote(cfg)
    gc.collect()
    gc.freeze()  # children do not copy the zygote's objects when they collect garbage
    ctl.send(pickle.dumps(("ready", z.mode, z.warning)))
    while True:
        try:
            ready = select.select([ctl], [], [], 0.2)[0]
        except InterruptedError:
            ready = []
        z.reap()
        if not ready:
            continue
        msg, fds, _, _ = socket.recv_fds(ctl, 1 << 16, 2)
        if not msg:  # the grader is done
            z.clean_up()
            os._exit(0)
        req = pickle.loads(msg)
        if req[0] == "spawn":
            try:
                pid = z.fork(fds[0], req[1], ctl)
                pidfd = [os.pidfd_open(pid)] if hasattr(os, "pidfd_open") else []
                socket.send_fds(ctl, [pickle.dumps(("pid", pid))], pidfd)
                for fd in pidfd:
                    os.close(fd)
            except OSError as exc:
                ctl.send(pickle.dumps(("error", str(exc))))
            for fd in fds:
                os.close(fd)
        elif req[0] == "status":
            z.reap()
            ctl.send(pickle.dumps(("status", z.statuses.pop(req[1], None))))


# -- one child -------------------------------------------------------------------
def _apply_limits(limits: Limits, device: str) -> None:
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


def _drop_capabilities() -> None:
    for cap in range(64):
        try:
            _prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            break
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    _ok(_libc.capset(header, data), "capset")


def _enter_child_sandbox(z: _Zygote, uid: int, scratch: str | None) -> str:
    """Isolate this freshly forked child; returns its scratch directory (made by
    the zygote, which removes it, when there are no namespaces)."""
    limits = z.limits
    if scratch is None:
        scratch = "/tmp/work"
        _unshare(CLONE_NEWNS)
        _mount("none", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={limits.scratch_bytes},nr_inodes=16384,mode=1777")
        if z.pidns_fd is not None:
            try:
                _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            except OSError:
                pass  # the host's /proc stays; the other processes are still out of reach
        os.mkdir(scratch, 0o700)
    if z.drop_uid:
        os.chown(scratch, uid, uid)
    os.chdir(scratch)
    _apply_limits(limits, z.device)
    if z.drop_uid:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif z.mode == "userns":
        _drop_capabilities()
    if z.mode != "rlimits":
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
    return scratch


def _child_main(z: _Zygote, fd: int, uid: int, scratch: str | None) -> None:
    os.setsid()  # its own process group: a kill takes everything it started
    os.dup2(fd, 3)
    os.closerange(4, 1 << 16)  # the zygote's control socket and pipes stay out of reach
    devnull = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):  # output goes through captured buffers; fd writes go nowhere
        os.dup2(devnull, std)
    os.close(devnull)
    conn = Connection(3)
    scratch = _enter_child_sandbox(z, uid, scratch)
    os.environ.update(HOME=scratch, TMPDIR=scratch, MPLBACKEND="Agg", MPLCONFIGDIR=scratch)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from autograder.grading import missing_answer, pin_torch_flags

    pin_torch_flags()
    ns = new_namespace()
    calls: dict[int, tuple] = {}  # call id -> (leaves, differentiable outputs), for "vjp"
    send = conn.send_bytes
    send(_json({"kind": "ready"}))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            os._exit(0)
        if msg[0] in ("cell", "visible"):
            _, index, source = msg
            where = ns
            if msg[0] == "visible":  # a check cell's visible tests: pristine torch, the source's helpers
                _reset(z)
                where = dict(ns)
                for k, helper in enumerate(z.helpers):
                    run_cell(Cell(-1 - k, "code", helper), where)
            outcome = run_cell(Cell(index, "code", source), where)
            send(_json({"kind": "cell", "ok": outcome.ok, "error": outcome.error, "stdout": outcome.stdout}))
        elif msg[0] == "call":  # a visible test, run by the grader, calls a graded function
            send(_remote_call(z, ns, calls, msg[1], msg[2], *_unpack_args(msg[3])))
        elif msg[0] == "vjp":  # ... and back-propagates through what it returned
            send(_remote_vjp(calls, *msg[1:]))
        elif msg[0] == "answer":
            name = msg[1]
            _reset(z)
            check = z.checks[name]
            impl = ns.get(check.target)
            answers = []
            for case in _cases_on_device(z, name):
                if impl is None:
                    answers.append(missing_answer(check.target))
                    continue
                _reset(z, restore=False)
                answers.append(run_probe(check, impl, case))
            try:
                send(_pack_answers(answers))
            except Exception as exc:  # noqa: BLE001 - e.g. a tensor that cannot be flattened
                send(_json({"kind": "unpackable", "error": f"{type(exc).__name__}: {exc}"}))
        else:
            os._exit(0)


def _remote_call(z: _Zygote, ns: dict, calls: dict, call_id: int, name: str, args: tuple, kwargs: dict) -> bytes:
    """Call the graded function `name`; reply with its outputs as plain tensors (packed like answers)."""
    fn = ns.get(name)
    leaves = [t for t in _tensors_in((args, kwargs)) if t.requires_grad]
    _reset(z)
    try:
        if fn is None:
            raise NameError(f"name {name!r} is not defined")
        out = fn(*args, **kwargs)
        kind = "tuple" if isinstance(out, tuple) else "list" if isinstance(out, list) else "one"
        items = list(out) if kind != "one" else [out]
        values, grad = {}, []
        for k, v in enumerate(items):
            if isinstance(v, torch.Tensor):
                if v.requires_grad and leaves:
                    grad.append(k)
                values[str(k)] = v.detach().as_subclass(torch.Tensor)
            elif v is None or isinstance(v, (bool, int, float, str)):
                values[str(k)] = v
            else:
                raise Unproxyable(f"returned a {type(v).__name__}")
        calls[call_id] = (leaves, [items[k] for k in grad])
        reply = {"values": values, "kind": kind, "n": len(items), "grad": grad, "error": None}
    except Unproxyable as exc:
        reply = {"values": {}, "unproxyable": str(exc), "error": None}
    except BaseException as exc:  # noqa: BLE001 - the student's exception is the visible test's
        if isinstance(exc, KeyboardInterrupt):
            raise
        from autograder.probes.core import _describe_exception

        reply = {"values": {}, "error": _describe_exception(exc), "exception": type(exc).__name__}
    return _pack_answers([reply])


def _remote_vjp(calls: dict, call_id: int, grads: list) -> bytes:
    leaves, outputs = calls.get(call_id, ([], []))
    try:
        got = torch.autograd.grad(outputs, leaves, grads, allow_unused=True, retain_graph=True)
        reply = {"values": {str(k): g.detach().as_subclass(torch.Tensor) for k, g in enumerate(got)
                            if g is not None}, "error": None}
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        reply = {"values": {}, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    return _pack_answers([reply])


class Unproxyable(Exception):
    """An argument or result a visible test cannot get across (a module, a function...):
    that visible test runs in the child instead."""



class RemoteError(Exception):
    """The graded function raised in the child (or the child was lost); the message says what."""


class RemoteFunction:
    """Stands in for a graded function in a visible test the grader runs itself."""

    def __init__(self, sub: "SandboxedSubmission", name: str):
        self.sub, self.__name__ = sub, name

    def __call__(self, *args, **kwargs):
        return self.sub.call(self.__name__, args, kwargs)


class _RemoteGrad(torch.autograd.Function):
    """Outputs computed in the child, differentiable in the grader: backward asks the child."""

    @staticmethod
    def forward(ctx, link, *inputs):
        ctx.link = link
        return tuple(t.clone() for t in link["outputs"])

    @staticmethod
    def backward(ctx, *grad_outputs):
        outs = ctx.link["outputs"]
        grads = [g if g is not None else torch.zeros_like(o) for g, o in zip(grad_outputs, outs)]
        return (None, *ctx.link["vjp"](grads))


def _pack_args(args: tuple, kwargs: dict) -> bytes:
    """A call's arguments for the child: flat tensors and plain values in the answers'
    format (fast); anything nested as a pickle (the grader's own, read by the child)."""
    flat = {f"a{k}": v for k, v in enumerate(args)} | {f"k{k}": v for k, v in kwargs.items()}
    if all(type(v) is torch.Tensor or v is None or isinstance(v, (bool, int, float, str)) for v in flat.values()):
        grad = [k for k, v in flat.items() if type(v) is torch.Tensor and v.requires_grad]
        return _pack_answers([{"values": flat, "grad": grad}])
    copy = (lambda t: t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t)
    return b"P" + pickle.dumps((_map(copy, args), _map(copy, kwargs)))


def _unpack_args(data: bytes) -> tuple[tuple, dict]:
    if data[:1] == b"P":
        return pickle.loads(data[1:])
    a = from_child(data)["answers"][0]
    values = a["values"]
    for k in a["grad"]:
        values[k].requires_grad_(True)
    args = tuple(values[k] for k in sorted((k for k in values if k[0] == "a"), key=lambda k: int(k[1:])))
    return args, {k[1:]: v for k, v in values.items() if k[0] == "k"}


def _map(fn, obj):
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(fn, v) for v in obj)
    if isinstance(obj, dict):
        return {k: _map(fn, v) for k, v in obj.items()}
    return fn(obj)


def _check_proxyable(obj) -> None:
    if isinstance(obj, (list, tuple)):
        for v in obj:
            _check_proxyable(v)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_proxyable(k)
            _check_proxyable(v)
    elif not (obj is None or isinstance(obj, (bool, int, float, str, torch.dtype)) or type(obj) is torch.Tensor):
        raise Unproxyable(f"an argument is a {type(obj).__name__}")


def _tensors_in(obj) -> list:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors_in(v)]
    return []


def _reset(z: _Zygote, restore: bool = True) -> None:
    """Pristine torch and pinned flags before graded code is asked anything.
    Never fatal: a child that cannot reset still answers (for what its code is worth)."""
    from autograder.grading import pin_torch_flags

    try:
        if restore:
            _restore(z.pristine)
        pin_torch_flags()
    except Exception:  # noqa: BLE001 - e.g. a flag the graded code left in a state torch refuses to read
        pass


def _cases_on_device(z: _Zygote, name: str) -> list[Case]:
    """The check's inputs, moved to the grading device (the zygote holds them on the CPU)."""
    cases = z.cases[name]
    out = []
    for case, devices in zip(cases, z.devices[name]):
        if any(d not in ("cpu", "meta") for d in devices):
            it = iter(devices)
            case = case.map_tensors(lambda t: t.to(next(it)))
        out.append(case)
    return out


# -- the wire: child -> grader ---------------------------------------------------
_DTYPES = {str(v): v for v in vars(torch).values() if isinstance(v, torch.dtype)}


def _json(obj: dict) -> bytes:
    return b"J" + json.dumps(obj).encode()


def _pack_answers(answers: list[dict]) -> bytes:
    """Answers as JSON, their tensors' bytes in one blob after it, with an index of
    (dtype, shape, offset, size). No pickle: the grader never runs an unpickler on
    what a child sends (not even torch.load's weights_only one)."""
    index, parts, offset = [], [], 0
    packed = []
    for a in answers:
        values = {}
        for key, v in a.get("values", {}).items():
            if isinstance(v, torch.Tensor):
                t = v.detach().cpu().contiguous().reshape(-1)
                raw = t.view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)
                pad = -offset % 16
                if pad:
                    parts.append(torch.zeros(pad, dtype=torch.uint8))
                    offset += pad
                index.append([str(v.dtype), list(v.shape), offset, raw.numel()])
                parts.append(raw)
                offset += raw.numel()
                values[key] = {"tensor": len(index) - 1}
            else:
                values[key] = v
        packed.append({**a, "values": values})
    blob = _raw_bytes(torch.cat(parts)) if parts else b""
    meta = json.dumps({"kind": "answers", "answers": packed, "index": index}).encode()
    return b"R" + struct.pack("<Q", len(meta)) + meta + blob


def _raw_bytes(t: torch.Tensor) -> bytes:
    try:
        return t.numpy().tobytes()
    except (RuntimeError, ImportError):  # a torch without numpy
        return bytes(t.tolist())


def _unpack_tensor(blob: torch.Tensor, entry) -> torch.Tensor:
    dtype_name, shape, offset, size = entry
    dtype = _DTYPES[dtype_name]
    shape = [int(s) for s in shape]
    n = 1
    for s in shape:
        if s < 0:
            raise ValueError("negative size")
        n *= s
    if size != n * torch.empty(0, dtype=dtype).element_size() or not 0 <= offset <= blob.numel() - size:
        raise ValueError("tensor outside the blob")
    return blob[offset:offset + size].clone().view(dtype).reshape(shape)


def from_child(data: bytes) -> dict:
    """A child's message, as plain data: JSON, and for answers JSON then the raw bytes of
    its tensors, rebuilt as plain tensors of an allow-listed dtype, each inside the blob."""
    if data[:1] == b"J":
        obj = json.loads(data[1:])
    elif data[:1] == b"R":
        (size,) = struct.unpack("<Q", data[1:9])
        obj = json.loads(data[9:9 + size])
        rest = data[9 + size:]
        blob = torch.frombuffer(bytearray(rest), dtype=torch.uint8) if rest else torch.empty(0, dtype=torch.uint8)
        tensors = [_unpack_tensor(blob, e) for e in obj["index"]]
        for a in obj["answers"]:
            a["values"] = {k: tensors[v["tensor"]] if isinstance(v, dict) else v for k, v in a["values"].items()}
    else:
        raise ValueError("unknown message")
    if not isinstance(obj, dict):
        raise ValueError("not a dict")
    return obj


_CUDA_ERROR = re.compile(r"CUDA error|cudaError|CUBLAS_STATUS|CUDNN_STATUS|device-side assert|"
                         r"an illegal memory access", re.IGNORECASE)


def _failed_answer(reason: str) -> dict:
    return {"values": {}, "devices": {}, "forbidden": [], "stdout": "", "error": reason}


# -- the grader's side -----------------------------------------------------------
class Zygote:
    """The grader's handle on one zygote (one chapter, one device, one run)."""

    def __init__(self, stem: str, *, device: str, limits: Limits | None = None, hide: list[str] | tuple = ()):
        self.stem, self.device = stem, device
        self.limits = limits or Limits()
        self.hide = list(hide)
        self._ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, str(theirs.fileno()), "isolate" if self.limits.isolate else "none"],
            stdin=subprocess.PIPE, pass_fds=[theirs.fileno()], env=env, cwd="/")
        theirs.close()
        self._lock = threading.Lock()
        self._next_uid = 0
        self.mode = self.warning = None

    def start(self, cases: dict[str, list[Case]], helpers: list[str] = ()) -> "Zygote":
        """Hand the zygote every check's inputs and the source's read-only helper cells
        (for the visible tests); wait until it is ready to fork."""
        cpu_cases, devices = {}, {}
        for name, cs in cases.items():
            cpu_cases[name] = [c.map_tensors(lambda t: t.cpu() if t.device.type not in ("cpu", "meta") else t)
                               for c in cs]
            devices[name] = [[str(t.device) for t in c.tensors()] for c in cs]
        cfg = pickle.dumps({"stem": self.stem, "device": self.device, "limits": self.limits, "hide": self.hide,
                            "cases": cpu_cases, "devices": devices, "helpers": list(helpers)})
        try:
            self._proc.stdin.write(struct.pack("<Q", len(cfg)) + cfg)
            self._proc.stdin.close()
            reply = self._ctl.recv(1 << 16)
        except OSError:
            reply = b""
        if not reply:
            self.close()
            raise SandboxError(f"the grading sandbox did not start (exit code {self._proc.wait()})")
        _, self.mode, self.warning = pickle.loads(reply)
        if self.warning:
            print(self.warning, file=sys.stderr)
        return self

    def spawn(self) -> tuple[int, int | None, Connection]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            uid = self.limits.uid_base + self._next_uid % UID_SLOTS
            self._next_uid += 1
            try:
                socket.send_fds(self._ctl, [pickle.dumps(("spawn", uid))], [theirs.fileno()])
                msg, fds, _, _ = socket.recv_fds(self._ctl, 1 << 16, 1)
            finally:
                theirs.close()
        reply = pickle.loads(msg) if msg else ("error", "the zygote ended")
        if reply[0] != "pid":
            ours.close()
            raise SandboxError(f"could not start a grading child: {reply[1]}")
        return reply[1], (fds[0] if fds else None), Connection(ours.detach())

    def status(self, pid: int) -> int | None:
        with self._lock:
            self._ctl.send(pickle.dumps(("status", pid)))
            msg = self._ctl.recv(1 << 16)
        return pickle.loads(msg)[1] if msg else None

    def close(self) -> None:
        try:
            self._ctl.close()  # the zygote cleans up and ends
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SandboxedSubmission:
    """One submission's child process, restarted past cells that kill it."""

    def __init__(self, zygote: Zygote, cells: list[Cell], *, check_ids: set[str],
                 visible: dict[str, Cell] | None = None, limits: Limits | None = None):
        self.zygote = zygote
        self.visible = visible or {}
        self.visible_failures: dict[str, str] = {}
        self.limits = limits or zygote.limits
        self.code = code_to_run(cells, check_ids)
        self.skip: set[int] = set()
        self.problems: list[str] = []
        self._reported: set[int] = set()
        self._ahead: list[str] = []  # checks whose answers were asked for ahead (see prefetch)
        self._calls = 0  # remote calls made for visible tests
        self._replies = None
        self.pid = self.pidfd = self.conn = None

    def __enter__(self):
        self._run_cells()
        return self

    def __exit__(self, *exc):
        self._kill()

    # -- child management -------------------------------------------------
    def _spawn(self) -> None:
        self.pid, self.pidfd, self.conn = self.zygote.spawn()
        try:
            hello = self._receive(self.limits.cell_timeout)
        except ChildLost as lost:
            raise SandboxError(f"a grading child did not start: it {lost}") from None
        if hello.get("kind") != "ready":
            raise SandboxError("a grading child did not start")

    def _alive(self) -> bool:
        if self.pid is None:
            return False
        if self.pidfd is not None:
            return not select.select([self.pidfd], [], [], 0)[0]
        return True

    def _kill(self) -> None:
        self._ahead = []
        if self.pid is not None:
            for kill in (lambda: os.killpg(self.pid, signal.SIGKILL) if self._alive() else None,  # its group
                         lambda: self.pidfd is not None and signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)):
                try:  # with a PID namespace, the kernel then kills everything in it
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass
            if self.pidfd is not None:
                os.close(self.pidfd)
        if self.conn is not None:
            self.conn.close()
        self.pid = self.pidfd = self.conn = None

    def _exit_code(self) -> int | None:
        if self.pidfd is not None:
            select.select([self.pidfd], [], [], 2.0)  # wait (briefly) until it has ended
        for _ in range(20):
            code = self.zygote.status(self.pid)
            if code is not None:
                return code
            select.select([], [], [], 0.05)
        return None

    def _receive(self, timeout: float) -> dict:
        try:
            if not self.conn.poll(timeout):
                raise ChildLost(f"did not finish within {timeout:g} s")
            data = self.conn.recv_bytes(MAX_MESSAGE)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            code = self._exit_code()
            if code is not None and code < 0:
                name = signal.Signals(-code).name
                why = {"SIGKILL": "was killed (out of memory?)", "SIGXCPU": "ran out of CPU time",
                       "SIGXFSZ": "wrote a file over the size limit"}.get(name, f"was killed by {name}")
                raise ChildLost(why) from None
            raise ChildLost(f"ended the process (exit code {code}; os._exit?)") from None
        except OSError as exc:  # e.g. a message over MAX_MESSAGE
            raise ChildLost(f"sent an unreadable answer ({type(exc).__name__})") from None
        try:
            return from_child(data)
        except Exception as exc:  # noqa: BLE001 - an answer that is not plain data
            raise ChildLost(f"sent an unreadable answer ({type(exc).__name__})") from None

    def _request(self, msg, timeout: float) -> dict:
        return next(self._pipelined([msg], timeout))

    def _pipelined(self, msgs: list, timeout: float):
        """The replies to `msgs`, in order, each within `timeout`. Requests are sent
        ahead of their replies (while under PIPELINE_BYTES, which the socket buffers),
        so the child goes from one to the next without waiting for the grader.
        Raises ChildLost at the first reply that does not come."""
        payloads = [pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL) for m in msgs]
        sent = outstanding = 0
        for i in range(len(payloads)):
            while sent < len(payloads) and (sent == i or outstanding + len(payloads[sent]) <= PIPELINE_BYTES):
                try:
                    self.conn.send_bytes(payloads[sent])
                except (BrokenPipeError, ConnectionResetError, EOFError):
                    pass  # the reply (EOF) says what happened
                outstanding += len(payloads[sent])
                sent += 1
            reply = self._receive(timeout)
            outstanding -= len(payloads[i])
            yield reply

    def _run_cells(self) -> None:
        """Start a child and run the cells, skipping any that kill or hang it;
        then the visible tests of each check cell, as nbgrader would."""
        while True:
            self._kill()
            self._spawn()
            if not self._run_student_cells():
                continue
            todo = [(g, c) for g, c in self.visible.items() if g not in self.visible_failures]
            replies = self._pipelined([("visible", c.index, c.source) for _, c in todo], self.limits.cell_timeout)
            for grade_id, _ in todo:
                try:
                    report = next(replies)
                except ChildLost as lost:
                    self.visible_failures[grade_id] = f"your code {lost}"
                    break
                if not report.get("ok"):
                    self.visible_failures[grade_id] = str(report.get("error"))
            else:
                return

    def _run_student_cells(self) -> bool:
        """True when every cell ran (or raised); False when one killed the child."""
        todo = [c for c in self.code if c.index not in self.skip]
        replies = self._pipelined([("cell", c.index, c.source) for c in todo], self.limits.cell_timeout)
        for cell in todo:
            try:
                report = next(replies)
            except ChildLost as lost:
                self.skip.add(cell.index)
                self.problems.append(f"cell {cell.number} {lost}; graded without that cell")
                return False
            if report.get("kind") != "cell":
                self.skip.add(cell.index)
                self.problems.append(f"cell {cell.number} garbled the grader's channel; graded without it")
                return False
            if not report.get("ok") and cell.index not in self._reported:
                self._reported.add(cell.index)
                self.problems.append(f"cell {cell.number} raised {report.get('error')}")
        return True

    def visible_in_child(self, grade_id: str, cell: Cell) -> None:
        """Run one check cell's visible tests in the child (those the grader cannot run itself)."""
        if not self._alive():
            self._run_cells()
        try:
            report = self._request(("visible", cell.index, cell.source), self.limits.cell_timeout)
        except ChildLost as lost:
            self._kill()
            self.visible_failures[grade_id] = f"your code {lost}"
            return
        if not report.get("ok"):
            self.visible_failures[grade_id] = str(report.get("error"))

    def call(self, name: str, args: tuple, kwargs: dict):
        """Call the graded function `name` in the child, for a visible test the grader runs.
        Tensors come back as plain tensors; an output that depends on inputs requiring
        grad is wired into autograd, its backward computed by the child (`vjp`)."""
        _check_proxyable((args, kwargs))
        if not self._alive():
            self._run_cells()
        leaves = [t for t in _tensors_in((args, kwargs)) if t.requires_grad]
        self._calls += 1
        a = self._remote(("call", self._calls, name, _pack_args(args, kwargs)))
        if a.get("unproxyable"):
            raise Unproxyable(a["unproxyable"])
        n, kind, grad = a.get("n"), a.get("kind"), a.get("grad")
        items = [a["values"].get(str(k)) for k in range(n)] if isinstance(n, int) and 0 <= n <= 256 else None
        if (items is None or kind not in ("one", "tuple", "list") or not isinstance(grad, list)
                or any(not isinstance(k, int) or not 0 <= k < n or type(items[k]) is not torch.Tensor for k in grad)):
            raise RemoteError("your function's result could not be read")
        if grad and leaves:
            cid = self._calls
            outs = _RemoteGrad.apply({"outputs": [items[k] for k in grad],
                                      "vjp": lambda gos: self._vjp(cid, gos, leaves)}, *leaves)
            for k, o in zip(grad, outs):
                items[k] = o
        return items[0] if kind == "one" else tuple(items) if kind == "tuple" else items

    def _vjp(self, cid: int, grad_outputs, leaves: list) -> list:
        a = self._remote(("vjp", cid, [g.detach().clone() for g in grad_outputs]))
        grads = [a["values"].get(str(k)) for k in range(len(leaves))]
        return [g if type(g) is torch.Tensor else None for g in grads]

    def _remote(self, msg) -> dict:
        try:
            reply = self._request(msg, self.limits.cell_timeout)
        except ChildLost as lost:
            self._kill()
            raise RemoteError(f"your code {lost}") from None
        answers = reply.get("answers")
        if reply.get("kind") != "answers" or not isinstance(answers, list) or len(answers) != 1 \
                or not isinstance(answers[0], dict) or not isinstance(answers[0].get("values"), dict):
            self._kill()
            raise RemoteError("your function's result could not be read")
        if answers[0].get("error"):
            raise RemoteError(str(answers[0]["error"]))
        return answers[0]

    def prefetch(self, checks: list) -> None:
        """Ask for the answers of `checks` at once; `answer` then takes them in this order."""
        if not self._alive():
            self._run_cells()
        self._ahead = [c.name for c in checks]
        self._replies = self._pipelined([("answer", name) for name in self._ahead], self.limits.check_timeout)

    def answer(self, check, cases: list[Case]) -> list[dict]:
        if self._ahead and self._ahead[0] == check.name and self._alive():
            self._ahead.pop(0)
            replies = self._replies
        else:
            if self._ahead:  # asked out of order: the child still owes the answers asked ahead
                self._kill()
            if not self._alive():
                self._run_cells()
            replies = self._pipelined([("answer", check.name)], self.limits.check_timeout)
        try:
            reply = next(replies)
        except ChildLost as lost:
            self._kill()
            self.problems.append(f"check {check.name}: your code {lost}")
            return [_failed_answer(f"your code {lost}") for _ in cases]
        answers = reply.get("answers")
        if reply.get("kind") != "answers" or not isinstance(answers, list) or len(answers) != len(cases):
            self._kill()
            why = reply.get("error") if reply.get("kind") == "unpackable" else None
            return [_failed_answer(f"the answer could not be read: {why}" if why else "the answer was garbled")
                    for _ in cases]
        answers = [a if isinstance(a, dict) and isinstance(a.get("values"), dict) else _failed_answer("garbled answer")
                   for a in answers]
        if any(_CUDA_ERROR.search(str(a.get("error") or "")) for a in answers):
            self._kill()  # a CUDA error can leave the context unusable: the next check gets a new child
            self.problems.append(f"check {check.name}: a CUDA error; the next check ran in a new process")
        return answers
