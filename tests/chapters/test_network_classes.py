"""The network_classes chapter's checks, proven both ways.

1. The reference classes (the source notebook's solution cells) equal torch's
   own nn.Sequential, with the same weights, on every graded case: torch is the oracle.
2. Every catalogued mistake loses points and gets its own hint, in-process and
   through the sandboxed runner.
3. Known-correct alternatives keep full marks (other layer names, another
   registration order, nn.Sequential subclasses, buffers).
4. What `.to()` cannot move, and hard-coded shapes and dtypes, lose points.
"""
from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from tests.conftest import assert_full_marks, checks_of, grade_impl, grader, reference

STEM = "network_classes"


def oracle_mlp(sizes, activation=nn.ReLU):
    layers = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [activation()] if k else []
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class OracleResidual(nn.Module):
    """torch's modules only (nn.ReLU), the skip written out."""

    def __init__(self, i, h, o):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(i, h), nn.Linear(h, h), nn.Linear(h, o)
        self.relu = nn.ReLU()

    def forward(self, X):
        H = self.relu(self.a(X))
        return self.c(H + self.relu(self.b(H)))


class OracleSequence(nn.Module):
    """The LSTM's output after the last step, output[:, -1], into the Linear layer."""

    def __init__(self, i, h, c):
        super().__init__()
        self.lstm, self.fc = nn.LSTM(i, h, batch_first=True), nn.Linear(h, c)

    def forward(self, X):
        return self.fc(self.lstm(X)[0][:, -1])


ORACLE = {
    "MyFirstNetwork": lambda i, h, o: nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o)),
    "MLP": oracle_mlp,
    "count_parameters": lambda model: sum(p.numel() for p in model.parameters() if p.requires_grad),
    "ResidualNetwork": OracleResidual,
    "SequenceClassifier": OracleSequence,
}


@pytest.mark.parametrize("name", checks_of(STEM))
def test_reference_equals_the_torch_oracle_on_every_case(name):
    from autograder.compare import compare_answers
    from autograder.probes import run_probe

    p = grader(STEM).prepared[name]
    ref_impl = reference(STEM)[p.check.target]
    for case in p.cases:
        if case.shape_only:
            continue
        for c in (case, case.upcast()):
            ours = run_probe(p.check, ref_impl, c)
            theirs = run_probe(p.check, ORACLE[name], c)
            assert not ours["error"] and not theirs["error"], (ours["error"], theirs["error"])
            assert compare_answers(ours, theirs, case=c) is None, c.label


def test_count_parameters_cases_have_the_hand_counted_answers():
    from autograder.probes import run_probe

    p = grader(STEM).prepared["count_parameters"]
    counted = [run_probe(p.check, reference(STEM)["count_parameters"], c)["values"]["output"] for c in p.cases]
    # 4*8+8+8*2+2; + BatchNorm's weight and bias (8+8); frozen first layer: 20*3+3;
    # no bias: 10*3; frozen outer Linear: 3*4+4; frozen embedding: 4*2+2
    assert counted == [58, 74, 63, 30, 16, 10]


def test_reference_module_probe_outputs_match_a_plain_forward_pass():
    """The probe's output is net(X) with the case's weights, independently of the probe's own loading."""
    from autograder.probes import run_probe

    p = grader(STEM).prepared["MyFirstNetwork"]
    case = p.cases[0].upcast()
    W1, b1, W2, b2 = case.kwargs["weights"]
    (X,) = case.kwargs["inputs"]
    expected = torch.relu(X @ W1.T + b1) @ W2.T + b2
    got = run_probe(p.check, reference(STEM)["MyFirstNetwork"], case)["values"]["output"]
    torch.testing.assert_close(got, expected)


# -- known-correct alternatives ------------------------------------------------------------------

class FirstDefinedBackwards(nn.Module):
    """Layers registered output-first, with other names: parameters still match by shape."""

    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.head = nn.Linear(hidden_size, output_size)
        self.body = nn.Linear(input_size, hidden_size)

    def forward(self, X):
        return self.head(torch.relu(self.body(X)))


class FirstAsSequential(nn.Sequential):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__(nn.Linear(input_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, output_size))


