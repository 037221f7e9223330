"""Device-bound code loses points on a machine without a GPU (issue 15).

The meta-device case catches a tensor made on the CPU and mixed with the
inputs, but code that moves everything to the CPU (`.cpu()`) raises on meta,
which is inconclusive. The simulated-CUDA case (autograder/probes/fake_cuda.py)
catches it: the output comes back on the CPU. Proven both ways, for every
check that has the case: the reference passes it, the reference moved to the
CPU fails it with the device hint; and an abort is impossible there (autograd
never runs on the fake device), which the sandboxed runner shows. Modules too:
an output moved to the CPU or a CPU tensor mixed into the forward pass loses
the case (test_a_device_bound_module_loses_the_simulated_gpu_case).
"""
from __future__ import annotations

import json

import pytest
import torch

from autograder.checks import FAKE_CUDA_LABEL, load_checks
from autograder.compare import DEVICE_HINT
from tests.conftest import ALL_STEMS, grade_impl, grader, reference

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the simulated GPU is for machines without one")


def _fake_case_checks():
    out = []
    for stem in ALL_STEMS:
        for name in load_checks(stem):
            out.append(pytest.param(stem, name, id=f"{stem}.{name}"))
    return out


def _on_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    return value


def moved_to_cpu(fn):
    """The graded function with every tensor argument moved to the CPU first (a hard-coded .cpu())."""
    def impl(*args, **kwargs):
        return fn(*_on_cpu(args), **_on_cpu(kwargs))
    return impl


def fake_verdict(result):
    found = [v for v in result.cases if v.label == FAKE_CUDA_LABEL]
    return found[0] if found else None


@pytest.mark.parametrize("stem,name", _fake_case_checks())
def test_the_reference_passes_the_simulated_gpu_case(stem, name):
    p = grader(stem).prepared[name]
    labels = [c.label for c in p.cases]
    if FAKE_CUDA_LABEL not in labels:
        pytest.skip("no forward pass the simulated device can run (a module's .to(), a closure, sparse gradients)")
    ref = reference(stem)[p.check.target]
    verdict = fake_verdict(grade_impl(stem, name, ref))
    assert verdict.passed and "inconclusive" not in verdict.message, verdict.message


FUNCTION_CHECKS = [pytest.param(stem, name, id=f"{stem}.{name}") for stem in ALL_STEMS
                   for name, check in load_checks(stem).items()
                   if type(check.probe).__name__ == "FunctionProbe"]


@pytest.mark.parametrize("stem,name", FUNCTION_CHECKS)
def test_code_that_moves_to_the_cpu_loses_the_simulated_gpu_case(stem, name):
    from autograder.probes.fake_cuda import NOT_RUN

    p = grader(stem).prepared[name]
    fake = [r for c, r in zip(p.cases, p.reference) if c.label == FAKE_CUDA_LABEL]
    if not fake or NOT_RUN in fake[0].values.values():
        pytest.skip("the reference cannot run on the simulated device (data-dependent code): inconclusive for all")
    result = grade_impl(stem, name, moved_to_cpu(reference(stem)[p.check.target]))
    verdict = fake_verdict(result)
    assert not verdict.passed and verdict.hint == DEVICE_HINT, verdict.message
    assert result.points < result.max_points
    meta = [v for v in result.cases if v.label.startswith("on the meta device")]
    # on meta, .cpu() raises where the CPU case ran: not judged there (left out of the share, never a
    # pass), which is why the simulated-CUDA case exists
    assert not meta or (meta[0].inconclusive and not meta[0].passed)


def test_every_chapter_has_a_device_bound_answer_that_loses_points():
    """A chapter-by-chapter account: some check of each chapter fails device-bound code on this
    machine (the simulated GPU for functions, optimizers and modules, the meta device besides)."""
    covered = set()
    for stem in ALL_STEMS:
        for name, p in grader(stem).prepared.items():
            if FAKE_CUDA_LABEL in [c.label for c in p.cases] or any(c.shape_only for c in p.cases):
                covered.add(stem)
    assert covered == set(ALL_STEMS)


class _StateOnCpu(torch.optim.Optimizer):
    """SGD with momentum whose buffer is made on the CPU (torch.zeros(p.shape), no device=)."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "buf" not in st:
                    st["buf"] = torch.zeros(p.shape, dtype=p.dtype)
                st["buf"].mul_(group["momentum"]).add_(p.grad)
                p.add_(st["buf"], alpha=-group["lr"])


def test_an_optimizer_with_state_on_the_cpu_loses_the_simulated_gpu_case():
    result = grade_impl("optimizers", "SGD", _StateOnCpu)
    verdict = fake_verdict(result)
    assert verdict is not None and not verdict.passed and verdict.hint == DEVICE_HINT, verdict


def test_data_dependent_code_is_inconclusive_not_wrong():
    """.item() and boolean masks cannot run on a fake tensor or on meta: those cases are left out
    of the check's share (neither passed nor failed), saying so, and the check earns full marks."""
    ref = reference("losses")["l1_loss"]

    def with_item(input, target, reduction="mean"):
        out = ref(input, target, reduction)
        float(out.sum())  # data-dependent
        return out

    result = grade_impl("losses", "l1_loss", with_item)
    verdict = fake_verdict(result)
    assert verdict.inconclusive and not verdict.passed and verdict.message.startswith("not judged"), verdict
    meta = [v for v in result.cases if v.label.startswith("on the meta device")]
    assert meta and meta[0].inconclusive, meta
    assert result.points == result.max_points
    assert result.total == len(result.cases) - 2 and result.passed == result.total


