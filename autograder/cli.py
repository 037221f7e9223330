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
    results = _Several()
    for stem in args.stems:  # checked by _check_grade: known chapters, each submitted by someone
        part = grade_class(stem, submissions=Path(args.submissions), out=Path(args.out), device=args.device,
                           jobs=args.jobs, shard=args.shard, students=args.student or None,
                           sandboxed=not args.no_sandbox, limits=limits, resume=args.resume,
                           keep=False)  # read back from OUT one at a time
        # (grade_class prints the summary: each status, the time taken, the slowest submissions)
        print(f"results in {Path(args.out) / 'results' / stem}")
        results.parts.append(part)
    code = _instructor_outputs(args, results)
    return _grader_errors(results) or code


class _Several:
    """The results of several assignments graded in one run, read back one at a time."""

    def __init__(self):
        self.parts: list = []

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __iter__(self):
        for part in self.parts:
            yield from part


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
    from autograder.term import write_term

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
        term = write_term(out, standings, config)
    except (CourseConfigError, MappingError, _GradebookFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"grades {out / 'grades.csv'}; feedback for {_plural(n, 'student')} in {out / 'feedback'}; "
          f"class report {write_report(out, standings, Path(args.submissions) if args.submissions else None)}")
    print(f"LMS: {lms['canvas']} (Canvas), {lms['moodle']} (Moodle), {lms['report']} (statuses, late penalties)")
    print(f"term summary: {term['html']}, {term['csv']} (every assignment in {out}, each student's total)")
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
          f"({counts['students_added']} students and {counts['submissions_added']} submissions added"
          + (f", {counts['submissions_removed']} no longer submitted removed" if counts["submissions_removed"] else "")
          + f"); {notebooks}")
    return db_url


def _plural(n: int, word: str) -> str:
    from autograder.progress import plural

    return plural(n, word)


def _report(args) -> int:
    from autograder.results import ResultFiles

    results = ResultFiles(Path(args.out), args.stem)  # read one at a time: memory flat in the class size
    return _instructor_outputs(args, results)  # (_check_report: there are results)


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

    for stem in release(args.stems or None):  # (_check_release: known chapters)
        print(f"released exercises/{stem}/{stem}.ipynb")
    return 0


# -- the arguments, checked before anything runs -------------------------------------------------
# A command line that cannot work stops at once with exit status 2 and one line on stderr that names
# the problem and what would be valid (the chapters there are, the folder looked in, the students).

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(text: str) -> int:
    """--jobs: a whole number, 1 or more."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give 1 or more") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: give 1 or more submissions at once")
    return n


def _seconds(text: str) -> float:
    """A time limit: a number of seconds above 0."""
    import math

    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(x) or x <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds above 0 (e.g. 30)")
    return x


def _shard(text: str) -> str:
    """--shard i/n with 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give i/n with 0 <= i < n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{text!r}: give i/n with 0 <= i < n, e.g. 0/4")
    return text


def _device(text: str) -> str:
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r}: give auto, cpu, cuda or cuda:N")
    return text


def _listing(names, most: int = 12) -> str:
    names = list(names)
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _folder(parser, option: str, value) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if not path.is_dir():
        parser.error(f"{option} {value}: no such folder" + (" (it is a file)" if path.exists() else
                                                            f" (looked in {path.resolve().parent})"))
    return path


def _chapters(parser) -> list[str]:
    from autograder.course import course_root, stems

    try:
        return stems(course_root())
    except FileNotFoundError as exc:
        parser.error(str(exc))