class FirstWithBufferAndDropout(nn.Module):
    """A buffer moves with .to(); dropout with p=0 changes nothing; forward called explicitly."""

    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.drop = nn.Dropout(p=0.0)
        self.fc2 = nn.Linear(hidden_size, output_size)
        self.register_buffer("zero", torch.zeros(hidden_size))

    def forward(self, X):
        return self.fc2.forward(self.drop(torch.relu(self.fc1(X) + self.zero)))


class MLPByAttributes(nn.Module):
    """Layers as numbered attributes via add_module, activations one per gap."""

    def __init__(self, sizes, activation=nn.ReLU):
        super().__init__()
        self.n = len(sizes) - 1
        for k in range(self.n):
            self.add_module(f"linear{k}", nn.Linear(sizes[k], sizes[k + 1]))
            if k < self.n - 1:
                self.add_module(f"act{k}", activation())

    def forward(self, X):
        for k in range(self.n):
            X = getattr(self, f"linear{k}")(X)
            if k < self.n - 1:
                X = getattr(self, f"act{k}")(X)
        return X


class MLPAsSequential(nn.Sequential):
    def __init__(self, sizes, activation=nn.ReLU):
        layers = [nn.Linear(sizes[0], sizes[1])]
        for n_in, n_out in zip(sizes[1:-1], sizes[2:]):
            layers += [activation(), nn.Linear(n_in, n_out)]
        super().__init__(*layers)


class SequenceTimeFirst(nn.Module):
    """An LSTM without batch_first, given X transposed to (T, N, D): the same classifier."""

    def __init__(self, i, h, c):
        super().__init__()
        self.lstm, self.fc = nn.LSTM(i, h), nn.Linear(h, c)

    def forward(self, X):
        _, (h_n, _) = self.lstm(X.transpose(0, 1))
        return self.fc(h_n[-1])


ALTERNATIVES = [
    pytest.param("MyFirstNetwork", FirstDefinedBackwards, id="MyFirstNetwork:registered-backwards"),
    pytest.param("MyFirstNetwork", FirstAsSequential, id="MyFirstNetwork:Sequential-subclass"),
    pytest.param("MyFirstNetwork", FirstWithBufferAndDropout, id="MyFirstNetwork:buffer-and-dropout"),
    pytest.param("MyFirstNetwork", lambda i, h, o: nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o)),
                 id="MyFirstNetwork:a-function-returning-Sequential"),
    pytest.param("MLP", MLPByAttributes, id="MLP:add_module"),
    pytest.param("MLP", MLPAsSequential, id="MLP:Sequential-subclass"),
    pytest.param("ResidualNetwork", OracleResidual, id="ResidualNetwork:nn.ReLU-module"),
    pytest.param("SequenceClassifier", SequenceTimeFirst, id="SequenceClassifier:time-first-transposed"),
    pytest.param("count_parameters", lambda model: sum(p.numel() for _, p in model.named_parameters()
                                                      if p.requires_grad), id="count_parameters:named_parameters"),
    pytest.param("count_parameters", lambda model: int(sum(torch.tensor(p.shape).prod() for p in model.parameters()
                                                           if p.requires_grad)), id="count_parameters:shape-product"),
]


@pytest.mark.parametrize("name, impl", ALTERNATIVES)
def test_known_correct_alternative_keeps_full_marks(name, impl):
    assert_full_marks(STEM, name, impl)


# -- what the module probe catches beyond the catalogue --------------------------------------------

def test_a_plain_tensor_attribute_fails_the_device_case_only():
    class WithPlainTensor(FirstAsSequential):
        def __init__(self, input_size, hidden_size, output_size):
            super().__init__(input_size, hidden_size, output_size)
            self.shift = torch.zeros(input_size)  # not a buffer: .to() leaves it on the CPU

        def forward(self, X):
            return super().forward(X + self.shift)

    result = grade_impl(STEM, "MyFirstNetwork", WithPlainTensor)
    meta = [v for v in result.cases if v.label.startswith("on the meta device")]
    assert meta and not meta[0].passed and "device" in meta[0].message, meta[0].message
    assert result.passed == result.total - 1


def test_the_stray_tensor_is_named():
    from autograder.probes.module import stray_tensors

    net = nn.Linear(2, 2).to("meta")
    net.scale = torch.ones(1)
    assert stray_tensors(net, torch.device("meta")) == ["scale"]


