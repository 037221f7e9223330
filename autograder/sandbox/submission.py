"""One submission's child, driven from the grader: the sandbox's executor.

Runs in the grader. Starts a child from the zygote, runs the cells (a cell
that kills or hangs the child is skipped: a new child runs the cells before
it again and goes on, so the cell costs only what it defines) and answers
checks (a check that kills or hangs the child costs only that check). Every reply is decoded by the one codec and every answer
validated (`Answer.from_record`) before anything decides on it.
"""
from __future__ import annotations

import os
import pickle
import re
import select
import signal
import time


from autograder.answer import Answer, MalformedAnswer, decode
from autograder.checks import Case
from autograder.notebook import Cell, code_to_run
from autograder.problems import Problem, cell_problem
from autograder.sandbox.handle import ZygoteHandle
from autograder.sandbox.channel import Channel, ChannelClosed, ChannelTimeout, MessageTooLarge
from autograder.sandbox.limits import MAX_MESSAGE, ChildLost, Limits, SandboxError
from autograder.text import clean

_CUDA_ERROR = re.compile(r"CUDA error|cudaError|CUBLAS_STATUS|CUDNN_STATUS|device-side assert|"
                         r"an illegal memory access", re.IGNORECASE)


START_ATTEMPTS = 3  # tries to start a child before the submission is a grader error


