"""The floor under the class runner's CPU: `python -m bench cases [--stem=losses]`.

Runs every hidden case of one chapter on the reference solution, in this
process, with no sandbox, no child, no codec and no decision: only torch
running the graded code, the way the child runs it for each submission. Four
ways, each the best of three rounds (CPU time of this thread):

* all: as graded (the call watch on checks that forbid functions, the
  simulated-CUDA case included);
* no watch: the same without the two-level call watch;
* no simulated CUDA: without the fake-device cases;
* neither.

The runner cannot grade a notebook for less CPU than "all" costs here,
whatever else it saves; the ratio "all / neither" is the price of the watch
and the device case. The baseline is "neither", measured in the same run.
"""
from __future__ import annotations

import argparse
import time


def _rounds(checks, ns, cases, *, watch: bool, fake: bool) -> tuple[float, int]:
    from autograder.probes import run_probe
    from autograder.torchstate import pin_torch_flags

    class _Unwatched:
        def __init__(self, check):
            self.probe, self.forbidden = check.probe, ()

    start, n = time.thread_time(), 0
    for name, check in checks.items():
        impl = ns[check.target]
        run_as = check if watch else _Unwatched(check)
        for case in cases[name]:
            if not fake and getattr(case, "fake_cuda", False):
                continue
            pin_torch_flags()
            run_probe(run_as, impl, case)
            n += 1
    return time.thread_time() - start, n


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench cases")
    p.add_argument("--stem", default="losses")
    args, _ = p.parse_known_args(argv)

    import torch

    from autograder.checks import load_checks
    from autograder.reference import reference_namespace

    torch.set_num_threads(1)  # as in the child
    checks = load_checks(args.stem)
    ns = reference_namespace(args.stem)
    cases = {name: c.cases(device="cpu") for name, c in checks.items()}
    _rounds(checks, ns, cases, watch=True, fake=True)  # warm-up: lazy imports, first-call caches
    rows = {}
    for label, watch, fake in (("all", True, True), ("no watch", False, True),
                               ("no simulated CUDA", True, False), ("neither", False, False)):
        best = min(_rounds(checks, ns, cases, watch=watch, fake=fake)[0] for _ in range(3))
        rows[label] = (best, _rounds(checks, ns, cases, watch=watch, fake=fake)[1])
    base = rows["neither"][0]
    print(f"{args.stem}: the reference's hidden cases in this process, CPU seconds per notebook "
          f"(best of 3; baseline: neither)")
    for label, (cpu, n) in rows.items():
        print(f"  {label:18s} {cpu:7.3f} s  {n:4d} cases  {cpu / n * 1e3:6.3f} ms a case  {cpu / base:5.2f}x")
    watched = sum(len(cases[name]) for name, c in checks.items() if c.forbidden)
    n_fake = sum(getattr(case, "fake_cuda", False) for cs in cases.values() for case in cs)
    plain = base / rows["neither"][1]
    print(f"  each guarantee's price beside the case itself ({plain * 1e3:.3f} ms a case with neither):")
    if watched:
        price = (rows["all"][0] - rows["no watch"][0]) / watched
        print(f"    the call watch      {price * 1e3:6.3f} ms a watched case ({watched} cases), "
              f"{price / plain:5.2f}x the case")
    if n_fake:
        price = (rows["all"][0] - rows["no simulated CUDA"][0]) / n_fake
        print(f"    a simulated-CUDA case {price * 1e3:6.3f} ms ({n_fake} cases, its CPU pass included), "
              f"{price / plain:5.2f}x a case")
    print(f"  a class of 500 on 2 cores needs at least {rows['all'][0] * 500 / 2:.1f} s of this alone "
          f"(the issue's target: 15 s)")
    return 0
