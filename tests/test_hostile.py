"""The hostile corpus: one class of honest and hostile losses submissions, graded by the runner.

Every hostile submission must score exactly what its honest content earns:
either the honest notebook's points with the cells it destroyed costed, or
the points of its *twin*, an honest submission with the same (wrong) code and
no attack, graded in the same class. No honest submission may change, no
secret may reach a result, no file may appear outside the sandbox, and no
process may outlive the run.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from autograder.checks import FAKE_CUDA_LABEL
from autograder.course import course_root, release_notebook, source_notebook
from autograder.grading import grade_class
from autograder.sandbox import UID_SLOTS, Limits
from tests.test_runner import FULL, STEM, _append_to, _notebook_with, _solution_cell, _write

LIMITS = Limits(cell_timeout=3, check_timeout=20, memory_bytes=1 << 30, max_processes=32)
TOKEN = f"hostile-{os.getpid()}-{int(time.time())}"  # names of files a submission tries to write
SECRET = f"planted secret {os.urandom(8).hex()}"  # content of a file it tries to read
ROOT = course_root()
SOLUTION = source_notebook(STEM)

WRONG_L1 = "def l1_loss(input, target, reduction='mean'):\n    return input.sum() * 0"
ABS_MSE = ("def mse_loss(input, target, reduction='mean'):\n"
           "    return apply_reduction((input - target).abs(), reduction)")


def _new_cell(code: str, after: str | None = None):
    """Insert a code cell after the solution cell `after` (None: at the end)."""
    def edit(nb):
        cell = {"cell_type": "code", "metadata": {}, "source": code, "outputs": [], "execution_count": None}
        where = len(nb["cells"]) if after is None else nb["cells"].index(_solution_cell(nb, after)) + 1
        nb["cells"].insert(where, cell)
    return edit


def _only_in_visible_tests(action: str) -> str:
    """A right l1_loss that does `action` when a visible test calls it, not the grader's probes."""
    return ("def l1_loss(input, target, reduction='mean'):\n"
            "    import os, sys\n"
            "    f, graded = sys._getframe(1), False\n    while f is not None:\n"
            "        graded, f = graded or 'autograder' in f.f_code.co_filename, f.f_back\n"
            f"    if not graded:\n        {action}\n"
            "    return apply_reduction((input - target).abs(), reduction)")


def _both(*edits):
    def edit(nb):
        for e in edits:
            e(nb)
    return edit


def _exfiltrate(paths_expr: str) -> str:
    """Cell code: read each path; raise with whatever was read (the solution part first)."""
    return f"""
import os
found = []
for p in {paths_expr}:
    try:
        with open(p, 'rb') as f:
            text = f.read().decode('utf-8', 'replace')
        i = max(text.find('BEGIN SOLUTION'), 0)
        found.append((p, 'READ ' + text[i:i + 300]))
    except OSError as e:
        found.append((p, type(e).__name__))
raise RuntimeError(repr(found))
"""


def _secret_lines() -> list[str]:
    """Code lines of the reference solutions that the released exercise does not contain."""
    released = release_notebook(STEM).read_text()
    lines, inside = [], False
    for cell in json.loads(SOLUTION.read_text())["cells"]:
        for line in "".join(cell["source"]).splitlines():
            if "BEGIN SOLUTION" in line or "BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "END SOLUTION" in line or "END HIDDEN TESTS" in line:
                inside = False
            elif inside and len(line.strip()) >= 25 and line.strip() not in released:
                lines.append(line.strip())
    assert lines
    return lines


