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
5. Held-out sets (issue 23): training runs in other styles (PyTorch's quickstart, d2l, gradient
   accumulation, swa_utils.update_bn, Lightning-style steps) get full marks; the same runs with one
   bug each lose points with the hint naming it; a bug in evaluate costs nothing in fit (fit runs
   with the course's evaluate); device-bound code loses its device cases without a GPU.
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
from tests.conftest import (assert_full_marks, assert_loses_points_naming, assert_reference_equals_oracle, grade_impl,
                            grader, reference)

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


# -- held-out training runs: correct code in several styles gets full marks ----------------------


def _quickstart_fit(X_train, y_train, X_val, y_val):
    """PyTorch's quickstart tutorial loop: loss_fn = nn.CrossEntropyLoss(), train() and test() functions,
    model.eval() and torch.no_grad() in test() (the loss module runs there, in its training mode)."""
    device = X_train.device
    train_dataloader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X_train, y_train),
                                                   batch_size=64, shuffle=True)
    test_dataloader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X_val, y_val), batch_size=64)

    class NeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear_relu_stack = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.2),
                                                   nn.Linear(128, 10))

        def forward(self, x):
            return self.linear_relu_stack(x)

    model = NeuralNetwork().to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def train(dataloader, model, loss_fn, optimizer):
        model.train()
        for X, y in dataloader:
            pred = model(X)
            loss = loss_fn(pred, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    def test(dataloader, model, loss_fn):
        model.eval()
        test_loss, correct = 0, 0
        with torch.no_grad():
            for X, y in dataloader:
                pred = model(X)
                test_loss += loss_fn(pred, y).item()
                correct += (pred.argmax(1) == y).type(torch.float).sum().item()
        return correct / len(dataloader.dataset)

    for _ in range(10):
        train(train_dataloader, model, loss_fn, optimizer)
        test(test_dataloader, model, loss_fn)
    return model


def _d2l_fit(X_train, y_train, X_val, y_val):
    """d2l's softmax-regression-concise style: init_weights applied, reduction='none' and l.mean(),
    an Accumulator, evaluate_accuracy that calls net.eval() when net is a Module."""
    class Accumulator:
        def __init__(self, n):
            self.data = [0.0] * n

        def add(self, *args):
            self.data = [a + float(b) for a, b in zip(self.data, args)]

        def __getitem__(self, idx):
            return self.data[idx]

    def accuracy(y_hat, y):
        if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
            y_hat = y_hat.argmax(axis=1)
        cmp = y_hat.type(y.dtype) == y
        return float(cmp.type(y.dtype).sum())

    def evaluate_accuracy(net, data_iter):
        if isinstance(net, torch.nn.Module):
            net.eval()
        metric = Accumulator(2)
        with torch.no_grad():
            for X, y in data_iter:
                metric.add(accuracy(net(X), y), y.numel())
        return metric[0] / metric[1]

    def init_weights(m):
        if type(m) == nn.Linear:
            nn.init.normal_(m.weight, std=0.01)

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 10))
    net.apply(init_weights)
    net = net.to(X_train.device)
    loss = nn.CrossEntropyLoss(reduction="none")
    trainer = torch.optim.SGD(net.parameters(), lr=0.1)
    train_iter = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X_train, y_train), batch_size=32,
                                             shuffle=True)
    val_iter = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X_val, y_val), batch_size=256)
    for _ in range(10):
        net.train()
        for X, y in train_iter:
            l = loss(net(X), y)
            trainer.zero_grad()
            l.mean().backward()
            trainer.step()
        evaluate_accuracy(net, val_iter)
    return net