def _known_chapters(parser, asked: list[str], chapters: list[str], *, allowed_all: bool) -> None:
    unknown = [s for s in asked if s not in chapters and not (allowed_all and s == "all")]
    if unknown:
        parser.error(f"unknown chapter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                     f"the chapters are {', '.join(chapters)}" + (" (or all)" if allowed_all else ""))


def _gradebook_students(args) -> set[str]:
    """The gradebook's students when it exists already (never creates one)."""
    from autograder.course import course_root
    from autograder.gradebook import open_gradebook, resolve_db_url

    if not args.gradebook:
        return set()
    try:
        url = resolve_db_url(args.gradebook, Path(args.course) if args.course else course_root())
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
            return set()
        with open_gradebook(url) as gb:
            return {s.id for s in gb.students}
    except Exception:  # noqa: BLE001 - an unreadable gradebook is reported when it is written
        return set()


def _check_common(parser, args) -> None:
    _folder(parser, "--course", args.course)
    if getattr(args, "submissions", None) is not None:
        _folder(parser, "--submissions", args.submissions)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {args.out}: a file, not a folder")
    gb = args.gradebook
    if gb and gb != "auto" and "://" not in gb and not Path(gb).resolve().parent.is_dir():
        parser.error(f"--gradebook {gb}: no folder {Path(gb).resolve().parent} to hold it")


def _check_grade(parser, args) -> None:
    from autograder.grading import list_students

    _check_common(parser, args)
    chapters = _chapters(parser)
    _known_chapters(parser, args.stems, chapters, allowed_all=True)
    subs = Path(args.submissions)
    students = list_students(subs)
    if not students:
        parser.error(f"--submissions {args.submissions}: the folder holds no student folder "
                     f"(expected {subs}/<student_id>/<chapter>/<chapter>.ipynb)")
    submitted = {stem: [s for s in students if (subs / s / stem).is_dir()] for stem in chapters}
    if "all" in args.stems:
        args.stems = [stem for stem in chapters if submitted[stem]]
        if not args.stems:
            parser.error(f"--submissions {args.submissions}: no student folder holds a chapter's folder "
                         f"(expected {subs}/<student_id>/<chapter>/; the chapters are {', '.join(chapters)})")
    args.stems = list(dict.fromkeys(args.stems))
    nobody = [stem for stem in args.stems if not submitted[stem]]
    if nobody:
        parser.error(f"nobody submitted {', '.join(nobody)}: no folder {subs}/<student_id>/{nobody[0]}/ "
                     f"({_plural(len(students), 'student folder')} there)")
    if args.student:
        unknown = [s for s in dict.fromkeys(args.student) if s not in students]
        unknown = [s for s in unknown if s not in _gradebook_students(args)] if unknown else []
        if unknown:
            parser.error(f"--student {', '.join(unknown)}: no such student in {subs}"
                         + (" nor in the gradebook" if args.gradebook else "")
                         + f"; the students are {_listing(students)}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: torch sees no CUDA device here; give cpu or auto")


def _check_report(parser, args) -> None:
    from autograder.results import graded_stems

    _check_common(parser, args)
    _folder(parser, "--out", args.out)
    graded = graded_stems(Path(args.out))
    if not graded:
        parser.error(f"--out {args.out}: no results under {Path(args.out) / 'results'}; "
                     "run `python -m autograder grade` first")
    if args.stem is not None and args.stem not in graded:
        parser.error(f"--stem {args.stem}: no results for it in {args.out}; graded there: {', '.join(graded)}")


def _check_release(parser, args) -> None:
    _known_chapters(parser, args.stems, _chapters(parser), allowed_all=False)


def _check_publish(parser, args) -> None:
    if args.html is not None:
        _folder(parser, "--html", args.html)
    dest = Path(args.dest)
    if dest.exists() and not dest.is_dir():
        parser.error(f"{args.dest}: a file, not a folder")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m autograder", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grade", help="grade every DIR/<student_id>/<stem>/*.ipynb",
                       description="Grade a class. Each submission runs in its own limited process: a cell "
                                   "that runs past --cell-timeout and a check past --check-timeout are stopped "
                                   "and reported (status timed-out), so one submission takes at most about "
                                   "(cells x cell timeout + checks x check timeout). Progress goes to stderr: "
                                   "a bar on a terminal, a line at every tenth of the class and every 30 s "
                                   "elsewhere (a CI log, nohup), submissions slower than 20 s named, and a "
                                   "summary at the end.")
    g.add_argument("stems", nargs="+", metavar="CHAPTER",
                   help="the chapter(s) to grade, e.g. losses, or `all`: every chapter someone submitted "
                        "(a folder SUBMISSIONS/<student_id>/<chapter>/)")
    g.add_argument("--submissions", required=True, help="folder with one sub-folder per student (nbgrader layout)")
    g.add_argument("--out", required=True, help="where grades.csv and results/ are written")
    g.add_argument("--device", type=_device, default="auto", help="auto (CUDA when present), cpu or cuda")
    g.add_argument("--jobs", type=_count, default=None,
                   help="submissions graded at once, 1 or more (default: number of cores)")
    g.add_argument("--shard", type=_shard, default=None,
                   help="i/n: grade only every n-th student from the i-th (0-based); "
                   "shards writing to the same --out merge")
    g.add_argument("--student", action="append", default=[], metavar="ID",
                   help="grade only this student (repeatable): a regrade of one submission; the others' "
                        "results stay, and every class-wide file is rebuilt")
    from autograder.sandbox import Limits

    g.add_argument("--cell-timeout", type=_seconds, default=Limits.cell_timeout,
                   help="wall-clock seconds for one notebook cell; a cell past it is stopped and the notebook "
                        "graded without it (default: %(default)g, nbgrader's own cell timeout)")
    g.add_argument("--check-timeout", type=_seconds, default=Limits.check_timeout,
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
    g.set_defaults(func=_grade, check=_check_grade, parser=g)

    rp = sub.add_parser("report", help="rebuild grades.csv, the feedback, report.html and the LMS files from "
                                       "OUT/results (after shards, a manual score in formgrader, a due date, a "
                                       "check dropped or re-weighted); optionally write the gradebook")
    rp.add_argument("--out", required=True, help="the folder `grade --out` wrote")
    rp.add_argument("--stem", default=None, help="only this assignment's feedback and gradebook (default: all)")
    rp.add_argument("--submissions", default=None,
                    help="the submissions folder: with --gradebook, the autograded notebooks are written again "
                         "from it (without it, only the gradebook's scores are updated)")
    _add_instructor_options(rp)
    rp.set_defaults(func=_report, check=_check_report, parser=rp)

    r = sub.add_parser("release", help="regenerate exercises/ from solutions/ with nbgrader")
    r.add_argument("stems", nargs="*", help="chapters to release (default: all)")
    r.set_defaults(func=_release, check=_check_release, parser=r)

    pb = sub.add_parser("publish", help="write what students get (the built book and the released notebooks) "
                                        "into DEST, the public student repository; refuses anything secret")
    pb.add_argument("dest", help="the folder to fill (its previous content, .git aside, is replaced)")
    pb.add_argument("--html", default=None, help="the built book (default: _build/html; `make book` first)")
    pb.add_argument("--repository", default=None, metavar="URL",
                    help="the student repository (https://github.com/ORG/REPO): refuse unless every launch "
                         "button opens a notebook there")
    pb.set_defaults(func=_publish, check=_check_publish, parser=pb)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.check(args.parser, args)  # exit status 2 and one line when it cannot work
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
