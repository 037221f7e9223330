"""Grade one submission, then a class.

The trusted side (`Grader`) loads the checks and the reference once, makes
every case's inputs, computes the reference answers and the known mistakes'
answers once per run, and decides every case. The student's code runs behind
an executor: `InProcess` (nbgrader's kernel, the tests) or
`sandbox.SandboxedSubmission` (the class runner). Both hand back the same
wire format, so both give the same score.
"""
from __future__ import annotations

import inspect
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from autograder.checks import Case, Check, load_checks
from autograder.execute import run_cell
from autograder.compare import CaseVerdict, decide_case
from autograder.probes import from_bytes, run_probe, to_bytes
from autograder.course import source_notebook
from autograder.notebook import locked_cells, read_cells, restore_locked, structure_problems
from autograder.reference import check_points, reference_namespace, visible_tests
from autograder.results import CheckResult, SubmissionResult, score_of, write_grades_csv, write_result


def pin_torch_flags() -> None:
    """Global torch state that grading pins (parent) and resets (child, before each case).

    Cheap when nothing changed (it runs before every case): a flag is set only
    when it differs, and the seed resets the CPU generator (and CUDA's, once
    CUDA is up) rather than calling torch.manual_seed.
    """
    b = torch.backends
    if b.cuda.matmul.allow_tf32:
        b.cuda.matmul.allow_tf32 = False
    if b.cudnn.allow_tf32:
        b.cudnn.allow_tf32 = False
    if b.cudnn.benchmark:
        b.cudnn.benchmark = False
    if not b.cudnn.deterministic:
        b.cudnn.deterministic = True
    if torch.get_default_dtype() != torch.float32:
        torch.set_default_dtype(torch.float32)
    if hasattr(torch, "set_float32_matmul_precision"):  # its getter raises once old and new APIs were mixed
        torch.set_float32_matmul_precision("highest")
    if torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(False)
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
    if hasattr(torch, "get_default_device") and torch.get_default_device().type != "cpu":
        torch.set_default_device(None)
    torch.set_flush_denormal(False)
    torch.default_generator.manual_seed(0)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(0)
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


_VISIBLE_LOCK = threading.Lock()


def _names(source: str) -> set[str]:
    """Every global name a cell's code (nested functions and comprehensions included) uses."""
    from autograder.execute import to_python

    try:
        code = compile(to_python(source), "<visible>", "exec")
    except SyntaxError:
        return set()
    found, todo = set(), [code]
    while todo:
        c = todo.pop()
        found.update(c.co_names)
        todo.extend(k for k in c.co_consts if hasattr(k, "co_names"))
    return found


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    return device


class Executor(Protocol):
    def answer(self, check: Check, cases: list[Case]) -> list[dict]: ...

    # grade_id -> error of the check cell's visible tests (absent: they passed)
    visible_failures: dict[str, str]


def missing_answer(target: str) -> dict:
    return {"values": {}, "devices": {}, "forbidden": [], "stdout": "",
            "error": f"NameError: {target} is not defined in your notebook "
                     "(was its cell deleted, renamed, or did it raise an error?)"}


class InProcess:
    """Runs the probes in this process, on `namespace` (a kernel's globals).

    Not a sandbox: the student's code shares the process. Answers still go
    through the wire format, so the scores equal the runner's.
    """

    def __init__(self, namespace: dict):
        self.namespace = namespace
        self.visible_failures: dict[str, str] = {}

    def answer(self, check: Check, cases: list[Case]) -> list[dict]:
        impl = self.namespace.get(check.target)
        if impl is None:
            return [missing_answer(check.target) for _ in cases]
        out = []
        for case in cases:
            pin_torch_flags()
            out.append(from_bytes(to_bytes(run_probe(check, impl, case))))
        return out


@dataclass
class _Prepared:
    check: Check
    cases: list[Case]
    reference: list[dict]
    mistakes: list[list]  # per case: [(Mistake, answer)]
    max_points: float


