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
                          jobs=args.jobs, shard=args.shard, students=args.student or None,
                          sandboxed=not args.no_sandbox, limits=limits, resume=args.resume,
                          keep=False)  # read back from OUT one at a time
    # (grade_class prints the summary: each status, the time taken, the slowest submissions)
    print(f"results in {Path(args.out) / 'results' / args.stem}")
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
    """The gradebook if asked; then the settled scores (scores.py) of every result in OUT, and from
    them grades.csv, the feedback for `results`, the class report and the LMS files."""
    from autograder.class_report import write_report
    from autograder.course_config import CourseConfig, CourseConfigError
    from autograder.feedback import write_all_feedback
    from autograder.lms import MappingError, write_lms_files
    from autograder.results import load_summaries, write_grades_csv
    from autograder.scores import settle

    out = Path(args.out)
    course = Path(args.course) if args.course else None
    if course is None:
        from autograder.course import course_root

        course = course_root()
    try:
        config = CourseConfig.load(course)
        db_url = _write_gradebook(args, results, course, config) if args.gradebook else None
        standings = settle(load_summaries(out), config, db_url)
        write_grades_csv(out, standings)
        n = write_all_feedback(out, results, standings)
        if n < len(results):  # a student whose feedback failed is now a grader error: every file says so
            standings = settle(load_summaries(out), config, db_url)
            write_grades_csv(out, standings)
        lms = write_lms_files(out, standings, config)
    except (CourseConfigError, MappingError, _GradebookFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"grades {out / 'grades.csv'}; feedback for {_plural(n, 'student')} in {out / 'feedback'}; "
          f"class report {write_report(out, standings)}")
    print(f"LMS: {lms['canvas']} (Canvas), {lms['moodle']} (Moodle), {lms['report']} (statuses, late penalties)")
    if lms["unmapped"]:
        print(f"warning: the student-id mapping file has no row for {', '.join(lms['unmapped'])}: "
              "their LMS id is empty; add them and run `python -m autograder report`", file=sys.stderr)
    return 0


class _GradebookFailed(Exception):
    pass


def _write_gradebook(args, results, course: Path, config) -> str:
    from autograder.gradebook import GradebookError, resolve_db_url, write_gradebook

    db_url = resolve_db_url(args.gradebook, course)
    try:
        counts = write_gradebook([config.adjust(r) for r in results], db_url=db_url, course=course,
                                 submissions=Path(args.submissions) if args.submissions else None, config=config)
    except GradebookError as exc:
        raise _GradebookFailed(f"gradebook not written: {exc}") from None
    notebooks = (f"autograded notebooks in {counts['autograded']}" if args.submissions
                 else "scores only (no --submissions: the autograded notebooks stay as they were)")
    print(f"gradebook {db_url}: {counts['grades']} grades of {_plural(len(results), 'submission')} "
          f"({counts['students_added']} students and {counts['submissions_added']} submissions added); {notebooks}")
    return db_url


def _plural(n: int, word: str) -> str:
    from autograder.progress import plural

    return plural(n, word)


def _report(args) -> int:
    from autograder.results import ResultFiles

    results = ResultFiles(Path(args.out), args.stem)  # read one at a time: memory flat in the class size
    if not results:
        raise SystemExit(f"no results under {Path(args.out) / 'results'}: run `python -m autograder grade` first")
    return _instructor_outputs(args, results)


def _publish(args) -> int:
    from autograder.publish import PublishError, publish

    try:
        summary = publish(Path(args.dest), html=Path(args.html) if args.html else None, repository=args.repository)
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


def _add_instructor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gradebook", default=None, metavar="DB",
                   help="also write the scores into nbgrader's gradebook (a file, a database URL, or `auto`: "
                        "the course's nbgrader_config.py db_url), with the autograded notebooks for formgrader "
                        "and `nbgrader generate_feedback`; then every file takes its scores from the gradebook, "
                        "manual scores and late penalties included, as `nbgrader export` does")
    p.add_argument("--course", default=None,
                   help="the nbgrader course folder, whose nbgrader_config.py holds the gradebook, the due dates, "
                        "the late penalty and the checks dropped or re-weighted (default: this course's root)")