def _accumulating_fit(X_train, y_train, X_val, y_val):
    """Gradient accumulation: two micro-batches per step, zero_grad after every second one."""
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).to(X_train.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    criterion = nn.CrossEntropyLoss()
    for _ in range(12):
        model.train()
        order = torch.randperm(len(X_train), device=X_train.device)
        optimizer.zero_grad()
        for k, start in enumerate(range(0, len(order), 32)):
            rows = order[start:start + 32]
            (criterion(model(X_train[rows]), y_train[rows]) / 2).backward()
            if k % 2 == 1:
                optimizer.step()
                optimizer.zero_grad()
    return model


def _swa_update_bn_fit(X_train, y_train, X_val, y_val):
    """torch.optim.swa_utils: an averaged model whose batch-norm statistics update_bn recomputes (a forward
    pass over the training images under torch.no_grad(), in training mode, on purpose)."""
    from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

    model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10)).to(X_train.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    swa_model = AveragedModel(model)
    swa_scheduler = SWALR(optimizer, swa_lr=0.02)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X_train, y_train), batch_size=64,
                                         shuffle=True)
    for epoch in range(10):
        model.train()
        for X, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X), y).backward()
            optimizer.step()
        if epoch >= 5:
            swa_model.update_parameters(model)
            swa_scheduler.step()
    update_bn(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X_train), batch_size=64), swa_model,
              device=X_train.device)
    swa_model.eval()
    with torch.no_grad():
        (swa_model(X_val).argmax(1) == y_val).float().mean()
    return swa_model


def _lightning_style_fit(X_train, y_train, X_val, y_val):
    """Lightning-style steps written by hand: training_step/validation_step methods, inference_mode,
    model.zero_grad(set_to_none=True), a OneCycleLR schedule stepped every batch."""
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Dropout(0.1), nn.Linear(96, 10))

        def forward(self, x):
            return self.body(x)

        def training_step(self, batch):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def validation_step(self, batch):
            x, y = batch
            return (self(x).argmax(-1) == y).float().mean()

    model = Classifier().to(X_train.device)
    epochs, steps = 8, (len(X_train) + 63) // 64
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=epochs * steps)
    for _ in range(epochs):
        model.train()
        for batch in zip(X_train.split(64), y_train.split(64)):
            model.zero_grad(set_to_none=True)
            model.training_step(batch).backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.inference_mode():
            model.validation_step((X_val, y_val))
    return model


CORRECT_FITS = {"pytorch-quickstart": _quickstart_fit, "d2l-concise": _d2l_fit,
                "gradient-accumulation": _accumulating_fit, "swa-update-bn": _swa_update_bn_fit,
                "lightning-style-steps": _lightning_style_fit, "sgd-batchnorm-logsoftmax-nll": _sgd_batchnorm_fit}


@pytest.mark.parametrize("name", list(CORRECT_FITS))
def test_correct_training_runs_in_other_styles_get_full_marks(name):
    assert_full_marks(STEM, "fit", CORRECT_FITS[name])


# -- held-out training runs with one bug each: they lose points, with the hint naming the bug -------

def _mutant(source_fit, old: str, new: str, *more: tuple[str, str]):
    """source_fit with one line changed (or more: `more` holds further (old, new) pairs): a student's
    version of that style with one bug (or several)."""
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(source_fit))
    for a, b in ((old, new), *more):
        assert a in source, a
        source = source.replace(a, b)
    namespace = dict(globals())
    exec(compile(source, f"<mutant of {source_fit.__name__}>", "exec"), namespace)
    return namespace[source_fit.__name__]


