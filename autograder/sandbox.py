"""The limited child process that runs one submission.

Children are started by a fork server: a clean process that imported torch
and this package, and never loaded a solution, a gradebook or CUDA. So a
child's memory holds no reference answers, CUDA works in it (one start-up per
child), and the trusted parent may use threads.

Protocol (parent -> child: pickles it wrote itself; child -> parent: bytes
that the parent loads with `weights_only=True`, never a pickle):

    ("cell", index, source)        -> {"kind": "cell", "ok", "error", "stdout"}
    ("answer", check_name, cases)  -> {"kind": "answers", "answers": [wire, ...]}

Each request has a wall-clock limit. A cell that kills or hangs the child is
skipped: the parent starts a new child, runs the cells before it again and
goes on, so the cell costs only what it defines. A check that kills or hangs
the child costs only that check. See docs/sandbox.md for what the limits do
and do not protect.
"""
from __future__ import annotations

import io
import multiprocessing as mp
import os
import resource
import shutil
import signal
import tempfile
from dataclasses import dataclass

import torch

from autograder.checks import Case, load_checks
from autograder.execute import new_namespace, run_cell
from autograder.notebook import Cell, code_to_run
from autograder.probes import from_bytes, run_probe, to_bytes

MAX_MESSAGE = 64 << 20  # bytes a child may send in one answer


@dataclass(frozen=True)
class Limits:
    cell_timeout: float = 30.0  # wall-clock seconds for one cell (nbgrader's default)
    check_timeout: float = 60.0  # wall-clock seconds for all cases of one check
    cpu_seconds: int = 600  # RLIMIT_CPU for one child
    memory_bytes: int = 4 << 30  # RLIMIT_AS headroom above the child's size at start (CPU only)
    max_processes: int = 256  # RLIMIT_NPROC (the kernel enforces it for non-root users only)
    file_bytes: int = 64 << 20  # RLIMIT_FSIZE: the largest file a child may write


class ChildLost(Exception):
    """The child died or stopped answering; `reason` says which."""


_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        import pkgutil

        import autograder.chapters as chapters

        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(
            ["autograder.sandbox"] + [f"autograder.chapters.{m.name}" for m in pkgutil.iter_modules(chapters.__path__)]
        )
        _CTX = ctx
    return _CTX


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


def _child_main(conn, stem: str, device: str, limits: Limits, scratch: str) -> None:
    os.setsid()  # its own process group: a kill takes everything it started
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # output goes through captured buffers; fd writes go nowhere
        os.dup2(devnull, fd)
    os.chdir(scratch)
    os.environ["HOME"] = scratch
    os.environ["MPLBACKEND"] = "Agg"
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _apply_limits(limits, device)
    from autograder.grading import pin_torch_flags

    pin_torch_flags()
    checks = load_checks(stem)
    ns = new_namespace()
    send = conn.send_bytes
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            os._exit(0)
        if msg[0] == "cell":
            _, index, source = msg
            outcome = run_cell(Cell(index, "code", source), ns)
            send(to_bytes({"kind": "cell", "ok": outcome.ok, "error": outcome.error, "stdout": outcome.stdout}))
        elif msg[0] == "answer":
            _, name, payload = msg
            check = checks[name]
            raw = torch.load(io.BytesIO(payload), weights_only=True)
            impl = ns.get(check.target)
            answers = []
            for c in raw:
                case = Case(c["label"], tuple(c["args"]), c["kwargs"], c["dtype"], c["compare"], c["shape_only"])
                if impl is None:
                    from autograder.grading import missing_answer

                    answers.append(missing_answer(check.target))
                    continue
                pin_torch_flags()
                answers.append(run_probe(check, impl, case))
            send(to_bytes({"kind": "answers", "answers": answers}))
        else:
            os._exit(0)


def _cases_payload(cases: list[Case]) -> bytes:
    buf = io.BytesIO()
    torch.save([{"label": c.label, "args": list(c.args), "kwargs": dict(c.kwargs), "dtype": c.dtype,
                 "compare": c.compare, "shape_only": c.shape_only} for c in cases], buf)
    return buf.getvalue()


def _failed_answer(reason: str) -> dict:
    return {"values": {}, "devices": {}, "forbidden": [], "stdout": "", "error": reason}


