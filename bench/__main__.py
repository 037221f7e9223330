"""Run the benchmark modules listed in DEFAULT, or the ones of MODULES named on the command line.

Other arguments are passed to each module: `python -m bench grading --n 40`.
"""
from __future__ import annotations

import importlib
import sys

MODULES = ["grading", "book", "stages", "memory", "cases", "floor"]  # each module has main(argv) -> int
DEFAULT = ["grading", "book"]  # run when none is named (stages, memory, cases and floor are diagnostics, run by name)


def main(argv: list[str]) -> int:
    names = [a for a in argv if a in MODULES] or DEFAULT
    rest = [a for a in argv if a not in MODULES]  # options, passed on: --n 20 or --n=20
    status = 0
    for name in names:
        print(f"== bench.{name} ==", flush=True)
        module = importlib.import_module(f"bench.{name}")
        status = module.main(rest) or status
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