class Grader:
    """Everything trusted about one chapter on one device, computed once."""

    def __init__(self, stem: str, *, device: str = "cpu"):
        pin_torch_flags()
        self.stem = stem
        self.device = resolve_device(device)
        self.checks = load_checks(stem)
        points = check_points(stem)
        missing = [c.grade_id for c in self.checks.values() if c.grade_id not in points]
        extra = [g for g in points if g.removeprefix("check_") not in self.checks]
        if missing or extra:
            raise ValueError(f"{stem}: check cells and checks disagree: no cell for {missing}, "
                             f"no check for {extra}")
        ns = reference_namespace(stem)
        self.visible = visible_tests(stem)
        self.source_cells = read_cells(source_notebook(stem))
        # Visible tests the grader runs itself, the graded functions called in the sandbox:
        # those that name no graded class (a class cannot be called across the boundary).
        self._reference = ns
        self.function_targets = sorted(c.target for c in self.checks.values() if inspect.isfunction(ns[c.target]))
        classes = {c.target for c in self.checks.values()} - set(self.function_targets)
        self.visible_here = {g for g, cell in self.visible.items() if not (_names(cell.source) & classes)}
        self.prepared: dict[str, _Prepared] = {}
        for name, check in self.checks.items():
            impl = ns[check.target]
            cases, refs, mistakes = [], [], []
            for case in check.cases(device=self.device):
                ref = run_probe(check, impl, case.upcast())
                if ref["error"]:
                    if case.shape_only:
                        continue  # the reference itself cannot run on meta: no meta case here
                    raise RuntimeError(f"reference {check.target} fails on {case.label}: {ref['error']}")
                cases.append(case)
                refs.append(ref)
                mistakes.append([(m, run_probe(check, m.impl, case.upcast())) for m in check.mistakes])
            self.prepared[name] = _Prepared(check, cases, refs, mistakes, points[check.grade_id])

    @property
    def max_score(self) -> float:
        return sum(p.max_points for p in self.prepared.values())

    def decide(self, name: str, answers: list[dict]) -> CheckResult:
        p = self.prepared[name]
        verdicts: list[CaseVerdict] = []
        for case, ref, mistakes, ans in zip(p.cases, p.reference, p.mistakes, answers):
            verdicts.append(decide_case(case, ans, ref, mistakes))
        passed = sum(v.passed for v in verdicts)
        total = len(p.cases)
        return CheckResult(name, p.check.grade_id, score_of(passed, total, p.max_points),
                           p.max_points, passed, total, verdicts)

    def grade_check(self, name: str, executor: Executor) -> CheckResult:
        p = self.prepared[name]
        result = self.decide(name, executor.answer(p.check, p.cases))
        failure = getattr(executor, "visible_failures", {}).get(p.check.grade_id)
        if failure:
            # As under nbgrader: a check cell whose visible tests raise scores 0.
            result.points = 0.0
            result.note = f"the visible tests in this check's cell failed: {failure}"
        return result

    def run_visible_tests(self, sub) -> None:
        """The visible tests of each check cell (as nbgrader, a check whose visible tests
        raise scores 0), decided here: the test code runs in this process with the source's
        helpers and torch, and only the graded functions run in the sandbox (`sub.call`).
        A test that needs to pass something else across (a module) runs in the child."""
        from autograder.sandbox import RemoteFunction, Unproxyable

        for grade_id, cell in self.visible.items():
            if grade_id not in self.visible_here:
                continue
            ns = dict(self._reference)
            ns.update({t: RemoteFunction(sub, t) for t in self.function_targets})
            with _VISIBLE_LOCK:  # the test seeds and draws from torch's global generator
                pin_torch_flags()
                outcome = run_cell(cell, ns)
                pin_torch_flags()
            if outcome.ok:
                continue
            if outcome.error.startswith(Unproxyable.__name__):
                sub.visible_in_child(grade_id, cell)
            else:
                sub.visible_failures[grade_id] = outcome.error.replace("RemoteError", "your code raised", 1)

    def grade(self, executor: Executor) -> list[CheckResult]:
        if hasattr(executor, "prefetch"):  # the sandbox computes the answers while this decides
            executor.prefetch([p.check for p in self.prepared.values()])
        return [self.grade_check(name, executor) for name in self.prepared]


def find_notebook(folder: Path, stem: str) -> tuple[Path | None, list[str]]:
    """The notebook to grade in a student's assignment folder, and what to report."""
    problems: list[str] = []
    if not folder.is_dir():
        return None, [f"no {stem}/ folder submitted"]
    expected = folder / f"{stem}.ipynb"
    notebooks = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    others = [p.name for p in notebooks if p != expected]
    if expected.is_file():
        if others:
            problems.append(f"graded {expected.name}; ignored other notebooks: {', '.join(others)}")
        return expected, problems
    if not notebooks:
        return None, [f"no notebook in {stem}/ (expected {stem}.ipynb)"]
    chosen = max(notebooks, key=lambda p: (p.stat().st_mtime, p.name))
    problems.append(f"no {stem}.ipynb; graded {chosen.name} instead (the newest notebook)"
                    + (f"; ignored: {', '.join(n for n in others if n != chosen.name)}" if len(others) > 1 else ""))
    return chosen, problems


