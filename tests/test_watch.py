"""The call watch (autograder/probes/core.py) and the names it watches (probes/watchnames.py),
held to the pinned torch: every name a forbidden function goes by is watched, no elementary
operation honest code needs is, and each way around the watch is recorded."""
from __future__ import annotations

import importlib
import pkgutil
import queue
import sys
import threading

import pytest
import torch
import torch.nn.functional as F

import autograder.chapters
from autograder.probes.core import TAMPERED, THREADED, _CallWatch, guard_the_watch
from autograder.probes.watchnames import watch_names, watched_objects

guard_the_watch()  # as in the grading child: thread starters and the audit hook report themselves

# What honest code is made of: never watched unless a check forbids the very name.
ELEMENTARY = {"add", "sub", "mul", "div", "neg", "abs", "exp", "log", "sum", "mean", "max", "amax", "min", "gather",
              "clamp", "where", "pow", "sqrt", "logsumexp", "log_softmax", "softmax", "matmul", "mm", "sigmoid",
              "tanh", "relu", "zeros", "ones", "empty", "cat", "stack", "reshape", "view", "detach", "clone",
              "to", "eq", "ne", "lt", "gt", "maximum", "minimum", "expand", "broadcast_tensors", "unsqueeze",
              "squeeze", "index_select", "take_along_dim", "masked_fill", "scatter", "one_hot", "log1p",
              "expm1", "square", "float", "double", "sign", "_reshape_alias", "copy_", "fill_", "zero_"}


def _forbidden_lists() -> list[tuple[str, str, tuple[str, ...]]]:
    out = []
    for info in pkgutil.iter_modules(autograder.chapters.__path__):
        mod = importlib.import_module(f"autograder.chapters.{info.name}")
        out += [(info.name, c.name, c.forbidden) for c in mod.CHECKS if c.forbidden]
    return out


FORBIDDEN = _forbidden_lists()


def _exists(name: str) -> bool:
    spaces = (torch, F, torch.special, torch.linalg, torch.fft, torch.autograd, torch._C._nn, torch._C._special,
              torch._C._linalg, torch._C._fft, torch._C._VariableFunctions, torch.Tensor)
    if any(hasattr(s, name) for s in spaces):
        return True
    try:
        return isinstance(getattr(torch.ops.aten, name), torch._ops.OpOverloadPacket)
    except (AttributeError, RuntimeError):
        return False


@pytest.mark.parametrize("chapter,check,forbidden", FORBIDDEN, ids=[f"{c}.{n}" for c, n, _ in FORBIDDEN])
def test_every_watched_name_is_torchs_and_no_elementary_op_is_watched(chapter, check, forbidden):
    names = watch_names(forbidden)
    assert set(forbidden) <= names
    assert [n for n in names if not _exists(n) and n not in forbidden] == []  # nothing invented
    assert (names - set(forbidden)) & ELEMENTARY == set(), "an elementary op honest code needs is watched"


@pytest.mark.parametrize("name,also", [
    ("cross_entropy", {"cross_entropy_loss"}),  # F.cross_entropy calls torch._C._nn.cross_entropy_loss
    ("nll_loss", {"nll_loss_nd", "nll_loss_forward", "nll_loss2d_forward"}),  # the builtin and its kernels
    ("softmax", {"_softmax", "special_softmax"}),
    ("log_softmax", {"_log_softmax", "special_log_softmax"}),
    ("special_expit", {"expit"}),  # torch.special.expit
    ("logsumexp", {"special_logsumexp"}),
    ("relu6", {"relu6_"}),
    ("log_sigmoid", {"log_sigmoid_forward"}),
])
def test_a_forbidden_function_is_watched_under_the_names_torch_gives_it(name, also):
    assert also <= watch_names((name,)), sorted(watch_names((name,)))


def test_the_objects_behind_the_names_are_torchs_own():
    codes, builtins = watched_objects(watch_names(("l1_loss", "cross_entropy")))
    assert F.l1_loss.__code__ in codes and F.cross_entropy.__code__ in codes
    assert id(torch._C._nn.l1_loss) in builtins and id(torch._C._nn.cross_entropy_loss) in builtins
    assert id(vars(torch.ops.aten.l1_loss.default)["_op"]) in builtins


a, b = torch.randn(4, 3), torch.randn(4, 3)
target = torch.tensor([0, 1, 2, 0])
L1 = ("l1_loss", "smooth_l1_loss", "huber_loss")


def _seen(fn, forbidden=L1):
    watch = _CallWatch(forbidden)
    with watch:
        fn()
    assert sys.getprofile() is None and torch._C._len_torch_function_stack() == 0
    return watch.seen


