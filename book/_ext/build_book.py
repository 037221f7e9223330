"""`make book`: execute the chapters side by side into the execution cache, then build the book.

    python book/_ext/build_book.py book/capstone.md book/tensors.md ...

jupyter-book (myst-nb, `execute_notebooks: cache` in _config.yml) executes the chapters one after
another, each in its own kernel, on one core. First, this runs the chapters given whose code has
no entry in _build/.jupyter_cache yet with jupyter-cache's local-parallel executor, one kernel per
core, in the chapter's folder as myst-nb does, and caches them under the key myst-nb looks up (the
code cells and the kernel), in the order given. Then it runs
`jupyter-book build . -W -n --keep-going`, which takes those chapters from the cache. A chapter
that fails in the first step is not cached: the build runs it again and reports the error, so the
first step never decides whether the book builds.

The cache keys a chapter on its code cells, so a chapter whose common-mistakes box draws the
grader's catalogue (`common_mistakes("<stem>")`) would keep an old box after a hint changed in
autograder/chapters/<stem>.py: a chapter's cached runs older than that file, or than the catalogue
and checks modules, are removed first, and the chapter's source is touched, so that it runs again
and Sphinx (which goes by the source's time) writes its page again.
"""
from __future__ import annotations

import re
import sys
import time
from datetime import timezone
from pathlib import Path

# Skipped in this process as in the kernels: book/_ext/kernel_startup.py says why (3 s of CPU here,
# where jupyter-book validates _config.yml with jsonschema).
sys.modules.setdefault("rfc3987_syntax", None)

from jupyter_book.cli.main import main as jupyter_book  # noqa: E402
from jupyter_cache import get_cache  # noqa: E402
from jupyter_cache.executors import load_executor  # noqa: E402

CACHE = "_build/.jupyter_cache"  # where jupyter-book keeps it (its default output folder, _build)
TIMEOUT_S = 300  # per cell, as _config.yml's execute.timeout
READER = {"name": "myst_nb_md", "type": "plugin"}  # myst-nb's reader for MyST markdown notebooks
BUILD = ["build", ".", "-W", "-n", "--keep-going"]  # strict: any warning fails


def catalogue_sources(chapter: str) -> list[Path]:
    """The files whose change changes the chapter's common-mistakes box (none without a box)."""
    m = re.search(r'common_mistakes\("(\w+)"\)', Path(chapter).read_text())
    if not m:
        return []
    grader = Path(__file__).resolve().parents[2] / "autograder"
    return [grader / "chapters" / f"{m.group(1)}.py", grader / "catalogue.py", grader / "checks.py"]


def drop_stale_catalogues(cache, uris: list[str], chapters: list[str]) -> None:
    """Remove the cached runs of a chapter that are older than the catalogue its box shows."""
    newest = {}
    for uri, chapter in zip(uris, chapters):
        sources = [p for p in catalogue_sources(chapter) if p.is_file()]
        if sources:
            newest[uri] = max(p.stat().st_mtime for p in sources)
    for record in cache.list_cache_records():
        created = record.created.replace(tzinfo=record.created.tzinfo or timezone.utc).timestamp()
        if record.uri in newest and created < newest[record.uri]:
            cache.remove_cache(record.pk)
            Path(record.uri).touch()  # and Sphinx, which goes by the source's time, reads it again
            print(f"cached run older than its grader's catalogue, run again: {record.uri}", flush=True)


def execute_chapters(chapters: list[str]) -> None:
    """Execute the chapters without a cached run, side by side; print one line per chapter run."""
    Path(CACHE).parent.mkdir(parents=True, exist_ok=True)
    cache = get_cache(CACHE)
    uris = [str(Path(chapter).resolve()) for chapter in chapters]
    for uri in uris:
        cache.add_nb_to_project(uri, read_data=READER)
    drop_stale_catalogues(cache, uris, chapters)
    executor = load_executor("local-parallel", cache)
    if not executor.get_records(filter_uris=uris, clear_tracebacks=False):
        print(f"{len(uris)} chapters, all in the cache", flush=True)  # no pool of processes to start
        return
    start = time.perf_counter()
    result = executor.run_and_cache(filter_uris=uris, timeout=TIMEOUT_S)
    for uri in result.succeeded:
        print(f"chapter executed into the cache: {uri}")
    for uri in result.excepted + result.errored:
        print(f"chapter failed, the build runs it again and reports it: {uri}")
    print(f"{len(result.all())} chapters run side by side in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    execute_chapters(sys.argv[1:])
    jupyter_book(BUILD)  # exits with the build's status
