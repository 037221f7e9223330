"""The grader's handle on a zygote: start it, hand it the inputs, ask it for children.

Runs in the grader. The zygote itself (what runs in it) is zygote.py; one
child's life is child.py; a submission's child is driven by submission.py.
"""
from __future__ import annotations

import json
import os
import pickle
import socket
import struct
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from autograder.checks import Case
from autograder.sandbox.limits import UID_SLOTS, Limits, SandboxError
from autograder.sandbox import newroot
from autograder.sandbox.bootstrap import BOOTSTRAP, STAGE2


# The only variables of the grader's environment a zygote (and so a child) gets: where Python
# finds its modules and libraries, the locale, and the numeric libraries' and GPU's settings.
# Never the instructor's tokens, keys, or anything else the grader was started with.
INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED", "LD_LIBRARY_PATH",
             "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
             "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def child_environment() -> dict[str, str]:
    """The zygote's environment: INHERITED from the grader's, a PYTHONPATH that reaches this
    package, and nothing else (HOME and TMPDIR are set per child)."""
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2])]
                                        + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env["HOME"] = "/nonexistent"
    return env


def zygote_program() -> str:
    """The zygote's `python -c` text: newroot.py, then the bootstrap (see bootstrap.py)."""
    return Path(newroot.__file__).read_text() + f"\nSTAGE2 = {STAGE2!r}\n" + BOOTSTRAP


UID_BLOCKS = 4096  # blocks of UID_SLOTS uids a machine's concurrent runs take from (uid_base up)


def reserve_uid_block(uid_base: int) -> tuple[int, socket.socket | None]:
    """(the first uid of a block of UID_SLOTS no other run on this machine is using, what holds
    the block). Each run's children get uids of their own, so that two runs at once (two shards
    on one node, two instructors) never share a uid: one run's child could otherwise signal the
    other's, and count against its process limit. A block is held by binding an abstract UNIX
    socket named after it (no file is written; the kernel frees the name when the run ends, even
    killed); close the socket to give it back. Where no name can be bound, the first block."""
    for k in range(UID_BLOCKS):
        base = uid_base + k * UID_SLOTS
        if base + UID_SLOTS > 2 ** 32 - 2:
            break
        lease = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            lease.bind(f"\0autograder-uids-{base}")
            return base, lease
        except OSError:
            lease.close()
    return uid_base, None


class ZygoteHandle:
    """The grader's handle on one zygote (one chapter, one device, one run)."""

    def __init__(self, stem: str, *, device: str, limits: Limits | None = None, hide: list[str] | tuple = (),
                 conceal: list[str] | tuple = ()):
        """`hide`: what a child may not read (secret_paths); `conceal`: what it may not even
        learn the location of (the course, this checkout), left out of the zygote's own root."""
        self.stem, self.device = stem, device
        self.limits = limits or Limits()
        self._ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = child_environment()
        command = [sys.executable, "-c", zygote_program(), str(theirs.fileno())]
        self._root = None
        if self.limits.isolate:
            self._root = tempfile.mkdtemp(prefix="autograder-root-")
            code = str(Path(__file__).resolve().parents[1])
            plan = newroot.plan([*conceal, str(Path(code).parent), *hide], hide, code, self._root)
            command += ["isolate", json.dumps(plan)]
        else:
            command += ["none"]
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                      pass_fds=[theirs.fileno()], env=env, cwd="/")
        theirs.close()
        self._said: list[str] = []  # the zygote's last lines on stderr (relayed to ours as they come)
        self._relay = threading.Thread(target=self._relay_stderr, daemon=True)
        self._relay.start()
        self._lock = threading.Lock()
        self._uid_base, self._uid_lease = reserve_uid_block(self.limits.uid_base)
        self._next_uid = 0
        self.mode = self.warning = None

    def start(self, cases: dict[str, list[Case]], expected: int = 1) -> "ZygoteHandle":
        """Hand the zygote every check's inputs and the number of children the run `expected`s
        (a class has its memory put in huge pages first: sandbox/hugepages.py); wait until it
        is ready to fork."""
        cpu_cases, devices = {}, {}
        for name, cs in cases.items():
            cpu_cases[name] = [c.map_tensors(lambda t: t.cpu() if t.device.type not in ("cpu", "meta") else t)
                               for c in cs]
            devices[name] = [[str(t.device) for t in c.tensors()] for c in cs]
        cfg = pickle.dumps({"stem": self.stem, "device": self.device, "limits": self.limits,
                            "cases": cpu_cases, "devices": devices, "expected": expected})
        try:
            self._proc.stdin.write(struct.pack("<Q", len(cfg)) + cfg)
            self._proc.stdin.close()
            reply = self._ctl.recv(1 << 16)
        except OSError:
            reply = b""
        if not reply:
            code = self._proc.wait()
            self._relay.join(timeout=5)
            self.close()
            raise SandboxError(f"the grading sandbox did not start: {self.first_error() or f'exit code {code}'}")
        _, self.mode, self.warning = pickle.loads(reply)
        if self.warning:
            print(self.warning, file=sys.stderr)
        return self

    def _relay_stderr(self) -> None:
        for line in iter(self._proc.stderr.readline, b""):
            text = line.decode(errors="replace")
            self._said = (self._said + [text.rstrip()])[-40:]
            try:
                sys.stderr.write(text)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
        self._proc.stderr.close()

    def first_error(self) -> str | None:
        """What the zygote said of its own failure, in one line: the last line of its
        traceback (the exception), or its last line."""
        lines = [line.strip() for line in self._said if line.strip()]
        if not lines:
            return None
        errors = [line for line in lines if not line.startswith(("File ", "Traceback", "^", "~"))]
        return (errors or lines)[-1][:500]

    def spawn(self) -> tuple[int, int | None, socket.socket]:
        """A new child: (pid, a pidfd or None, the grader's end of its socket)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            uid = self._uid_base + self._next_uid % UID_SLOTS
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
        return reply[1], (fds[0] if fds else None), ours

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
        if self._root:
            shutil.rmtree(self._root, ignore_errors=True)  # the empty folder the zygote's root was built on
            self._root = None
        if self._uid_lease is not None:  # the uid block, free for the next run (the children are gone)
            self._uid_lease.close()
            self._uid_lease = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


