"""What runs in the zygote: the bootstrap, the zygote's state, its warm-up and its loop.

A zygote is a fresh Python process (exec'd by the grader's `ZygoteHandle`, not
forked from the grader, so it never holds a solution or a gradebook) that
imports torch, this package and the chapter's checks once, receives the
check inputs once, isolates itself (policy.isolate_zygote), and then forks
one child per submission (child.child_main). A fork costs a few
milliseconds; an import of torch costs a second. CUDA is never touched in
the zygote: each child initialises it itself.

Control protocol (grader <-> zygote, over a SOCK_SEQPACKET pair; pickles both
ways, written only by the grader and this trusted process):

    grader: ("spawn", uid) + the child's socket   -> ("pid", pid) + a pidfd, or ("error", why)
    grader: ("status", pid)                       -> ("status", exit code or -signal or None)
    grader closes the socket                      -> the zygote cleans up and ends
"""
from __future__ import annotations

import gc
import json
import os
import pickle
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from autograder.answer import encode_records
from autograder.checks import Case, load_checks
from autograder.execute import new_namespace, run_cell
from autograder.notebook import Cell
from autograder.probes import run_probe
from autograder.probes.core import guard_the_watch, prepare_watch
from autograder.sandbox import hugepages, seccomp
from autograder.sandbox.child import Pristine, child_main
from autograder.sandbox.policy import isolate_zygote, paths_under_tmp, pid_namespaces_work
from autograder.sandbox.syscalls import (CLONE_NEWPID, PR_SET_PDEATHSIG, join_new_session_keyring, prctl, setns,
                                         unshare)
from autograder.torchstate import pin_torch_flags, snapshot



class ZygoteState:
    """The zygote's own state (inside the zygote process); the grader's handle on it is
    `autograder.sandbox.handle.ZygoteHandle`."""

    def __init__(self, cfg: dict):
        self.stem, self.device, self.limits = cfg["stem"], cfg["device"], cfg["limits"]
        self.cases: dict[str, list[Case]] = cfg["cases"]
        self.devices: dict[str, list[list[str]]] = cfg["devices"]
        self.checks = load_checks(self.stem)
        warm_up(self)  # before isolating: a first import may want to write (e.g. a temporary folder)
        self.checks = forget_correct_code(self.checks)
        guard_the_watch()
        self.seccomp = seccomp.build()  # before isolating: it loads libseccomp
        self.pristine = Pristine(snapshot(autograder_modules()))
        # a root grader runs children as a uid of their own, with or without namespaces
        self.drop_uid = os.geteuid() == 0 and "AUTOGRADER_USERNS" not in os.environ
        hide = json.loads(os.environ.pop("AUTOGRADER_HIDE", "[]"))  # only when the course is in our root
        newroot = os.environ.pop("AUTOGRADER_NEWROOT", None)
        self.mode, self.warning = (isolate_zygote(hide + code_paths()) if self.limits.isolate
                                   else ("rlimits", ""))
        if self.mode != "rlimits" and newroot != "ok":
            self.warning = (f"warning: grading sandbox has {newroot or 'no root of its own'}: a submission can "
                            "learn where the course lives (its secrets stay covered)")
        self.under_tmp = paths_under_tmp() if self.mode != "rlimits" else []  # kept across the child's /tmp
        self.pidns_fd = None
        if self.mode != "rlimits" and pid_namespaces_work():
            self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
        self.statuses: dict[int, int] = {}
        self.scratch: dict[int, str] = {}  # pid -> scratch folder, without namespaces (removed when reaped)

    def fork(self, fd: int, uid: int, ctl: socket.socket) -> int:
        scratch = tempfile.mkdtemp(prefix="autograder-") if self.mode == "rlimits" else None
        if self.pidns_fd is not None:
            unshare(CLONE_NEWPID)
        try:
            pid = os.fork()
        except BaseException:
            if self.pidns_fd is not None:
                setns(self.pidns_fd, CLONE_NEWPID)
            raise
        if pid == 0:
            try:
                ctl.close()
                child_main(self, fd, uid, scratch)
            except BaseException:  # noqa: BLE001 - set-up failed: the grader sees exit code 70
                pass
            os._exit(70)
        if self.pidns_fd is not None:
            setns(self.pidns_fd, CLONE_NEWPID)
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


