"""Where the class runner's CPU goes, stage by stage: `python -m bench stages [--class-size=100]`.

Grades a class of `losses` submissions (bench/grading.py's `make_submissions`:
distinct notebooks, every fourth with a catalogued mistake) one at a time in this
thread, with the runner's functions wrapped to count this thread's CPU time
(`time.thread_time`, exclusive of nested stages) and each child's CPU time and
page faults (read from /proc through its pidfd, at the end of each stage that
makes it work: /proc/PID/schedstat, to the nanosecond). CPU, not wall-clock, so
that other load on the machine changes little. The zygote's own CPU and page
faults when it is ready and before it ends (its start-up, its forks) and its
reaped children's CPU beyond what was sampled (their exit) come from /proc too.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

STAGES = ["start-up", "reading", "sanitize", "child start", "cells", "visible tests", "answers", "decisions",
          "mistake matching", "writing", "child end"]


class _Meter:
    def __init__(self):
        self.own = defaultdict(float)  # stage -> grader CPU (this thread), exclusive
        self.child = defaultdict(float)  # stage -> child CPU
        self.faults = defaultdict(int)  # stage -> the child's page faults (copy-on-write of the zygote's pages)
        self.stack: list[list] = []

    def wrap(self, stage, fn, *, child_after=False):
        meter = self

        def wrapped(*args, **kwargs):
            frame = [stage, time.thread_time(), 0.0]
            meter.stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                meter.stack.pop()
                spent = time.thread_time() - frame[1]
                meter.own[stage] += spent - frame[2]
                if meter.stack:
                    meter.stack[-1][2] += spent
                if child_after:
                    meter.sample_child(stage, args[0] if args else None)
        return wrapped

    def sample_child(self, stage, obj):
        sub = getattr(obj, "executor_for_meter", obj)
        fd = getattr(sub, "pidfd", None)
        if fd is None:
            return
        cpu = _child_cpu(fd)
        if cpu is None:
            return
        cpu, faults = cpu
        last, last_faults = getattr(sub, "_meter_cpu", (0.0, 0))
        self.child[stage] += cpu - last
        self.faults[stage] += faults - last_faults
        sub._meter_cpu = cpu, faults


def _child_cpu(pidfd: int) -> tuple[float, int] | None:
    """The child's CPU seconds so far, to the nanosecond (/proc/PID/schedstat: its time on a CPU),
    and its minor page faults (/proc/PID/stat)."""
    try:
        info = Path(f"/proc/self/fdinfo/{pidfd}").read_text()
        pid = int(next(line.split()[1] for line in info.splitlines() if line.startswith("Pid:")))
        faults = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9, faults
    except (OSError, StopIteration, ValueError, IndexError):
        return None


class _Serial:
    """A stand-in for ThreadPoolExecutor: everything in this thread, one at a time."""

    def __init__(self, max_workers=None):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items):
        return map(fn, items)


def instrument(meter: _Meter) -> None:
    from autograder import compare, grading
    from autograder.sandbox import submission

    g, S = grading, submission.SandboxedSubmission
    for name in ("find_notebook", "read_regular_file", "read_cells", "parse_cells", "fingerprint"):
        if hasattr(g, name):  # (an older grading.py, measured as a baseline, has read_cells only)
            setattr(g, name, meter.wrap("reading", getattr(g, name)))
    for name in ("structure_problems", "restore_locked", "scan_source"):
        setattr(g, name, meter.wrap("sanitize", getattr(g, name)))
    for name in ("conclude", "write_result", "write_grades_csv"):
        setattr(g, name, meter.wrap("writing", getattr(g, name)))
    compare.match_mistake = meter.wrap("mistake matching", compare.match_mistake)
    g.Grader.decide = meter.wrap("decisions", g.Grader.decide)
    S.__enter__ = meter.wrap("cells", S.__enter__, child_after=True)
    S._spawn = meter.wrap("child start", S._spawn, child_after=True)  # fork, set-up, "ready"
    S.prefetch = meter.wrap("answers", S.prefetch)
    S.answer = meter.wrap("answers", S.answer)
    S.__exit__ = meter.wrap("child end", S.__exit__)
    S._kill = _sample_before(meter, S._kill)

    run_visible = getattr(g.Grader, "run_visible_tests", None)  # an older grading.py (a baseline) has it
    if run_visible is not None:
        def run_visible_tests(self, executor):
            frame = meter.wrap("visible tests", run_visible)
            try:
                return frame(self, executor)
            finally:
                meter.sample_child("visible tests", executor)
        g.Grader.run_visible_tests = run_visible_tests
    g.ThreadPoolExecutor = _Serial


def _sample_before(meter, kill):
    def wrapped(self):
        if self.pidfd is not None:
            meter.sample_child("answers", self)  # what the child did since its cells
        return kill(self)
    return wrapped


def _proc_cpu(pid: int) -> tuple[float, float, int]:
    """(own, reaped children's) CPU seconds of process `pid`, and its own page faults, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick, int(fields[7])


def _zygote_pid(handle) -> int:
    """The zygote's pid: the bootstrap's child when it made a PID namespace, else the bootstrap."""
    pid = handle._proc.pid
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return int(kids[0]) if kids else pid


def watch_zygote(meter: _Meter) -> None:
    """Sample the zygote's own CPU and its reaped children's when it is ready and before it ends."""
    from autograder.sandbox import handle

    H = handle.ZygoteHandle
    start, close = H.start, H.close

    def started(self, cases, **kwargs):
        out = start(self, cases, **kwargs)
        meter.zygote = {"pid": _zygote_pid(self)}
        meter.zygote["ready"] = _proc_cpu(meter.zygote["pid"])
        return out

    def closing(self):
        z = getattr(meter, "zygote", None)
        if z is not None and "end" not in z:
            try:
                z["end"] = _proc_cpu(z["pid"])
            except OSError:
                pass
        return close(self)

    H.start, H.close = started, closing


def _rusage_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench stages")
    p.add_argument("--class-size", type=int, default=100, help="submissions graded")
    args, _ = p.parse_known_args(argv)

    from autograder.course import source_notebook
    from autograder.grading import grade_class
    from bench.grading import STEM, make_submissions

    meter = _Meter()
    instrument(meter)
    watch_zygote(meter)
    tmp = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    try:
        make_submissions(tmp / "class", args.class_size, source_notebook(STEM))
        kids, own = _rusage_children(), time.process_time()
        start = time.thread_time()
        results = grade_class(STEM, submissions=tmp / "class", out=tmp / "out", device="cpu", jobs=1,
                              progress=False)
        total_own = time.process_time() - own
        total_kids = _rusage_children() - kids
        counted = sum(meter.own.values())
        meter.own["start-up"] += (time.thread_time() - start) - counted
        zygote = total_kids - sum(meter.child.values())
        n = len(results)
        print(f"{n} {STEM} submissions graded one at a time; CPU seconds per notebook "
              f"(grader: this thread; child: read from /proc)")
        print(f"{'stage':18s} {'grader':>8s} {'child':>8s} {'faults':>7s}")
        for stage in STAGES:
            print(f"{stage:18s} {meter.own[stage] / n:8.4f} {meter.child[stage] / n:8.4f} "
                  f"{meter.faults[stage] / n:7.0f}")
        z = getattr(meter, "zygote", {})
        if "ready" in z and "end" in z:
            (own0, kids0, faults0), (own1, kids1, faults1) = z["ready"], z["end"]
            exits = (kids1 - kids0) - sum(meter.child.values())
            print(f"{'zygote start-up':18s} {'':8s} {own0 / n:8.4f}   ({own0 + kids0:.2f} s once: torch, the "
                  f"warm-up, the namespace probe)")
            print(f"{'zygote forks':18s} {'':8s} {(own1 - own0) / n:8.4f} {(faults1 - faults0) / n:7.0f}")
            print(f"{'children exit':18s} {'':8s} {exits / n:8.4f}   (reaped CPU not sampled before the kill)")
            zygote -= own1 + kids1 - sum(meter.child.values())
            print(f"{'rest':18s} {'':8s} {zygote / n:8.4f}   (the bootstrap, the zygote's end)")
        else:
            print(f"{'zygote (rest)':18s} {'':8s} {zygote / n:8.4f}")
        print(f"{'total':18s} {total_own / n:8.4f} {total_kids / n:8.4f}   "
              f"sum {(total_own + total_kids) / n:.4f} s/notebook; "
              f"other grader threads {(total_own - (time.thread_time() - start)) / n:.4f}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
