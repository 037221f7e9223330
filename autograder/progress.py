"""What a grading run says while it runs, and the summary at its end.

On a terminal: a bar that redraws in place. Anywhere else (a CI log, `nohup`,
a file): a line at every tenth of the class and every `every` seconds, so a
long run is never silent. Either way, a submission that takes longer than
`slow` seconds is named when it finishes, one still running is named at each
heartbeat ("still running: alice for 95 s"), and `close` prints the summary:
how many graded, each status, the time taken and the slowest submissions.
"""
from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import Counter

SLOW_SECONDS = 20.0  # a submission is named as slow past this (most take a few seconds)
HEARTBEAT_SECONDS = 30.0  # a line at least this often when the output is not a terminal
SLOWEST_SHOWN = 3


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 submission', '2 submissions'."""
    return f"{n} {word if n == 1 else many or word + 's'}"


class Progress:
    """The progress of grading `total` submissions of `stem`; thread-safe where it needs to be."""

    def __init__(self, stem: str, total: int, *, show: bool | None = None, stream=None,
                 every: float = HEARTBEAT_SECONDS, slow: float = SLOW_SECONDS):
        self.stem, self.total, self.every, self.slow = stem, total, every, slow
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.show = True if show is None else show
        self.start = time.monotonic()
        self.running: dict[str, float] = {}
        self.took: dict[str, float] = {}
        self.statuses: Counter = Counter()
        self.done_count = 0
        self._said_tenth = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = None
        if self.show and total:
            self._beat = threading.Thread(target=self._heartbeat, name="grading-progress", daemon=True)
            self._beat.start()

    # -- called by the pool's workers -------------------------------------------------
    def timed(self, fn):
        """`fn(student)`, with the time each student takes recorded (and the ones running known)."""
        def run(student: str):
            with self._lock:
                self.running[student] = time.monotonic()
            try:
                return fn(student)
            finally:
                with self._lock:
                    self.took[student] = time.monotonic() - self.running.pop(student)
        return run

    # -- called by the run's thread ---------------------------------------------------
    def done(self, result) -> None:
        """One submission finished (results arrive in the class's order)."""
        self.done_count += 1
        self.statuses[result.status] += 1
        took = self.took.get(result.student_id)
        if not self.show:
            return
        if took is not None and took >= self.slow:
            self._line(f"{self.stem}: {result.student_id} took {took:.0f} s ({result.status})")
        if self.tty:
            self._bar()
        elif self.done_count * 10 // max(self.total, 1) > self._said_tenth or self.done_count == self.total:
            self._said_tenth = self.done_count * 10 // max(self.total, 1)
            self._line(self._status_line())

    def close(self) -> str:
        """Stop the heartbeat; print (when shown) and return the summary."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        text = self.summary()
        if self.show:
            if self.tty:
                self.stream.write("\n")
            self.stream.write(text + "\n")
            self.stream.flush()
        return text

    def summary(self) -> str:
        elapsed = time.monotonic() - self.start
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(self.statuses.items(),
                                                                    key=lambda kv: (kv[0] != "graded", kv[0])))
        text = (f"{self.stem}: {plural(self.done_count, 'submission')} in {elapsed:.1f} s"
                + (f" ({statuses})" if statuses else ""))
        slowest = sorted(self.took.items(), key=lambda kv: -kv[1])[:SLOWEST_SHOWN]
        if slowest:
            median = statistics.median(self.took.values())
            text += (f"; median {median:.1f} s a submission; slowest: "
                     + ", ".join(f"{s} {t:.1f} s" for s, t in slowest))
        return text

    # -- internals --------------------------------------------------------------------
    def _status_line(self) -> str:
        return (f"{self.stem}: {self.done_count}/{self.total} done, {time.monotonic() - self.start:.0f} s"
                + self._still_running())

    def _still_running(self) -> str:
        now = time.monotonic()
        with self._lock:
            long = sorted(((now - t0, s) for s, t0 in self.running.items() if now - t0 >= self.slow), reverse=True)
        return ("; still running: " + ", ".join(f"{s} for {t:.0f} s" for t, s in long[:5])) if long else ""

    def _bar(self) -> None:
        bar = "#" * (30 * self.done_count // max(self.total, 1))
        self.stream.write(f"\r{self.stem} [{bar:<30}] {self.done_count}/{self.total} "
                          f"{time.monotonic() - self.start:5.1f}s")
        self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        if self.tty:
            self._bar()
        self.stream.flush()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.every):
            still = self._still_running()
            if self.tty:
                if still:
                    self._line(f"{self.stem}:{still.removeprefix(';')}")
            else:
                self._line(self._status_line())
