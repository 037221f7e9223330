"""What one fresh process per submission costs before any guarantee: `python -m bench floor`.

The runner grades each submission in a fresh fork of the zygote (docs/sandbox.md).
This measures, on distinct `losses` submissions (bench/grading.py's
`make_submissions`), in one process that holds what the zygote holds (the checks'
inputs, the warm-up run, the snapshot of torch; no sandbox, no codec to a grader):

1. the students' code alone: every hidden case's call (forward), then with the
   backward pass the checks ask for, with none of the probes' machinery;
2. a child's whole work (the cells, then every check's answers, encoded) done
   warm, in this process, again and again: what the work costs once its pages
   and caches are hot;
3. the same work in a fresh fork of this process (gc frozen, as the zygote is),
   one new submission a fork: what each child pays, with its copy-on-write page
   faults and cold caches;
4. a fork that does nothing and exits: the page tables copied and torn down,
   with this process's memory in 4 KiB pages and then collapsed into huge pages
   (sandbox/hugepages.py), as a class's zygote is.

The difference 3 - 2 (plus 4) is the price of a fresh process per submission on this
machine; 1 + 3 - 2 + 4 with the cells is what no change to the grader's own code can
go under while that isolation holds. CPU seconds (thread or process time); the
baseline of each ratio is measured in the same run.
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

STEM = "losses"


def _state():
    """A zygote's state in this process: the checks' inputs, the warm-up, the snapshot."""
    import torch

    from autograder.checks import load_checks
    from autograder.grading import Grader
    from autograder.probes.core import guard_the_watch
    from autograder.sandbox.child import Pristine
    from autograder.sandbox.zygote import autograder_modules, forget_correct_code, warm_up
    from autograder.torchstate import snapshot

    torch.set_num_threads(1)  # as in the zygote
    grader = Grader(STEM, device="cpu")

    class Z:
        pass

    z = Z()
    z.cases = {n: p.cases for n, p in grader.prepared.items()}
    z.devices = {n: [[str(t.device) for t in c.tensors()] for c in cs] for n, cs in z.cases.items()}
    z.checks = load_checks(STEM)
    warm_up(z)
    bare = _bare_rounds(grader)
    z.checks = forget_correct_code(z.checks)
    guard_the_watch()
    z.pristine = Pristine(snapshot(autograder_modules()))
    return grader, z, bare


def _bare_rounds(grader) -> tuple[float, float]:
    """(forward, forward and backward) CPU of every hidden case's call on the reference, best of 3."""
    import torch

    from autograder.reference import reference_namespace

    ns = reference_namespace(STEM)

    def once(backward: bool) -> float:
        start = time.thread_time()
        for p in grader.prepared.values():
            impl = ns[p.check.target]
            for case in p.cases:
                if getattr(case, "fake_cuda", False):
                    continue
                args = list(case.args)
                leaf = args[0] if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point() else None
                if backward and leaf is not None:
                    leaf = args[0] = leaf.detach().clone().requires_grad_(True)
                try:
                    out = impl(*args, **case.kwargs)
                except Exception:  # noqa: BLE001 - a case whose call is not a plain function's
                    continue
                if backward and leaf is not None and isinstance(out, torch.Tensor) and out.requires_grad:
                    torch.autograd.grad(out, [leaf], torch.ones_like(out), allow_unused=True)
        return time.thread_time() - start

    once(True)
    return min(once(False) for _ in range(3)), min(once(True) for _ in range(3))


def _child_work(grader, z, path: Path) -> tuple[float, float]:
    """(cells, answers) CPU seconds of this thread for one submission: what a child does."""
    from autograder.execute import new_namespace, run_cell
    from autograder.notebook import code_to_run, parse_cells
    from autograder.sandbox.child import answer_check

    check_ids = {p.check.grade_id for p in grader.prepared.values()}
    cells = code_to_run(parse_cells(path.read_bytes(), path.name), check_ids)
    ns = new_namespace()
    start = time.thread_time()
    for cell in cells:
        run_cell(cell, ns)
    mid = time.thread_time()
    for name in z.checks:
        z.pristine.reset()
        answer_check(z, ns, name)
    return mid - start, time.thread_time() - mid


def _in_fork(fn) -> tuple:
    """fn() run in a fresh fork of this process: (its result, the child's minor page faults)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            out = fn()
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            os.write(w, repr((out, faults)).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    import ast

    return ast.literal_eval(data.decode())


def _empty_forks(n: int) -> float:
    """CPU seconds (this process and its reaped children) of a fork that exits at once."""
    from bench.grading import _cpu as cpu

    start = cpu()
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return (cpu() - start) / n


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench floor")
    p.add_argument("--forks", type=int, default=7, help="fresh forks, one new submission each")
    args, _ = p.parse_known_args(argv)

    from autograder.course import source_notebook
    from autograder.sandbox import hugepages
    from bench.grading import make_submissions

    tmp = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    try:
        paths = list(make_submissions(tmp, 4 + 2 * args.forks, source_notebook(STEM)).values())
        grader, z, (forward, backward) = _state()
        for path in paths[:4]:  # warm: every variant's code paths, caches filled
            _child_work(grader, z, path)
        warm = [_child_work(grader, z, path) for path in paths[4:4 + args.forks]]
        gc.collect()
        gc.freeze()  # as the zygote, before its first fork
        fresh = [_in_fork(lambda path=path: _child_work(grader, z, path)) for path in paths[4 + args.forks:]]
        forks_small = _empty_forks(20)
        collapsed = hugepages.collapse_private_memory()
        forks_huge = _empty_forks(20)

        cells_w, answers_w = statistics.median(c for c, _ in warm), statistics.median(a for _, a in warm)
        cells_f = statistics.median(c for (c, _), _ in fresh)
        answers_f = statistics.median(a for (_, a), _ in fresh)
        faults = statistics.median(f for _, f in fresh)
        n_cases = sum(len(p.cases) for p in grader.prepared.values())
        print(f"{STEM}: {n_cases} hidden cases; CPU seconds a notebook (medians; {args.forks} fresh forks)")
        print(f"  the students' code alone      forward {forward:.4f}   with backward {backward:.4f}")
        print(f"  a child's work, warm          cells {cells_w:.4f}   answers {answers_w:.4f}   "
              f"sum {cells_w + answers_w:.4f}")
        print(f"  the same in a fresh fork      cells {cells_f:.4f}   answers {answers_f:.4f}   "
              f"sum {cells_f + answers_f:.4f}   ({faults:.0f} page faults, "
              f"{(cells_f + answers_f) / (cells_w + answers_w):.2f}x warm)")
        print(f"  a fork that exits at once     {forks_small:.4f} in 4 KiB pages, {forks_huge:.4f} with "
              f"{collapsed >> 20} MiB in huge pages")
        cold = cells_f + answers_f - cells_w - answers_w
        floor = backward + cells_w + cold + forks_huge
        print(f"  a fresh process a submission costs {cold + forks_huge:.4f} (cold pages and caches {cold:.4f}, "
              f"fork and exit {forks_huge:.4f}); with the students' code ({backward:.4f}) and the cells "
              f"({cells_w:.4f}): {floor:.4f} a notebook before any probe, guarantee, codec or grader")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