def test_a_hard_coded_batch_size_fails_other_batches():
    class FixedBatch(FirstAsSequential):
        def forward(self, X):
            return super().forward(X.reshape(5, -1))

    result = grade_impl(STEM, "MyFirstNetwork", FixedBatch)
    assert 0 < result.points < result.max_points


def test_a_hard_coded_float32_fails_the_float64_cases():
    class Float32(FirstAsSequential):
        def forward(self, X):
            return super().forward(X).float()

    result = grade_impl(STEM, "MyFirstNetwork", Float32)
    assert result.points < result.max_points
    assert any("expected dtype torch.float64, got torch.float32" in v.message for v in result.cases)


def test_a_stub_class_scores_zero_and_says_not_implemented():
    class Stub(nn.Module):
        def __init__(self, input_size, hidden_size, output_size):
            raise NotImplementedError()

    result = grade_impl(STEM, "MyFirstNetwork", Stub)
    assert result.points == 0
    assert all("NotImplementedError" in v.message for v in result.cases)


def test_mistakes_get_their_hints_through_the_sandboxed_runner(tmp_path):
    """The module probe runs in the child; its answers must cross the process boundary intact."""
    from autograder.course import source_notebook
    from autograder.grading import grade_class

    nb = json.loads(source_notebook(STEM).read_text())
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "MyFirstNetwork":
            src, n = re.subn(r"\n +super\(\).__init__\(\)[^\n]*", "", src, count=1)
            assert n == 1
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "MLP":
            src = src.replace("nn.ModuleList(", "list(", 1)
        cell["source"] = src
    folder = tmp_path / "submitted" / "student" / STEM
    folder.mkdir(parents=True)
    (folder / f"{STEM}.ipynb").write_text(json.dumps(nb))
    (result,) = grade_class(STEM, submissions=tmp_path / "submitted", out=tmp_path / "out", device="cpu", jobs=1,
                            progress=False)
    checks = {c.name: c for c in result.checks}
    mistakes = {m.name: m for m in grader(STEM).checks["MyFirstNetwork"].mistakes}
    assert checks["MyFirstNetwork"].points == 0
    assert mistakes["no-super-init"].hint in checks["MyFirstNetwork"].hints
    mlp_mistakes = {m.name: m for m in grader(STEM).checks["MLP"].mistakes}
    assert checks["MLP"].points == 0
    assert mlp_mistakes["layers-in-a-python-list"].hint in checks["MLP"].hints
    assert checks["count_parameters"].points == checks["count_parameters"].max_points


def test_relu_as_a_maximum_with_zero_loses_the_kink_case_only():
    """torch.maximum(x, 0) equals relu(x) but splits the gradient at a tie (0.5 at 0): it fails
    exactly the zero-initialised cases, where torch's ReLU has gradient 0."""
    class MaxRelu(nn.Module):
        def __init__(self, input_size, hidden_size, output_size):
            super().__init__()
            self.fc1 = nn.Linear(input_size, hidden_size)
            self.fc2 = nn.Linear(hidden_size, output_size)

        def forward(self, X):
            h = self.fc1(X)
            return self.fc2(torch.maximum(h, torch.zeros_like(h)))

    result = grade_impl(STEM, "MyFirstNetwork", MaxRelu)
    failed = [v.label for v in result.cases if not v.passed]
    assert failed and all("ReLU at exactly 0" in label for label in failed), failed


def test_the_residual_reference_calls_f_relu_and_holds_no_activation_module():
    """The exercise's point: the activation is a function in forward, the skip is in forward too."""
    net = reference(STEM)["ResidualNetwork"](4, 8, 3)
    assert [type(m) for m in net.children()] == [nn.Linear, nn.Linear, nn.Linear]
    X = torch.randn(5, 4)
    a, b, c = net.children()
    H = torch.relu(a(X))
    torch.testing.assert_close(net(X), c(H + torch.relu(b(H))))


def test_the_last_hidden_state_is_the_output_after_the_last_step():
    """What the statement says of nn.LSTM's shapes, checked on torch: h_n[-1] == output[:, -1]."""
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, batch_first=True)
    output, (h_n, c_n) = lstm(torch.randn(2, 6, 3))
    assert output.shape == (2, 6, 5) and h_n.shape == c_n.shape == (1, 2, 5)
    torch.testing.assert_close(h_n[-1], output[:, -1])
