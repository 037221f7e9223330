"""Checks for the `capstone` chapter: a digit classifier trained and evaluated end to end.

`standardize` and `evaluate` are checked like every other exercise (values on
seeded cases, known mistakes with hints). `fit`, the learner's whole training
function, is graded on its outcome: the grader trains it under a fixed seed
on the course's training split and computes, itself, its accuracy on held-out
test images whose labels never reach the learner's code (see
autograder/probes/training.py). Every fifth image of scikit-learn's digits
(index % 5 == 4, 359 images) is that held-out split; the notebook's
`load_course_digits()` returns the other 1,438.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from functools import lru_cache

import torch
from torch import nn

from autograder.checks import Case, Check, Mistake, combined
from autograder.inputs import randint, randn
from autograder.probes.training import (DIAGNOSTICS, AccuracyJudge, EvaluateProbe, FitProbe, OutputsProbe,
                                         course_evaluate)

THRESHOLD = 0.90  # accuracy the training function must reach on the held-out test images
BUDGET_S = 20.0  # seconds of training it may take (one CPU thread when graded on a CPU)
N_TRAIN, N_VAL = 1150, 288  # the notebook's split of the 1,438 images it may use


# -- the data -------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.data).to(torch.uint8), torch.tensor(digits.target, dtype=torch.int64)


def _held_out() -> torch.Tensor:
    return torch.arange(len(_digits()[1])) % 5 == 4


def held_out_labels() -> torch.Tensor:
    """The labels of the held-out test images: only the grader reads them."""
    return _digits()[1][_held_out()]


# -- standardize ----------------------------------------------------------------------------------

def _pixel_like(gen, n, d, *, dtype, constant=(0, 5)):
    """Integer 'pixels' 0..16 with some columns constant (as the corners of the digits are)."""
    x = torch.randint(0, 17, (n, d), generator=gen).to(dtype)
    for c in constant:
        if c < d:
            x[:, c] = 0.0 if c == 0 else 7.0
    return x


def _standardize_cases(gen, *, device, dtype):
    name = str(dtype).removeprefix("torch.")
    cases = []
    for n, d, others in [(20, 6, (8,)), (15, 9, (5, 7)), (12, 4, ())]:
        train = _pixel_like(gen, n, d, dtype=dtype)
        rest = tuple(_pixel_like(gen, m, d, dtype=dtype, constant=()) for m in others)
        label = (f"a training split of {n} rows x {d} features (2 constant), "
                 f"{len(others)} other split{'s' if len(others) != 1 else ''} ({name})")
        cases.append(Case(label, (train.to(device), *(r.to(device) for r in rest)), {}, dtype))
    return cases


def _stats_from_all(train, *others):
    everything = torch.cat([train, *others])
    mean, std = everything.mean(0), everything.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple((x - mean) / std for x in (train, *others))


def _per_image(train, *others):
    def one(x):
        std = x.std(1, keepdim=True, correction=0)
        return (x - x.mean(1, keepdim=True)) / torch.where(std > 0, std, torch.ones_like(std))
    return tuple(one(x) for x in (train, *others))


def _unbiased(train, *others):
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple((x - mean) / std for x in (train, *others))


def _zero_std_divided(train, *others):
    mean, std = train.mean(0), train.std(0, correction=0)
    return tuple((x - mean) / std for x in (train, *others))


STANDARDIZE = Check(
    name="standardize",
    target="standardize",
    make_cases=_standardize_cases,
    probe=OutputsProbe(),
    mistakes=(
        Mistake("statistics-from-all-splits", "Compute the mean and standard deviation on the training split "
                "alone: statistics taken over the validation or test images let those images leak into "
                "training, and the scores measured on them become optimistic.", _stats_from_all),
        Mistake("per-image", "Standardize each feature (a column, dim=0) over the training images, not each "
                "image over its own pixels (dim=1).", _per_image),
        Mistake("unbiased-std", "Use the population standard deviation, train.std(dim=0, correction=0), as "
                "scikit-learn's StandardScaler does; torch's default divides by N - 1.", _unbiased),
        Mistake("zero-std-divided", "A pixel that is 0 in every training image has standard deviation 0: "
                "divide such columns by 1 (torch.where(std > 0, std, 1)) instead of making NaN or inf.",
                _zero_std_divided),
    ),
    description="per-feature standardization with the training split's statistics",
)

# code with two mistakes at once: a hint for each (checks.combined)
STANDARDIZE = replace(STANDARDIZE, mistakes=STANDARDIZE.mistakes + (combined(
    lambda train, *others: tuple((x - train.mean(0)) / train.std(0) for x in (train, *others)),
    *(m for m in STANDARDIZE.mistakes if m.name in ("unbiased-std", "zero-std-divided"))),))


# -- evaluate -------------------------------------------------------------------------------------

def _evaluate_cases(gen, *, device, dtype):
    name = str(dtype).removeprefix("torch.")
    cases = []
    for n, d, h, c, batch in [(23, 6, 5, 4, 8), (30, 4, 6, 3, 7)]:
        weights = [randn(gen, h, d, dtype=dtype), randn(gen, h, dtype=dtype, scale=0.3),
                   1 + randn(gen, h, dtype=dtype, scale=0.2), randn(gen, h, dtype=dtype, scale=0.3),
                   randn(gen, c, h, dtype=dtype), randn(gen, c, dtype=dtype, scale=0.3)]
        running = [randn(gen, h, dtype=dtype, scale=0.5), 0.5 + torch.rand(h, generator=gen, dtype=torch.float64)
                   .to(dtype)]
        X = randn(gen, n, d, dtype=dtype, scale=1.5)
        y = randint(gen, c, n)
        label = (f"a trained Linear-BatchNorm1d-ReLU-Linear model (left in training mode), {n} examples of "
                 f"{c} classes in batches of {batch} ({name})")
        cases.append(Case(label, (), {"weights": [w.to(device) for w in weights],
                                      "running": [r.to(device) for r in running], "X": X.to(device),
                                      "y": y.to(device), "batch_size": batch, "num_classes": c}, dtype))
    return cases


def _evaluator(eval_mode=True, no_grad=True, transposed=False, batch_mean=False, tensor_accuracy=False):
    """evaluate() with switchable mistakes."""
    def evaluate(model, batches, num_classes):
        if eval_mode:
            model.eval()
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        accuracies = []
        with torch.no_grad() if no_grad else torch.enable_grad():
            for X, y in batches:
                predicted = model(X).argmax(dim=1)
                confusion = confusion.to(y.device)
                for t, p in zip(y.tolist(), predicted.tolist()):
                    confusion[(p, t) if transposed else (t, p)] += 1
                accuracies.append((predicted == y).double().mean().item())
        if batch_mean:
            return sum(accuracies) / len(accuracies), confusion
        if tensor_accuracy:
            return confusion.diagonal().sum() / confusion.sum(), confusion
        return float(confusion.diagonal().sum() / confusion.sum()), confusion
    return evaluate


EVALUATE = Check(
    name="evaluate",
    target="evaluate",
    make_cases=_evaluate_cases,
    probe=EvaluateProbe(),
    meta_case=False,  # an accuracy needs data: no meta case
    fake_cuda_case=True,  # but a simulated GPU, with the CPU pass's .item() and .tolist() replayed
    mistakes=(
        Mistake("train-mode", "Call model.eval() before evaluating: in training mode batch norm normalizes with "
                "each batch's own statistics (and updates its running statistics with the evaluation data) and "
                "dropout drops units, so the scores are not those of the model.", _evaluator(eval_mode=False)),
        Mistake("autograd-on", "Evaluate under torch.no_grad(): without it every forward pass records an "
                "autograd graph that nothing uses, which costs memory and time.", _evaluator(no_grad=False)),
        Mistake("confusion-transposed", "confusion[i, j] counts the examples of true class i predicted as class "
                "j: rows are the labels, columns the predictions.", _evaluator(transposed=True)),
        Mistake("mean-of-batch-accuracies", "Accuracy is correct predictions over all examples: the mean of the "
                "batch accuracies weighs a small last batch as much as a full one.", _evaluator(batch_mean=True)),
        Mistake("accuracy-a-tensor", "Return the accuracy as a Python float (.item() or float(...)), not a 0-d "
                "tensor: the caller compares and prints it as a number.", _evaluator(tensor_accuracy=True)),
    ),
    stated=(r"Python float", r"model\.eval\(\)", r"torch\.no_grad\(\)", r"labels'\s+device"),
    description="accuracy and confusion matrix, in eval mode and without autograd",
)


# -- fit ------------------------------------------------------------------------------------------

def _fit_cases(gen, *, device, dtype):
    X, y = _digits()
    keep = ~_held_out()
    X_dev, y_dev = X[keep], y[keep]
    train, val = torch.utils.data.random_split(range(len(y_dev)), [N_TRAIN, N_VAL],
                                               generator=torch.Generator().manual_seed(0))
    t, v = torch.tensor(train.indices), torch.tensor(val.indices)
    label = (f"trained on the course's {N_TRAIN} training and {N_VAL} validation images (torch.manual_seed(0)); "
             f"needs an accuracy of at least {THRESHOLD:.2f} on {int(_held_out().sum())} held-out test images "
             f"and at most {BUDGET_S:g} s of training; your fit's calls of evaluate get the course's evaluate "
             "(yours is graded on its own: one bug costs once)")
    return [Case(label, (), {"X_train": X_dev[t].to(device), "y_train": y_dev[t].to(device),
                             "X_val": X_dev[v].to(device), "y_val": y_dev[v].to(device),
                             "X_test": X[_held_out()].to(device)}, dtype, compare=DIAGNOSTICS,
                 judge=AccuracyJudge(held_out_labels, THRESHOLD, BUDGET_S))]


class _Noise(nn.Module):
    """Gaussian noise in training mode only: a module of the student's own whose output depends on the mode."""

    def forward(self, x):
        return x + 0.05 * torch.randn_like(x) if self.training else x


