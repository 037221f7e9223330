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
snapshot and the flags pinned (autograder/torchstate.py).
"""
from __future__ import annotations

import os
import signal
from multiprocessing.connection import Connection


from autograder.answer import Answer, encode_json, encode_records
from autograder.checks import Case
from autograder.execute import new_namespace, run_cell
from autograder.notebook import Cell
from autograder.probes import run_probe
from autograder.sandbox.policy import enter_child_sandbox
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
    send, recv, pristine, exit_ = conn.send_bytes, conn.recv, z.pristine, os._exit
    restore, run, to_json = reset, run_cell, encode_json
    answer, cell_ = answer_check, Cell
    send(to_json({"kind": "ready"}))
    while True:
        try:
            msg = recv()
        except EOFError:
            exit_(0)
        kind = msg[0]
        if kind != "cell":  # the student's cells build on each other: nothing is undone between them
            restore(pristine)
        if kind == "cell":
            _, index, source = msg
            outcome = run(cell_(index, "code", source), ns)
            send(to_json({"kind": "cell", "ok": outcome.ok, "error": outcome.error, "stdout": outcome.stdout}))
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