def _sandbox_processes() -> list[int]:
    """Live processes running as one of the children's uids."""
    uids = range(LIMITS.uid_base, LIMITS.uid_base + UID_SLOTS)
    found = []
    for d in Path("/proc").iterdir():
        try:
            status = (d / "status").read_text()
        except OSError:
            continue
        uid_line = next((ln for ln in status.splitlines() if ln.startswith("Uid:")), "")
        state = next((ln for ln in status.splitlines() if ln.startswith("State:")), "")
        if uid_line and int(uid_line.split()[1]) in uids and "zombie" not in state:
            found.append(int(d.name))
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    subs, out = tmp / "submitted", tmp / "out"
    out.mkdir()
    (out / "secret.txt").write_text(SECRET)
    honest = json.loads(SOLUTION.read_text())
    write_targets = [out / "hacked.txt", out / "results" / STEM / "honest.json", Path(f"/tmp/{TOKEN}.txt"),
                     ROOT / f"{TOKEN}.txt", subs / "honest" / STEM / f"{STEM}.ipynb", Path(f"/var/tmp/{TOKEN}"),
                     Path(f"/dev/shm/{TOKEN}")]
    grader_pid = os.getpid()
    kill_all = ("\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError as e:\n    out.append(type(e).__name__)"
                if os.geteuid() == 0 else "")  # -1: every process its uid may signal

    s = {  # student -> notebook
        "honest": honest,
        "honest_2": honest,
        "twin_wrong_l1": _notebook_with(_append_to("l1_loss", WRONG_L1)),
        "twin_abs_mse": _notebook_with(_append_to("mse_loss", ABS_MSE)),
        # a cell that ends the process, exits, or never ends
        "os_exit": _notebook_with(_append_to("mse_loss", "import os; os._exit(3)")),
        "sys_exit": _notebook_with(_append_to("mse_loss", "import sys; sys.exit(0)")),
        "swallows_interrupts": _notebook_with(_append_to("mse_loss", (
            "import signal\nfor s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):\n"
            "    signal.signal(s, signal.SIG_IGN)\n"
            "while True:\n    try:\n        pass\n    except BaseException:\n        pass"))),
        # fooling the comparison
        "patches_torch_comparisons": _notebook_with(_append_to("l1_loss", WRONG_L1 + (
            "\nimport torch\ntorch.testing.assert_close = lambda *a, **k: None\n"
            "torch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
            "torch.isclose = lambda a, b, *r, **k: torch.ones_like(a, dtype=torch.bool)\n"
            "torch.Tensor.__eq__ = lambda self, other: True"))),
        "patches_the_checker": _notebook_with(_append_to("l1_loss", WRONG_L1 + (
            "\nimport autograder.compare, autograder.grading, autograder.results\n"
            "autograder.compare.decide_case = lambda case, *a, **k: autograder.compare.CaseVerdict(case.label, True)\n"
            "autograder.compare.compare_answers = lambda *a, **k: None\n"
            "autograder.compare.compare_value = lambda *a, **k: None\n"
            "autograder.grading.Grader.decide = lambda self, name, answers: None\n"
            "autograder.results.score_of = lambda passed, total, max_points: max_points"))),
        "patches_during_the_call": _notebook_with(_append_to("l1_loss", (
            "def l1_loss(input, target, reduction='mean'):\n"
            "    import torch, autograder.execute, autograder.sandbox\n"
            "    torch.testing.assert_close = lambda *a, **k: None\n"
            "    torch.allclose = lambda *a, **k: True\n"
            "    ok = autograder.execute.CellOutcome\n"
            "    autograder.sandbox.run_cell = lambda cell, ns: ok(cell.index, True)\n"
            "    return input.sum() * 0"))),
        "borrows_the_reference": _notebook_with(_append_to("l1_loss", WRONG_L1 + (
            "\nfrom autograder.reference import reference_namespace\n"
            "l1_loss = reference_namespace('losses')['l1_loss']"))),
        "liar_tensor": _notebook_with(_append_to("mse_loss", (
            "import torch\nclass Liar(torch.Tensor):\n"
            "    def __eq__(self, other):\n        return True\n"
            "    def __ne__(self, other):\n        return False\n"
            "    @classmethod\n"
            "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
            "        if getattr(func, '__name__', '') in ('allclose', 'equal', 'isclose', 'eq', '__eq__'):\n"
            "            return True\n"
            "        return super().__torch_function__(func, types, args, kwargs or {})\n"
            + ABS_MSE + ".as_subclass(Liar)"))),
        # visible tests steered: they are advisory (a read-only cell that scores nothing), so
        # forging their verdict or dying in them changes no point
        "forges_the_visible_verdict": _notebook_with(_append_to("mse_loss", (
            "def mse_loss(input, target, reduction='mean'):\n"
            "    import sys\n    f = sys._getframe(1)\n"
            "    while f is not None:\n        f.f_globals['check_close'] = lambda *a, **k: None\n        f = f.f_back\n"
            "    return apply_reduction((input - target).abs(), reduction)"))),
        "dies_in_its_visible_tests": _notebook_with(_append_to("l1_loss", _only_in_visible_tests("os._exit(3)"))),
        "raises_in_its_visible_tests": _notebook_with(_append_to("l1_loss", _only_in_visible_tests(
            "raise RuntimeError('only for the visible tests')"))),
        "stateful": _notebook_with(_append_to("l1_loss", (
            "_calls = [0]\n_first = l1_loss\n"
            "def l1_loss(input, target, reduction='mean'):\n"
            "    _calls[0] += 1\n"
            "    return _first(input, target, reduction) if _calls[0] == 1 else input.sum() * 0"))),
        "raises_a_cuda_error": _notebook_with(_append_to("mse_loss", (
            "def mse_loss(input, target, reduction='mean'):\n"
            "    raise RuntimeError('CUDA error: device-side assert triggered')"))),
        # hooks that would erase the cells after them (and the hidden tests, under a kernel)
        "ipython_hooks": _notebook_with(_new_cell(
            "import builtins\nip = get_ipython()\n"
            "def erase(*a, **k):\n    globals().clear()\n"
            "ip.events.register('pre_run_cell', erase)\nip.events.register('post_run_cell', erase)\n"
            "ip.input_transformers_cleanup.append(lambda lines: [])\n"
            "ip.input_transformers_post.append(lambda lines: [])\n"
            "builtins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None", after="setup")),
        # resources
        "memory_bomb": _notebook_with(_new_cell(
            "def bomb():\n    chunks = []\n    while True:\n        chunks.append(bytearray(1 << 26))\nbomb()")),
        "fork_bomb": _notebook_with(_new_cell(
            "import os, time\nn = 0\ntry:\n    while n < 100000:\n        if os.fork() == 0:\n"
            "            time.sleep(600)\n            os._exit(0)\n        n += 1\n"
            "except OSError as e:\n    raise RuntimeError(f'fork bomb stopped after {n} forks: {e}')\n"
            "raise RuntimeError(f'fork bomb NOT stopped after {n} forks')")),
        "flood": _notebook_with(_append_to("l1_loss", (
            "import os, sys\nprint('x' * 100_000_000)\nsys.stderr.write('z' * 20_000_000)\n"
            "os.write(1, b'y' * 20_000_000)\nfor i in range(100000):\n    print(i, 'flood')"))),
        "flips_torch_flags": _notebook_with(_new_cell(
            "import torch\ntorch.set_default_dtype(torch.float64)\n"
            "torch.backends.cuda.matmul.allow_tf32 = True\ntorch.backends.cudnn.allow_tf32 = True\n"
            "torch.backends.cudnn.benchmark = True\ntorch.backends.cudnn.deterministic = False\n"
            "torch.set_float32_matmul_precision('medium')\ntorch.set_num_threads(2)\ntorch.manual_seed(1234)\n"
            "torch.use_deterministic_algorithms(True)\ntorch.set_flush_denormal(True)\n"
            "torch.set_grad_enabled(False)\ntorch.set_default_device('meta')")),
        # secrets and the file system
        "reads_solutions": _notebook_with(_new_cell(_exfiltrate(
            f"[{str(SOLUTION)!r}, os.path.relpath({str(SOLUTION)!r}, os.getcwd()),"
            f" '../' * 12 + {str(SOLUTION)!r}.lstrip('/'),"
            f" os.path.join(os.path.dirname(os.path.dirname(__import__('autograder').__file__)),"
            f" 'solutions', 'losses', 'losses.ipynb'),"
            f" '/proc/{grader_pid}/root{SOLUTION}', '/proc/{grader_pid}/cwd/solutions/losses/losses.ipynb',"
            f" {str(ROOT / '.git' / 'HEAD')!r}]"), after="setup")),
        "reads_gradebook_and_output": _notebook_with(_new_cell(_exfiltrate(
            f"[{str(ROOT / 'gradebook.db')!r}, {str(out / 'secret.txt')!r},"
            f" {str(subs / 'honest' / STEM / (STEM + '.ipynb'))!r}]"), after="setup")),
        "writes_outside_scratch": _notebook_with(_new_cell(
            f"done = []\nfor p in {[str(t) for t in write_targets]!r}:\n"
            "    try:\n        with open(p, 'w') as f:\n            f.write('pwned')\n        done.append((p, 'WROTE'))\n"
            "    except OSError as e:\n        done.append((p, type(e).__name__))\n"
            "raise RuntimeError(repr(done))", after="setup")),
        "attacks_the_grader": _notebook_with(_new_cell(
            f"import os, signal, socket\nout = []\nfor pid in ({grader_pid}, os.getppid() or {grader_pid}):\n"
            "    try:\n        os.kill(pid, signal.SIGKILL)\n        out.append((pid, 'KILLED'))\n"
            "    except OSError as e:\n        out.append((pid, type(e).__name__))\n"
            "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n    out.append('NETWORK')\n"
            "except OSError as e:\n    out.append(type(e).__name__)" + kill_all + "\nraise RuntimeError(repr(out))")),
    }
    for student, nb in s.items():
        _write(subs, student, nb)
    before = hashlib.sha256((subs / "honest" / STEM / f"{STEM}.ipynb").read_bytes()).hexdigest()
    results = grade_class(STEM, submissions=subs, out=out, device="cpu", jobs=2, progress=False, limits=LIMITS)
    after = hashlib.sha256((subs / "honest" / STEM / f"{STEM}.ipynb").read_bytes()).hexdigest()
    yield {r.student_id: r for r in results}, out, write_targets, before == after
    for t in write_targets:  # in case the sandbox failed: leave nothing behind
        if TOKEN in str(t) and t.exists():
            t.unlink()


