"""What students get, and nothing else: the public student repository's content.

The instructor's repository (solutions/, the checks, the grader, the
gradebook) stays private. `python -m autograder publish DEST` writes into
DEST (a checkout of the public student repository; .git is kept):

    README.md                       for students: where the book is, how to open an exercise
    requirements.txt                what Binder installs to run the exercises (torch CPU, numpy, matplotlib)
    exercises/<stem>/<stem>.ipynb   the released notebooks, at the paths the launch buttons open
    docs/                           the built book (_build/html), served by GitHub Pages from /docs
    docs/.nojekyll                  so Pages serves _static/, _sources/ and _images/ as they are

Then it scans every file it wrote for secrets, and refuses (removing what it
wrote) when one is found: a line of a solution or of a hidden test that the
released notebook does not show, a line of the grading code
(autograder/chapters, autograder/mistakes), nbgrader's markers, a gradebook,
any Python file. It also reads the launch buttons of the exercise pages: each
must open a notebook that DEST holds, in the repository `--repository` names
when it is given (the workflow passes the student repository).
"""
from __future__ import annotations

import html as html_lib
import json
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from autograder.course import course_root, release_notebook, source_notebook, stems
from autograder.notebook import BEGIN_HIDDEN, BEGIN_SOLUTION

TEXT_SUFFIXES = {".html", ".txt", ".ipynb", ".md", ".js", ".json", ".py", ".css", ".svg", ".inv", ".xml", ".csv",
                 ".yml", ".yaml", ".toml", ".cfg", ".ini"}
VENDORED = ("docs/_static/mathjax/",)  # copied byte for byte from the pinned sphinx-mathjax-offline package
FORBIDDEN_SUFFIXES = {".py", ".pyc", ".db", ".sqlite", ".sqlite3"}
RUNTIME_PACKAGES = ("torch", "numpy", "matplotlib")  # what a released notebook imports (contract 7)
PLACEHOLDER_REPOSITORIES = ("https://github.com/your-org/", "https://github.com/pytorch-course/pytorch-course")
GRADING_CODE = ("autograder/chapters", "autograder/mistakes")


class PublishError(Exception):
    """Nothing was published; the message says why."""


def _public_text(root: Path) -> str:
    """Everything students may see anyway: the released notebooks' cells (as text, not as JSON, whose
    escaped quotes would hide a line such as `if reduction == "mean":`), the book's chapters, and every
    catalogued mistake's name and hint (the common-mistakes boxes and the feedback show them)."""
    from autograder.catalogue import catalogue

    parts = []
    for stem in stems(root):
        nb = json.loads(release_notebook(stem, root).read_text())
        parts += ["".join(cell.get("source", "")) for cell in nb.get("cells", [])]
        try:
            parts += [f"{name}: {hint}" for _, mistakes in catalogue(stem) for name, hint in mistakes]
        except Exception:  # noqa: BLE001 - a stem without checks has no catalogue
            pass
    parts += [p.read_text() for p in sorted((root / "book").glob("*.md"))]
    text = "\n".join(parts)
    return text + "\n" + text.replace("`", "") + "\n" + json.dumps(text)


