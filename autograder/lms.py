"""Grade files an LMS imports as they are, from the settled standings (scores.py).

OUT/canvas_grades.csv   Canvas: Grades > Import. Canvas's own gradebook CSV layout: the columns
                        Student, ID, SIS User ID, SIS Login ID, Section, then one column per
                        assignment named "Title (canvas assignment id)" (or "Title" alone, which
                        Canvas offers to create as a new assignment), and a second row
                        "Points Possible" with each assignment's maximum. Canvas matches a
                        student by ID, SIS User ID or SIS Login ID.
OUT/moodle_grades.csv   Moodle: Grades > Import > CSV file. Identifier columns ("ID number",
                        and "Email address" when the mapping file gives emails), then one
                        column per assignment named by its title; on import choose
                        "Identify user by: Map from ID number (or Email address) to ID number
                        (or Email address)" and map each column to its grade item. Moodle's CSV
                        import takes no maximum: a grade item's maximum is set in Moodle, and
                        lms_report.csv lists it.
Both end with a column "Term total (%)": each student's total over the term (term.py: the weighted
mean of the scores over their maxima, c.Autograder.weights). On import, map it to a grade item of
its own, or skip it where the LMS computes its own total.
OUT/lms_report.csv      the companion report: per student and assignment, the LMS identifier
                        used, the status, the raw score, the late penalty, the score and the
                        maximum, when it was submitted and how late, and which checks the
                        instructor dropped, re-weighted or scored by hand.

Student ids: nbgrader's ids are used as the LMS's (Canvas's SIS Login ID, Moodle's ID number)
unless the course's mapping file (`c.Autograder.lms_students`, a CSV with a `student_id` column and
any of name, canvas_id, sis_user_id, sis_login_id, section, email, idnumber) says otherwise.
A student on the gradebook with no submission gets 0, as `nbgrader export` gives; a student with no
result at all for an assignment gets an empty cell (Canvas and Moodle then leave that grade alone).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from autograder.results import atomic_write

MAPPING_COLUMNS = ("student_id", "name", "canvas_id", "sis_user_id", "sis_login_id", "section", "email",
                   "idnumber")


class MappingError(ValueError):
    """The student-id mapping file cannot be used; the message says why."""


def read_mapping(path: Path | None) -> dict[str, dict[str, str]]:
    """{nbgrader student id: {column: value}} from the mapping CSV (empty without one)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise MappingError(f"the student-id mapping file {path} does not exist (c.Autograder.lms_students)")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "student_id" not in reader.fieldnames:
            raise MappingError(f"{path} needs a student_id column (nbgrader's id); it has {reader.fieldnames}")
        unknown = sorted(set(reader.fieldnames) - set(MAPPING_COLUMNS))
        if unknown:
            raise MappingError(f"{path}: unknown columns {unknown}; known: {', '.join(MAPPING_COLUMNS)}")
        rows: dict[str, dict[str, str]] = {}
        for row in reader:
            sid = (row.get("student_id") or "").strip()
            if not sid:
                continue
            if sid in rows:
                raise MappingError(f"{path}: student_id {sid!r} appears twice")
            rows[sid] = {k: (v or "").strip() for k, v in row.items()}
    return rows


def _num(x: float) -> str:
    return f"{x:g}"


def _table(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _by_student(standings) -> tuple[list[str], dict[str, dict[str, object]]]:
    stems = sorted({s.assignment for s in standings})
    table: dict[str, dict[str, object]] = {}
    for s in standings:
        table.setdefault(s.student_id, {})[s.assignment] = s
    return stems, table


TOTAL = "Term total (%)"  # the last column of both files: term.py's weighted total of each student


def _totals(standings, config) -> dict[str, str]:
    from autograder.term import term_table

    return {r["student_id"]: _num(r["total_percent"]) for r in term_table(standings, config)[2]}


def canvas_csv(standings, config, mapping: dict[str, dict[str, str]]) -> str:
    stems, table = _by_student(standings)
    totals = _totals(standings, config)
    maxima = {stem: max(s.max_score for s in standings if s.assignment == stem) for stem in stems}

    def title(stem: str) -> str:
        cid = config.canvas_id(stem)
        return f"{config.lms_title(stem)} ({cid})" if cid else config.lms_title(stem)

    rows = [["Student", "ID", "SIS User ID", "SIS Login ID", "Section", *(title(s) for s in stems), TOTAL],
            ["    Points Possible", "", "", "", "", *(_num(maxima[s]) for s in stems), "100"]]
    for student in sorted(table):
        m = mapping.get(student, {})
        rows.append([m.get("name") or student, m.get("canvas_id", ""), m.get("sis_user_id", ""),
                     m.get("sis_login_id") or (student if not mapping else ""), m.get("section", ""),
                     *(_num(table[student][s].score) if s in table[student] else "" for s in stems),
                     totals[student]])
    return _table(rows)


def moodle_csv(standings, config, mapping: dict[str, dict[str, str]]) -> str:
    stems, table = _by_student(standings)
    totals = _totals(standings, config)
    emails = any(m.get("email") for m in mapping.values())
    rows = [["ID number", *(["Email address"] if emails else []), *(config.lms_title(s) for s in stems), TOTAL]]
    for student in sorted(table):
        m = mapping.get(student, {})
        rows.append([m.get("idnumber") or (student if not mapping else ""),
                     *([m.get("email", "")] if emails else []),
                     *(_num(table[student][s].score) if s in table[student] else "" for s in stems),
                     totals[student]])
    return _table(rows)


def report_csv(standings, mapping: dict[str, dict[str, str]]) -> str:
    rows = [["student_id", "lms_id", "assignment", "status", "raw_score", "late_penalty", "score", "max_score",
             "submitted", "duedate", "seconds_late", "changed_by_instructor"]]
    for s in sorted(standings, key=lambda s: (s.student_id, s.assignment)):
        m = mapping.get(s.student_id, {})
        lms_id = (m.get("sis_login_id") or m.get("idnumber") or m.get("email") or m.get("canvas_id")
                  or (s.student_id if not mapping else ""))
        changed = "; ".join(f"{c.name}: {c.adjusted}" for c in s.result.checks if c.adjusted)
        rows.append([s.student_id, lms_id, s.assignment, s.status, _num(s.raw_score), _num(s.late_penalty),
                     _num(s.score), _num(s.max_score),
                     f"{s.submitted:%Y-%m-%d %H:%M:%S} UTC" if s.submitted else "",
                     f"{s.duedate:%Y-%m-%d %H:%M:%S} UTC" if s.duedate else "",
                     f"{s.seconds_late:.0f}", changed])
    return _table(rows)


def write_lms_files(out: Path, standings, config) -> dict[str, object]:
    """OUT/canvas_grades.csv, moodle_grades.csv and lms_report.csv; returns their paths and the
    students the mapping file lacks (they are left without an LMS id: fix the file, run `report`)."""
    mapping = read_mapping(config.lms_students)
    out = Path(out)
    paths = {"canvas": out / "canvas_grades.csv", "moodle": out / "moodle_grades.csv",
             "report": out / "lms_report.csv"}
    atomic_write(paths["canvas"], canvas_csv(standings, config, mapping))
    atomic_write(paths["moodle"], moodle_csv(standings, config, mapping))
    atomic_write(paths["report"], report_csv(standings, mapping))
    unmapped = sorted({s.student_id for s in standings} - set(mapping)) if mapping else []
    return {**paths, "unmapped": unmapped}