WRONG_FITS = {  # name -> (the correct run, old, new, the mistake whose hint it must get)
    "quickstart-no-eval": (_quickstart_fit, "        model.eval()\n", "", "validation-in-train-mode"),
    "quickstart-no-zero-grad": (_quickstart_fit, "            optimizer.zero_grad()\n", "", "no-zero-grad"),
    "quickstart-model-on-the-cpu": (_quickstart_fit, "model = NeuralNetwork().to(device)",
                                    "model = NeuralNetwork().to('cpu')", "model-on-the-cpu"),
    "quickstart-no-to-device": (_quickstart_fit, "model = NeuralNetwork().to(device)", "model = NeuralNetwork()",
                                "model-on-the-cpu"),
    "d2l-no-eval": (_d2l_fit, "            net.eval()\n", "            pass\n", "validation-in-train-mode"),
    "d2l-softmax-last": (_d2l_fit, "nn.Linear(256, 10))", "nn.Linear(256, 10), nn.Softmax(dim=1))",
                         "softmax-then-cross-entropy"),
    "accumulation-never-zeroed": (_accumulating_fit, "                optimizer.zero_grad()\n", "",
                                  "no-zero-grad"),
    "swa-validation-in-train-mode": (_swa_update_bn_fit, "    swa_model.eval()\n", "",
                                     "validation-in-train-mode-batch-norm"),
    "lightning-no-eval": (_lightning_style_fit, "        model.eval()\n", "", "validation-in-train-mode"),
    "lightning-loads-the-digits": (_lightning_style_fit, "    model = Classifier().to(X_train.device)\n",
                                   "    from sklearn.datasets import load_digits\n"
                                   "    X_train = torch.tensor(load_digits().data, dtype=torch.float32,\n"
                                   "                           device=X_train.device)[:len(y_train)]\n"
                                   "    model = Classifier().to(X_train.device)\n", "trains-on-all-digits"),
}


@pytest.mark.parametrize("name", list(WRONG_FITS))
def test_training_runs_with_one_bug_lose_points_with_its_hint(name):
    fit, old, new, mistake = WRONG_FITS[name]
    result = grade_impl(STEM, "fit", _mutant(fit, old, new))
    hint = next(m.hint for m in grader(STEM).checks["fit"].mistakes if m.name == mistake)
    assert result.points < result.max_points, name
    assert mistake in result.mistakes and hint in result.hints, (name, result.mistakes, result.cases[0].message)


def test_the_hint_names_the_module_seen_in_training_mode():
    """The message says which kind of module ran in training mode on the validation images."""
    from autograder.probes.training import DROPOUT, NORM

    for name, kind in [("quickstart-no-eval", DROPOUT), ("swa-validation-in-train-mode", NORM)]:
        fit, old, new, _ = WRONG_FITS[name]
        message = grade_impl(STEM, "fit", _mutant(fit, old, new)).cases[0].message
        assert kind in message, (name, message)


def test_a_loss_module_or_a_model_without_mode_dependent_layers_is_never_flagged():
    from autograder.probes.training import mode_dependent

    assert mode_dependent(nn.CrossEntropyLoss()) is None and mode_dependent(nn.NLLLoss()) is None
    assert mode_dependent(nn.Linear(2, 2)) is None and mode_dependent(nn.Sequential(nn.ReLU())) is None
    assert mode_dependent(nn.Dropout(0.0)) is None and mode_dependent(nn.BatchNorm1d(3, track_running_stats=False)) \
        is None
    assert mode_dependent(nn.Dropout(0.0).eval()) is None and mode_dependent(nn.BatchNorm1d(3).eval()) is None
    assert mode_dependent(nn.Dropout(0.3)) and mode_dependent(nn.BatchNorm1d(3)) and mode_dependent(nn.AlphaDropout())
    assert mode_dependent(nn.InstanceNorm1d(3, track_running_stats=True))


# -- one bug costs once: fit is graded with the course's evaluate --------------------------------

NOTEBOOK_FIT = '''
def fit(X_train, y_train, X_val, y_val):
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10)).to(X_train.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    best, best_score = None, -1.0
    for _ in range(10):
        net.train()
        for start in range(0, len(X_train), 64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(X_train[start:start + 64]), y_train[start:start + 64]).backward()
            optimizer.step()
        score, _ = evaluate(net, [(X_val, y_val)], 10)
        if score > best_score:
            best, best_score = copy.deepcopy(net.state_dict()), score
    net.load_state_dict(best)
    return net
'''

BROKEN_EVALUATES = {  # a bug of evaluate's own: the evaluate check pays for it, fit does not
    "no-eval": "def evaluate(model, batches, num_classes):\n    with torch.no_grad():\n"
               "        X, y = batches[0]\n        p = model(X).argmax(1)\n"
               "        return float((p == y).float().mean()), None\n",
    "argmax-over-the-batch": "def evaluate(model, batches, num_classes):\n    model.eval()\n"
                             "    with torch.no_grad():\n        X, y = batches[0]\n        p = model(X).argmax(0)\n"
                             "        return float((p[:len(y)] == y).float().mean()), None\n",
    "raises": "def evaluate(model, batches, num_classes):\n    raise NotImplementedError()\n",
}


