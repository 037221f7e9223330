"""The thin command line: parse arguments, call one function."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _grade(args) -> int:
    from autograder.grading import grade_class
    from autograder.sandbox import Limits

    gradebook = args.gradebook.removeprefix("sqlite:///") if args.gradebook and args.gradebook != "auto" else None
    limits = Limits(cell_timeout=args.cell_timeout, check_timeout=args.check_timeout,
                    hide=tuple(args.hide) + ((gradebook,) if gradebook else ()))
    results = grade_class(args.stem, submissions=Path(args.submissions), out=Path(args.out), device=args.device,
                          jobs=args.jobs, shard=args.shard, sandboxed=not args.no_sandbox, limits=limits)
    total = len(results)
    problems = sum(1 for r in results if r.status != "graded")
    print(f"graded {total} submissions of {args.stem}; {problems} could not be graded; "
          f"results in {Path(args.out) / 'grades.csv'}")
    code = _instructor_outputs(args, results)
    return _grader_errors(results) or code


def _grader_errors(results) -> int:
    """The last line: how many submissions the grader itself failed on; exit status 3 if any."""
    failed = [r.student_id for r in results if r.status == "grader-error"]
    if not failed:
        print("0 grader errors")
        return 0
    print(f"{len(failed)} grader error{'s' if len(failed) != 1 else ''} (grade them again): {', '.join(failed)}")
    return 3


def _instructor_outputs(args, results) -> int:
    """Feedback for `results`, then the class report and LMS CSV from every result in OUT; the gradebook if asked."""
    from autograder.class_report import write_report
    from autograder.feedback import write_all_feedback
    from autograder.results import write_lms_csv

    out = Path(args.out)
    n = write_all_feedback(out, results)
    if n < len(results):  # a student whose feedback failed is now a grader error: grades.csv says so
        from autograder.results import write_grades_csv

        write_grades_csv(out)
    print(f"feedback for {n} students in {out / 'feedback'}; class report {write_report(out)}; "
          f"LMS grades {write_lms_csv(out)}")
    if not args.gradebook:
        return 0
    from autograder.gradebook import GradebookError, resolve_db_url, write_gradebook

    course = Path(args.course) if args.course else None
    if course is None:
        from autograder.course import course_root

        course = course_root()
    db_url = resolve_db_url(args.gradebook, course)
    try:
        counts = write_gradebook(results, db_url=db_url, course=course,
                                 submissions=Path(args.submissions) if args.submissions else None)
    except GradebookError as exc:
        print(f"gradebook not written: {exc}", file=sys.stderr)
        return 1
    print(f"gradebook {db_url}: {counts['grades']} grades of {len(results)} submissions "
          f"({counts['students_added']} students and {counts['submissions_added']} submissions added); "
          f"autograded notebooks in {counts['autograded']}")
    return 0


def _report(args) -> int:
    from autograder.results import load_submissions, write_grades_csv

    if args.gradebook and not args.submissions:
        raise SystemExit("report --gradebook needs --submissions (the autograded notebooks start from them)")
    results = load_submissions(Path(args.out), args.stem)
    if not results:
        raise SystemExit(f"no results under {Path(args.out) / 'results'}: run `python -m autograder grade` first")
    write_grades_csv(Path(args.out))
    return _instructor_outputs(args, results)


def _add_instructor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gradebook", default=None, metavar="DB",
                   help="also write the scores into nbgrader's gradebook: a file, a database URL, or `auto` "
                        "(the course's nbgrader_config.py db_url); with the autograded notebooks for "
                        "formgrader and `nbgrader generate_feedback`")
    p.add_argument("--course", default=None, help="the nbgrader course folder (default: this course's root)")


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
    from autograder.sandbox import Limits

    g.add_argument("--cell-timeout", type=float, default=Limits.cell_timeout,
                   help="wall-clock seconds for one cell (default: %(default)g)")
    g.add_argument("--check-timeout", type=float, default=Limits.check_timeout,
                   help="wall-clock seconds for all cases of one check (default: %(default)g)")
    g.add_argument("--no-sandbox", action="store_true",
                   help="run submissions in this process (trusted code only; for debugging)")
    g.add_argument("--hide", action="append", default=[], metavar="PATH",
                   help="a file or folder the submissions may not see, beyond the course's solutions/, .git, "
                        "*.db, --out and --submissions (e.g. another copy of the course); repeatable")
    _add_instructor_options(g)
    g.set_defaults(func=_grade)

    rp = sub.add_parser("report", help="rebuild grades.csv, feedback, report.html and lms_grades.csv from OUT/results "
                                       "(e.g. after shards); optionally write the gradebook")
    rp.add_argument("--out", required=True, help="the folder `grade --out` wrote")
    rp.add_argument("--stem", default=None, help="only this assignment's feedback and gradebook (default: all)")
    rp.add_argument("--submissions", default=None, help="the submissions folder (needed with --gradebook)")
    _add_instructor_options(rp)
    rp.set_defaults(func=_report)

    r = sub.add_parser("release", help="regenerate exercises/ from solutions/ with nbgrader")
    r.add_argument("stems", nargs="*", help="chapters to release (default: all)")
    r.set_defaults(func=_release)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
