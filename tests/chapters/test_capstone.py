"""The capstone's checks, proven both ways.

1. `standardize` equals scikit-learn's StandardScaler and `evaluate` equals
   scikit-learn's metrics on every case: they are the oracles.
2. The reference `fit` reaches the threshold with a margin, within a fraction
   of its time budget; the held-out labels never reach the learner's code.
3. Wrong training runs lose points: too weak a model with the accuracy it
   reached, and, in whole notebooks graded by the sandboxed runner, the
   known-wrong training code (no zero_grad, a softmax before
   CrossEntropyLoss, validation in training mode, the test images leaking
   into training) each with its hint.
4. Known-correct alternatives keep full marks.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from autograder.chapters.capstone import BUDGET_S, THRESHOLD, held_out_labels
from autograder.probes.training import SECONDS, TEST_OUTPUTS, AccuracyJudge
from tests.conftest import assert_full_marks, assert_reference_equals_oracle, grade_impl, grader, reference

STEM = "capstone"
MARGIN = 0.05  # the reference must beat the threshold by this much


def _standard_scaler(train, *others):
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train.cpu().double().numpy())
    return tuple(torch.tensor(scaler.transform(x.cpu().double().numpy()), dtype=x.dtype, device=x.device)
                 for x in (train, *others))


def _sklearn_evaluate(model, batches, num_classes):
    from sklearn.metrics import accuracy_score, confusion_matrix

    model.eval()
    with torch.no_grad():
        pairs = [(y, model(X).argmax(1)) for X, y in batches]
    y = torch.cat([p[0] for p in pairs]).cpu().numpy()
    p = torch.cat([p[1] for p in pairs]).cpu().numpy()
    matrix = confusion_matrix(y, p, labels=np.arange(num_classes))
    return float(accuracy_score(y, p)), torch.tensor(matrix, dtype=torch.int64, device=batches[0][1].device)


@pytest.mark.parametrize("name, oracle", [("standardize", _standard_scaler), ("evaluate", _sklearn_evaluate)])
def test_reference_equals_scikit_learn_on_every_case(name, oracle):
    assert_reference_equals_oracle(STEM, name, oracle)


def _fit_answer():
    return grader(STEM).prepared["fit"].reference[0]["values"]


def _accuracy(outputs: torch.Tensor) -> float:
    return float((outputs.argmax(1) == held_out_labels()).double().mean())


def test_reference_fit_reaches_the_threshold_with_a_margin_within_its_budget():
    answer = _fit_answer()
    accuracy = _accuracy(answer[TEST_OUTPUTS])
    assert accuracy >= THRESHOLD + MARGIN, accuracy
    assert answer[SECONDS] <= BUDGET_S / 4, answer[SECONDS]


def test_the_held_out_labels_never_reach_the_learners_code():
    labels = held_out_labels()
    (case,) = grader(STEM).prepared["fit"].cases
    assert set(case.kwargs) == {"X_train", "y_train", "X_val", "y_val", "X_test"}
    assert len(case.kwargs["X_test"]) == len(labels) == 359
    for t in case.tensors():
        assert not (t.shape == labels.shape and torch.equal(t, labels))
    # The judge holds a function that loads them (in the grader), never the labels.
    assert not any(isinstance(v, torch.Tensor) for v in vars(case.judge).values())
    # No image is both a training (or validation) image and a held-out test image.
    seen = {bytes(row.numpy()) for k in ("X_train", "X_val") for row in case.kwargs[k]}
    assert not seen & {bytes(row.numpy()) for row in case.kwargs["X_test"]}


def test_judge_reports_accuracy_shape_and_time():
    judge = AccuracyJudge(held_out_labels, THRESHOLD, BUDGET_S)
    labels = held_out_labels()
    perfect = nn.functional.one_hot(labels, 10).float()
    assert judge({TEST_OUTPUTS: perfect, SECONDS: 1.0}) is None
    wrong = perfect.roll(1, dims=1)
    assert "accuracy on the held-out test images: expected at least 0.90, got 0.000" in judge(
        {TEST_OUTPUTS: wrong, SECONDS: 1.0})
    assert "training seconds: expected at most 20" in judge({TEST_OUTPUTS: perfect, SECONDS: BUDGET_S + 1})
    assert "shape" in judge({TEST_OUTPUTS: perfect[:10], SECONDS: 1.0})


def test_stub_fit_scores_zero():
    def fit(X_train, y_train, X_val, y_val):
        raise NotImplementedError()

    result = grade_impl(STEM, "fit", fit)
    assert result.points == 0 and "NotImplementedError" in result.cases[0].message


def test_a_correct_but_too_short_run_fails_on_accuracy_without_a_hint():
    def fit(X_train, y_train, X_val, y_val):
        model = nn.Linear(64, 10).to(X_train.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(X_train[:32]), y_train[:32]).backward()
        optimizer.step()
        return model

    result = grade_impl(STEM, "fit", fit)
    assert result.points == 0
    assert "accuracy on the held-out test images: expected at least 0.90" in result.cases[0].message
    assert result.mistakes == []


def test_returning_something_else_than_a_module_is_reported():
    result = grade_impl(STEM, "fit", lambda X_train, y_train, X_val, y_val: (nn.Linear(64, 10), []))
    assert result.points == 0 and "returns: expected 'an nn.Module', got 'a tuple'" in result.cases[0].message


def _sgd_batchnorm_fit(X_train, y_train, X_val, y_val):
    """Another correct run: SGD with momentum, batch norm, StepLR, a log-softmax model with NLLLoss."""
    model = nn.Sequential(nn.Linear(64, 48), nn.BatchNorm1d(48), nn.Tanh(), nn.Linear(48, 10),
                          nn.LogSoftmax(dim=1)).to(X_train.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X_train, y_train), batch_size=32,
                                         shuffle=True)
    best, best_accuracy = None, -1.0
    for _ in range(12):
        model.train()
        for X, y in loader:
            optimizer.zero_grad(set_to_none=False)
            nn.functional.nll_loss(model(X), y).backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        with torch.inference_mode():
            accuracy = (model(X_val).argmax(1) == y_val).float().mean().item()
        if accuracy > best_accuracy:
            best, best_accuracy = copy.deepcopy(model.state_dict()), accuracy
    model.load_state_dict(best)
    return model


def _variance_standardize(train, *others):
    mean = train.sum(0) / len(train)
    var = ((train - mean) ** 2).mean(0)
    std = var.sqrt()
    std[std == 0] = 1
    return tuple((x - mean) / std for x in (train, *others))


def _loader_evaluate(model, batches, num_classes):
    model.eval()
    correct, total = 0, 0
    confusion = None
    with torch.inference_mode():
        for X, y in batches:
            predicted = model(X).max(dim=1).indices
            if confusion is None:
                confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=y.device)
            confusion.index_put_((y, predicted), torch.ones_like(y), accumulate=True)
            correct += int((predicted == y).sum())
            total += len(y)
    model.train()
    return correct / total, confusion


@pytest.mark.parametrize("name, impl", [
    pytest.param("fit", _sgd_batchnorm_fit, id="fit:sgd-batchnorm-logsoftmax-nll"),
    pytest.param("standardize", _variance_standardize, id="standardize:variance"),
    pytest.param("evaluate", _loader_evaluate, id="evaluate:index_put-inference_mode-restores-train"),
])
def test_known_correct_alternative_keeps_full_marks(name, impl):
    assert_full_marks(STEM, name, impl)


def test_reference_fit_is_deterministic():
    ns = reference(STEM)
    case = grader(STEM).prepared["fit"].cases[0]
    from autograder.probes import run_probe

    again = run_probe(grader(STEM).checks["fit"], ns["fit"], case)["values"][TEST_OUTPUTS]
    assert torch.equal(again, _fit_answer()[TEST_OUTPUTS].to(again.dtype))


# -- whole notebooks with known-wrong training code, graded by the sandboxed runner ---------------

WRONG = {  # student id -> (cell, old, new), and the check that must lose points with that mistake's hint
    "no_zero_grad": (("fit", "            adamw.zero_grad()\n", ""), "fit", "no-zero-grad"),
    "softmax_last": (("fit", "nn.Linear(64, 10)).to(device)", "nn.Linear(64, 10), nn.Softmax(dim=1)).to(device)"),
                     "fit", "softmax-then-cross-entropy"),
    "train_mode_eval": (("evaluate", "    model.eval()\n", ""), "evaluate", "train-mode"),
    "leaks_test": (("standardize", "centre = train.mean(dim=0)\n    spread = train.std(dim=0, correction=0)",
                    "everything = torch.cat([train, *others])\n    centre = everything.mean(dim=0)\n"
                    "    spread = everything.std(dim=0, correction=0)"), "standardize", "statistics-from-all-splits"),
}


@pytest.fixture(scope="module")
def wrong_class(tmp_path_factory):
    from autograder.course import source_notebook
    from autograder.grading import grade_class

    tmp = tmp_path_factory.mktemp("capstone-class")
    source = json.loads(source_notebook(STEM).read_text())
    for student, ((grade_id, old, new), _, _) in WRONG.items():
        nb = copy.deepcopy(source)
        cell = next(c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)
        text = "".join(cell["source"])
        assert old in text, (student, old)
        cell["source"] = text.replace(old, new)
        folder = tmp / "submitted" / student / STEM
        folder.mkdir(parents=True)
        (folder / f"{STEM}.ipynb").write_text(json.dumps(nb))
    results = grade_class(STEM, submissions=tmp / "submitted", out=tmp / "out", device="cpu", jobs=2,
                          progress=False)
    return {r.student_id: r for r in results}


@pytest.mark.parametrize("student", list(WRONG))
def test_known_wrong_training_code_loses_points_with_its_hint(wrong_class, student):
    _, check_name, mistake = WRONG[student]
    result = wrong_class[student]
    check = next(c for c in result.checks if c.name == check_name)
    assert check.points < check.max_points, (student, check)
    hint = next(m.hint for m in grader(STEM).checks[check_name].mistakes if m.name == mistake)
    assert mistake in check.mistakes and hint in check.hints, (student, check.mistakes, check.cases[:1])
