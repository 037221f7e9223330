"""What runs in one child: its set-up after the fork, and its request loop.

The child runs the submission's cells into a namespace, then answers the
grader's requests, one reply each, in order (grader -> child: pickles the
grader wrote itself; child -> grader: the codec of autograder/answer.py, so
the grader never runs an unpickler on what a child sends):

    ("cell", index, source)        -> {"kind": "cell", "ok", "error", "stdout"}
    ("answer", check_name)         -> records "answers": one Answer per case

A cell is any code cell of the submission but a check cell: the student's,
the source's read-only ones (setup, visible tests: they score nothing).

The inputs of every check are in the zygote's memory, so a child gets them
for free. Before each case torch and builtins are restored to the zygote's
snapshot and the flags pinned (autograder/torchstate.py): a namespace whose
dictionary has not changed since the snapshot (its version tag, PEP 509, is
the same) is not compared again, so the child does not touch, and copy, the
pages of every object torch's namespaces hold.
"""
from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys
from multiprocessing.connection import Connection


from autograder.answer import Answer, encode_json, encode_records
from autograder.checks import Case
from autograder.execute import new_namespace, run_cell
from autograder.notebook import Cell
from autograder.probes import run_probe
from autograder.sandbox.policy import enter_child_sandbox
from autograder.torchstate import pin_torch_flags, reset, restore


# -- namespaces unchanged since the snapshot -------------------------------------------
_TAG_OFFSET = 3 * ctypes.sizeof(ctypes.c_ssize_t)  # PyDictObject: refcount, type, ma_used, ma_version_tag


def _tag_reader(offset=_TAG_OFFSET, at=ctypes.string_at, number=int.from_bytes, address=id):
    """A dictionary's version tag, read with what was bound when this was made."""
    return lambda d: number(at(address(d) + offset, 8), "little")


_tag = _tag_reader()


def _namespace_dict(obj) -> dict:
    """The dictionary behind vars(obj) (a class's, behind its mappingproxy)."""
    d = vars(obj)
    return d if type(d) is dict else gc.get_referents(d)[0]


def version_tags_work() -> bool:
    """Whether this CPython bumps a dictionary's version tag, where _tag reads it, on every change
    of a module's, a class's and a plain dictionary (3.11 to 3.13; not 3.14, which stopped)."""
    if sys.implementation.name != "cpython" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return False

    class Probe:
        pass

    module = type(sys)("probe")
    try:
        for d, change in ((_namespace_dict(module), lambda: setattr(module, "x", 1)),
                          (_namespace_dict(Probe), lambda: setattr(Probe, "x", 1)),
                          (_namespace_dict(Probe), lambda: delattr(Probe, "x")),
                          ({"x": 0}, None)):
            if ctypes.c_ssize_t.from_address(id(d) + 2 * ctypes.sizeof(ctypes.c_ssize_t)).value != len(d):
                return False  # not the layout _tag assumes
            before = _tag(d)
            if change is None:
                d["x"] = object()
            else:
                change()
            if _tag(d) == before:
                return False
    except Exception:  # noqa: BLE001
        return False
    return True


class Pristine:
    """The zygote's snapshot of torch, builtins and this package, and each namespace's version tag
    when it equalled the snapshot: `reset` compares again only the namespaces changed since."""

    def __init__(self, saved):
        self.saved = saved
        restore(saved)  # every namespace as the snapshot has it, then its tag
        self.dicts = [_namespace_dict(obj) for obj, _ in saved] if version_tags_work() else None
        self.tags = [_tag(d) for d in self.dicts] if self.dicts is not None else None

        self.reset = self._resetter()

    def _resetter(self):
        """autograder.torchstate.reset(snapshot), comparing only what changed (never fatal); a
        closure over what it uses, so that graded code that rebinds this module's names (or this
        object's) changes nothing it does."""
        saved, dicts, tags = self.saved, self.dicts, self.tags
        tag, full, pin, rng, contents = _tag_reader(), restore, reset, range(len(saved)), list.__getitem__
        if dicts is None:
            return lambda: pin(saved)

        def reset_changed() -> None:
            try:
                changed = [k for k in rng if tag(contents(dicts, k)) != contents(tags, k)]
                full([contents(saved, k) for k in changed])  # the torch function and dispatch modes, always
                for k in changed:
                    tags[k] = tag(contents(dicts, k))
            except Exception:  # noqa: BLE001 - as reset: a process that cannot reset still answers
                pass
            pin(None)
        return reset_changed


def child_main(z, fd: int, uid: int, scratch: str | None) -> None:
    """The child's life, right after the zygote (`z`, its ZygoteState) forked it."""
    os.setsid()  # its own process group: a kill takes everything it started
    os.dup2(fd, 3)
    os.closerange(4, 1 << 16)  # the zygote's control socket and pipes stay out of reach
    devnull = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):  # output goes through captured buffers; fd writes go nowhere
        os.dup2(devnull, std)
    os.close(devnull)
    conn = Connection(3)
    scratch = enter_child_sandbox(z, uid, scratch)
    os.environ.update(HOME=scratch, TMPDIR=scratch, MPLBACKEND="Agg", MPLCONFIGDIR=scratch)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    pin_torch_flags()
    serve(z, conn)


def serve(z, conn: Connection) -> None:
    """Answer the grader's requests until it closes the socket. Everything this loop uses is
    bound here, before any submitted code runs, and before each request but a cell, torch,
    builtins and this package's modules are restored: code that replaced the runner's own
    functions (this loop's helpers, the encoder, the probes) changes nothing it answers."""
    ns = new_namespace()
    send, recv, exit_ = conn.send_bytes, conn.recv, os._exit
    restore, run, to_json = z.pristine.reset, run_cell, encode_json
    answer, cell_ = answer_check, Cell
    send(to_json({"kind": "ready"}))
    while True:
        try:
            msg = recv()
        except EOFError:
            exit_(0)
        kind = msg[0]
        if kind != "cell":  # the student's cells build on each other: nothing is undone between them
            restore()
        if kind == "cell":
            _, index, source = msg
            outcome = run(cell_(index, "code", source), ns)
            send(to_json({"kind": "cell", "ok": outcome.ok, "error": outcome.error, "stdout": outcome.stdout}))
        elif kind == "answer":
            send(answer(z, ns, msg[1]))
        else:
            exit_(0)


def answer_check(z, ns: dict, name: str) -> bytes:
    """Every case of check `name`, run on the namespace's graded object (`serve` has just restored
    torch and pinned the flags; each case pins them again)."""
    check = z.checks[name]
    impl = ns.get(check.target)
    answers = []
    for case in cases_on_device(z, name):
        if impl is None:
            answers.append(Answer.missing(check.target))
            continue
        reset(None)
        answers.append(run_probe(check, impl, case))
    try:
        return encode_records("answers", [a.to_record() for a in answers])
    except Exception as exc:  # noqa: BLE001 - e.g. a tensor that cannot be flattened
        return encode_json({"kind": "unpackable", "error": f"{type(exc).__name__}: {exc}"})


def cases_on_device(z, name: str) -> list[Case]:
    """The check's inputs, moved to the grading device (the zygote holds them on the CPU)."""
    cases = z.cases[name]
    out = []
    for case, devices in zip(cases, z.devices[name]):
        if any(d not in ("cpu", "meta") for d in devices):
            it = iter(devices)
            case = case.map_tensors(lambda t: t.to(next(it)))
        out.append(case)
    return out
