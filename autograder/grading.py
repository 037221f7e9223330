"""Grade one submission, then a class.

The trusted side (`Grader`) loads the checks and the reference once, makes
every case's inputs, computes the reference answers and the known mistakes'
answers once per run, and decides every case. One submission goes through
one pipeline (`grade_submission`): locate the notebook, read it, sanitize its
cells (locked cells restored, changes reported), execute it behind an
executor (autograder/executor.py: the sandbox's child or this process),
decide each check here, record the result. Every answer crosses the same
codec (autograder/answer.py) whichever executor made it, so both give the
same score.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from autograder.answer import Answer
from autograder.checks import Case, Check, load_checks
from autograder.compare import CaseVerdict, case_input_scale, decide_case, meta_inconclusive
from autograder.probes.core import UPSTREAM
from autograder.tolerance import tolerance
from autograder.probes.fake_cuda import NOT_RUN, SUFFIX as FAKE_SUFFIX
from autograder.course import course_root, source_notebook
from autograder.executor import Executor, InProcess
from autograder import __version__
from autograder.notebook import (NotebookError, ReadLimits, parse_cells, read_cells, read_regular_file,
                                 restore_locked, structure_problems)
from autograder.probes import run_probe
from autograder.problems import Problem
from autograder.reference import check_points, reference_namespace, visible_tests
from autograder.report import cell_roles
from autograder.progress import Progress
from autograder.results import (CheckResult, StoredResults, SubmissionResult, conclude, score_of, write_grades_csv,
                               write_result)
from autograder.source_scan import scan as scan_source
from autograder.sandbox import Limits, SandboxedSubmission, ZygoteHandle, secret_paths
from autograder.torchstate import pin_torch_flags

__all__ = ["Grader", "InProcess", "grade_class", "grade_submission", "pin_torch_flags"]

def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    return device


@dataclass
class _Prepared:
    check: Check
    cases: list[Case]
    reference: list[Answer]
    mistakes: list[list]  # per case: [(Mistake, Answer)]
    max_points: float
    bulk: _Bulk | None = None


MAX_VERDICTS = 50_000  # distinct (check, case, answer) verdicts kept for reuse


@dataclass
class _Bulk:
    """What a check's passing answers are compared against in one pass (`Grader._accepted`), made
    once a run: per case, each compared output's (key, shape, expected dtype, device) or None for a
    case decided one by one (a device-only, outcome or non-tensor case); every compared reference
    value flattened in float64, with the rtol and atol `compare_value` would use, side by side."""

    specs: list  # per case: [(key, shape, dtype, device)] or None
    parts: list  # per case: (want, rtol, atol) flat float64 tensors, or None
    want: torch.Tensor  # every eligible case's parts, concatenated
    rtol: torch.Tensor
    atol: torch.Tensor
    eligible: list[int]  # the cases with a spec


def _bulk(cases: list[Case], refs: list[Answer]) -> _Bulk:
    specs, parts = [], []
    for case, ref in zip(cases, refs):
        spec, wants, rtols, atols = [], [], [], []
        if case.shape_only or case.judge is not None or case.fake_cuda or ref.error:
            spec = None
        for key in (case.compare or tuple(ref.values)) if spec is not None else ():
            if key not in ref.values:
                continue  # compare_answers skips it too
            want = ref.values[key]
            if type(want) is not torch.Tensor or not want.is_floating_point():
                spec = None
                break
            dtype = case.dtype if case.dtype.is_floating_point else want.dtype
            finite = want[torch.isfinite(want)]
            scale = float(finite.abs().max()) if finite.numel() else 1.0
            upstream = max(UPSTREAM) if key.startswith("gradient") else 0.0
            rtol, atol = tolerance(dtype, numel=case.numel(), scale=scale, inputs=case_input_scale(case, upstream))
            flat = want.double().reshape(-1)
            spec.append((key, want.shape, dtype, ref.devices.get(key)))
            wants.append(flat)
            rtols.append(torch.full_like(flat, rtol))
            atols.append(torch.full_like(flat, atol))
        if spec:
            specs.append(spec)
            parts.append((torch.cat(wants), torch.cat(rtols), torch.cat(atols)))
        else:
            specs.append(None)
            parts.append(None)
    eligible = [k for k, sp in enumerate(specs) if sp is not None]
    cat = [torch.cat([parts[k][j] for k in eligible]) if eligible else torch.empty(0, dtype=torch.float64)
           for j in range(3)]
    return _Bulk(specs, parts, *cat, eligible)


def answer_digest(answer: Answer) -> bytes | None:
    """A digest of everything `decide_case` reads from an answer (its error, forbidden calls,
    devices and values: each tensor's dtype, shape and bytes), or None for a value it cannot
    digest exactly (then the case is decided afresh)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr((answer.error, list(answer.forbidden), sorted(answer.devices.items()))).encode())
    for key in sorted(answer.values):
        v = answer.values[key]
        if type(v) is torch.Tensor:
            if v.requires_grad or v.is_conj() or v.is_neg() or v.layout != torch.strided:
                return None
            h.update(repr((key, "tensor", str(v.dtype), tuple(v.shape))).encode())
            h.update(v.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif v is None or type(v) in (bool, int, float, str) or (
                type(v) is list and all(type(x) in (bool, int, float, str) for x in v)):
            h.update(repr((key, type(v).__name__, v)).encode())
        else:
            return None
    return h.digest()


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
        # The visible tests' role, decided once: advisory. They sit in read-only cells of their
        # own that no one grades, which the submission's cells run like any other; a check cell
        # holds only the hidden checks, so nothing a visible test does can gate or steer points
        # (in nbgrader's autograde as here). A check cell with visible code would be gated by
        # nbgrader alone: refused.
        gated = sorted(visible_tests(stem))
        if gated:
            raise ValueError(f"{stem}: the check cells {gated} hold visible tests: move them to a read-only "
                             "cell of their own before the check cell (docs/maintainers.md)")
        self.source_cells = read_cells(source_notebook(stem))
        self.source_digest = hashlib.sha256(source_notebook(stem).read_bytes()).hexdigest()
        self.prepared: dict[str, _Prepared] = {}
        self._verdicts: dict[tuple, CaseVerdict] = {}  # (check, case, answer digest) -> verdict
        for name, check in self.checks.items():
            impl = ns[check.target]
            cases, refs, mistakes = [], [], []
            for case in check.cases(device=self.device):
                ref = run_probe(check, impl, case.upcast())
                if ref["error"]:
                    if case.shape_only:
                        continue  # the reference itself cannot run on meta: no meta case here
                    raise RuntimeError(f"reference {check.target} fails on {case.label}: {ref['error']}")
                if case.fake_cuda and all(ref.values[k] == NOT_RUN for k in ref.values if k.endswith(FAKE_SUFFIX)):
                    continue  # the reference cannot run on the simulated device: no one can be judged there
                cases.append(case)
                refs.append(ref)
                mistakes.append([(m, run_probe(check, m.impl, case.upcast())) for m in check.mistakes])
            self.prepared[name] = _Prepared(check, cases, refs, mistakes, points[check.grade_id], _bulk(cases, refs))

    @property
    def max_score(self) -> float:
        return sum(p.max_points for p in self.prepared.values())

    def decide(self, name: str, answers: list[Answer]) -> CheckResult:
        p = self.prepared[name]
        verdicts: list[CaseVerdict] = []
        twin = answers[0] if answers else None  # the first case, of which the meta case is a copy on meta
        accepted = self._accepted(p, answers)
        for k, (case, ref, mistakes, ans) in enumerate(zip(p.cases, p.reference, p.mistakes, answers)):
            if k in accepted:
                verdicts.append(CaseVerdict(case.label, True))
                continue
            verdicts.append(meta_inconclusive(case, self._decide_case(name, k, case, ans, ref, mistakes), ans, twin))
        passed = sum(v.passed for v in verdicts)
        total = sum(not v.inconclusive for v in verdicts)  # a case that could not be judged is left out
        return CheckResult(name, p.check.grade_id, score_of(passed, total, p.max_points),
                           p.max_points, passed, total, verdicts)

    @staticmethod
    def _accepted(p: _Prepared, answers: list[Answer]) -> set[int]:
        """The cases whose answer `decide_case` passes, found for the whole check in one pass:
        no error and no forbidden call, every compared output a tensor of the reference's shape,
        the case's dtype and the reference's device, and every value within `compare_value`'s
        tolerance (torch.isclose's formula, equal_nan, over all of them at once). Any other case,
        and any case with one value out of tolerance, is decided one by one, as before."""
        b = p.bulk
        if b is None or not b.eligible:
            return set()
        taken, gots = [], []
        for k in b.eligible:
            if k >= len(answers):
                break
            ans = answers[k]
            if ans.error or ans.forbidden:
                continue
            values, devices, mine = ans.values, ans.devices, []
            for key, shape, dtype, device in b.specs[k]:
                got = values.get(key)
                if (type(got) is not torch.Tensor or got.dtype != dtype or got.shape != shape
                        or (device is not None and devices.get(key) != device)):
                    break
                mine.append(got.reshape(-1).double())
            else:
                taken.append(k)
                gots.extend(mine)
        if not taken:
            return set()
        if taken == b.eligible:
            want, rtol, atol = b.want, b.rtol, b.atol
        else:
            want, rtol, atol = (torch.cat([b.parts[k][j] for k in taken]) for j in range(3))
        got = torch.cat(gots)
        close = (got == want) | (got.isnan() & want.isnan())  # torch.isclose, with a tolerance per element
        error = (got - want).abs()
        close |= torch.isfinite(error) & (error <= atol + (rtol * want).abs())
        if bool(close.all()):
            return set(taken)
        ends = torch.tensor([b.parts[k][0].numel() for k in taken]).cumsum(0)
        failed = set(torch.searchsorted(ends, (~close).nonzero().reshape(-1), right=True).tolist())
        return {k for j, k in enumerate(taken) if j not in failed}

    def _decide_case(self, name: str, k: int, case: Case, ans: Answer, ref: Answer, mistakes) -> CaseVerdict:
        """`decide_case`, once per distinct answer of a case: the verdict is a function of the case,
        the reference, the mistakes' answers (all fixed for the run) and the answer's content, so
        an answer with the same bytes as one already decided (most correct answers, the same
        mistake made by many students) takes a copy of that verdict."""
        digest = answer_digest(ans)
        if digest is None:
            return decide_case(case, ans, ref, mistakes)
        key = (name, k, digest)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = decide_case(case, ans, ref, mistakes)
            if len(self._verdicts) >= MAX_VERDICTS:  # memory stays bounded, however varied the class
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return dataclasses.replace(verdict)

    def grade_check(self, name: str, executor: Executor) -> CheckResult:
        p = self.prepared[name]
        return self.decide(name, executor.answer(p.check, p.cases))

    def grade(self, executor: Executor) -> list[CheckResult]:
        executor.prefetch([p.check for p in self.prepared.values()])  # answers computed while this decides
        return [self.grade_check(name, executor) for name in self.prepared]


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def find_notebook(folder: Path, stem: str) -> tuple[Path | None, list[Problem]]:
    """Locate: the notebook to grade in a student's assignment folder, and what to report.
    Only a regular file in a real folder is taken: a symbolic link (to a file or a folder)
    is refused with its own message, never followed."""
    problems: list[Problem] = []
    try:
        st = os.lstat(folder)
    except OSError:
        return None, [Problem("missing", f"no {stem}/ folder submitted")]
    if stat.S_ISLNK(st.st_mode) or stat.S_ISLNK(os.lstat(folder.parent).st_mode):
        return None, [Problem("unreadable", f"{folder.parent.name}/{stem} is a symbolic link; only a real folder "
                                            "inside the submissions folder is graded")]
    if not stat.S_ISDIR(st.st_mode):
        return None, [Problem("missing", f"no {stem}/ folder submitted ({stem} is not a folder)")]
    expected = folder / f"{stem}.ipynb"
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        return None, [Problem("unreadable", f"the {stem}/ folder cannot be read: {exc.strerror}")]
    found = [folder / n for n in names if n.endswith(".ipynb") and not n.startswith(".")]
    notebooks = [p for p in found if _regular(p)]
    refused = [p.name for p in found if p not in notebooks]
    if expected.name in refused:
        return None, [Problem("unreadable", f"{expected.name} is not a regular file (a symbolic link, folder or "
                                            "special file); only a regular file is graded")]
    if refused:
        problems.append(Problem("notebook", f"ignored {', '.join(refused)}: not regular files"))
    others = [p.name for p in notebooks if p != expected]
    if expected in notebooks:
        if others:
            problems.append(Problem("notebook", f"graded {expected.name}; ignored other notebooks: {', '.join(others)}"))
        return expected, problems
    if not notebooks:
        return None, problems + [Problem("missing", f"no notebook in {stem}/ (expected {stem}.ipynb)")]
    chosen = max(notebooks, key=lambda p: (os.lstat(p).st_mtime, p.name))
    problems.append(Problem("renamed", f"no {stem}.ipynb; graded {chosen.name} instead (the newest notebook)"
                            + (f"; ignored: {', '.join(n for n in others if n != chosen.name)}"
                               if len(others) > 1 else "")))
    return chosen, problems


@dataclass
class Located:
    """A submission located and read once (`locate`): what `fingerprint` digests and
    `grade_submission` grades are the same bytes."""

    notebook: Path | None
    problems: list[Problem]
    raw: bytes | None = None  # the notebook's bytes, when they could be read
    error: NotebookError | None = None  # why they could not


def locate(folder: Path, stem: str) -> Located:
    notebook, problems = find_notebook(folder, stem)
    found = Located(notebook, problems)
    if notebook is not None:
        try:
            found.raw = read_regular_file(notebook, ReadLimits().max_bytes)
        except NotebookError as exc:
            found.error = exc
    return found


def grade_submission(grader: Grader, student_id: str, folder: Path, *, sandboxed: bool = True,
                     limits: Limits | None = None, zygote: ZygoteHandle | None = None,
                     located: Located | None = None) -> SubmissionResult:
    """Grade one student's folder: locate, read, sanitize, execute, decide, record.

    Sandboxed, the children come from `zygote` (one per run, see `grade_class`);
    without one, a zygote is started for this submission alone (a second of
    start-up). Not sandboxed, the code runs in this process (`InProcess`).
    `located`: the folder as `locate` found and read it (else it is read here)."""
    located = located or locate(folder, grader.stem)  # locate
    notebook, problems = located.notebook, list(located.problems)
    result = SubmissionResult(student_id, grader.stem, notebook.name if notebook else None,
                              problems=problems, max_score=grader.max_score)
    cells = None
    if notebook is None:
        result.status = "unreadable" if any(p.kind == "unreadable" for p in problems) else "missing"
    else:
        try:
            if located.error is not None:
                raise located.error
            cells = parse_cells(located.raw, notebook.name)  # read
        except NotebookError as exc:
            result.status = "unreadable"
            result.problems.append(Problem("unreadable", str(exc)))
    if cells is None:  # nothing to run: every check scores 0, and says why
        why = str(result.problems[-1])
        result.checks = [grader.decide(name, [Answer.failed(why) for _ in p.cases])
                         for name, p in grader.prepared.items()]
        return result
    result.problems.extend(Problem("notebook", p) for p in structure_problems(cells, grader.source_cells))
    cells, restored = restore_locked(cells, grader.source_cells)  # sanitize
    result.cells = cell_roles(cells)  # what each cell is, for feedback that names it as the student sees it
    result.problems.extend(Problem("notebook", p) for p in restored)
    result.problems.extend(scan_source(cells, grader.checks))
    check_ids = {c.grade_id for c in grader.checks.values()}
    own = sandboxed and zygote is None
    if own:
        zygote = start_zygote(grader, limits=limits, hide=[str(folder)])
    try:
        executor: Executor = (SandboxedSubmission(zygote, cells, check_ids=check_ids, limits=limits) if sandboxed
                              else InProcess(cells=cells, check_ids=check_ids))
        with executor:  # execute
            result.checks = grader.grade(executor)  # decide
            result.problems.extend(executor.problems)
    finally:
        if own:
            zygote.close()
    return result  # recorded by the caller (grade_class writes it)


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


def start_zygote(grader: Grader | None, *, stem: str | None = None, device: str = "cpu",
                 limits: Limits | None = None, hide=(), zygote: ZygoteHandle | None = None,
                 expected: int = 1) -> ZygoteHandle:
    """Start the sandbox's zygote (it imports torch while the grader loads the
    references), or, given `zygote`, hand it the grader's inputs and the number of
    submissions it will fork for (`expected`), and wait for it."""
    if zygote is None:
        limits = limits or Limits()
        try:
            root = course_root()
        except FileNotFoundError:
            root = None
        zygote = ZygoteHandle(stem or grader.stem, device=device if grader is None else grader.device,
                              limits=limits, hide=secret_paths(root, *hide, *limits.hide),
                              conceal=[str(root)] if root else [])
        if grader is None:
            return zygote
    return zygote.start({name: p.cases for name, p in grader.prepared.items()}, expected=expected)


def grade_class(stem: str, *, submissions: Path, out: Path, device: str = "auto", jobs: int | None = None,
                shard: str | None = None, students: list[str] | None = None, sandboxed: bool = True,
                progress: bool | None = None, limits: Limits | None = None,
                resume: bool = False, keep: bool = True) -> list[SubmissionResult] | StoredResults:
    """Grade every DIR/<student_id>/<stem>/ notebook; write OUT/results and OUT/grades.csv.

    Returns the results in the class's order: a list, or with `keep=False` (the CLI) a
    `StoredResults` that reads each back from OUT when iterated, so that the grader's memory
    does not grow with the class."""
    i, n = parse_shard(shard)
    everyone = students if students is not None else list_students(submissions)
    mine = [s for k, s in enumerate(sorted(everyone)) if k % n == i]
    zygote = None
    if mine:
        check_writable(Path(out))
    if sandboxed and mine:  # starts importing torch while this process builds the grader
        zygote = start_zygote(None, stem=stem, device=resolve_device(device), limits=limits,
                              hide=[str(out), str(submissions)])
    try:
        grader = Grader(stem, device=device)
        if zygote is not None:
            start_zygote(grader, zygote=zygote, expected=len(mine))
        jobs = max(1, jobs or os.cpu_count() or 1)
        results: list[SubmissionResult] | StoredResults = [] if keep else StoredResults(out, stem)
        unwritten: set[str] = set()  # results whose file could not be written (kept in memory)

        def one(student: str) -> SubmissionResult:
            found = locate(Path(submissions) / student / stem, stem)  # read once: digested, then graded
            mark = fingerprint(grader, Path(submissions) / student / stem, found)
            if resume:
                done = previous_result(out, stem, student, mark)
                if done is not None:
                    return done
            try:
                res = grade_submission(grader, student, Path(submissions) / student / stem, sandboxed=sandboxed,
                                       limits=limits, zygote=zygote, located=found)
            except Exception as exc:  # noqa: BLE001 - the grader's own failure is this student's result
                res = grader_error(grader, student, "grading", exc)
            try:
                conclude(res, Path(submissions) / student / stem)  # its status, from its problems; its timestamp
                res.fingerprint = mark
                write_result(out, res)
            except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the run goes on
                res = grader_error(grader, student, "recording", exc)
                try:
                    write_result(out, res)
                except Exception:  # noqa: BLE001 - reported in the summary; --resume grades it again
                    unwritten.add(student)
            return res

        meter = Progress(stem, len(mine), show=progress)  # a bar on a terminal, lines in a log; the summary
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for res in pool.map(meter.timed(one), mine):
                if keep:
                    results.append(res)
                else:
                    results.add(res, written=res.student_id not in unwritten)
                meter.done(res)
        meter.close()
    finally:
        if zygote is not None:
            zygote.close()
    try:
        write_grades_csv(out)
    except OSError as exc:
        raise SystemExit(f"graded {len(results)} submissions, but {Path(out) / 'grades.csv'} could not be written: "
                         f"{exc.strerror or exc}; the results under {Path(out) / 'results'} are kept: free the disk "
                         "or fix the permissions, then run `python -m autograder report --out ...`") from None
    return results


def fingerprint(grader: Grader, folder: Path, located: Located | None = None) -> str:
    """What a result was graded from: the submitted notebook's bytes (or its absence), the
    source notebook and this package's version. A re-run with `resume` skips a student whose
    result carries the same fingerprint (and was not a grader error)."""
    digest = hashlib.sha256(f"{__version__}|{grader.stem}|{grader.source_digest}|".encode())
    located = located or locate(folder, grader.stem)
    if located.error is not None:
        digest.update(str(located.error).encode())
    else:
        digest.update(located.raw if located.notebook else b"<none>")
    return digest.hexdigest()


def previous_result(out: Path, stem: str, student: str, mark: str) -> SubmissionResult | None:
    """The result a previous run wrote for `student` when it was graded from the same fingerprint."""
    path = Path(out) / "results" / stem / f"{student}.json"
    try:
        result = SubmissionResult.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return result if result.fingerprint == mark and result.status != "grader-error" else None


def check_writable(out: Path) -> None:
    """The output folder can take results, or the run stops before grading anyone, saying why."""
    try:
        (out / "results").mkdir(parents=True, exist_ok=True)
        probe = out / "results" / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise SystemExit(f"cannot write results under {out}: {exc.strerror or exc} "
                         "(choose another --out, or fix its permissions or free space)") from None


def grader_error(grader: Grader, student: str, stage: str, exc: BaseException) -> SubmissionResult:
    """The result of a submission whose handling failed in the grader itself: status grader-error,
    the failure said, every check at 0 (nothing was decided against the student)."""
    why = Problem("grader-error", f"the grader failed while {stage} this submission ({type(exc).__name__}: "
                                  f"{exc}); nothing was decided against the student: grade it again")
    result = SubmissionResult(student, grader.stem, None, problems=[why], status="grader-error",
                              max_score=grader.max_score)
    try:
        result.checks = [grader.decide(name, [Answer.failed(f"not graded: {why}") for _ in p.cases])
                         for name, p in grader.prepared.items()]
    except Exception:  # noqa: BLE001 - deciding itself is what failed
        result.checks = []
    return result