@dataclass(frozen=True)
class ProbeSpec:
    """What a child needs of a check to answer it: how to call the code, what it may not call.
    No reference, no known mistake, no input maker: nothing that computes an answer."""

    name: str
    target: str
    probe: object
    forbidden: tuple[str, ...]


_CODE_PACKAGES = ("autograder.chapters", "autograder.mistakes")


def forget_correct_code(checks: dict) -> dict[str, ProbeSpec]:
    """Keep of each check only its ProbeSpec, and unload the chapters' and mistakes' modules
    (their namespaces emptied, so no function left in memory still reaches their helpers):
    after this, nothing the zygote holds computes a correct answer to a graded function."""
    specs = {name: ProbeSpec(c.name, c.target, c.probe, tuple(c.forbidden)) for name, c in checks.items()}
    import autograder

    for name in [m for m in sys.modules if m.startswith(_CODE_PACKAGES)]:
        module = sys.modules.pop(name)
        vars(module).clear()
    for attr in ("chapters", "mistakes"):
        vars(autograder).pop(attr, None)
    gc.collect()
    return specs


def code_paths() -> list[str]:
    """The folders of those packages, hidden from the children (they cannot be imported again)."""
    root = Path(__file__).resolve().parents[1]
    return [str(root / p.split(".")[1]) for p in _CODE_PACKAGES if (root / p.split(".")[1]).is_dir()]


def autograder_modules() -> list:
    """This package's modules loaded now: restored with torch before each request."""
    return [m for name, m in sorted(sys.modules.items()) if name == "autograder" or name.startswith("autograder.")]


def warm_up(z: ZygoteState) -> None:
    """Run what every child runs (a cell, torch.testing, each check's probe on its
    known mistakes for every case, meta cases included), so lazy imports and
    first-call caches (torch.distributed.tensor, meta kernels, decompositions)
    are paid once, here, not in every child (0.5 s a child otherwise)."""
    run_cell(Cell(0, "code", "%matplotlib inline\nimport torch\n"
                             "torch.testing.assert_close(torch.ones(2), torch.ones(2))\n"
                             "assert torch.allclose(torch.ones(2), torch.ones(2))"), new_namespace())
    for name, check in z.checks.items():
        if check.forbidden:
            prepare_watch(check.forbidden)  # every name of the forbidden functions, from torch (about 1 s)
        for m in check.mistakes:
            answers = []
            for case in z.cases.get(name, []):
                try:
                    pin_torch_flags()
                    answers.append(run_probe(check, m.impl, case))
                except Exception:  # noqa: BLE001 - a warm-up only
                    pass
            encode_records("answers", [a.to_record() for a in answers])
    pin_torch_flags()


def zygote_main() -> None:
    """Entry point of the zygote process: `python -c BOOTSTRAP` (see ZygoteHandle)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # it goes when the grader goes
    ctl = socket.socket(fileno=int(sys.argv[1]))
    size = struct.unpack("<Q", sys.stdin.buffer.read(8))[0]
    cfg = pickle.loads(sys.stdin.buffer.read(size))  # the grader's own pickle
    torch.set_num_threads(1)
    try:
        join_new_session_keyring()  # the grader's session keyring stays out of reach
    except OSError:
        pass  # no keyrings in this kernel: nothing to leave (the children's filter denies keyctl anyway)
    z = ZygoteState(cfg)
    gc.collect()
    gc.freeze()  # children do not copy the zygote's objects when they collect garbage
    if cfg.get("expected", 0) >= hugepages.WORTH:  # a class: each fork and exit far cheaper (hugepages.py)
        hugepages.collapse_private_memory()
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