class SandboxedSubmission:
    """One submission's child process, restarted past cells that kill it."""

    def __init__(self, zygote: ZygoteHandle, cells: list[Cell], *, check_ids: set[str], limits: Limits | None = None):
        self.zygote = zygote
        self.limits = limits or zygote.limits
        self.code = code_to_run(cells, check_ids)
        self.skip: set[int] = set()
        self.problems: list[Problem] = []
        self._reported: set[int] = set()
        self._ahead: list[str] = []  # checks whose answers were asked for ahead (see prefetch)
        self._replies = None
        self.pid = self.pidfd = self.conn = None
        self.children = 0  # children started for this submission
        self.spent: Problem | None = None  # set when the time budget or the restarts ran out
        self._deadline = time.monotonic() + self.limits.submission_timeout

    def __enter__(self):
        self._deadline = time.monotonic() + self.limits.submission_timeout
        self._ensure_child()
        return self

    def __exit__(self, *exc):
        self._kill()

    # -- child management -------------------------------------------------
    def _spawn(self) -> None:
        if self.children > self.limits.max_restarts:
            self._give_up(Problem("crash", f"grading stopped: your code ended the grading process "
                                           f"{self.children} times (each time the cells ran again); the checks "
                                           "not yet answered score 0"))
        if time.monotonic() >= self._deadline:
            self._out_of_time()
        self.children += 1
        for attempt in range(START_ATTEMPTS):  # no student code has run yet: a failed start is the machine's
            try:
                self.pid, self.pidfd, sock = self.zygote.spawn()
                self.conn = Channel(sock, limit=MAX_MESSAGE)
                hello = self._receive(self.limits.cell_timeout)
                if hello.get("kind") == "ready":
                    return
                why = "said something else than ready"
            except (ChildLost, SandboxError) as exc:
                if self.spent is not None:  # the submission's time budget ran out meanwhile
                    raise
                why = str(exc)
            self._kill()
            time.sleep(0.2 * (attempt + 1))  # e.g. namespaces of ended children not yet freed by the kernel
        raise SandboxError(f"a grading child did not start ({START_ATTEMPTS} attempts; the last {why})")

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

    def _give_up(self, why: Problem) -> None:
        """Stop this submission: no new child, every later question fails with `why`."""
        if self.spent is None:
            self.spent = why
            self.problems.append(why)
        self._kill()
        raise ChildLost(str(why), why.kind)

    def _out_of_time(self) -> None:
        self._give_up(Problem("timeout", f"grading stopped after {self.limits.submission_timeout:g} s, this "
                                         "submission's time budget (all its cells, restarts and checks together); "
                                         "the checks not yet answered score 0"))

    def _receive(self, timeout: float) -> dict:
        if self.spent is not None:
            raise ChildLost(str(self.spent), self.spent.kind)
        budget = self._deadline - time.monotonic()
        try:
            data = self.conn.receive(time.monotonic() + min(timeout, max(budget, 0.0)))
        except ChannelTimeout:
            if budget <= timeout:
                self._out_of_time()
            raise ChildLost(f"did not finish within {timeout:g} s", "timeout") from None
        except MessageTooLarge:
            raise ChildLost(f"sent an answer over the size limit ({MAX_MESSAGE >> 20} MiB)") from None
        except ChannelClosed:
            code = self._exit_code()
            if code is not None and code < 0:
                name = signal.Signals(-code).name
                why = {"SIGKILL": "was killed (out of memory?)", "SIGXCPU": "ran out of CPU time",
                       "SIGXFSZ": "wrote a file over the size limit"}.get(name, f"was killed by {name}")
                raise ChildLost(why) from None
            raise ChildLost(f"ended the process (exit code {code}; os._exit?)") from None
        except OSError as exc:
            raise ChildLost(f"broke the grader's channel ({type(exc).__name__})") from None
        try:
            return decode(data)
        except MalformedAnswer as exc:  # an answer that is not plain data
            raise ChildLost(f"sent an unreadable answer ({type(exc).__name__})") from None

    def _request(self, msg, timeout: float) -> dict:
        return next(self._pipelined([msg], timeout))

    def _pipelined(self, msgs: list, timeout: float):
        """The replies to `msgs`, in order, each within `timeout` (and this submission's budget).
        Every request is queued at once and written while the replies are read (channel.py),
        so the child goes from one to the next without waiting for the grader, and neither
        side can block the other. Raises ChildLost at the first reply that does not come."""
        for m in msgs:
            self.conn.queue(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL))
        for _ in msgs:
            yield self._receive(timeout)

    def _ensure_child(self) -> bool:
        """A live child that has run the cells; False once this submission's budget is spent."""
        if self.spent is not None:
            return False
        if self._alive():
            return True
        try:
            self._run_cells()
        except ChildLost:
            if self.spent is None:
                raise
            return False
        return True

    def _run_cells(self) -> None:
        """Start a child and run the cells, skipping any that kill or hang it."""
        while True:
            self._kill()
            self._spawn()
            if self._run_student_cells():
                return

    def _run_student_cells(self) -> bool:
        """True when every cell ran (or raised); False when one killed the child."""
        todo = [c for c in self.code if c.index not in self.skip]
        replies = self._pipelined([("cell", c.index, c.source) for c in todo], self.limits.cell_timeout)
        for cell in todo:
            try:
                report = next(replies)
            except ChildLost as lost:
                if self.spent is not None:
                    raise
                self.skip.add(cell.index)
                self.problems.append(Problem(lost.kind, f"cell {cell.number} {lost}; graded without that cell"))
                return False
            if report.get("kind") != "cell":
                self.skip.add(cell.index)
                self.problems.append(Problem("crash", f"cell {cell.number} garbled the grader's channel; "
                                             "graded without it"))
                return False
            if report.get("ok") is not True and cell.index not in self._reported:
                self._reported.add(cell.index)
                self.problems.append(cell_problem(cell, clean(report.get("error"))))
        return True

    def prefetch(self, checks: list) -> None:
        """Ask for the answers of `checks` at once; `answer` then takes them in this order."""
        if not self._ensure_child():
            return
        self._ahead = [c.name for c in checks]
        self._replies = self._pipelined([("answer", name) for name in self._ahead], self.limits.check_timeout)

    def answer(self, check, cases: list[Case]) -> list[Answer]:
        if self._ahead and self._ahead[0] == check.name and self._alive():
            self._ahead.pop(0)
            replies = self._replies
        else:
            if self._ahead:  # asked out of order: the child still owes the answers asked ahead
                self._kill()
            if not self._ensure_child():
                return [Answer.failed(f"not graded: {self.spent}") for _ in cases]
            replies = self._pipelined([("answer", check.name)], self.limits.check_timeout)
        try:
            reply = next(replies)
        except ChildLost as lost:
            self._kill()
            if self.spent is not None:
                return [Answer.failed(f"not graded: {self.spent}") for _ in cases]
            self.problems.append(Problem(lost.kind, f"check {check.name}: your code {lost}"))
            return [Answer.failed(f"your code {lost}") for _ in cases]
        records = reply.get("records")
        if reply.get("kind") != "answers" or not isinstance(records, list) or len(records) != len(cases):
            self._kill()
            why = reply.get("error") if reply.get("kind") == "unpackable" else None
            return [Answer.failed(f"the answer could not be read: {clean(why, 500)}" if why
                                  else "the answer was garbled") for _ in cases]
        answers = []
        for record in records:
            try:
                answers.append(Answer.from_record(record))
            except MalformedAnswer as exc:
                answers.append(Answer.failed(f"malformed answer: {exc}"))
        if any(_CUDA_ERROR.search(a.error or "") for a in answers):
            self._kill()  # a CUDA error can leave the context unusable: the next check gets a new child
            self.problems.append(Problem("crash", f"check {check.name}: a CUDA error; the next check ran in a new "
                                                  "process"))
        return answers