def _release(args) -> int:
    from autograder.release import release

    for stem in release(args.stems or None):
        print(f"released exercises/{stem}/{stem}.ipynb")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grade", help="grade every DIR/<student_id>/<stem>/*.ipynb",
                       description="Grade a class. Each submission runs in its own limited process: a cell "
                                   "that runs past --cell-timeout and a check past --check-timeout are stopped "
                                   "and reported (status timed-out), so one submission takes at most about "
                                   "(cells x cell timeout + checks x check timeout). Progress goes to stderr: "
                                   "a bar on a terminal, a line at every tenth of the class and every 30 s "
                                   "elsewhere (a CI log, nohup), submissions slower than 20 s named, and a "
                                   "summary at the end.")
    g.add_argument("stem", help="the chapter, e.g. losses")
    g.add_argument("--submissions", required=True, help="folder with one sub-folder per student (nbgrader layout)")
    g.add_argument("--out", required=True, help="where grades.csv and results/ are written")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    g.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: number of cores)")
    g.add_argument("--shard", default=None, help="i/n: grade only every n-th student from the i-th (0-based); "
                   "shards writing to the same --out merge")
    g.add_argument("--student", action="append", default=[], metavar="ID",
                   help="grade only this student (repeatable): a regrade of one submission; the others' "
                        "results stay, and every class-wide file is rebuilt")
    from autograder.sandbox import Limits

    g.add_argument("--cell-timeout", type=float, default=Limits.cell_timeout,
                   help="wall-clock seconds for one notebook cell; a cell past it is stopped and the notebook "
                        "graded without it (default: %(default)g, nbgrader's own cell timeout)")
    g.add_argument("--check-timeout", type=float, default=Limits.check_timeout,
                   help="wall-clock seconds for all cases of one check; past it, the check's remaining cases "
                        "fail (default: %(default)g; the reference answers every check in well under 1 s)")
    g.add_argument("--resume", action="store_true",
                   help="keep the results of students already graded from the same notebook and checks (an "
                        "interrupted run of a large class goes on where it stopped); grader errors are graded again")
    g.add_argument("--no-sandbox", action="store_true",
                   help="run submissions in this process (trusted code only; for debugging)")
    g.add_argument("--hide", action="append", default=[], metavar="PATH",
                   help="a file or folder the submissions may not see, beyond the course's solutions/, .git, "
                        "*.db, --out and --submissions (e.g. another copy of the course); repeatable")
    _add_instructor_options(g)
    g.set_defaults(func=_grade)

    rp = sub.add_parser("report", help="rebuild grades.csv, the feedback, report.html and the LMS files from "
                                       "OUT/results (after shards, a manual score in formgrader, a due date, a "
                                       "check dropped or re-weighted); optionally write the gradebook")
    rp.add_argument("--out", required=True, help="the folder `grade --out` wrote")
    rp.add_argument("--stem", default=None, help="only this assignment's feedback and gradebook (default: all)")
    rp.add_argument("--submissions", default=None,
                    help="the submissions folder: with --gradebook, the autograded notebooks are written again "
                         "from it (without it, only the gradebook's scores are updated)")
    _add_instructor_options(rp)
    rp.set_defaults(func=_report)

    r = sub.add_parser("release", help="regenerate exercises/ from solutions/ with nbgrader")
    r.add_argument("stems", nargs="*", help="chapters to release (default: all)")
    r.set_defaults(func=_release)

    pb = sub.add_parser("publish", help="write what students get (the built book and the released notebooks) "
                                        "into DEST, the public student repository; refuses anything secret")
    pb.add_argument("dest", help="the folder to fill (its previous content, .git aside, is replaced)")
    pb.add_argument("--html", default=None, help="the built book (default: _build/html; `make book` first)")
    pb.add_argument("--repository", default=None, metavar="URL",
                    help="the student repository (https://github.com/ORG/REPO): refuse unless every launch "
                         "button opens a notebook there")
    pb.set_defaults(func=_publish)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
