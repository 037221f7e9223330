"""The grader's peak memory against the size of the class: `python -m bench memory
[--sizes=500,10000] [--kind=missing] [--keep] [--jobs=2]`.

Each size is graded in a fresh process (a process's peak resident memory only
grows), by `grade_class` as the command line calls it (results read back
from OUT one at a time); `--keep` grades as the library's default does,
every result kept in a list, for comparison. Printed: the peak resident
memory of the grader (VmHWM), after start-up (the references built, the
zygote started: what any class pays) and at the end, and the growth per
thousand submissions. The class is cheap to grade, so that 10,000 take
minutes: `missing` (each student's folder holds no notebook: every check is
decided, every result written, no child runs) or `exercise` (the released,
unanswered notebook: a child runs each one, every case raises
NotImplementedError). The children's memory is not the grader's and is not
counted.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path

def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

import autograder.grading as grading
stem, subs, out, jobs, keep = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
made = grading.Grader
marks = {}
class Marked(made):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        marks["start-up"] = hwm()
grading.Grader = Marked
start, cpu = time.perf_counter(), time.process_time()
import inspect
extra = {"keep": keep} if "keep" in inspect.signature(grading.grade_class).parameters else {}  # an older baseline
results = grading.grade_class(stem, submissions=subs, out=out, device="cpu", jobs=jobs, progress=False, **extra)
statuses = {}
for r in results:
    statuses[r.status] = statuses.get(r.status, 0) + 1
graded = hwm()
outputs = None
if not keep:  # then what `grade` writes from them, as the command line does: grades.csv, feedback, report, LMS
    import argparse, contextlib, io
    from autograder.cli import _instructor_outputs
    with contextlib.redirect_stdout(io.StringIO()):
        _instructor_outputs(argparse.Namespace(out=str(out), course=None, gradebook=None), results)
    outputs = hwm()
print(json.dumps({"start-up": marks.get("start-up"), "peak": graded, "outputs": outputs, "n": len(results),
                  "statuses": statuses, "wall": time.perf_counter() - start, "cpu": time.process_time() - cpu}))
"""


def make_class(folder: Path, n: int, kind: str, stem: str) -> None:
    from autograder.course import course_root

    notebook = course_root() / "exercises" / stem / f"{stem}.ipynb"
    for k in range(n):
        where = folder / f"student{k:05d}" / stem
        where.mkdir(parents=True)
        if kind == "exercise":
            shutil.copyfile(notebook, where / f"{stem}.ipynb")


def measure(n: int, kind: str, stem: str, jobs: int, keep: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        make_class(tmp / "class", n, kind, stem)
        run = subprocess.run([sys.executable, "-c", _CHILD, stem, str(tmp / "class"), str(tmp / "out"), str(jobs),
                              "1" if keep else "0"], capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise SystemExit(f"the grading process failed:\n{run.stderr[-3000:]}")
        return json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench memory")
    p.add_argument("--sizes", default="500,10000", help="class sizes, comma-separated")
    p.add_argument("--kind", choices=["missing", "exercise"], default="missing", help="what each student submitted")
    p.add_argument("--keep", action="store_true", help="keep every result in a list (the library's default)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--stem", default="losses")
    args, _ = p.parse_known_args(argv)
    what = {"missing": "no notebook in each folder (no child runs)",
            "exercise": "the released, unanswered notebook (a child runs each)"}[args.kind]
    print(f"grader peak resident memory, {args.stem}, {what}; results "
          f"{'kept in a list' if args.keep else 'read back one at a time'}; --jobs {args.jobs}", flush=True)
    for n in (int(s) for s in args.sizes.split(",")):
        started = time.perf_counter()
        m = measure(n, args.kind, args.stem, args.jobs, args.keep)
        growth = (m["peak"] - m["start-up"]) / n * 1000
        print(f"class of {n:<6d}: peak {m['peak']:7.1f} MiB (after start-up {m['start-up']:7.1f} MiB; "
              f"+{growth:.2f} MiB per 1,000 submissions); grading {m['wall']:.1f} s, grader CPU "
              f"{m['cpu'] / n * 1000:.1f} ms a submission; statuses {m['statuses']} "
              + (f"; with grades.csv, feedback, report and LMS files written: peak {m['outputs']:.1f} MiB "
                 if m.get("outputs") else "") +
              f"({time.perf_counter() - started:.0f} s in all)", flush=True)
    return 0
