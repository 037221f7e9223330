# The README's commands. Every target creates .venv and installs on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STEMS := $(shell $(PYTHON) -c "import re;print(' '.join(re.findall(r'book/(\w+)', open('_toc.yml').read())))" 2>/dev/null)

.PHONY: book test release grade bench venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## Build the HTML book into _build/html (strict: warnings are errors).
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

## Run the whole test suite.
test: $(STAMP)
	$(PY) -m pytest

## Regenerate exercises/ from solutions/ with nbgrader (outputs cleared, ids stable).
release: $(STAMP)
	$(PY) -m autograder release

## Grade a class: make grade STEM=losses SUBMISSIONS=submitted OUT=grading
grade: $(STAMP)
	$(PY) -m autograder grade $(STEM) --submissions $(or $(SUBMISSIONS),submitted) --out $(or $(OUT),grading)

## Benchmarks: print ratios against a baseline measured in the same run.
bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf _build .jupyter_cache
