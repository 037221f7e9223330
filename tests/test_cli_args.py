"""Every command checks its arguments before anything runs: a command line that cannot work stops with
exit status 2 and one line on stderr that names the problem and what would be valid. Nothing is
graded, and nothing is written under --out."""
from __future__ import annotations

import json

import pytest

from autograder.cli import main
from autograder.course import release_notebook, stems


@pytest.fixture
def course(tmp_path):
    subs = tmp_path / "submitted"
    for student in ("alice", "bob"):
        (subs / student / "losses").mkdir(parents=True)
        (subs / student / "losses" / "losses.ipynb").write_text(release_notebook("losses").read_text())
    (tmp_path / "empty").mkdir()
    (tmp_path / "nobody_home" / "alice").mkdir(parents=True)  # a student folder, no chapter in it
    (tmp_path / "a_file").write_text("")
    return tmp_path


def refused(capsys, argv: list[str], *wanted: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback, no usage block
    for w in wanted:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in err
    return lines[0]


def grade(course, *more: str, subs: str = "submitted") -> list[str]:
    """`grade` with the chapters and options of `more` (chapters first), on the fixture's folders."""
    k = next((i for i, w in enumerate(more) if w.startswith("--")), len(more))
    return ["grade", *more[:k], "--submissions", str(course / subs), "--out", str(course / "out"), *more[k:]]


CASES = {
    "unknown chapter": (["nope"], ["unknown chapter 'nope'", *stems()]),
    "unknown among several": (["losses", "nope", "tensorz"], ["'nope', 'tensorz'", "losses"]),
    "no chapter": ([], ["CHAPTER"]),
    "jobs 0": (["losses", "--jobs", "0"], ["--jobs", "1 or more"]),
    "jobs -1": (["losses", "--jobs", "-1"], ["--jobs", "1 or more"]),
    "jobs not a number": (["losses", "--jobs", "many"], ["--jobs", "'many'"]),
    "cell timeout 0": (["losses", "--cell-timeout", "0"], ["--cell-timeout", "above 0"]),
    "cell timeout negative": (["losses", "--cell-timeout", "-5"], ["--cell-timeout", "above 0"]),
    "cell timeout nan": (["losses", "--cell-timeout", "nan"], ["--cell-timeout", "above 0"]),
    "check timeout 0": (["losses", "--check-timeout", "0"], ["--check-timeout", "above 0"]),
    "check timeout text": (["losses", "--check-timeout", "soon"], ["--check-timeout", "'soon'"]),
    "shard out of range": (["losses", "--shard", "2/2"], ["--shard", "0 <= i < n"]),
    "shard not i/n": (["losses", "--shard", "half"], ["--shard", "0 <= i < n"]),
    "device unknown": (["losses", "--device", "gpu"], ["--device", "auto, cpu, cuda"]),
    "student nobody": (["losses", "--student", "nobody"], ["--student nobody", "alice, bob"]),
    "one unknown student among known": (["losses", "--student", "alice", "--student", "zoe"],
                                        ["--student zoe", "alice, bob"]),
    "nobody submitted the chapter": (["tensors"], ["nobody submitted tensors", "tensors/"]),
    "course folder missing": (["losses", "--course", "/no/such/course"],
                              ["--course /no/such/course", "no such folder"]),
    "gradebook folder missing": (["losses", "--gradebook", "/no/such/dir/gradebook.db"], ["/no/such/dir"]),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_grade_refuses_a_command_line_that_cannot_work(course, capsys, case):
    argv, wanted = CASES[case]
    refused(capsys, grade(course, *argv), *wanted)
    assert not (course / "out").exists(), "something was written before the arguments were checked"


def test_a_missing_submissions_folder_is_named(course, capsys):
    refused(capsys, grade(course, "losses", subs="nowhere"), f"--submissions {course / 'nowhere'}", "no such folder")
    refused(capsys, grade(course, "losses", subs="a_file"), "it is a file")


def test_an_empty_submissions_folder_says_so(course, capsys):
    refused(capsys, grade(course, "losses", subs="empty"), "holds no student folder", "<student_id>/<chapter>")
    refused(capsys, grade(course, "all", subs="nobody_home"), "no student folder holds a chapter's folder")
    refused(capsys, grade(course, "losses", subs="nobody_home"), "nobody submitted losses")


def test_out_must_be_a_folder(course, capsys):
    refused(capsys, ["grade", "losses", "--submissions", str(course / "submitted"), "--out", str(course / "a_file")],
            "--out", "a file, not a folder")


def test_a_student_of_the_gradebook_can_be_regraded_without_a_folder(course, capsys):
    """--student names a student of the submissions folder or of the gradebook (a regrade of one who
    never submitted records them as missing): only a name in neither is refused."""
    from autograder.cli import _check_grade, build_parser
    from autograder.gradebook import open_gradebook

    db = course / "gradebook.db"
    with open_gradebook(f"sqlite:///{db}") as gb:
        gb.add_student("carol")
    args = build_parser().parse_args(grade(course, "losses", "--student", "carol", "--gradebook", str(db)))
    _check_grade(args.parser, args)  # accepted
    refused(capsys, grade(course, "losses", "--student", "dave", "--gradebook", str(db)), "nor in the gradebook")


def test_all_is_every_chapter_someone_submitted(course):
    from autograder.cli import _check_grade, build_parser

    (course / "submitted" / "bob" / "tensors").mkdir()
    args = build_parser().parse_args(grade(course, "all"))
    _check_grade(args.parser, args)
    assert args.stems == ["losses", "tensors"]
    args = build_parser().parse_args(grade(course, "tensors", "losses", "tensors"))
    _check_grade(args.parser, args)
    assert args.stems == ["tensors", "losses"]  # as asked, each once


def test_report_refuses_a_folder_without_results(course, capsys):
    refused(capsys, ["report", "--out", str(course / "nowhere")], "--out", "no such folder")
    refused(capsys, ["report", "--out", str(course / "empty")], "no results under", "grade` first")
    (course / "out" / "results" / "losses").mkdir(parents=True)
    (course / "out" / "results" / "losses" / "alice.json").write_text(json.dumps({}))
    refused(capsys, ["report", "--out", str(course / "out"), "--stem", "tensors"], "--stem tensors", "losses")
    refused(capsys, ["report", "--out", str(course / "out"), "--submissions", str(course / "nowhere")],
            "--submissions", "no such folder")


def test_release_refuses_an_unknown_chapter(capsys):
    refused(capsys, ["release", "losses", "nope"], "unknown chapter 'nope'", "losses, network_classes")


def test_publish_refuses_a_missing_book(course, capsys):
    refused(capsys, ["publish", str(course / "public"), "--html", str(course / "no_book")], "--html", "no such folder")