HIDDEN_TAGS = {"remove-cell", "remove-input"}
_GRADER_IMPORT = re.compile(r"^\s*(from|import)\s+autograder\b", re.M)
_MD_CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(?P<body>.*?)^```[ \t]*\n?", re.M | re.S)


def _md_cell_options(body: str) -> str:
    """The options of a MyST code cell: its leading `:key: value` lines, or its `---` YAML block."""
    if body.startswith("---\n"):
        return body[:body.find("\n---", 3) + 4]
    return "\n".join(ln for ln in body.splitlines()[:5] if ln.startswith(":"))


def strip_grader_cells(sources: Path) -> int:
    """The book's downloadable page sources (`_sources/`) without the hidden cells that import the
    grader (the common-mistakes box, the capstone's glued constants): a downloaded page then runs with
    torch, numpy and matplotlib alone, and holds no line of the grading code. A hidden cell's output
    stays (the box, as the page shows it); a visible cell that imports the grader is left for the scan
    to refuse. Returns how many cells were stripped."""
    stripped = 0
    for path in sorted(Path(sources).rglob("*")):
        if path.suffix == ".ipynb":
            nb = json.loads(path.read_text())
            cells = []
            for cell in nb.get("cells", []):
                tags = set(cell.get("metadata", {}).get("tags", []))
                if (cell.get("cell_type") == "code" and tags & HIDDEN_TAGS
                        and _GRADER_IMPORT.search("".join(cell.get("source", "")))):
                    stripped += 1
                    if "remove-cell" in tags or not cell.get("outputs"):
                        continue
                    cell = {**cell, "source": ""}
                cells.append(cell)
            if len(cells) != len(nb.get("cells", [])) or cells != nb.get("cells", []):
                path.write_text(json.dumps({**nb, "cells": cells}, indent=1))
        elif path.suffix == ".md":
            text = path.read_text()

            def drop(m: re.Match) -> str:
                nonlocal stripped
                if _GRADER_IMPORT.search(m["body"]) and re.search(r"remove-(cell|input)",
                                                                  _md_cell_options(m["body"])):
                    stripped += 1
                    return ""
                return m[0]

            new = _MD_CODE_CELL.sub(drop, text)
            if new != text:
                path.write_text(new)
    return stripped


def secret_lines(root: Path | None = None) -> dict[str, list[str]]:
    """{where: distinctive lines that must never be published}: solution and hidden-test lines of each
    source notebook, and the grading code's lines, less those students see anyway."""
    root = Path(root or course_root())
    public = _public_text(root)
    found: dict[str, list[str]] = {}
    for stem in stems(root):
        nb = json.loads(source_notebook(stem, root).read_text())
        lines = set()
        for cell in nb["cells"]:
            src = "".join(cell["source"])
            for block in re.findall(r"### BEGIN (?:SOLUTION|HIDDEN TESTS)(.*?)### END", src, re.S):
                for ln in block.splitlines():
                    ln = ln.strip()
                    for needle in (ln, ln.split("  #")[0].strip()):
                        if len(needle) > 12 and not needle.startswith("#") and needle not in public:
                            lines.add(needle)
        found[f"solutions/{stem}"] = sorted(lines)
    for folder in GRADING_CODE:
        for path in sorted((root / folder).rglob("*.py")):
            lines = {ln.strip() for ln in path.read_text().splitlines()}
            found[path.relative_to(root).as_posix()] = sorted(
                ln for ln in lines if len(ln) > 24 and not ln.startswith(("#", '"""', "from ", "import "))
                and ln not in public)
    return found


def _text_files(dest: Path):
    for p in sorted(dest.rglob("*")):
        rel = p.relative_to(dest).as_posix()
        if p.is_file() and not rel.startswith((".git/",) + VENDORED) and p.suffix in TEXT_SUFFIXES:
            yield p, rel


def _visible(path: Path) -> str:
    text = path.read_text(errors="replace")
    if path.suffix == ".html":  # highlighted code is one <span> per token
        text += "\n" + html_lib.unescape(re.sub(r"<[^>]+>", "", text))
    return text


def scan(dest: Path, root: Path | None = None) -> list[str]:
    """Every secret found under `dest` (empty: nothing to hide there), as 'file: what'."""
    dest = Path(dest)
    leaks = []
    for p in sorted(dest.rglob("*")):
        rel = p.relative_to(dest).as_posix()
        if rel.startswith(".git/") or rel == ".git":
            continue
        if p.is_file() and (p.suffix in FORBIDDEN_SUFFIXES or "gradebook" in p.name):
            leaks.append(f"{rel}: a {p.suffix or 'gradebook'} file")
        if re.search(r"(^|/)(solutions|autograder|autograded|submitted|feedback|grading)(/|$)", rel):
            leaks.append(f"{rel}: a private folder")
    secrets = secret_lines(root)
    for path, rel in _text_files(dest):
        text = _visible(path)
        for marker in (BEGIN_SOLUTION, BEGIN_HIDDEN, "autograder.inline", "from autograder"):
            if marker in text:
                leaks.append(f"{rel}: {marker!r}")
        for where, lines in secrets.items():
            for line in lines:
                if line in text:
                    leaks.append(f"{rel}: a line of {where}: {line[:80]}")
    return leaks


def launch_targets(dest: Path) -> list[tuple[str, str, str]]:
    """(page, repository URL, path in it) for every launch link on the published exercise pages."""
    found = []
    for page in sorted((Path(dest) / "docs" / "exercises").glob("*/*.html")):
        for href in re.findall(r'class="course-launch" href="([^"]+)"', page.read_text()):
            url = urlparse(html_lib.unescape(href))
            query = parse_qs(url.query)
            m = re.match(r"/github/([^/]+)/([^/]+)/blob/[^/]+/(.+)$", url.path)
            if m:  # Colab
                found.append((page.name, f"https://github.com/{m[1]}/{m[2]}", unquote(m[3])))
                continue
            m = re.match(r"/v2/gh/([^/]+)/([^/]+)/[^/]+$", url.path)
            if m and "urlpath" in query:  # Binder
                found.append((page.name, f"https://github.com/{m[1]}/{m[2]}",
                              query["urlpath"][0].split("/", 1)[1]))
                continue
            if "repo" in query and "urlpath" in query:  # JupyterHub (nbgitpuller): urlpath tree/<repo>/<path>
                repo = query["repo"][0].rstrip("/").removesuffix(".git")
                found.append((page.name, repo, query["urlpath"][0].split("/", 2)[2]))
    return found


def _requirements(root: Path) -> str:
    pins = {}
    for line in (root / "requirements.txt").read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*([=<>!~].*?)?\s*(#.*)?$", line)
        if m and m[1].lower() in RUNTIME_PACKAGES:
            pins[m[1].lower()] = (m[1] + (m[2] or "")).strip()
    return ("# What Binder installs to run the exercises (the CPU build of torch).\n"
            "--extra-index-url https://download.pytorch.org/whl/cpu\n"
            + "".join(f"{pins.get(p, p)}\n" for p in RUNTIME_PACKAGES))


def _readme(root: Path) -> str:
    title = "the course"
    config = root / "_config.yml"
    if config.is_file():
        m = re.search(r'^title:\s*"?(.*?)"?\s*$', config.read_text(), re.M)
        title = m[1] if m else title
    items = "\n".join(f"- `exercises/{s}/{s}.ipynb`" for s in stems(root))
    return (f"# {title}: for students\n\n"
            "The book is this repository's GitHub Pages site (built from `docs/`). Each exercise page has\n"
            "buttons that open the exercise notebook on Colab or Binder; you can also download it:\n\n"
            f"{items}\n\n"
            "Replace each `raise NotImplementedError()` with your code, run the test cell under each\n"
            "exercise, and submit the notebook as your course says. This repository is written by the\n"
            "course's publishing workflow: changes made here are overwritten.\n")


def publish(dest: Path, *, html: Path | None = None, root: Path | None = None,
            repository: str | None = None) -> str:
    """Fill `dest` with the student tree; raise PublishError (leaving `dest` empty but for .git) on a leak,
    a missing book, or a launch button that opens nothing in `dest`. Returns a summary."""
    root = Path(root or course_root())
    html = Path(html or root / "_build" / "html")
    if not (html / "index.html").is_file():
        raise PublishError(f"no built book at {html}: run `make book` first")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _clear(dest)
    shutil.copytree(html, dest / "docs", ignore=shutil.ignore_patterns(".buildinfo", ".doctrees"))
    (dest / "docs" / ".nojekyll").write_text("")
    if (dest / "docs" / "_sources").is_dir():
        strip_grader_cells(dest / "docs" / "_sources")
    for stem in stems(root):
        target = dest / "exercises" / stem / f"{stem}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(release_notebook(stem, root), target)
    (dest / "requirements.txt").write_text(_requirements(root))
    (dest / "README.md").write_text(_readme(root))

    problems = [f"secret: {leak}" for leak in scan(dest, root)]
    targets = launch_targets(dest)
    for page, repo, path in targets:
        if not (dest / path).is_file():
            problems.append(f"launch link on {page} opens {path}, which the student repository does not hold")
        if repository and repo.rstrip("/") != repository.rstrip("/"):
            problems.append(f"launch link on {page} opens {repo}, not the student repository {repository}: "
                            "set repository.url in _config.yml and build the book again")
    if problems:
        _clear(dest)
        raise PublishError("nothing published:\n  " + "\n  ".join(problems[:20]))
    repos = sorted({repo for _, repo, _ in targets})
    placeholder = [r for r in repos if r.lower().startswith(PLACEHOLDER_REPOSITORIES)]
    files = sum(1 for p in dest.rglob("*") if p.is_file() and ".git" not in p.relative_to(dest).parts)
    return (f"published {files} files into {dest}: the book in docs/, {len(stems(root))} exercises; "
            f"no secret found; launch buttons open {', '.join(repos) or 'nothing'}"
            + (" (a placeholder: set repository.url in _config.yml to the student repository)" if placeholder
               else ""))


def _clear(dest: Path) -> None:
    for p in dest.iterdir():
        if p.name == ".git":
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