@pytest.mark.parametrize("bug", list(BROKEN_EVALUATES))
def test_a_bug_in_evaluate_is_not_paid_for_again_in_fit(bug):
    namespace = {"torch": torch, "nn": nn, "copy": copy}
    exec(BROKEN_EVALUATES[bug] + NOTEBOOK_FIT, namespace)
    result = grade_impl(STEM, "fit", namespace["fit"])
    assert result.points == result.max_points, result.cases[0].message
    assert "the course's evaluate" in result.cases[0].label
    assert namespace["evaluate"].__code__.co_filename == "<string>"  # the student's is put back afterwards


def test_a_notebook_whose_evaluate_forgets_eval_mode_loses_only_evaluates_points(wrong_class):
    """The reference fit calls evaluate: graded by the runner, it keeps full marks (one bug costs once)."""
    checks = {c.name: c for c in wrong_class["train_mode_eval"].checks}
    assert checks["evaluate"].points < checks["evaluate"].max_points
    assert checks["fit"].points == checks["fit"].max_points, checks["fit"].cases


# -- device cases ----------------------------------------------------------------------------------

def _evaluate_confusion_on_the_cpu(model, batches, num_classes):
    """A confusion matrix made without device= and filled from Python numbers: on a GPU it stays on the CPU."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    with torch.no_grad():
        for X, y in batches:
            for t, p in zip(y.tolist(), model(X).argmax(1).tolist()):
                confusion[t, p] += 1
    return confusion.diagonal().sum().item() / confusion.sum().item(), confusion


def _evaluate_cpu_counts_added(model, batches, num_classes):
    """A CPU matrix to which each batch's counts (on the labels' device) are added: a GPU raises."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    with torch.no_grad():
        for X, y in batches:
            counts = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=y.device)
            counts.index_put_((y, model(X).argmax(1)), torch.ones_like(y), accumulate=True)
            confusion += counts
    return confusion.diagonal().sum().item() / confusion.sum().item(), confusion


def _evaluate_one_hot(model, batches, num_classes):
    """Correct, another style: one-hot matrices multiplied, counts summed, accuracy from a Python sum."""
    model.eval()
    total, confusion = 0, None
    with torch.no_grad():
        for X, y in batches:
            p = model(X).argmax(dim=-1)
            counts = torch.zeros(len(y), num_classes, dtype=torch.int64, device=y.device).scatter_(
                1, y.unsqueeze(1), 1).T @ torch.zeros(len(y), num_classes, dtype=torch.int64, device=y.device
                                                         ).scatter_(1, p.unsqueeze(1), 1)
            confusion = counts if confusion is None else confusion + counts
            total += len(y)
    return float(confusion.trace().item()) / total, confusion


DEVICE_CASES = {"standardize": ["meta", "simulated CUDA"], "evaluate": ["simulated CUDA"], "fit": []}


def test_the_device_cases_of_every_check():
    """standardize: meta and simulated CUDA; evaluate: simulated CUDA only (an accuracy needs data; there the
    CPU pass's .item() and .tolist() are replayed); fit: none of its own, its one case trains once more on
    meta (FitProbe._on_meta), so device-bound training code loses that case, as it would on a GPU."""
    kinds = {name: [("simulated CUDA" if c.fake_cuda else "meta") for c in p.cases if c.shape_only]
             for name, p in grader(STEM).prepared.items()}
    assert kinds == DEVICE_CASES
    from autograder.probes.training import ON_META

    assert ON_META in grader(STEM).prepared["fit"].cases[0].compare