def _fitter(mistake=None, epochs=3, layer="dropout"):
    """A short training run with a known mistake, or several (a tuple), which the probe recognises by what
    it does; `layer`: the model's mode-dependent layer ("dropout", "batchnorm" or "noise", a module of its own)."""
    made = set(mistake) if isinstance(mistake, tuple) else {mistake}

    def fit(X_train, y_train, X_val, y_val):
        if "trains-on-all-digits" in made:
            from sklearn.datasets import load_digits

            digits = load_digits()
            X_all = torch.tensor(digits.data, dtype=torch.float32, device=X_train.device)
            X_train = (X_all - X_all.mean(0)) / X_all.std(0, correction=0).clamp(min=1)
            y_train = torch.tensor(digits.target, device=X_train.device)
        middle = {"dropout": nn.Dropout(0.1), "batchnorm": nn.BatchNorm1d(32), "noise": _Noise()}[layer]
        layers = [nn.Linear(X_train.shape[1], 32), nn.ReLU(), middle, nn.Linear(32, 10)]
        if "softmax-then-cross-entropy" in made:
            layers.append(nn.Softmax(dim=1))
        model = nn.Sequential(*layers).to("cpu" if "model-on-the-cpu" in made else X_train.device)
        loss_fn = nn.CrossEntropyLoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        best, best_accuracy = None, -1.0
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(X_train), device=X_train.device)
            for i in range(0, len(order), 128):
                batch = order[i:i + 128]
                if "no-zero-grad" not in made:
                    optimizer.zero_grad()
                loss_fn(model(X_train[batch]), y_train[batch]).backward()
                optimizer.step()
            if "validation-in-train-mode" not in made:
                model.eval()
            with torch.no_grad():
                accuracy = float((model(X_val).argmax(1) == y_val).float().mean()) if X_val.device.type != "meta" \
                    else 0.0
            if accuracy > best_accuracy:
                best, best_accuracy = copy.deepcopy(model.state_dict()), accuracy
        model.load_state_dict(best)
        return model
    return fit