def _points(result) -> dict[str, float]:
    return {c.name: c.points for c in result.checks}


# student -> (twin, or None for the honest notebook; checks the attack itself costs)
EXPECTED = {
    "os_exit": (None, {"mse_loss": 0}),  # the cell that killed the child is lost, and with it mse_loss
    "sys_exit": (None, {}),
    "swallows_interrupts": (None, {"mse_loss": 0}),  # the cell never ends: lost
    "patches_torch_comparisons": ("twin_wrong_l1", {}),
    "patches_the_checker": ("twin_wrong_l1", {}),
    "patches_during_the_call": ("twin_wrong_l1", {}),  # patches made while the visible tests call it
    "borrows_the_reference": ("twin_wrong_l1", {}),
    # "liar_tensor" (its subclass cannot be made on the simulated CUDA device, so that case is not
    # judged for it): test_the_comparison_is_made_by_the_grader_not_the_student
    "stateful": ("twin_wrong_l1", {}),
    "forges_the_visible_verdict": ("twin_abs_mse", {}),  # what its hidden cases earn, as its twin
    "dies_in_its_visible_tests": (None, {}),  # the visible tests' cell is lost, and costs nothing
    "raises_in_its_visible_tests": (None, {}),
    "raises_a_cuda_error": (None, {"mse_loss": 0}),  # and the checks after it run in a new child
    "ipython_hooks": (None, {}),
    "memory_bomb": (None, {}),
    "fork_bomb": (None, {}),
    "flood": (None, {}),
    "flips_torch_flags": (None, {}),
    "reads_solutions": (None, {}),
    "reads_gradebook_and_output": (None, {}),
    "writes_outside_scratch": (None, {}),
    "attacks_the_grader": (None, {}),
}


def test_the_corpus_is_large_enough():
    assert len(EXPECTED) >= 15


