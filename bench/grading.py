"""The class runner against `nbgrader autograde`, on the same submissions, in one run.

1. N distinct submissions of one chapter (`make_submissions`: the source
   notebook with each student's own correct code, written differently and
   never the same bytes of answer; every fourth one with an honest wrong
   answer, a catalogued mistake, so scores differ),
   graded by `nbgrader autograde` (in a scratch course, as tests/nbgrader_course.py
   does) and by the runner: time per notebook for each, the ratio, and the
   scores, which must be identical check by check. The runner's one-off
   start-up (importing torch, the references) is measured on a class of one,
   and the time per notebook after it is printed too.
2. A class of M such submissions graded by the runner: total time and time per notebook.
3. The capstone, whose `fit` check trains each submission's model: K copies
   of its source notebook (every fourth with a known-wrong training loop)
   graded by the runner: start-up on a class of one, then the time per
   notebook, training included.

Times are wall-clock (the machine's other load included) and CPU seconds of
the grader and everything it started. `python -m bench grading [--n=20]
[--class-size=500] [--capstone-n=8] [--jobs=2]` (options as --name=value: bench/__main__.py
passes on only the arguments that start with a dash); exits 1 when the
scores differ.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

STEM = "losses"

# Honest wrong answers (catalogued mistakes of the losses checks), appended to their solution cell.
WRONG = [
    ("l1_loss", "def l1_loss(input, target, reduction='mean'):\n"
                "    return apply_reduction((input - target) ** 2, reduction)"),
    ("mse_loss", "def mse_loss(input, target, reduction='mean'):\n"
                 "    return apply_reduction((input - target).abs(), reduction)"),
    ("log_softmax", "def log_softmax(input, dim):\n"
                    "    return input - input.amax(dim, keepdim=True)"),
    ("mse_loss", "def mse_loss(input, target, reduction='mean'):\n"
                 "    return apply_reduction(0.5 * (input - target) ** 2, reduction)"),
    ("l1_loss", "def l1_loss(input, target, reduction='mean'):\n"
                "    return apply_reduction(input - target, reduction)"),
]

# Correct code, written differently: each student gets one variant of each of these functions
# (appended to its solution cell), times S, a factor of 1 + k * 2**-44 of their own (k: the
# student's number): within every tolerance, and it changes the float64 cases' bits, so no two
# students' answers are the same bytes and no cache of decided answers stands in for grading.
RIGHT = {
    "l1_loss": [
        "def l1_loss(input, target, reduction='mean'):\n    return apply_reduction(torch.abs(input - target) * S, reduction)",
        "def l1_loss(input, target, reduction='mean'):\n    d = target - input\n"
        "    return apply_reduction(d.abs() * S, reduction)",
        "def l1_loss(input, target, reduction='mean'):\n    return apply_reduction((input - target).abs().mul(S), reduction)",
    ],
    "mse_loss": [
        "def mse_loss(input, target, reduction='mean'):\n    d = input - target\n"
        "    return apply_reduction(d * d * S, reduction)",
        "def mse_loss(input, target, reduction='mean'):\n    return apply_reduction((target - input).pow(2) * S, reduction)",
        "def mse_loss(input, target, reduction='mean'):\n    return apply_reduction(torch.square(input - target) * S, reduction)",
    ],
    "log_softmax": [
        "def log_softmax(input, dim):\n    m = input.max(dim=dim, keepdim=True).values.detach()\n"
        "    z = input - m\n    return (z - z.exp().sum(dim, keepdim=True).log()) * S",
        "def log_softmax(input, dim):\n    z = input - input.amax(dim=dim, keepdim=True).detach()\n"
        "    return z * S - torch.log(torch.sum(torch.exp(z), dim=dim, keepdim=True)) * S",
    ],
    "binary_cross_entropy": [
        "def binary_cross_entropy(input, target, weight=None, reduction='mean'):\n"
        "    loss = -(target * input.log().clamp(min=-100) + (1 - target) * (1 - input).log().clamp(min=-100))\n"
        "    loss = loss if weight is None else weight * loss\n"
        "    return apply_reduction(loss * S, reduction)",
    ],
}


def variant(k: int) -> dict[str, str]:
    """Student k's correct code: one variant of each function of RIGHT, with its own factor."""
    factor = repr(1 + k * 2 ** -44)
    return {name: code.replace("* S", f"* {factor}").replace("mul(S)", f"mul({factor})")
            for name, options in RIGHT.items() for code in [options[(k * 7 + len(name)) % len(options)]]}


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_submissions(folder: Path, n: int, source: Path) -> dict[str, Path]:
    """n distinct notebooks in the nbgrader layout folder/<student>/<stem>/<stem>.ipynb: each
    student's own correct code (`variant`), and every fourth one with an honest wrong answer
    (a catalogued mistake) in place of one of them, so that scores differ."""
    from autograder.notebook import find_cell

    nb = json.loads(source.read_text())
    made = {}
    for k in range(n):
        student = f"student{k:04d}"
        copy = json.loads(json.dumps(nb))
        code = variant(k)
        if k % 4 == 3:
            grade_id, wrong = WRONG[(k // 4) % len(WRONG)]
            code[grade_id] = wrong
        for grade_id, text in code.items():
            cell = find_cell(copy, grade_id)
            cell["source"] = "".join(cell["source"]) + f"\n\n# student {k}\n" + text + "\n"
        path = folder / student / STEM / f"{STEM}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(copy, indent=1))
        made[student] = path
    return made


def _runner(submissions: Path, out: Path, jobs: int, students: list[str] | None = None, stem: str = STEM):
    from autograder.grading import grade_class

    start, cpu = time.perf_counter(), _cpu()
    results = grade_class(stem, submissions=submissions, out=out, device="cpu", jobs=jobs, progress=False,
                          students=students)
    return results, time.perf_counter() - start, _cpu() - cpu


CAPSTONE = "capstone"


def capstone(tmp: Path, n: int, jobs: int) -> None:
    """The capstone's time per notebook: its `fit` check trains every submission's model."""
    from autograder.course import source_notebook

    nb = json.loads(source_notebook(CAPSTONE).read_text())
    for k in range(n):
        copy = json.loads(json.dumps(nb))
        if k % 4 == 3:  # a known-wrong training loop: no zero_grad()
            cell = next(c for c in copy["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "fit")
            cell["source"] = "".join(cell["source"]).replace("adamw.zero_grad()", "pass")
        path = tmp / "capstone" / f"student{k:04d}" / CAPSTONE / f"{CAPSTONE}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(copy, indent=1))
    # A first class of one pays the one-off imports and caches (the source notebook's reference run);
    # the next class of one is the start-up every run pays (the references trained, the zygote warmed).
    _runner(tmp / "capstone", tmp / "capstone-out-0", jobs, students=["student0000"], stem=CAPSTONE)
    _, one, _ = _runner(tmp / "capstone", tmp / "capstone-out-1", jobs, students=["student0000"], stem=CAPSTONE)
    results, wall, cpu = _runner(tmp / "capstone", tmp / "capstone-out", jobs, stem=CAPSTONE)
    per = (wall - one) / max(n - 1, 1)
    scores = sorted({r.score for r in results})
    print(f"capstone, {n:<4d}      : {wall:7.2f} s  {wall / n:7.3f} s/notebook  (CPU {cpu / n:6.3f} s/notebook; "
          f"training included; distinct totals {scores})", flush=True)
    print(f"  after start-up   : {one:7.2f} s to start and grade one; then {per:7.3f} s/notebook", flush=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench grading")
    p.add_argument("--n", type=int, default=20, help="submissions graded by both nbgrader and the runner")
    p.add_argument("--class-size", type=int, default=500, help="submissions in the runner-only class")
    p.add_argument("--capstone-n", type=int, default=8, help="capstone submissions graded by the runner")
    p.add_argument("--jobs", type=int, default=2, help="the runner's --jobs")
    args, _ = p.parse_known_args(argv)  # other modules' options pass through

    from autograder.course import source_notebook
    from tests.nbgrader_course import autograde, make_course

    tmp = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        root = make_course(tmp, STEM)
        make_submissions(root / "submitted", args.n, source_notebook(STEM))
        print(f"{args.n} {STEM} submissions ({sum(1 for k in range(args.n) if k % 4 == 3)} with a wrong answer); "
              f"{os.cpu_count()} cores; wall-clock times include the machine's other load", flush=True)

        start, cpu = time.perf_counter(), _cpu()
        by_nbgrader = autograde(root, STEM)
        nb_wall, nb_cpu = time.perf_counter() - start, _cpu() - cpu
        print(f"nbgrader autograde : {nb_wall:7.2f} s  {nb_wall / args.n:7.3f} s/notebook  "
              f"(CPU {nb_cpu / args.n:6.3f} s/notebook)", flush=True)

        _, one, _ = _runner(root / "submitted", tmp / "out-1", args.jobs, students=["student0000"])
        results, wall, cpu = _runner(root / "submitted", tmp / "out", args.jobs)
        print(f"runner --jobs {args.jobs}    : {wall:7.2f} s  {wall / args.n:7.3f} s/notebook  "
              f"(CPU {cpu / args.n:6.3f} s/notebook; start-up included)  "
              f"ratio {nb_wall / wall:5.1f}x", flush=True)
        per = (wall - one) / max(args.n - 1, 1)
        print(f"  after start-up   : {one:7.2f} s to start and grade one; then {per:7.3f} s/notebook  "
              f"ratio {nb_wall / args.n / per:5.1f}x", flush=True)

        differ = []
        for r in results:
            ours = {c.grade_id: c.points for c in r.checks}
            theirs = {k: v for k, v in by_nbgrader.get(r.student_id, {}).items() if k in ours}
            if ours != theirs:
                differ.append(f"{r.student_id}: runner {ours} != nbgrader {theirs}")
        scores = sorted({r.score for r in results})
        print(f"scores             : {'identical' if not differ else 'DIFFERENT'} for {len(results)} students "
              f"(distinct totals {scores})")
        for line in differ:
            print("  " + line)

        big = tmp / "class"
        make_submissions(big, args.class_size, source_notebook(STEM))
        results, wall, cpu = _runner(big, tmp / "class-out", args.jobs)
        per = wall / args.class_size
        ratio, cpu_per = nb_wall / args.n / per, cpu / args.class_size
        print(f"class of {args.class_size:<5d}     : {wall:7.2f} s  {per:7.3f} s/notebook  "
              f"(CPU {cpu_per:6.3f} s/notebook)  ratio to nbgrader {ratio:5.1f}x  "
              f"{'under' if wall < 60 else 'OVER'} a minute", flush=True)
        within = wall * 500 / args.class_size
        print(f"issue 27's targets : ratio {ratio:5.1f}x (>= 200x: {'met' if ratio >= 200 else 'NOT met'}); "
              f"a class of 500 in {within:5.1f} s (<= 15 s: {'met' if within <= 15 else 'NOT met'}); "
              f"CPU {cpu_per:5.3f} s/notebook (<= 0.06 s: {'met' if cpu_per <= 0.06 else 'NOT met'}); "
              f"scores {'identical' if not differ else 'DIFFERENT'}", flush=True)
        if args.capstone_n > 0:
            capstone(tmp, args.capstone_n, args.jobs)
        return 1 if differ else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