class SandboxedSubmission:
    """One submission's child process, restarted past cells that kill it."""

    def __init__(self, stem: str, cells: list[Cell], *, device: str, check_ids: set[str],
                 visible: dict[str, Cell] | None = None, limits: Limits | None = None):
        self.stem = stem
        self.visible = visible or {}
        self.visible_failures: dict[str, str] = {}
        self.device = device
        self.limits = limits or Limits()
        self.code = code_to_run(cells, check_ids)
        self.skip: set[int] = set()
        self.problems: list[str] = []
        self._reported: set[int] = set()
        self.proc = None
        self.conn = None

    def __enter__(self):
        self.scratch = tempfile.mkdtemp(prefix="autograder-")
        os.chmod(self.scratch, 0o777)
        self._run_cells()
        return self

    def __exit__(self, *exc):
        self._kill()
        shutil.rmtree(self.scratch, ignore_errors=True)

    # -- child management -------------------------------------------------
    def _spawn(self) -> None:
        ctx = _context()
        parent, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_child_main, args=(child, self.stem, self.device, self.limits, self.scratch),
                                daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def _kill(self) -> None:
        if self.proc is not None:
            if self.proc.pid:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self.proc.kill()
            self.proc.join(5)
            self.proc.close()
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None

    def _request(self, msg, timeout: float) -> dict:
        try:
            self.conn.send(msg)
            if not self.conn.poll(timeout):
                raise ChildLost(f"did not finish within {timeout:g} s")
            return from_bytes(self.conn.recv_bytes(MAX_MESSAGE))
        except ChildLost:
            raise
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self.proc.join(2)
            code = self.proc.exitcode
            if code is not None and code < 0:
                name = signal.Signals(-code).name
                why = {"SIGKILL": "was killed (out of memory?)", "SIGXCPU": "ran out of CPU time",
                       "SIGXFSZ": "wrote a file over the size limit"}.get(name, f"was killed by {name}")
                raise ChildLost(why) from None
            raise ChildLost(f"ended the process (exit code {code}; os._exit?)") from None
        except Exception as exc:  # an answer that is not plain tensors
            raise ChildLost(f"sent an unreadable answer ({type(exc).__name__})") from None

    def _run_cells(self) -> None:
        """Start a child and run the cells, skipping any that kill or hang it;
        then the visible tests of each check cell, as nbgrader would."""
        while True:
            self._kill()
            self._spawn()
            if not self._run_student_cells():
                continue
            for grade_id, cell in self.visible.items():
                if grade_id in self.visible_failures:
                    continue
                try:
                    report = self._request(("cell", cell.index, cell.source), self.limits.cell_timeout)
                except ChildLost as lost:
                    self.visible_failures[grade_id] = f"your code {lost}"
                    break
                if not report.get("ok"):
                    self.visible_failures[grade_id] = str(report.get("error"))
            else:
                return

    def _run_student_cells(self) -> bool:
        """True when every cell ran (or raised); False when one killed the child."""
        for cell in self.code:
            if cell.index in self.skip:
                continue
            try:
                report = self._request(("cell", cell.index, cell.source), self.limits.cell_timeout)
            except ChildLost as lost:
                self.skip.add(cell.index)
                self.problems.append(f"cell {cell.index} {lost}; graded without that cell")
                return False
            if report.get("kind") != "cell":
                self.skip.add(cell.index)
                self.problems.append(f"cell {cell.index} garbled the grader's channel; graded without it")
                return False
            if not report.get("ok") and cell.index not in self._reported:
                self._reported.add(cell.index)
                self.problems.append(f"cell {cell.index} raised {report.get('error')}")
        return True

    def answer(self, check, cases: list[Case]) -> list[dict]:
        if self.proc is None or not self.proc.is_alive():
            self._run_cells()
        try:
            reply = self._request(("answer", check.name, _cases_payload(cases)),
                                  self.limits.check_timeout)
        except ChildLost as lost:
            self._kill()
            self.problems.append(f"check {check.name}: your code {lost}")
            return [_failed_answer(f"your code {lost}") for _ in cases]
        answers = reply.get("answers") if isinstance(reply, dict) else None
        if reply.get("kind") != "answers" or not isinstance(answers, list) or len(answers) != len(cases):
            self._kill()
            return [_failed_answer("the answer was garbled") for _ in cases]
        return [a if isinstance(a, dict) and isinstance(a.get("values"), dict) else _failed_answer("garbled answer")
                for a in answers]
