"""Checks are data (docs/design.md contract 3).

A `Check` names the graded object, makes seeded cases, says how to call the
student's code (its `probe`), which torch functions it may not call, and which
known mistakes to recognise. Its points come from the nbgrader cell whose
grade_id is `check_<name>` in the source notebook. Generic code
(`grading.py`) runs every check; no chapter writes its own comparison loop.

Each chapter is a module `autograder.chapters.<stem>` with a list `CHECKS`.
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch


def map_nested(fn: Callable[[torch.Tensor], torch.Tensor], obj):
    """Apply fn to every tensor inside nested tuples, lists and dicts (e.g. a state_dict)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_nested(fn, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_nested(fn, v) for v in obj)
    return obj


@dataclass(frozen=True)
class Case:
    """One input to the graded object, and how the student sees it described."""

    label: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    dtype: torch.dtype = torch.float32  # the floating dtype of the inputs
    compare: tuple[str, ...] | None = None  # output keys to compare (None: all)
    shape_only: bool = False  # a meta-device case: shape, dtype and device only
    # An outcome case: `judge(values) -> str | None` decides the student's answer in the grader
    # (e.g. an accuracy on labels the student's code never sees), after the outputs named in
    # `compare` matched the reference's; None when it passes, else what is wrong, in words.
    judge: Any = None
    # a forward pass on a simulated CUDA device (probes/fake_cuda.py); shape_only as well
    fake_cuda: bool = False
    # the edge case this case grades ("zero", "extreme", ...: EDGES), which the statement must state
    edge: str = ""

    def tensors(self) -> list[torch.Tensor]:
        found: list[torch.Tensor] = []
        map_nested(lambda t: found.append(t) or t, (self.args, self.kwargs))
        return found

    def numel(self) -> int:
        return max((t.numel() for t in self.tensors()), default=1)

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Case":
        def conv(a):
            return map_nested(fn, a)

        return replace(self, args=tuple(conv(a) for a in self.args),
                       kwargs={k: conv(v) for k, v in self.kwargs.items()})

    def to(self, device: str | torch.device) -> "Case":
        return self.map_tensors(lambda t: t.to(device))

    def upcast(self) -> "Case":
        """The same case with floating tensors in float64, for the reference."""
        up = self.map_tensors(lambda t: t.double() if t.is_floating_point() else t)
        return replace(up, dtype=torch.float64) if self.dtype.is_floating_point else up


@dataclass(frozen=True)
class Mistake:
    """A known-wrong implementation and the hint a student gets when theirs matches it."""

    name: str
    hint: str
    impl: Any  # same signature as the graded object
    # a combination: code that makes each of these catalogued mistakes at once. It is tried
    # after every single mistake, and a match names each part's hint.
    parts: tuple["Mistake", ...] = ()


def combined(impl, *parts: Mistake) -> Mistake:
    """The mistake of code that makes every one of `parts` (impl: such code)."""
    return Mistake(" + ".join(m.name for m in parts), " ".join(m.hint for m in parts), impl, tuple(parts))


@dataclass(frozen=True)
class Check:
    name: str  # the check cell's grade_id is f"check_{name}"
    target: str  # the graded function or class in the notebook's namespace
    make_cases: Callable[..., Sequence[Case]]  # (gen, *, device, dtype) -> cases
    probe: Any  # a probes.Probe: how to call the code, what comes back
    mistakes: tuple[Mistake, ...] = ()
    forbidden: tuple[str, ...] = ()  # torch functions (by __name__) it may not call
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
    # what the exercise's statement must say besides its forbidden names and edge cases (regular
    # expressions, e.g. an error the check grades); tests/test_statements.py holds the notebook to it
    stated: tuple[str, ...] = ()
    meta_case: bool = True  # also run on the meta device (a hard-coded CPU)
    # and on a simulated CUDA device without a GPU (code that moves to the CPU); None: as meta_case
    fake_cuda_case: bool | None = None
    description: str = ""

    @property
    def grade_id(self) -> str:
        return f"check_{self.name}"

    def cases(self, *, device: str | torch.device) -> list[Case]:
        """Seeded cases: the same inputs on every machine and device.

        Inputs are made on the CPU from a generator seeded by the check's
        name and the dtype, then moved to `device`.
        """
        out: list[Case] = []
        for dtype in self.dtypes:
            gen = torch.Generator().manual_seed(stable_seed(self.name, str(dtype)))
            for case in self.make_cases(gen, device="cpu", dtype=dtype):
                out.append(case.to(device))
        first = out[0] if out else None
        if self.meta_case and out:
            meta = first.to("meta")
            out.append(
                Case(
                    "on the meta device (outputs must follow the inputs' device; "
                    "a tensor made without device=input.device lands on the CPU)",
                    meta.args,
                    meta.kwargs,
                    first.dtype,
                    first.compare,
                    shape_only=True,
                )
            )
        fake = self.meta_case if self.fake_cuda_case is None else self.fake_cuda_case
        fake = fake and getattr(self.probe, "fake_cuda", False)  # probes that run there deterministically
        if fake and first is not None and torch.device(device).type == "cpu":
            # without a GPU, a simulated one (probes/fake_cuda.py)
            out.append(replace(first, label=FAKE_CUDA_LABEL, shape_only=True, fake_cuda=True, edge=""))
        return out


FAKE_CUDA_LABEL = ("on a CUDA device, forward pass only (outputs must stay on the inputs' device: "
                   "no .cpu(), no tensor made without device=input.device)")

# The edge cases a case may grade (Case.edge), each with what the exercise's statement must say
# about it (a regular expression; tests/test_statements.py holds every check to it).
EDGES = {
    "zero": r"(at|of|is|are|exactly|logits?|inputs?|input|x|z)\s*(=|of)?\s*(exactly\s*)?0\b|at zero|zero logits|kink",
    "extreme": r"±\s*1000|1000",
}


def stable_seed(*parts: str) -> int:
    """A seed that does not change between runs (unlike hash())."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return int.from_bytes(digest[:6], "little")


def load_checks(stem: str) -> dict[str, Check]:
    """The checks of one chapter, by name, in the order the chapter lists them."""
    module = importlib.import_module(f"autograder.chapters.{stem}")
    checks = {c.name: c for c in module.CHECKS}
    if len(checks) != len(module.CHECKS):
        raise ValueError(f"chapter {stem!r} defines two checks with the same name")
    return checks
