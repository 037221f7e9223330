# The README's commands. Every target creates .venv and installs on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STEMS := $(shell $(PYTHON) -c "import re;print(' '.join(re.findall(r'book/(\w+)', open('_toc.yml').read())))" 2>/dev/null)

.PHONY: book test chromium slurm release grade bench venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## Build the HTML book into _build/html (strict: warnings are errors).
# book/_ext/build_book.py runs `jupyter-book build . -W -n --keep-going` after executing the chapters
# whose code changed side by side (one kernel per core) into the execution cache that the build reads
# (_config.yml: execute_notebooks: cache); jupyter-book alone runs them one after another. The kernels
# draw figures with the inline backend even where MPLBACKEND is set (with Agg, the book would have no
# figures) and run book/_ext/kernel_startup.py first (it says why).
BOOK_ENV := MPLBACKEND=module://matplotlib_inline.backend_inline PYTHONSTARTUP=$(CURDIR)/book/_ext/kernel_startup.py
# The chapters with code cells in reverse order of _toc.yml: the later chapters run longer, so they
# start first and the short ones fill in at the end.
reverse = $(if $(1),$(call reverse,$(wordlist 2,$(words $(1)),$(1))) $(firstword $(1)))
CHAPTERS_WITH_CODE = $(filter $(shell grep -l '^```{code-cell}' book/*.md),$(call reverse,$(STEMS:%=book/%.md)))
book: $(STAMP)
	$(BOOK_ENV) $(PY) book/_ext/build_book.py $(CHAPTERS_WITH_CODE)

## Run the whole test suite.
test: $(STAMP) chromium slurm
	$(PY) -m pytest

## The browser tests drive the system's Chromium: installed with apt-get when missing and we are root;
## otherwise those tests are skipped with a message saying how to install it.
chromium:
	@test -x "$${CHROMIUM:-/usr/bin/chromium}" || command -v chromium >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "Chromium is missing, so the browser tests will be skipped: sudo apt-get install -y chromium"; fi

## tests/test_scheduler.py grades a class through a single-node Slurm cluster it starts (munged, slurmctld,
## slurmd): Debian's slurm-wlm, installed with apt-get when missing and we are root; otherwise skipped.
slurm:
	@PATH="$$PATH:/usr/sbin:/sbin"; command -v sbatch >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && \
	command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm; \
	else echo "Slurm is missing, so the scheduler tests will be skipped: sudo apt-get install -y slurm-wlm"; fi

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
