"""Book build times (`make book`): cold, then after a prose-only edit, whose chapter code must come
from the cache, then a full rebuild that keeps only the execution cache (what CI does with
actions/cache).

Runs in a temporary copy of the repository (the files git tracks, and a link
to .venv), so the working tree's _build, which tests read, is left alone.
Prints each build's wall time and CPU time (the build and every kernel it ran), the cold build
against its target of COLD_TARGET_S, and the ratio cached / cold. Timings on a machine shared
with other jobs are noisy: the load average is printed with them, and the CPU time is the steadier.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autograder.course import course_root

COLD_TARGET_S = 60.0  # a cold build on a 2-core machine
PROSE_EDIT = "\n\nThis sentence was added by the book benchmark to time a prose-only rebuild.\n"


def copy_tracked(root: Path, dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, files.split("\0")):
        src = root / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(root / ".venv")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build(book: Path) -> tuple[float, float, str]:
    """(wall s, CPU s, log) of the Makefile's book target, run in `book`. `-o` keeps make from
    reinstalling the linked .venv, whose stamp may be older than the copied requirements."""
    cpu, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run(["make", "-s", "-o", ".venv/.installed", "book"], cwd=book,
                          capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"make book failed in {book}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, cpu, proc.stdout + proc.stderr


def executed(log: str) -> str:
    """How many chapters were executed (side by side before the build, or by myst-nb in it),
    and how many the build took from the cache."""
    runs = log.count("chapter executed into the cache:") + log.count("Executed notebook in")
    return f"{runs} executed, {log.count('Using cached notebook')} from the cache"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench book", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and print its path")
    args, _ = parser.parse_known_args(argv)  # other modules' options pass through
    root = course_root()
    tmp = Path(tempfile.mkdtemp(prefix="bench-book-"))
    try:
        copy_tracked(root, tmp)
        load = os.getloadavg()[0]
        cold, cold_cpu, cold_log = build(tmp)
        chapter = tmp / "book" / "tensors.md"
        chapter.write_text(chapter.read_text() + PROSE_EDIT)
        cached, cached_cpu, cached_log = build(tmp)
        if PROSE_EDIT.strip() not in (tmp / "_build" / "html" / "book" / "tensors.html").read_text():
            raise RuntimeError("the prose edit is not in the rebuilt page")
        print(f"cold build:                {cold:7.1f} s  (CPU {cold_cpu:.1f} s; {executed(cold_log)}; load {load:.1f})")
        print(f"cold / target of {COLD_TARGET_S:.0f} s:     {cold / COLD_TARGET_S:7.3f}")
        print(f"after a prose-only edit:   {cached:7.1f} s  (CPU {cached_cpu:.1f} s; {executed(cached_log)}; "
              f"load {os.getloadavg()[0]:.1f})")
        print(f"ratio cached / cold:       {cached / cold:7.3f}")
        # As in CI, which restores only the execution cache: every page is read again, no code runs.
        for name in ("html", ".doctrees", "jupyter_execute"):
            shutil.rmtree(tmp / "_build" / name)
        fresh, fresh_cpu, fresh_log = build(tmp)
        print(f"full rebuild, cache only:  {fresh:7.1f} s  (CPU {fresh_cpu:.1f} s; {executed(fresh_log)}; "
              f"ratio to cold {fresh / cold:.3f})")
        # Under load the wall times say little. The chapters run one per core; the rest is serial (about
        # what the cache-only build spends). An estimate, not a measurement: it assumes idle cores and
        # chapters that divide evenly, and CPU time itself grows on a loaded machine.
        cores = os.cpu_count() or 1
        estimate = fresh_cpu + max(cold_cpu - fresh_cpu, 0.0) / cores
        print(f"cold, estimated from CPU:  {estimate:7.1f} s  (on {cores} idle cores; "
              f"{estimate / COLD_TARGET_S:.3f} of the target)")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