def test_honest_submissions_get_full_marks(corpus):
    results = corpus[0]
    for student in ("honest", "honest_2"):
        assert results[student].score == results[student].max_score == FULL, results[student].problems
        assert results[student].problems == []


def test_twins_lose_exactly_their_wrong_function(corpus):
    results = corpus[0]
    assert _points(results["twin_wrong_l1"])["l1_loss"] == 0
    # |x - y| for (x - y)^2 keeps only the device cases (shapes and devices: right) and nothing
    # else; its failing visible test takes no points (visible tests are advisory)
    abs_mse = next(c for c in results["twin_abs_mse"].checks if c.name == "mse_loss")
    from autograder.results import score_of

    assert 0 < abs_mse.passed < abs_mse.total
    assert abs_mse.points == score_of(abs_mse.passed, abs_mse.total, abs_mse.max_points)
    assert all(v.label.startswith(("on the meta device", "on a CUDA device")) for v in abs_mse.cases if v.passed)
    assert results["twin_abs_mse"].score == pytest.approx(FULL - abs_mse.max_points + abs_mse.points)
    said = " ".join(str(p) for p in results["twin_abs_mse"].problems)
    assert "raised AssertionError" in said, said  # the visible tests' cell, reported, costing nothing


@pytest.mark.parametrize("student", list(EXPECTED))
def test_hostile_submission_scores_what_its_honest_content_earns(corpus, student):
    results = corpus[0]
    twin, lost = EXPECTED[student]
    expected = {**_points(results[twin or "honest"]), **lost}
    assert _points(results[student]) == expected, results[student].problems


def test_the_comparison_is_made_by_the_grader_not_the_student(corpus):
    """Patched comparisons, a patched checker and a lying tensor change nothing: same verdicts as the twin."""
    results = corpus[0]
    for student, twin in (("patches_torch_comparisons", "twin_wrong_l1"), ("liar_tensor", "twin_abs_mse")):
        ours = {c.name: [v.passed for v in c.cases if not v.inconclusive] for c in results[student].checks}
        theirs = {c.name: [v.passed for v, w in zip(t.cases, c.cases) if not w.inconclusive]
                  for t, c in zip(results[twin].checks, results[student].checks)}
        assert ours == theirs
    # the lying subclass cannot be made on the simulated CUDA device: that case is not judged for it
    # (left out of its share, never passed), so it earns no more than its twin, and no point from lying
    liar, twin = _points(results["liar_tensor"]), _points(results["twin_abs_mse"])
    assert {k: v for k, v in liar.items() if k != "mse_loss"} == {k: v for k, v in twin.items() if k != "mse_loss"}
    assert 0 < liar["mse_loss"] <= twin["mse_loss"]
    mse = next(c for c in results["liar_tensor"].checks if c.name == "mse_loss")
    assert [v.label for v in mse.cases if v.inconclusive] == [FAKE_CUDA_LABEL]


def test_exits_and_endless_loops_are_reported(corpus):
    results = corpus[0]
    assert any("exit code 3" in p for p in results["os_exit"].problems)
    assert any("SystemExit" in p for p in results["sys_exit"].problems)
    assert any("did not finish within 3 s" in p for p in results["swallows_interrupts"].problems)


def test_a_cuda_error_recycles_the_child(corpus):
    r = corpus[0]["raises_a_cuda_error"]
    assert any("a CUDA error; the next check ran in a new process" in p for p in r.problems), r.problems


def test_memory_and_fork_bombs_hit_their_limits(corpus):
    results = corpus[0]
    assert any("MemoryError" in p for p in results["memory_bomb"].problems), results["memory_bomb"].problems
    bomb = next(p for p in results["fork_bomb"].problems if "fork bomb" in p)
    assert "stopped after" in bomb and "Resource temporarily unavailable" in bomb, bomb
    if os.geteuid() == 0:  # the child runs as a fresh uid: RLIMIT_NPROC counts its processes only
        forks = int(bomb.split("stopped after ")[1].split()[0])
        assert forks < LIMITS.max_processes


def test_no_process_outlives_the_run(corpus):
    if os.geteuid() != 0:
        pytest.skip("children keep the grader's uid when it is not root")
    deadline = time.monotonic() + 5
    while _sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sandbox_processes() == []


def test_secrets_stay_out_of_reach(corpus):
    results, out, _, _ = corpus
    text = "\n".join(p.read_text() for p in (out / "results").rglob("*.json")) + (out / "grades.csv").read_text()
    for line in _secret_lines():
        assert line not in text, f"solution line leaked: {line}"
    assert SECRET not in text and "SQLite format" not in text and "READ " not in text
    problems = " ".join(results["reads_solutions"].problems)
    assert "FileNotFoundError" in problems or "PermissionError" in problems, problems


def test_nothing_is_written_outside_the_scratch_directory(corpus):
    results, out, targets, honest_unchanged = corpus
    for t in targets:
        if TOKEN in str(t) or t.name == "hacked.txt":
            assert not t.exists(), f"a submission wrote {t}"
    assert honest_unchanged
    honest = json.loads((out / "results" / STEM / "honest.json").read_text())
    assert honest["score"] == FULL
    assert results["writes_outside_scratch"].score == FULL


def test_the_grader_survives_and_the_network_is_closed(corpus):
    results = corpus[0]
    problems = " ".join(results["attacks_the_grader"].problems)
    assert "KILLED" not in problems, problems
    if os.geteuid() == 0:
        assert "NETWORK" not in problems, problems


