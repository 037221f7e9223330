"""A look at the submission's source for what the runtime call watch may not see.

The watch in the child (probes/core.py) proves a forbidden call when it sees
one. This scan reads the code cells (never runs them) and reports, for each
graded function or class, where its own source names a torch function its
check forbids (an attribute chain such as `F.softmax`, `torch.ops.aten._softmax`,
a bare imported name, or `getattr(x, "softmax")`) or reaches for an
attribute by a computed name (`getattr(torch, name)`), and, anywhere in the
notebook, the tools that switch the watch off (`DisableTorchFunction`,
popping torch's mode stacks, the profiler, the grader's own modules).

What it finds is reported to the student and the instructor as a problem of
kind "suspected", and costs no points: a name in the source is not a proven
call (dead code, a comment-like string, a check of the input). Points are
taken only for what the watch saw (docs/sandbox.md).
"""
from __future__ import annotations

import ast
import collections
import threading

from autograder.execute import to_python
from autograder.notebook import Cell
from autograder.problems import Problem

TAMPER_TOOLS = {"DisableTorchFunction", "DisableTorchFunctionSubclass", "_DisableTorchDispatch",
                "_DisablePythonDispatcher", "_pop_torch_function_stack", "_pop_torch_dispatch_stack",
                "_push_on_torch_function_stack", "_push_on_torch_dispatch_stack", "_pop_mode",
                "_pop_mode_temporarily", "_disable_profiler", "_profiler_enabled", "_len_torch_function_stack",
                "_len_torch_dispatch_stack", "_get_function_stack_at", "_get_dispatch_stack_at"}


def _chain(node: ast.AST) -> str | None:
    """`torch.nn.functional.softmax` for that attribute chain (None for anything else)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _findings(tree: ast.AST, forbidden: set[str]) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute):  # F.softmax, torch.ops.aten._softmax, x.sigmoid (a bare name is
            chain = _chain(node)  # the student's own unless imported from torch: see ImportFrom below)
            if node.attr in forbidden and chain and not chain.startswith("self.") \
                    and not isinstance(node.ctx, ast.Store):
                found.append(f"names {chain} ({where})")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                and len(node.args) >= 2:
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                if name.value in forbidden:
                    found.append(f"gets {name.value!r} by getattr ({where})")
            else:
                found.append(f"gets an attribute by a computed name ({where})")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in forbidden:
                    found.append(f"imports {node.module}.{alias.name} ({where})")
    return list(dict.fromkeys(found))


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_BODIES = frozenset({"body", "orelse", "finalbody", "handlers", "cases"})  # where statements hold statements


def _definitions(tree: ast.AST):
    """Every function and class defined in tree, at any depth (in a class, a function, an if, a
    try, a with, a loop, a match), in the order ast.walk gives them: a definition is a statement,
    so only statements are visited, never the expressions that make up most of a tree."""
    queue = collections.deque([tree])
    while queue:
        node = queue.popleft()
        if isinstance(node, _DEFINITIONS):
            yield node
        for field in node._fields:
            if field in _BODIES:
                children = getattr(node, field, None)
                if type(children) is list:
                    queue.extend(children)


# CPython 3.11 (before 3.11.8) keeps ast.parse's recursion count per interpreter, not per
# thread: two graders' threads parsing at once raise "SystemError: AST constructor recursion
# depth mismatch". One parse at a time.
_AST_LOCK = threading.Lock()


def _parse(cell: Cell) -> ast.AST | None:
    """The cell's syntax tree (IPython syntax translated only when plain Python does not parse)."""
    for text in (lambda: cell.source, lambda: to_python(cell.source)):
        try:
            source = text()
            with _AST_LOCK:
                return ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    return None


def scan(cells: list[Cell], checks: dict) -> list[Problem]:
    """Problems of kind "suspected": what the submission's source says that the watch may not see."""
    problems: list[Problem] = []
    targets = {c.target: set(c.forbidden) for c in checks.values() if c.forbidden}
    for cell in cells:
        if cell.cell_type != "code":
            continue
        defines = [t for t in targets if f"def {t}" in cell.source or f"class {t}" in cell.source]
        tooled = any(tool in cell.source for tool in TAMPER_TOOLS)
        if not (defines or tooled):
            continue  # nothing to look at: no parse (most cells)
        tree = _parse(cell)
        if tree is None:
            continue
        for node in (_definitions(tree) if defines else ()):
            if node.name in targets:
                for what in _findings(node, targets[node.name])[:5]:
                    problems.append(Problem("suspected", f"cell {cell.number}: {node.name} {what}; its exercise "
                                                         "asks you to write it without torch's own version (a "
                                                         "name in the source costs no points: only a call the "
                                                         "grader sees does)"))
        tools = sorted({n for n in (_chain(x) for x in (ast.walk(tree) if tooled else ())  # no tool's name
                                    if isinstance(x, (ast.Attribute, ast.Name)))  # in the text: none in the tree
                        if n and n.rsplit(".", 1)[-1] in TAMPER_TOOLS})
        if tools:
            problems.append(Problem("suspected", f"cell {cell.number} uses {', '.join(tools[:4])}, which can switch "
                                                 "off or inspect the grader's watch on torch calls"))
    return problems[:20]
