"""Every name a forbidden torch function goes by, and the objects behind those names, from torch itself.

A check lists the torch functions it forbids by name (`Check.forbidden`). The same
function is reachable under other names, and the call watch (`probes/core.py`) must see
all of them:

- the Python function `F.cross_entropy` calls the builtin `torch._C._nn.cross_entropy_loss`,
  `F.nll_loss` calls `torch._C._nn.nll_loss_nd`: the builtins a forbidden Python function of
  torch's public namespaces calls through `torch._C` are read from its source (`_builtins_called`);
- `torch.special.expit` is the builtin `special_expit`: the `special_` / `linalg_` / `fft_` form;
- the aten operators: `torch.ops.aten.<name>` and its overloads (`.default`, `.out`, ...), and the
  kernels a composite operator reaches (`_softmax`, `nll_loss_forward`, `nll_loss2d_forward`),
  named `[_]<name>[suffix]` for the suffixes in `_ATEN_SUFFIXES`, when torch has such an operator.

`watch_names(forbidden)` is the closed set (`tests/test_watch.py` holds it to the pinned torch);
`watched_objects(names)` maps the code objects and builtins behind them for the profile hook.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from functools import lru_cache

import torch

# The namespaces whose functions a student reaches by a public name.
_PUBLIC = ("torch", "torch.nn.functional", "torch.special", "torch.linalg", "torch.fft", "torch.autograd",
           "torch.functional")
# torch._C's builtin namespaces (a `torch.special.x` is `torch._C._special.special_x`).
_BUILTIN = ("torch._C._nn", "torch._C._special", "torch._C._linalg", "torch._C._fft", "torch._C._VariableFunctions")
_PREFIXES = ("special_", "linalg_", "fft_")
_ATEN_SUFFIXES = ("", "_", "_forward", "2d", "2d_forward", "_nd")


def _module(path: str):
    obj = torch
    for part in path.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def _builtins_called(fn) -> set[str]:
    """The names X of every `torch._C.<namespace>.X(...)` (or `_VF.X`) in fn's source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(fn))))
    except (OSError, TypeError, SyntaxError):
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            chain, value = [node.func.attr], node.func.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name):
                chain.append(value.id)
            dotted = ".".join(reversed(chain[1:]))
            if dotted in _BUILTIN or dotted in ("_VF", "torch._VF"):
                found.add(node.func.attr)
    return found


def _aten_has(name: str) -> bool:
    try:
        return isinstance(getattr(torch.ops.aten, name), torch._ops.OpOverloadPacket)
    except (AttributeError, RuntimeError):
        return False


@lru_cache(maxsize=None)
def watch_names(forbidden: tuple[str, ...]) -> frozenset[str]:
    """Every name under which the functions `forbidden` names can be called or dispatched."""
    names = set(forbidden)
    for name in forbidden:
        for path in _PUBLIC:
            fn = getattr(_module(path), name, None)
            if inspect.isfunction(inspect.unwrap(fn) if callable(fn) else None):
                names |= _builtins_called(fn)
    for name in list(names):
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                names.add(name[len(prefix):])
            elif any(hasattr(_module(path), prefix + name) for path in _BUILTIN):
                names.add(prefix + name)
    for name in list(names):
        base = name.lstrip("_")
        for lead in ("", "_"):
            for suffix in _ATEN_SUFFIXES:
                candidate = lead + base + suffix
                if candidate not in names and base and _aten_has(candidate):
                    names.add(candidate)
    return frozenset(names)


class OpCall:
    """Marks the `__call__` of torch.ops' overloads and packets: the name is the op's own."""


def op_name(obj) -> str | None:
    """The aten name of a torch.ops overload or packet (read from its own attributes, so that a
    subclass cannot answer for it), else None."""
    attrs = vars(obj) if hasattr(obj, "__dict__") else {}
    packet = attrs.get("_overloadpacket", obj if "_overload_names" in attrs else None)
    if packet is None:
        return None
    name = vars(packet).get("__name__")
    return name if isinstance(name, str) else None


@lru_cache(maxsize=None)
def watched_objects(names: frozenset[str]) -> tuple[dict, dict]:
    """(code object -> label, id(builtin) -> (label, builtin)) for every torch object called by a
    name in `names`: the Python functions of the public namespaces and of torch.Tensor, the
    builtins of those and of torch._C's namespaces, and the operator builtins behind torch.ops'
    packets and overloads; the `__call__` of an overload or a packet maps to `OpCall`."""
    codes: dict = {torch._ops.OpOverload.__call__.__code__: OpCall,
                   torch._ops.OpOverloadPacket.__call__.__code__: OpCall}
    builtins: dict = {}
    for path in _PUBLIC + _BUILTIN:
        mod = _module(path)
        for name in names:
            fn = getattr(mod, name, None)
            _add(fn, f"{getattr(fn, '__module__', None) or path}.{name}", codes, builtins)
    for name in names:
        fn = vars(torch.Tensor).get(name, None) or vars(torch._C.TensorBase).get(name, None)
        _add(fn, f"{getattr(fn, '__module__', None) or 'torch'}.{name}", codes, builtins)
        if _aten_has(name):
            packet = getattr(torch.ops.aten, name)
            builtins[id(vars(packet)["_op"])] = (f"torch.ops.aten.{name}", vars(packet)["_op"])
            for overload in packet.overloads():
                op = getattr(packet, overload)
                builtins[id(vars(op)["_op"])] = (f"torch.ops.aten.{name}", vars(op)["_op"])
    return codes, builtins


def _add(fn, label: str, codes: dict, builtins: dict) -> None:
    if fn is None:
        return
    plain = inspect.unwrap(fn) if callable(fn) else fn
    if inspect.isfunction(fn):
        codes[fn.__code__] = label
    if inspect.isfunction(plain):
        codes[plain.__code__] = label
    elif inspect.isbuiltin(fn):
        builtins[id(fn)] = (label, fn)