def test_floods_are_cut(corpus):
    results, out, _, _ = corpus
    assert results["flood"].score == FULL
    assert (out / "results" / STEM / "flood.json").stat().st_size < 200_000


def test_ipython_hooks_do_not_erase_later_cells(corpus):
    assert corpus[0]["ipython_hooks"].score == FULL


# -- borrowed answers and inherited secrets (a second class) ------------------------------------------

ENV_SECRET = f"instructor-token-{os.urandom(8).hex()}"
KEY_SECRET = f"keyring-payload-{os.urandom(8).hex()}"
IPC_KEY = 0x5EC0000 + os.getpid() % 0xFFFF
LOG_SOFTMAX_BY = {  # log_softmax(input, dim) through torch's own operator, reached as a student could
    "aten_overload": "return torch.ops.aten._log_softmax.default(input, dim, False)",
    "special_alias": "return torch.special.log_softmax(input, dim)",
    "torch_function_off": "with torch._C.DisableTorchFunction():\n        return torch.log_softmax(input, dim)",
    "method_in_a_lambda": "f = (lambda t: t.log_softmax(dim))\n    return f(input)",
}
# Uses torch's function only when no watch is on: the visible tests are watched too, so it never does.
ONLY_UNWATCHED = ("if torch._C._len_torch_function_stack() == 0:\n        return torch.log_softmax(input, dim)\n"
                  "    shifted = input - input.amax(dim, keepdim=True)\n"
                  "    return shifted - shifted.exp().sum(dim, keepdim=True).log()")
# student -> the checks the trick costs, beside the honest notebook's points
BORROWED = {name: {"log_softmax": 0} for name in LOG_SOFTMAX_BY}
BORROWED["l1_function_off"] = {"l1_loss": 0}  # detection_loss may call l1_loss: it forbids nothing
_RED = "{'none': 0, 'mean': 1, 'sum': 2}[reduction]"
_L1 = "def l1_loss(input, target, reduction='mean'):\n"
_NLL = "def nll_loss(input, target, weight=None, ignore_index=-100, reduction='mean'):\n"
_MSE = "def mse_loss(input, target, reduction='mean'):\n"
_CE = ("def cross_entropy(input, target, weight=None, ignore_index=-100, reduction='mean', "
       "label_smoothing=0.0):\n")
# A Tensor subclass whose own handler runs torch's mse_loss when graded code (or the grader) touches it.
_LAZY = ("import torch.nn.functional as F\n"
         "class Lazy(torch.Tensor):\n"
         "    @classmethod\n"
         "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
         "        with torch._C.DisableTorchFunctionSubclass():\n"
         "            if func is torch.Tensor.{trigger} and hasattr(cls, 'saved'):\n"
         "                i, t, r = cls.saved\n"
         "                return F.mse_loss(i, t, reduction=r)\n"
         "            return func(*args, **(kwargs or {{}}))\n")
OFF_THE_WATCHED_PATH = {
    # a stub whose error names the metadata: no case is "inconclusive" because of what an error says
    "stub_says_meta": ("mse_loss", ("def mse_loss(input, target, reduction='mean'):\n"
                                    "    raise NotImplementedError('see the metadata of this cell')")),
    # torch's operators under their aten names: overloads, packets, the builtin behind them
    "aten_l1_overload": ("l1_loss", _L1 + f"    return torch.ops.aten.l1_loss.default(input, target, {_RED})"),
    "aten_l1_packet": ("l1_loss", _L1 + f"    return torch.ops.aten.l1_loss(input, target, {_RED})"),
    "aten_l1_builtin": ("l1_loss", _L1 + f"    return torch.ops.aten.l1_loss.default._op(input, target, {_RED})"),
    "aten_l1_mapped": ("l1_loss", _L1 + "    op = torch.ops.aten.l1_loss.default._op\n"
                                        f"    return list(map(op, [input], [target], [{_RED}]))[0]"),
    "aten_nll_loss_nd": ("nll_loss", _NLL + "    return torch.ops.aten.nll_loss_nd(input, target, weight, "
                                            f"{_RED}, ignore_index)"),
    "aten_cross_entropy_loss": ("cross_entropy", _CE + "    return torch.ops.aten.cross_entropy_loss(input, target, "
                                                       f"weight, {_RED}, ignore_index, label_smoothing)"),
    "private_lookup": ("l1_loss", _L1 + "    op = torch._C._get_operation_overload('aten::l1_loss', '')[0]\n"
                                        f"    return op(input, target, {_RED})"),
    # off the watched thread: a thread started and joined, a worker thread left running, a process
    "in_a_thread": ("l1_loss", "import threading\nimport torch.nn.functional as F\n" + _L1
                    + "    out = {}\n    job = threading.Thread(target=lambda: out.update(v=F.l1_loss(input, target, "
                      "reduction=reduction)))\n    job.start()\n    job.join()\n    return out['v']"),
    "worker_thread": ("mse_loss", "import queue, threading\nimport torch.nn.functional as F\n"
                      "jobs, done = queue.Queue(), queue.Queue()\n"
                      "threading.Thread(target=lambda: [done.put(F.mse_loss(*jobs.get())) for _ in iter(int, 1)], "
                      "daemon=True).start()\n"
                      "def mse_loss(input, target, reduction='mean'):\n"
                      "    jobs.put((input, target, None, None, reduction))\n    return done.get()"),
    "in_a_process": ("mse_loss", "import os, pickle\nimport torch.nn.functional as F\n"
                     "def mse_loss(input, target, reduction='mean'):\n"
                     "    r, w = os.pipe()\n    pid = os.fork()\n    if pid == 0:\n"
                     "        os.write(w, pickle.dumps(F.mse_loss(input, target, reduction=reduction)))\n"
                       "        os._exit(0)\n    os.close(w)\n    data = b''\n"
                       "    while chunk := os.read(r, 1 << 16):\n        data += chunk\n"
                       "    os.waitpid(pid, 0)\n    return pickle.loads(data)"),
    # inside a Tensor subclass's own handler, where torch's modes are off; late, when the grader reads it
    "subclass_handler": ("mse_loss", _LAZY.format(trigger="sub") + _MSE
                         + "    Lazy.saved = (input, target, reduction)\n"
                           "    return torch.zeros((), dtype=input.dtype).as_subclass(Lazy) - input"),
    "subclass_late": ("mse_loss", _LAZY.format(trigger="detach") + _MSE
                      + "    Lazy.saved = (input, target, reduction)\n"
                        "    return torch.zeros((), dtype=input.dtype).as_subclass(Lazy)"),
    "subclass_profile_off": ("mse_loss", "import sys\n" + _LAZY.format(trigger="sub").replace(
        "            if func", "            sys.setprofile(None)\n            if func") + _MSE
        + "    Lazy.saved = (input, target, reduction)\n"
          "    return torch.zeros((), dtype=input.dtype).as_subclass(Lazy) - input"),
}
for _name, (_check, _) in OFF_THE_WATCHED_PATH.items():
    BORROWED[_name] = {_check: 0}
