"""The thin command line: parse arguments, call one function."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _grade(args) -> int:
    from autograder.grading import grade_class
    from autograder.sandbox import Limits

    limits = Limits(cell_timeout=args.cell_timeout, check_timeout=args.check_timeout)
    results = grade_class(args.stem, submissions=Path(args.submissions), out=Path(args.out), device=args.device,
                          jobs=args.jobs, shard=args.shard, sandboxed=not args.no_sandbox, limits=limits)
    total = len(results)
    problems = sum(1 for r in results if r.status != "graded")
    print(f"graded {total} submissions of {args.stem}; {problems} could not be graded; "
          f"results in {Path(args.out) / 'grades.csv'}")
    return 0


def _release(args) -> int:
    from autograder.release import release

    for stem in release(args.stems or None):
        print(f"released exercises/{stem}/{stem}.ipynb")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grade", help="grade every DIR/<student_id>/<stem>/*.ipynb")
    g.add_argument("stem", help="the chapter, e.g. losses")
    g.add_argument("--submissions", required=True, help="folder with one sub-folder per student (nbgrader layout)")
    g.add_argument("--out", required=True, help="where grades.csv and results/ are written")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    g.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: number of cores)")
    g.add_argument("--shard", default=None, help="i/n: grade only every n-th student from the i-th (0-based); "
                   "shards writing to the same --out merge")
    g.add_argument("--cell-timeout", type=float, default=30.0, help="wall-clock seconds for one cell")
    g.add_argument("--check-timeout", type=float, default=60.0, help="wall-clock seconds for one check")
    g.add_argument("--no-sandbox", action="store_true",
                   help="run submissions in this process (trusted code only; for debugging)")
    g.set_defaults(func=_grade)

    r = sub.add_parser("release", help="regenerate exercises/ from solutions/ with nbgrader")
    r.add_argument("stems", nargs="*", help="chapters to release (default: all)")
    r.set_defaults(func=_release)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