ERRORS_THAT_SAY_META = [
    NotImplementedError("see the metadata of this cell"),
    RuntimeError("Tensor.item() cannot be called on meta tensors"),
    NotImplementedError("Cannot copy out of meta tensor; no data!"),
    RuntimeError("DataDependentOutputException: fake tensor, inference mode"),
]


@pytest.mark.parametrize("error", ERRORS_THAT_SAY_META, ids=lambda e: str(e)[:30])
def test_an_error_is_never_a_pass_whatever_it_says(error):
    """A stub that raises an error naming meta, fake tensors or inference mode earns nothing:
    its CPU cases fail, so its meta and simulated-CUDA cases are judged (failed), not left out."""
    def stub(input, target, reduction="mean"):
        raise error

    for name in ("l1_loss", "mse_loss", "nll_loss"):
        result = grade_impl("losses", name, stub if name != "nll_loss" else
                            (lambda input, target, weight=None, ignore_index=-100, reduction="mean": stub(input, target)))
        assert result.points == 0 and result.passed == 0, (name, [(v.label, v.message) for v in result.cases])
        assert not any(v.inconclusive for v in result.cases), name


def test_an_error_raised_only_on_a_device_fails_the_device_case():
    """Code that raises its own error on the meta or simulated device only (where it ran on the
    CPU) is judged there: a raise of the code is the code's, whatever it says."""
    ref = reference("losses")["l1_loss"]

    def raises_off_the_cpu(input, target, reduction="mean"):
        if input.device.type != "cpu":
            raise RuntimeError("fake tensor: data-dependent output on meta")
        return ref(input, target, reduction)

    result = grade_impl("losses", "l1_loss", raises_off_the_cpu)
    fake = fake_verdict(result)
    assert not fake.passed and not fake.inconclusive, fake
    assert result.points < result.max_points


def test_a_stub_a_detached_output_and_a_missing_backward_fail_the_simulated_gpu_case():
    """The case runs its inputs in full on the CPU too (errors, forbidden calls, gradients), so
    it gives no points for a device that an answer never gets right otherwise."""
    def stub(input, target, reduction="mean"):
        raise NotImplementedError()

    ref = reference("losses")["l1_loss"]
    verdict = fake_verdict(grade_impl("losses", "l1_loss", stub))
    assert not verdict.passed and verdict.hint != DEVICE_HINT
    detached = fake_verdict(grade_impl("losses", "l1_loss", lambda i, t, reduction="mean": ref(i, t, reduction).detach()))
    assert not detached.passed and "not differentiable" in detached.message


def test_autograd_on_the_simulated_device_cannot_abort(tmp_path):
    """Code that records autograd itself (requires_grad_, backward) would abort a CPU-only
    process on a fake CUDA tensor; under inference mode it raises instead, so the sandboxed
    runner grades the submission: the device case is inconclusive, every other case passes."""
    from autograder.course import source_notebook
    from autograder.grading import grade_class
    from autograder.notebook import find_cell

    nb = json.loads(source_notebook("losses").read_text())
    cell = find_cell(nb, "l1_loss")
    cell["source"] = "".join(cell["source"]) + (
        "\n_l1 = l1_loss\n"
        "def l1_loss(input, target, reduction='mean'):\n"
        "    with torch.enable_grad():\n"
        "        x = input.detach().clone().requires_grad_(True)\n"
        "        (x * 2).sum().backward()\n"
        "    return _l1(input, target, reduction)\n")
    d = tmp_path / "submitted" / "autograd" / "losses"
    d.mkdir(parents=True)
    (d / "losses.ipynb").write_text(json.dumps(nb))
    (result,) = grade_class("losses", submissions=tmp_path / "submitted", out=tmp_path / "out", device="cpu",
                            jobs=1, progress=False)
    l1 = next(c for c in result.checks if c.name == "l1_loss")
    assert l1.points == l1.max_points, [v.message for v in l1.cases if not v.passed]
    assert result.score == result.max_score


MODULE_CHECKS = [pytest.param(stem, name, id=f"{stem}.{name}") for stem in ALL_STEMS
                 for name, check in load_checks(stem).items()
                 if type(check.probe).__name__ in ("ModuleProbe", "ActivationModuleProbe")]


def _with_forward(make, change):
    """`make` (a module class, or a function that returns a module) whose modules' forward
    passes their output through `change`."""
    def impl(*args, **kwargs):
        module = make(*args, **kwargs)
        forward = module.forward
        module.forward = lambda *a, **k: change(forward(*a, **k))
        return module
    return impl


def _forward_to_cpu(make):
    """The output moved to the CPU (a hard-coded .cpu())."""
    return _with_forward(make, _on_cpu)


def _stray_cpu_tensor(make):
    """A zero made without device= (it lands on the CPU) added to the output."""
    return _with_forward(make, lambda out: out + torch.zeros(out.shape[-1:], dtype=out.dtype))


@pytest.mark.parametrize("stem,name", MODULE_CHECKS)
@pytest.mark.parametrize("bug", [_forward_to_cpu, _stray_cpu_tensor])
def test_a_device_bound_module_loses_the_simulated_gpu_case(stem, name, bug):
    """Modules too: built on the CPU, their parameters placed on the simulated device as `.to()`
    would, the forward pass runs there; an output moved to the CPU, or a CPU tensor mixed in,
    loses the case with the device hint, and the reference passes it."""
    p = grader(stem).prepared[name]
    assert FAKE_CUDA_LABEL in [c.label for c in p.cases]
    ref = reference(stem)[p.check.target]
    assert fake_verdict(grade_impl(stem, name, ref)).passed
    result = grade_impl(stem, name, bug(ref))
    verdict = fake_verdict(result)
    assert not verdict.passed and verdict.hint == DEVICE_HINT, verdict.message
    assert result.points < result.max_points