@pytest.mark.parametrize("name, impl, bug", [
    pytest.param("evaluate", _evaluate_confusion_on_the_cpu, "device-bound", id="evaluate:confusion-on-the-cpu"),
    pytest.param("evaluate", _evaluate_cpu_counts_added, "device-bound", id="evaluate:cpu-matrix-plus-counts"),
    pytest.param("fit", _mutant(_accumulating_fit, ".to(X_train.device)", ".to('cpu')"), "model-on-the-cpu",
                 id="fit:model-on-the-cpu"),
])
def test_device_bound_code_loses_its_device_cases_without_a_gpu(name, impl, bug):
    assert_loses_points_naming(STEM, name, impl, bug)


@pytest.mark.parametrize("impl", [_evaluate_one_hot, _loader_evaluate, _sklearn_evaluate])
def test_correct_evaluations_keep_full_marks_on_the_simulated_gpu(impl):
    assert_full_marks(STEM, "evaluate", impl)


def _standardize_through_numpy(train, *others):
    """Statistics computed in numpy and made into CPU tensors: on a GPU the outputs come back on the CPU."""
    mean = torch.from_numpy(train.cpu().numpy().mean(0))
    std = torch.from_numpy(train.cpu().numpy().std(0))
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple((x.cpu() - mean) / std for x in (train, *others))


def test_standardize_through_numpy_loses_its_device_case():
    assert_loses_points_naming(STEM, "standardize", _standardize_through_numpy, "device-bound")


def test_a_run_on_meta_past_its_time_is_not_graded_there(monkeypatch):
    """The meta run costs Python time per step: past META_S it stops and its outcome is left out (NOT_RUN),
    never failed."""
    import autograder.probes.training as training
    from autograder.probes.fake_cuda import NOT_RUN

    case = grader(STEM).prepared["fit"].cases[0]
    monkeypatch.setattr(training, "META_S", 0.0)
    assert grader(STEM).checks["fit"].probe._on_meta(reference(STEM)["fit"], case.kwargs) == NOT_RUN


@pytest.mark.parametrize("old, new, mistake", [
    ("correct += int((predicted == y).sum())", "correct += (predicted == y).sum()", "accuracy-a-tensor"),
    ("    model.eval()\n", "", "train-mode"),
    ("index_put_((y, predicted)", "index_put_((predicted, y)", "confusion-transposed"),
    ("    with torch.inference_mode():\n", "    if True:\n", "autograd-on"),
], ids=["0-d-tensor-accuracy", "no-eval", "transposed", "no-inference-mode"])
def test_held_out_evaluations_with_one_bug_lose_points_with_its_hint(old, new, mistake):
    assert_loses_points_naming(STEM, "evaluate", _mutant(_loader_evaluate, old, new), mistake)


def test_a_helper_of_the_students_own_design_that_shares_the_name_is_kept():
    """fit calls an `evaluate(model, X, y)` of its own design (not the statement's signature): that call goes
    to the student's function, so the run is graded as written."""
    namespace = {"torch": torch, "nn": nn, "copy": copy}
    exec("def evaluate(model, X, y):\n    model.eval()\n    with torch.no_grad():\n"
         "        return float((model(X).argmax(1) == y).float().mean())\n"
         + NOTEBOOK_FIT.replace("score, _ = evaluate(net, [(X_val, y_val)], 10)", "score = evaluate(net, X_val, y_val)"),
         namespace)
    assert_full_marks(STEM, "fit", namespace["fit"])


@pytest.mark.parametrize("name, impl, bugs", [
    pytest.param("fit", _mutant(_quickstart_fit, "        model.eval()\n", "",
                                ("            optimizer.zero_grad()\n", "")),
                 ("no-zero-grad", "validation-in-train-mode"), id="quickstart:no-eval-and-no-zero-grad"),
    pytest.param("evaluate", _mutant(_loader_evaluate, "    model.eval()\n", "",
                                     ("index_put_((y, predicted)", "index_put_((predicted, y)")),
                 ("train-mode", "confusion-transposed"), id="evaluate:no-eval-and-transposed"),
])
def test_held_out_code_with_two_bugs_gets_a_hint_for_each(name, impl, bugs):
    for bug in bugs:
        assert_loses_points_naming(STEM, name, impl, bug)