class _Lazy(torch.Tensor):
    """Runs torch's l1_loss in its own handler, where torch's modes are off."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            if func is torch.Tensor.sub:
                return F.l1_loss(a, b)
            return func(*args, **(kwargs or {}))


def _in_a_thread():
    out = {}
    job = threading.Thread(target=lambda: out.update(v=F.l1_loss(a, b)))
    job.start()
    job.join()
    return out["v"]


def _private_lookup():
    return torch._C._get_operation_overload("aten::l1_loss", "")[0](a, b, 1)


class _ProfileOff(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        sys.setprofile(None)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("how,fn,expected", [
    ("aten overload", lambda: torch.ops.aten.l1_loss.default(a, b, 1), "torch.ops.aten.l1_loss"),
    ("aten packet", lambda: torch.ops.aten.l1_loss(a, b, 1), "torch.ops.aten.l1_loss"),
    ("the overload's builtin", lambda: torch.ops.aten.l1_loss.default._op(a, b, 1), "torch.ops.aten.l1_loss"),
    ("the builtin through map", lambda: list(map(torch.ops.aten.l1_loss.default._op, [a], [b], [1])),
     "torch.ops.aten.l1_loss"),
    ("torch._C._nn", lambda: torch._C._nn.l1_loss(a, b), "torch._C._nn.l1_loss"),
    ("an nn module", lambda: torch.nn.L1Loss()(a, b), "torch.nn.functional.l1_loss"),
    ("a subclass's handler", lambda: a.as_subclass(_Lazy) - b, "torch.nn.functional.l1_loss"),
    ("a private lookup", _private_lookup, "torch.ops.aten.l1_loss"),
    ("a thread", _in_a_thread, THREADED),
    ("the profile hook set", lambda: a.as_subclass(_ProfileOff) - b, TAMPERED),
])
def test_each_way_to_torchs_function_is_recorded(how, fn, expected):
    assert expected in _seen(fn), how


@pytest.mark.parametrize("how,fn,forbidden", [
    ("aten nll_loss_nd", lambda: torch.ops.aten.nll_loss_nd(a.log_softmax(1), target, None, 1, -100), ("nll_loss",)),
    ("aten cross_entropy_loss", lambda: torch.ops.aten.cross_entropy_loss(a, target), ("cross_entropy",)),
])
def test_composite_operators_are_caught_before_they_decompose(how, fn, forbidden):
    assert _seen(fn, forbidden), how


def test_a_worker_thread_left_running_is_recorded_only_when_it_works():
    jobs, done, idle = queue.Queue(), queue.Queue(), threading.Event()
    threads = [threading.Thread(target=lambda: [done.put(F.l1_loss(*job)) for job in iter(jobs.get, None)], daemon=True),
               threading.Thread(target=idle.wait, daemon=True)]
    for t in threads:
        t.start()
    try:
        assert _seen(lambda: (a - b).abs().mean()) == []  # both threads wait: nothing to record

        def hand_over():
            jobs.put((a, b))
            return done.get()

        assert THREADED in _seen(hand_over)
    finally:
        idle.set()
        jobs.put(None)  # the worker ends
        for t in threads:
            t.join()


@pytest.mark.parametrize("how,fn", [
    ("elementary ops", lambda: (a - b).abs().mean()),
    ("a Parameter", lambda: (torch.nn.Parameter(a) - b).abs().mean()),
    ("log_softmax and gather", lambda: -a.log_softmax(1).gather(1, target[:, None]).mean()),
    ("an nn module it may use", lambda: torch.nn.Linear(3, 2)(a).relu().sum()),
])
def test_honest_code_records_nothing(how, fn):
    assert _seen(fn, L1 + ("cross_entropy", "nll_loss")) == [], how


def test_the_profiler_of_whoever_runs_the_grader_is_left_in_place():
    def profile(frame, event, arg):
        pass

    sys.setprofile(profile)
    try:
        watch = _CallWatch(L1)
        with watch:
            a.as_subclass(_Lazy) - b  # the watch's own hook goes on, chained to this one
        assert sys.getprofile() is profile
        assert watch.seen == ["torch.nn.functional.l1_loss"]
    finally:
        sys.setprofile(None)


def test_the_graders_own_helper_earns_nothing_in_its_own_check():
    """The capstone's fit runs with the course's evaluate (one bug costs once); the child can
    import it, so an evaluate that is (or calls) the course's is recorded, and scores 0."""
    from autograder.checks import load_checks
    from autograder.compare import decide_case
    from autograder.probes import run_probe
    from autograder.probes.training import course_evaluate

    check = load_checks("capstone")["evaluate"]
    case = check.cases(device="cpu")[0]
    reference = run_probe(check, check.mistakes[0].impl, case)  # any answer: the forbidden call decides first
    for impl in (course_evaluate, lambda model, batches, n: course_evaluate(model, batches, n)):
        answer = run_probe(check, impl, case)
        assert any(f.endswith("course_evaluate") for f in answer.forbidden), answer.forbidden
        verdict = decide_case(case, answer, reference, [])
        assert not verdict.passed and "grader's own course_evaluate" in verdict.message
