"""Sphinx extension for the course book (loaded by `_config.yml`'s `sphinx.local_extensions`).

- Exercise pages (`exercises/<stem>/<stem>`) get a bar under their title with
  the launch links (Colab, Binder, and JupyterHub when `jupyterhub_url` is set
  in `_config.yml`) and a download link for the released notebook, which the
  build copies to `_sources/exercises/<stem>/<stem>.ipynb`.
- Chapter pages are MyST markdown: Colab and Binder cannot open a `.md` file,
  so their launch buttons are removed. Their download button still offers the
  executed notebook.
- Without `launch_buttons.thebe`, sphinx-thebe's scripts are dropped: they
  are unused, point at a CDN, and sphinx-thebe adds its inline configuration
  script twice, which the browser reports as an error on every page.
"""
from __future__ import annotations

import html
import re

EXERCISE = re.compile(r"^exercises/(\w+)/\1$")
ORDER = {"Colab": 0, "Binder": 1, "JupyterHub": 2}


def _launch_links(context) -> list[dict]:
    for button in context.get("header_buttons", []):
        if button.get("type") == "group" and button.get("label") == "launch-buttons":
            links = [b for b in button["buttons"] if b.get("type") == "link"]
            return sorted(links, key=lambda b: ORDER.get(b.get("text"), len(ORDER)))
    return []


def _is_thebe_script(script) -> bool:
    name = getattr(script, "filename", script) or ""
    body = getattr(script, "attributes", {}).get("body", "")
    return name.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in body or "thebe@" in name


def adjust_page(app, pagename, templatename, context, doctree):
    if not app.config.html_theme_options.get("launch_buttons", {}).get("thebe") and "script_files" in context:
        context["script_files"] = [s for s in context["script_files"] if not _is_thebe_script(s)]
    if "header_buttons" not in context:
        return
    match = EXERCISE.match(pagename)
    if not match:
        context["header_buttons"] = [b for b in context["header_buttons"] if b.get("label") != "launch-buttons"]
        return
    stem = match.group(1)
    download = context["pathto"](f"_sources/{pagename}.ipynb", 1)
    links = [f'<a class="course-launch" href="{html.escape(b["url"])}" target="_blank" rel="noopener">'
             f'{html.escape(b["text"])}</a>' for b in _launch_links(context)]
    links.append(f'<a class="course-download" href="{download}" download="{stem}.ipynb">'
                 f"Download {stem}.ipynb</a>")
    bar = ('<p class="course-exercise-links"><strong>Open this exercise:</strong> '
           + " · ".join(links) + "</p>")
    # Right under the page's title.
    context["body"] = re.sub(r"(</h1>)", r"\1" + bar.replace("\\", r"\\"), context["body"], count=1)


def setup(app):
    # After sphinx-book-theme builds the header buttons (priority 501).
    app.connect("html-page-context", adjust_page, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
