"""Run notebook cells into a namespace, as a Jupyter kernel would.

IPython syntax (`%matplotlib inline`, `!pip install x`, `%%time`) is turned
into Python by IPython's own transformer; line magics and shell escapes then
do nothing, cell magics that only measure (`%%time`, `%%capture`) run their
body. Each cell's code is registered with linecache so tracebacks quote it.
"""
from __future__ import annotations

import contextlib
import io
import linecache
import os
import traceback
from dataclasses import dataclass

os.environ.setdefault("MPLBACKEND", "Agg")

# Imported here, not per cell, so the sandbox's fork server preloads it (~0.5 s a child otherwise).
from IPython.core.inputtransformer2 import TransformerManager  # noqa: E402

_RUN_BODY = {"time", "timeit", "capture", "prun", "writefile_skip"}


class _Anything:
    """What any other attribute of the stand-in shell is: callable, indexable,
    appendable, and inert (events.register, input_transformers_cleanup.append,
    display_formatter... are accepted and do nothing)."""

    def __call__(self, *a, **k):
        return self

    def __getattr__(self, name):
        return self

    def __getitem__(self, key):
        return self

    def __setitem__(self, key, value):
        pass

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def __bool__(self):
        return False


class _Shell:
    """Stands in for get_ipython() inside graded code. Hooks a cell registers
    (pre_run_cell events, input transformers) are accepted and never run:
    they cannot change or erase the cells that follow."""

    def __init__(self, namespace: dict):
        self.user_ns = namespace

    def run_line_magic(self, name, line, _stack_depth=1):
        return None

    def run_cell_magic(self, name, line, cell):
        if name in _RUN_BODY:
            run_source(cell, self.user_ns, filename="<cell magic>")
        return None

    def system(self, cmd):
        return None

    def getoutput(self, cmd, split=True, depth=0):
        return []

    def __getattr__(self, name):
        return _Anything()


_TRANSFORMER = TransformerManager()
_compile, _exec = compile, exec  # graded code may replace builtins.exec; later cells still run


def to_python(source: str) -> str:
    return _TRANSFORMER.transform_cell(source)


def run_source(source: str, namespace: dict, *, filename: str) -> None:
    """Plain Python (most cells) is compiled as it is: IPython's transformer
    returns it unchanged, at a cost. Only what does not compile goes through it."""
    try:
        code, compiled = source, _compile(source, filename, "exec")
    except SyntaxError:
        code = to_python(source)
        compiled = _compile(code, filename, "exec")
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    _exec(compiled, namespace)  # noqa: S102 - running notebook code is the job


class CappedIO(io.TextIOBase):
    """A stdout that keeps only the first `limit` characters (floods are cut)."""

    def __init__(self, limit: int = 20_000):
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0

    def write(self, s):
        if self.size < self.limit:
            self.parts.append(s[: self.limit - self.size])
        self.size += len(s)
        return len(s)

    def getvalue(self) -> str:
        text = "".join(self.parts)
        return text + (f"\n... [{self.size - self.limit} characters cut]" if self.size > self.limit else "")


@dataclass
class CellOutcome:
    index: int
    ok: bool
    error: str | None = None
    stdout: str = ""
    exception: BaseException | None = None  # what the cell raised (in this process only; never sent)


def new_namespace() -> dict:
    ns: dict = {"__name__": "__main__"}
    ns["get_ipython"] = lambda: _Shell(ns)
    return ns


def run_cell(cell, namespace: dict) -> CellOutcome:
    out = CappedIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            run_source(cell.source, namespace, filename=f"<cell {cell.number}>")
        return CellOutcome(cell.index, True, stdout=out.getvalue())
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit included: a cell may call sys.exit
        tb = traceback.extract_tb(exc.__traceback__)
        frame = next((f for f in reversed(tb) if f.filename.startswith("<cell")), None)
        where = "" if frame is None else f" at line {frame.lineno}" + (  # the line of the cell it is in
            "" if frame.filename == f"<cell {cell.number}>" else f" of {frame.filename[1:-1]}")
        return CellOutcome(cell.index, False, f"{type(exc).__name__}{where}: {str(exc)[:500]}", out.getvalue(), exc)