_EVAL_MODE_HINT = ("Call model.eval() before measuring the validation accuracy (and model.train() before the "
                   "next epoch): in training mode {what}, so the best checkpoint is chosen on scores that are "
                   "not the model's.")

FIT = Check(
    name="fit",
    target="fit",
    make_cases=_fit_cases,
    probe=FitProbe(seed=0, helpers=(("evaluate", course_evaluate),)),
    dtypes=(torch.float32,),
    meta_case=False,  # the probe runs fit on meta itself, within the one case (FitProbe._on_meta)
    mistakes=(
        Mistake("no-zero-grad", "Call optimizer.zero_grad() between two optimizer steps: backward() adds to "
                ".grad, so without it each step follows the sum of all the gradients so far.",
                _fitter("no-zero-grad")),
        Mistake("softmax-then-cross-entropy", "The model's last layer must give logits: CrossEntropyLoss applies "
                "log_softmax itself, so a Softmax layer before it squashes the logits twice and training stalls.",
                _fitter("softmax-then-cross-entropy")),
        Mistake("validation-in-train-mode", _EVAL_MODE_HINT.format(what="dropout is active (a dropout layer "
                "drops units at random)"), _fitter("validation-in-train-mode")),
        Mistake("validation-in-train-mode-batch-norm", _EVAL_MODE_HINT.format(
                what="batch norm normalizes with the validation batch's own statistics (and updates its running "
                "statistics with the validation images)"), _fitter("validation-in-train-mode", layer="batchnorm")),
        Mistake("validation-in-train-mode-own-module", _EVAL_MODE_HINT.format(
                what="your module that reads self.training computes its training-mode output"),
                _fitter("validation-in-train-mode", layer="noise")),
        Mistake("model-on-the-cpu", "Build the model on the inputs' device, .to(X_train.device): a model "
                "made on the CPU (.to(\"cpu\"), or no .to() at all) cannot take a GPU's images (the grader runs "
                "fit once more on the meta device to see it).", _fitter("model-on-the-cpu")),
        Mistake("trains-on-all-digits", "Train only on the images fit() is given: loading the whole data set "
                "inside fit() puts the held-out test images into training, and the test score means nothing.",
                _fitter("trains-on-all-digits")),
    ),
    stated=(r"zero_grad\(\)` between two optimizer steps", r"accumulating", r"model\.eval\(\)", r"self\.training",
            r"never at a loss", r"`meta` device", r"course's own `evaluate`", r"no data\s+loaded", r"0\.90",
            r"20 s"),
    description="a whole training run, graded on held-out accuracy within a time budget",
)

# code with two mistakes at once: a hint for each (checks.combined)
EVALUATE = replace(EVALUATE, mistakes=EVALUATE.mistakes + (combined(
    _evaluator(eval_mode=False, transposed=True),
    *(m for m in EVALUATE.mistakes if m.name in ("train-mode", "confusion-transposed"))),))
FIT = replace(FIT, mistakes=FIT.mistakes + (combined(
    _fitter(("no-zero-grad", "validation-in-train-mode")),
    *(m for m in FIT.mistakes if m.name in ("no-zero-grad", "validation-in-train-mode"))),))

CHECKS = [STANDARDIZE, EVALUATE, FIT]