# The course's helpers the child holds (cross_entropy runs with the course's log_softmax and nll_loss),
# found in memory and used as the student's own: they are torch's, which those checks forbid.
BORROWS_COURSE_HELPERS = ("import sys\nframe, probe = sys._getframe(), None\n"
                          "while frame is not None and probe is None:\n"
                          "    z = frame.f_locals.get('z')\n"
                          "    probe = z.checks['cross_entropy'].probe if hasattr(z, 'checks') else None\n"
                          "    frame = frame.f_back\n"
                          "helpers = dict(probe.helpers)\n"
                          "log_softmax, nll_loss = helpers['log_softmax'], helpers['nll_loss']")
BORROWED["borrows_course_helpers"] = {"log_softmax": 0, "nll_loss": 0}
# Honest notebooks with a thread that waits while the graded code runs (a progress bar's monitor, a
# timer): it runs none of the graded work, so they earn what the honest notebook earns.
HONEST_WITH_THREADS = {
    "idle_thread": "import threading\nthreading.Thread(target=threading.Event().wait, daemon=True).start()",
    "idle_timer": "import threading\ntimer = threading.Timer(3600, print)\ntimer.daemon = True\ntimer.start()",
}
INHERITED = ["imports_correct_code", "reads_the_environment", "reads_the_keyring", "makes_ipc_objects",
             "reads_ipc_objects"]


