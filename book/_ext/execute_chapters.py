"""Execute the chapters side by side into jupyter-book's execution cache (run by `make book` first).

    python book/_ext/execute_chapters.py _build/.jupyter_cache book/capstone.md book/tensors.md ...

jupyter-book (myst-nb, `execute_notebooks: cache` in _config.yml) executes the chapters one after
another, each in its own kernel, on one core. This runs the chapters whose code has no entry in the
cache yet with jupyter-cache's local-parallel executor, one kernel per core, in each chapter's
folder as myst-nb does, and stores them under the same key (the code cells and the kernel), so
the build then takes every chapter from the cache. The chapters start in the order given. A
chapter that fails here is not cached: the build runs it again and reports the error, so this
step never decides whether the book builds. Prints one line per chapter run and the wall time.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

# Skipped here as in the kernels; book/_ext/kernel_startup.py says why (3 s of CPU for each process).
sys.modules.setdefault("rfc3987_syntax", None)

from jupyter_cache import get_cache  # noqa: E402
from jupyter_cache.executors import load_executor  # noqa: E402

TIMEOUT_S = 300  # per cell, as _config.yml's execute.timeout
READER = {"name": "myst_nb_md", "type": "plugin"}  # myst-nb's reader for MyST markdown notebooks


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print(__doc__, file=sys.stderr)
        return 2
    cache_path, *chapters = argv
    Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
    cache = get_cache(cache_path)
    for chapter in chapters:
        cache.add_nb_to_project(str(Path(chapter).resolve()), read_data=READER)
    start = time.perf_counter()
    result = load_executor("local-parallel", cache).run_and_cache(
        filter_uris=[str(Path(c).resolve()) for c in chapters], timeout=TIMEOUT_S)
    for uri in result.succeeded:
        print(f"chapter executed into the cache: {uri}")
    for uri in result.excepted + result.errored:
        print(f"chapter failed, the build will run it again and report it: {uri}")
    print(f"{len(result.all())} chapters run side by side in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
