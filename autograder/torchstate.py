"""Torch's global state while grading: pin the flags, snapshot torch, restore it.

A leaf module (it imports nothing of this package): the grader pins the flags
before computing references and deciding; the child pins them before every
case and restores torch and builtins to the snapshot it took before any
student code ran (patched comparisons, functions, Tensor methods, torch
function or dispatch modes left on).
"""
from __future__ import annotations

import torch


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


def _pristine_objects() -> list:
    import builtins

    import torch.nn.functional

    return [builtins, torch, torch.nn, torch.nn.functional, torch.testing, torch.autograd, torch.linalg,
            torch.special, torch.fft, torch.Tensor, torch.nn.Module]


# Of torch._C (a thousand names, slow to compare), only what switches torch function and
# dispatch handling: a module is restored name by name, so a part of it can be kept.
_C_NAMES = ("DisableTorchFunction", "DisableTorchFunctionSubclass", "_DisableTorchDispatch",
            "_pop_torch_function_stack", "_pop_torch_dispatch_stack", "_push_on_torch_function_stack",
            "_push_on_torch_dispatch_stack", "_len_torch_function_stack", "_len_torch_dispatch_stack",
            "_get_function_stack_at", "_get_dispatch_stack_at")


Snapshot = list[tuple[object, dict]]


def snapshot(extra: list = ()) -> Snapshot:
    """The namespaces of torch's public modules, Tensor, Module and builtins (and of `extra`
    objects, e.g. the grader's own modules in the child), as they are now."""
    c_part = {k: v for k, v in vars(torch._C).items() if k in _C_NAMES}
    return [(obj, dict(vars(obj))) for obj in [*_pristine_objects(), *extra]] + [(torch._C, c_part)]


_MISSING = object()
# bound now, before any graded code runs: restore() must not use what it restores
_vars, _setattr, _delattr, _isinstance, _len, _list = vars, setattr, delattr, isinstance, len, list


def restore(saved_state: Snapshot) -> None:
    """Undo what graded code did to torch and builtins (patched comparisons, functions,
    Tensor methods) and drop any torch function or dispatch mode it left on."""
    for obj, saved in saved_state:
        now = _vars(obj)
        try:  # the common case, checked in C: nothing replaced (and, on a class, nothing added)
            if saved.items() <= now.items() and (not _isinstance(obj, type) or _len(now) == _len(saved)):
                continue
        except Exception:  # noqa: BLE001 - a value whose == is not a bool: compare one by one
            pass
        for key, value in saved.items():
            if now.get(key, _MISSING) is not value:
                try:
                    _setattr(obj, key, value)
                except (AttributeError, TypeError):
                    pass
        if _isinstance(obj, type):  # a method added to a class overrides the inherited one
            for key in _list(k for k in now if k not in saved):
                try:
                    _delattr(obj, key)
                except (AttributeError, TypeError):
                    pass
    for length, pop in (("_len_torch_function_stack", "_pop_torch_function_stack"),
                        ("_len_torch_dispatch_stack", "_pop_torch_dispatch_stack")):
        if hasattr(torch._C, length) and hasattr(torch._C, pop):
            while getattr(torch._C, length)() > 0:
                getattr(torch._C, pop)()


def reset(saved_state: Snapshot | None) -> None:
    """Pristine torch (when a snapshot is given) and pinned flags before graded code is asked
    anything. Never fatal: a process that cannot reset still answers (for what its code is worth)."""
    try:
        if saved_state is not None:
            restore(saved_state)
        pin_torch_flags()
    except Exception:  # noqa: BLE001 - e.g. a flag the graded code left in a state torch refuses to read
        pass