def grade_submission(grader: Grader, student_id: str, folder: Path, *, sandboxed: bool = True,
                     limits=None, zygote=None) -> SubmissionResult:
    """Grade one student's folder. Sandboxed, the children come from `zygote`
    (one per run, see `grade_class`); without one, a zygote is started for
    this submission alone (a second of start-up)."""
    from autograder.notebook import NotebookError

    notebook, problems = find_notebook(folder, grader.stem)
    result = SubmissionResult(student_id, grader.stem, notebook.name if notebook else None,
                              problems=problems, max_score=grader.max_score)
    if notebook is None:
        result.status = "missing"
    else:
        try:
            cells = read_cells(notebook)
        except NotebookError as exc:
            result.status = "unreadable"
            result.problems.append(str(exc))
            cells = None
        if cells is not None:
            result.problems.extend(structure_problems(cells, grader.source_cells))
            cells, restored = restore_locked(cells, grader.source_cells)
            result.problems.extend(restored)
            if sandboxed:
                from autograder.sandbox import SandboxedSubmission

                own = zygote is None
                if own:
                    zygote = start_zygote(grader, limits=limits, hide=[str(folder)])
                try:
                    in_child = {g: c for g, c in grader.visible.items() if g not in grader.visible_here}
                    with SandboxedSubmission(zygote, cells, check_ids={c.grade_id for c in grader.checks.values()},
                                             visible=in_child, limits=limits) as sub:
                        grader.run_visible_tests(sub)
                        result.checks = grader.grade(sub)
                        result.problems.extend(sub.problems)
                finally:
                    if own:
                        zygote.close()
            else:
                from autograder.execute import new_namespace, run_cell
                from autograder.notebook import code_to_run

                ns = new_namespace()
                for cell in code_to_run(cells, {c.grade_id for c in grader.checks.values()}):
                    outcome = run_cell(cell, ns)
                    if not outcome.ok:
                        result.problems.append(f"cell {cell.number} raised {outcome.error}")
                executor = InProcess(ns)
                for grade_id, cell in grader.visible.items():
                    outcome = run_cell(cell, ns)
                    if not outcome.ok:
                        executor.visible_failures[grade_id] = outcome.error
                result.checks = grader.grade(executor)
            return result
    # Nothing to run: every check scores 0, and says why.
    why = result.problems[-1]
    result.checks = [grader.decide(name, [{"values": {}, "devices": {}, "forbidden": [], "stdout": "",
                                           "error": why} for _ in p.cases])
                     for name, p in grader.prepared.items()]
    return result


def list_students(submissions: Path) -> list[str]:
    return sorted(p.name for p in Path(submissions).iterdir() if p.is_dir() and not p.name.startswith("."))


def parse_shard(shard: str | None) -> tuple[int, int]:
    if not shard:
        return 0, 1
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise SystemExit(f"--shard takes i/n with 0 <= i < n, got {shard!r}") from None
    if not 0 <= i < n:
        raise SystemExit(f"--shard takes i/n with 0 <= i < n, got {shard!r}")
    return i, n


def start_zygote(grader: Grader | None, *, stem: str | None = None, device: str = "cpu", limits=None,
                 hide=(), zygote=None):
    """Start the sandbox's zygote (it imports torch while the grader loads the
    references), or, given `zygote`, hand it the grader's inputs and wait for it."""
    from autograder.course import course_root
    from autograder.sandbox import Limits, Zygote, secret_paths

    if zygote is None:
        limits = limits or Limits()
        try:
            root = course_root()
        except FileNotFoundError:
            root = None
        zygote = Zygote(stem or grader.stem, device=device if grader is None else grader.device, limits=limits,
                        hide=secret_paths(root, *hide, *limits.hide))
        if grader is None:
            return zygote
    return zygote.start({name: p.cases for name, p in grader.prepared.items()},
                        helpers=[c.source for c in locked_cells(grader.source_cells).values()])


def grade_class(stem: str, *, submissions: Path, out: Path, device: str = "auto", jobs: int | None = None,
                shard: str | None = None, students: list[str] | None = None, sandboxed: bool = True,
                progress: bool | None = None, limits=None) -> list[SubmissionResult]:
    """Grade every DIR/<student_id>/<stem>/ notebook; write OUT/results and OUT/grades.csv."""
    i, n = parse_shard(shard)
    everyone = students if students is not None else list_students(submissions)
    mine = [s for k, s in enumerate(sorted(everyone)) if k % n == i]
    zygote = None
    if sandboxed and mine:  # starts importing torch while this process builds the grader
        Path(out).mkdir(parents=True, exist_ok=True)
        zygote = start_zygote(None, stem=stem, device=resolve_device(device), limits=limits,
                              hide=[str(out), str(submissions)])
    try:
        grader = Grader(stem, device=device)
        if zygote is not None:
            start_zygote(grader, zygote=zygote)
        jobs = max(1, jobs or os.cpu_count() or 1)
        show = sys.stderr.isatty() if progress is None else progress
        results: list[SubmissionResult] = []
        start = time.monotonic()

        def one(student: str) -> SubmissionResult:
            res = grade_submission(grader, student, Path(submissions) / student / stem, sandboxed=sandboxed,
                                   limits=limits, zygote=zygote)
            write_result(out, res)
            return res

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for k, res in enumerate(pool.map(one, mine), 1):
                results.append(res)
                if show:
                    bar = "#" * (30 * k // max(len(mine), 1))
                    sys.stderr.write(f"\r{stem} [{bar:<30}] {k}/{len(mine)} {time.monotonic() - start:5.1f}s")
                    sys.stderr.flush()
        if show:
            sys.stderr.write("\n")
    finally:
        if zygote is not None:
            zygote.close()
    write_grades_csv(out)
    return results
