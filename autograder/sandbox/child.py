"""What runs in one child: its set-up after the fork, and its request loop.

The child runs the submission's cells into a namespace, then answers the
grader's requests, one reply each, in order (grader -> child: pickles the
grader wrote itself; child -> grader: the codec of autograder/answer.py, so
the grader never runs an unpickler on what a child sends):

    ("cell", index, source)        -> {"kind": "cell", "ok", "error", "stdout"}
    ("visible", index, source)     -> the same, for a check cell's visible tests
                                      (pristine torch, the source's read-only helper cells)
    ("call", id, name, arguments)  -> a graded function's outputs, for a visible test the grader runs
    ("vjp", id, grad_outputs)      -> the gradients of that call's inputs
    ("answer", check_name)         -> records "answers": one Answer per case

The inputs of every check are in the zygote's memory, so a child gets them
for free. Before each case torch and builtins are restored to the zygote's
snapshot and the flags pinned (autograder/torchstate.py).
"""
from __future__ import annotations

import contextlib
import os
import signal
from multiprocessing.connection import Connection

import torch

from autograder.answer import Answer, encode_json, encode_records
from autograder.checks import Case
from autograder.execute import new_namespace, run_cell
from autograder.notebook import Cell
from autograder.probes import run_probe
from autograder.probes.core import _CallWatch as CallWatch
from autograder.probes.core import describe_exception
from autograder.sandbox.limits import Unproxyable
from autograder.sandbox.policy import enter_child_sandbox
from autograder.sandbox.remote import tensors_in, unpack_args
from autograder.torchstate import pin_torch_flags, reset


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
    calls: dict[int, tuple] = {}  # call id -> (leaves, differentiable outputs), for "vjp"
    send, recv, pristine, exit_ = conn.send_bytes, conn.recv, z.pristine, os._exit
    restore, run, to_json = reset, run_cell, encode_json
    answer, call, vjp, unpack, cell_ = answer_check, remote_call, remote_vjp, unpack_args, Cell
    send(to_json({"kind": "ready"}))
    while True:
        try:
            msg = recv()
        except EOFError:
            exit_(0)
        kind = msg[0]
        if kind != "cell":  # the student's cells build on each other: nothing is undone between them
            restore(pristine)
        if kind in ("cell", "visible"):
            _, index, source = msg
            where = ns
            if kind == "visible":  # a check cell's visible tests: pristine torch, the source's helpers
                where = dict(ns)
                for k, helper in enumerate(z.helpers):
                    run(cell_(-1 - k, "code", helper), where)
            outcome = run(cell_(index, "code", source), where)
            send(to_json({"kind": "cell", "ok": outcome.ok, "error": outcome.error, "stdout": outcome.stdout}))
        elif kind == "call":  # a visible test, run by the grader, calls a graded function
            send(call(z, ns, calls, msg[1], msg[2], *unpack(msg[3])))
        elif kind == "vjp":  # ... and back-propagates through what it returned
            send(vjp(calls, *msg[1:]))
        elif kind == "answer":
            send(answer(z, ns, msg[1]))
        else:
            exit_(0)


def answer_check(z, ns: dict, name: str) -> bytes:
    """Every case of check `name`, run on the namespace's graded object."""
    reset(z.pristine)
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


def remote_call(z, ns: dict, calls: dict, call_id: int, name: str, args: tuple, kwargs: dict) -> bytes:
    """Call the graded function `name`; reply with its outputs as plain tensors (one record)."""
    fn = ns.get(name)
    leaves = [t for t in tensors_in((args, kwargs)) if t.requires_grad]
    reset(z.pristine)
    forbidden = next((spec.forbidden for spec in z.checks.values() if spec.target == name), ())
    watch = CallWatch(forbidden) if forbidden else contextlib.nullcontext()
    try:
        if fn is None:
            raise NameError(f"name {name!r} is not defined")
        with watch:  # the visible tests are watched as the hidden cases are
            out = fn(*args, **kwargs)
        if forbidden and watch.seen:
            raise ForbiddenCall(f"called {', '.join(watch.seen)}, the torch function this exercise asks you to "
                                "write yourself")
        kind = "tuple" if isinstance(out, tuple) else "list" if isinstance(out, list) else "one"
        items = list(out) if kind != "one" else [out]
        values, grad = {}, []
        for k, v in enumerate(items):
            if isinstance(v, torch.Tensor):
                if v.requires_grad and leaves:
                    grad.append(k)
                values[str(k)] = v.detach().as_subclass(torch.Tensor)
            elif v is None or isinstance(v, (bool, int, float, str)):
                values[str(k)] = v
            else:
                raise Unproxyable(f"returned a {type(v).__name__}")
        calls[call_id] = (leaves, [items[k] for k in grad])
        reply = {"values": values, "kind": kind, "n": len(items), "grad": grad, "error": None}
    except Unproxyable as exc:
        reply = {"values": {}, "unproxyable": str(exc), "error": None}
    except BaseException as exc:  # noqa: BLE001 - the student's exception is the visible test's
        if isinstance(exc, KeyboardInterrupt):
            raise
        reply = {"values": {}, "error": describe_exception(exc), "exception": type(exc).__name__}
    return encode_records("answers", [reply])


class ForbiddenCall(Exception):
    """A graded function called what its check forbids while a visible test ran it."""


def remote_vjp(calls: dict, call_id: int, grads: list) -> bytes:
    leaves, outputs = calls.get(call_id, ([], []))
    try:
        got = torch.autograd.grad(outputs, leaves, grads, allow_unused=True, retain_graph=True)
        reply = {"values": {str(k): g.detach().as_subclass(torch.Tensor) for k, g in enumerate(got)
                            if g is not None}, "error": None}
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        reply = {"values": {}, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    return encode_records("answers", [reply])


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