def _plant_key() -> int | None:
    """A key in this process's session keyring (what a grader run from a desktop session holds)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    add_key = {"x86_64": 248, "aarch64": 217}.get(os.uname().machine)
    if add_key is None:
        return None
    key = libc.syscall(add_key, b"user", b"autograder-test", KEY_SECRET.encode(), len(KEY_SECRET), -3)
    return key if key > 0 else None


def _sysv_shm_keys() -> set[int]:
    with open("/proc/sysvipc/shm") as f:
        return {int(line.split()[0]) for line in list(f)[1:]}


@pytest.fixture(scope="module")
def borrowed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("borrowed")
    subs, out = tmp / "submitted", tmp / "out"
    s = {"honest": json.loads(SOLUTION.read_text())}
    for name, body in LOG_SOFTMAX_BY.items():
        s[name] = _notebook_with(_append_to("log_softmax", f"import torch\ndef log_softmax(input, dim):\n    {body}"))
    s["only_unwatched"] = _notebook_with(_append_to("log_softmax", (
        f"import torch\ndef log_softmax(input, dim):\n    {ONLY_UNWATCHED}")))
    s["l1_function_off"] = _notebook_with(_append_to("l1_loss", (
        "import torch\nimport torch.nn.functional as F\ndef l1_loss(input, target, reduction='mean'):\n"
        "    with torch._C.DisableTorchFunction():\n        return F.l1_loss(input, target, reduction=reduction)")))
    for name, (check, code) in OFF_THE_WATCHED_PATH.items():
        s[name] = _notebook_with(_append_to(check, "import torch\n" + code))
    s["borrows_course_helpers"] = _notebook_with(_new_cell(BORROWS_COURSE_HELPERS))
    for name, code in HONEST_WITH_THREADS.items():
        s[name] = _notebook_with(_new_cell(code, after="setup"))
    s["imports_correct_code"] = _notebook_with(_new_cell(
        "import gc, importlib\nfound = []\n"
        "for m in ('autograder.chapters.losses', 'autograder.mistakes.optimizers', 'autograder.chapters.optimizers'):\n"
        "    try:\n        importlib.import_module(m)\n        found.append('IMPORTED ' + m)\n"
        "    except Exception as e:\n        found.append(type(e).__name__)\n"
        "kinds = {type(o).__name__ for o in gc.get_objects()}\n"
        "found += ['FOUND ' + k for k in ('Mistake', 'Check') if k in kinds]\n"
        "found += ['FOUND ' + o.__name__ for o in gc.get_objects() if isinstance(o, type) and"
        " o.__name__.startswith('Buggable')]\n"
        "raise RuntimeError(repr(found))", after="setup"))
    s["reads_the_environment"] = _notebook_with(_new_cell(
        "import os\nraise RuntimeError(repr(dict(os.environ)) + open('/proc/self/environ').read())", after="setup"))
    s["reads_the_keyring"] = _notebook_with(_new_cell(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nout = []\n"
        "buf = ctypes.create_string_buffer(4096)\n"
        "for ring in (-3, -4, -2):  # session, user, process keyrings\n"
        "    n = libc.syscall(250, 11, ring, buf, 4096)  # KEYCTL_READ\n"
        "    out.append((ring, n, ctypes.get_errno(), buf.raw[:max(n, 0)]))\n"
        "try:\n    out.append(open('/proc/keys').read())\nexcept OSError as e:\n    out.append(type(e).__name__)\n"
        "raise RuntimeError(repr(out))", after="setup"))
    s["makes_ipc_objects"] = _notebook_with(_new_cell(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"shm = libc.shmget({IPC_KEY}, 4096, 0o1666)  # IPC_CREAT | 0666\n"
        "raise RuntimeError(f'shmget {shm} errno {ctypes.get_errno()}')", after="setup"))
    s["reads_ipc_objects"] = _notebook_with(_new_cell(
        "import ctypes, time\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"found = [libc.shmget({IPC_KEY}, 0, 0) for _ in range(20) if time.sleep(0.05) is None]\n"
        "raise RuntimeError(f'ipc seen: {max(found) >= 0}')", after="setup"))
    for student, nb in s.items():
        _write(subs, student, nb)
    key = _plant_key()
    ipc_before = _sysv_shm_keys()
    os.environ["AUTOGRADER_TEST_SECRET"] = ENV_SECRET
    try:
        results = grade_class(STEM, submissions=subs, out=out, device="cpu", jobs=2, progress=False, limits=LIMITS)
    finally:
        del os.environ["AUTOGRADER_TEST_SECRET"]
    yield {r.student_id: r for r in results}, out, key, _sysv_shm_keys() - ipc_before


@pytest.mark.parametrize("student", sorted(BORROWED))
def test_torchs_own_function_under_another_name_earns_nothing(borrowed, student):
    results = borrowed[0]
    expected = {**_points(results["honest"]), **BORROWED[student]}
    assert _points(results[student]) == expected, results[student].problems
    check = next(c for c in results[student].checks if c.name == next(iter(BORROWED[student])))
    messages = " ".join(v.message for v in check.cases) + " " + (check.note or "")
    if student == "stub_says_meta":
        assert not any(v.inconclusive or v.passed for v in check.cases), messages
        return
    assert any(m in messages for m in ("asks you to write yourself", "the grader's watch on torch calls",
                                       "started a thread or a process")), messages


@pytest.mark.parametrize("student", sorted(HONEST_WITH_THREADS))
def test_a_thread_that_only_waits_costs_nothing(borrowed, student):
    results = borrowed[0]
    assert _points(results[student]) == _points(results["honest"]), results[student].problems


def test_code_that_is_always_watched_never_borrows(borrowed):
    """The visible tests are watched as the hidden cases are: a function that calls torch's own
    version only when no watch is on always runs its own code, and earns what that code earns."""
    results = borrowed[0]
    assert _points(results["only_unwatched"]) == _points(results["honest"]), results["only_unwatched"].problems


def test_the_source_scan_reports_what_it_saw_without_taking_points(borrowed):
    results = borrowed[0]
    for student in ("torch_function_off", "only_unwatched", "l1_function_off"):
        suspected = [p for p in results[student].problems if p.kind == "suspected"]
        assert suspected, (student, results[student].problems)
    assert not [p for p in results["honest"].problems if p.kind == "suspected"]


def test_the_child_holds_no_correct_code(borrowed):
    r = borrowed[0]["imports_correct_code"]
    assert _points(r) == _points(borrowed[0]["honest"])
    problems = " ".join(r.problems)
    assert "ModuleNotFoundError" in problems or "ImportError" in problems, problems
    assert "IMPORTED" not in problems and "FOUND" not in problems, problems


def test_nothing_of_the_graders_environment_or_keyring_reaches_any_output(borrowed):
    results, out, key, _ = borrowed
    for student in INHERITED:
        assert _points(results[student]) == _points(results["honest"]), (student, results[student].problems)
    written = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert ENV_SECRET not in written
    assert KEY_SECRET not in written
    assert "AUTOGRADER_TEST_SECRET" not in written
    problems = " ".join(results["reads_the_keyring"].problems)
    assert "(-3, -1, 1," in problems, problems  # keyctl is refused (EPERM) in the child
    if key is None:
        pytest.skip("no keyring to plant a key in on this machine: the environment part was checked")


def test_ipc_objects_stay_in_their_child(borrowed):
    results, _, _, new_keys = borrowed
    assert "ipc seen: False" in " ".join(results["reads_ipc_objects"].problems)
    assert IPC_KEY not in new_keys, "a child's shared memory outlived it in the grader's IPC namespace"


# -- where the course lives (a third class) -------------------------------------------------------
# Each looks for the course's location a way a submission could, and raises with the concealed
# paths (the course, this checkout, the run's submissions and output: the test writes them into
# the submission) that it found, and how much it read, so no truncation can hide a leak.
REPORT = ("\nfound = sorted({p for p in CONCEALED if p in text})\n"
          "raise RuntimeError(f'LEAKS {found!r} READ {len(text)}')")
LOCATORS = {
    "module_paths": ("import sys, os, autograder, torch, numpy\n"
                     "text = repr([autograder.__file__, torch.__file__, numpy.__file__, sys.path, sys.prefix,"
                     " sys.exec_prefix, sys.executable, sys.orig_argv, os.getcwd(), dict(os.environ),"
                     " [vars(m).get('__file__') for m in list(sys.modules.values())],"
                     " [str(vars(m).get('__path__')) for m in list(sys.modules.values())]])"),
    "mount_table": ("import os\nout = []\n"
                    "for p in ('/proc/self/mountinfo', '/proc/self/mounts', '/proc/1/mountinfo',"
                    " '/proc/thread-self/mountinfo', '/proc/self/mountstats', '/proc/self/cmdline',"
                    " '/proc/self/environ', '/proc/self/maps'):\n"
                    "    try:\n        out.append(open(p, errors='replace').read())\n"
                    "    except OSError as e:\n        out.append(type(e).__name__)\n"
                    "pid = os.fork()\nif pid == 0:\n"
                    "    open('/tmp/grandchild', 'w').write(open('/proc/self/mountinfo').read())\n    os._exit(0)\n"
                    "os.waitpid(pid, 0)\nout.append(open('/tmp/grandchild').read())\ntext = repr(out)"),
    "looks_for_the_folders": ("import os\nout = []\n"
                              "for p in CONCEALED:\n"
                              "    parent = os.path.dirname(p)\n"
                              "    try:\n        names = os.listdir(parent)\n"
                              "    except OSError:\n        names = []\n"
                              "    if os.path.lexists(p) or os.path.basename(p) in names:\n        out.append(p)\n"
                              "text = repr(out) + ' ' * 100"),
    "reads_package_metadata": ("import glob, site\nout = []\n"
                               "for d in site.getsitepackages():\n"
                               "    for p in glob.glob(d + '/*') + glob.glob(d + '/*.dist-info/*'):\n"
                               "        try:\n            out.append(open(p, errors='replace').read(1 << 20))\n"
                               "        except OSError:\n            pass\n"
                               "text = ' '.join(out)"),
    "reads_the_tracebacks": ("import traceback, autograder.execute as e\n"
                             "try:\n    e.run_cell(None, None)\nexcept Exception:\n"
                             "    text = traceback.format_exc()"),
}


@pytest.fixture(scope="module")
def locators(tmp_path_factory):
    import autograder

    tmp = tmp_path_factory.mktemp("locators")
    subs, out = tmp / "submitted", tmp / "out"
    concealed = sorted({str(ROOT.resolve()), str(Path(autograder.__file__).resolve().parents[1]),
                        str(subs.resolve()), str(out.resolve())})
    s = {"honest": json.loads(SOLUTION.read_text())}
    for name, code in LOCATORS.items():
        s[name] = _notebook_with(_new_cell(f"CONCEALED = {concealed!r}\n" + code + REPORT, after="setup"))
    for student, nb in s.items():
        _write(subs, student, nb)
    results = grade_class(STEM, submissions=subs, out=out, device="cpu", jobs=2, progress=False, limits=LIMITS)
    return {r.student_id: r for r in results}


@pytest.mark.parametrize("student", sorted(LOCATORS))
def test_no_submission_learns_where_the_course_lives(locators, student):
    """The zygote's root has no course in it: module paths, the environment, the mount table
    (its own and a grandchild's), the folders themselves, site-packages' files and tracebacks
    name none of the course's folders, and the student still earns what the honest content earns."""
    r = locators[student]
    assert _points(r) == _points(locators["honest"]), r.problems
    said = " ".join(r.problems)
    import re

    m = re.search(r"LEAKS (\[.*?\]) READ (\d+)", said)
    assert m, said[:3000]  # the locator ran to its end
    assert m.group(1) == "[]", (student, said[:3000])
    assert int(m.group(2)) >= 100, said[:3000]  # it read something


def test_a_root_that_cannot_be_built_is_said_and_the_secrets_stay_covered(capfd):
    """Python itself inside a concealed path: the zygote cannot leave it out of its root, so it
    covers the secrets as before and the run says, in one line, what it could not do."""
    import sys

    from autograder.sandbox import ZygoteHandle, secret_paths

    with ZygoteHandle(STEM, device="cpu", limits=LIMITS, hide=secret_paths(ROOT),
                      conceal=[sys.base_prefix, ROOT]) as zygote:
        zygote.start({})
        assert zygote.mode in ("root", "userns")
        assert "no root of its own (Python itself lies inside the course)" in zygote.warning
        assert "its secrets stay covered" in zygote.warning
    assert "no root of its own" in capfd.readouterr().err
    with ZygoteHandle(STEM, device="cpu", limits=LIMITS, hide=secret_paths(ROOT), conceal=[ROOT]) as zygote:
        zygote.start({})
        assert zygote.warning == "", zygote.warning
    assert capfd.readouterr().err == ""  # nothing half-hidden (an editable install's .pth) complains
