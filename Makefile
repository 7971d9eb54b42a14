# iemlib: the library, its research book and its tests.
#
#   make book    execute the book's chapters with papermill and build the HTML into _build/html
#                (offline: the pages' JavaScript is fetched once with npm into book/vendor/)
#   make test    unit tests (pytest, 2 workers), the notebook regression tests (nbval), the key
#                numbers against their goldens, then the book of the smoke runs (_build/test/html)
#                checked in Chromium (tests/book; screenshots in _build/test/screenshots)
#   make env     create .venv and install the package with its [book,test] extras
#   make lab     JupyterLab on the notebooks/*.py sources
#   make clean   remove _build (keeps .venv and the results cache)
#   make bench   time the library against reference-style baselines (a DM iteration, mAP@all,
#                encoding, peak memory) in one run on this machine: a table, and _build/bench.json
#
# Variables: PROFILE=smoke|cpu|paper (book; default paper with a GPU, cpu without),
#            PYTHON (interpreter that creates .venv), JB_FLAGS, PAPERMILL_FLAGS, PYTEST_FLAGS
#            (unit tests), NBVAL_FLAGS (notebook tests), BROWSER_FLAGS (browser test),
#            BOOK_HTML (the HTML folder `make test-browser` checks; default _build/test/html),
#            BENCH_FLAGS (make bench, e.g. '--only map --repeats 3'; python -m iemlib bench -h).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
BUILD  := _build

# --- environment of every recipe (and of the notebook kernels they start) -------------------
# The library reads its data from $IEMLIB_DATA; default to ../shared/data when it exists.
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/.),)
export IEMLIB_DATA ?= $(SHARED_DATA)
endif
# glibc: keep big buffers on the heap instead of a fresh mmap per allocation (2.4x faster CPU
# forwards, see ../shared/TOOLING.md).
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736
# Silence debugpy's "frozen modules" warning at every kernel start.
export PYDEVD_DISABLE_FILE_VALIDATION ?= 1

# Book profile: paper on a GPU machine, cpu otherwise. Evaluated only when a recipe needs it.
PROFILE ?= $(shell $(PY) -c 'import torch; print("paper" if torch.cuda.is_available() else "cpu")' 2>/dev/null || echo cpu)

JB_FLAGS        ?= --warningiserror --keep-going
PAPERMILL_FLAGS ?=
PYTEST_FLAGS    ?=
NBVAL_FLAGS     ?=
BROWSER_FLAGS   ?=

# --- sources ---------------------------------------------------------------------------------
NB_SRC   := $(sort $(wildcard notebooks/*.py))
LIB_SRC  := $(shell find iemlib -name '*.py' 2>/dev/null)
# The book's chapters: every notebooks/NAME named in _toc.yml, in toc order.
CHAPTERS := $(shell sed 's/\#.*//' _toc.yml 2>/dev/null | grep -oE '(^|[^A-Za-z0-9_/])notebooks/[A-Za-z0-9_-]+' | grep -oE 'notebooks/[A-Za-z0-9_-]+' | awk '!seen[$$0]++')
BOOK_NB  := $(CHAPTERS:notebooks/%=$(BUILD)/executed/notebooks/%.ipynb)
MISSING  := $(filter-out $(NB_SRC),$(CHAPTERS:=.py))

# The JavaScript the pages load, served from the book itself so that it renders offline:
# RequireJS and the ipywidgets HTML manager (widgets), MathJax (math). `npm pack` fetches each
# package at its pinned version once, and only the files the pages load are kept (MathJax: the
# tex-chtml component and what it loads at run time: fonts, TeX extensions, menu, a11y).
# _config.yml serves book/vendor/ as static files. The stamp names the versions. (Defined here,
# before the rules that depend on the stamp: make expands a prerequisite when it reads the rule.)
VENDOR         := book/vendor
HTML_MANAGER_V := 1.0.6
REQUIREJS_V    := 2.3.7
MATHJAX_V      := 3.2.2
VENDOR_STAMP   := $(VENDOR)/.npm-$(HTML_MANAGER_V)-$(REQUIREJS_V)-$(MATHJAX_V)

.PHONY: help env .venv vendor book test pytest nbval test-book test-browser lab clean FORCE

help:
	@awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' Makefile

# --- environment -----------------------------------------------------------------------------
env .venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[book,test]"
	touch $@

# --- the book --------------------------------------------------------------------------------
# notebooks/NAME.py --jupytext--> _build/notebooks/NAME.ipynb --papermill--> _build/executed/
# notebooks/NAME.ipynb. A chapter is re-executed when its source, the library, the installed
# environment or the profile changes. papermill writes into _build/executed/partial/ and the
# notebook moves into place only when it ran to the end (a failed run stays in partial/).
# The book root is _build/src: _config.yml, _toc.yml, book/ and the executed chapters are copied
# there, and jupyter-book builds it into _build/html without executing anything.
book: $(BOOK_NB) $(VENDOR_STAMP) | $(STAMP)
	$(call build-book,$(BUILD)/executed/notebooks,$(BUILD))
	@echo "The book: $(CURDIR)/$(BUILD)/html/index.html (profile $$(cat $(BUILD)/executed/.profile 2>/dev/null || echo none))"

# $(call build-book,EXECUTED,OUT): the book of the chapters executed into EXECUTED/NAME.ipynb,
# with OUT/src as its root, into OUT/html. jupyter-book always writes into PATH/_build/html, so
# it builds under OUT/jupyter-book/ and the HTML moves to OUT/html.
define build-book
rm -rf $(2)/src $(2)/html
mkdir -p $(2)/src/notebooks
cp -p _config.yml _toc.yml $(2)/src/
cp -Rp book $(2)/src/book
$(if $(wildcard *.bib),cp -p $(wildcard *.bib) $(2)/src/)
$(if $(CHAPTERS),cp -p $(CHAPTERS:notebooks/%=$(1)/%.ipynb) $(2)/src/notebooks/)
$(BIN)/jupyter-book build $(2)/src --path-output $(2)/jupyter-book $(JB_FLAGS)
mv $(2)/jupyter-book/_build/html $(2)/html
test -f $(2)/html/index.html
endef

# $(call npm-vendor,PACKAGE@VERSION,FOLDER,FILES): FILES of the package into book/vendor/FOLDER.
define npm-vendor
mkdir -p $(VENDOR)/$(2)
cd $(VENDOR) && tgz=$$(npm pack --silent $(1)) && \
  tar -xzf "$$tgz" -C $(2) --strip-components=1 --wildcards $(foreach f,$(3),'package/$(f)') && rm "$$tgz"
endef

vendor: $(VENDOR_STAMP)

$(VENDOR_STAMP):
	rm -rf $(VENDOR)
	$(call npm-vendor,requirejs@$(REQUIREJS_V),requirejs,require.js)
	$(call npm-vendor,@jupyter-widgets/html-manager@$(HTML_MANAGER_V),html-manager,\
	  dist/embed-amd.js dist/*.woff2 dist/*.woff dist/*.ttf)
	$(call npm-vendor,mathjax@$(MATHJAX_V),mathjax,LICENSE es5/tex-chtml.js \
	  es5/output/chtml/fonts/woff-v2 es5/input/tex/extensions es5/ui es5/a11y es5/sre)
	touch $@

ifneq ($(filter book test test-book,$(MAKECMDGOALS)),)
ifneq ($(strip $(MISSING)),)
$(error _toc.yml lists chapters that have no source: $(MISSING))
endif
endif

# The profile the executed chapters were made with; rewritten only when it changes.
$(BUILD)/executed/.profile: FORCE | $(STAMP)
	@mkdir -p $(@D)
	@p='$(PROFILE)'; if [ "$$(cat $@ 2>/dev/null)" != "$$p" ]; then echo "$$p" > $@; echo "book profile: $$p"; fi

# Keep the generated .ipynb (make would delete them as intermediate files).
.SECONDARY: $(CHAPTERS:notebooks/%=$(BUILD)/notebooks/%.ipynb)

$(BUILD)/notebooks/%.ipynb: notebooks/%.py | $(STAMP)
	@mkdir -p $(@D)
	$(BIN)/jupytext --to ipynb --output $@ $<

$(BUILD)/executed/notebooks/%.ipynb: $(BUILD)/notebooks/%.ipynb $(LIB_SRC) $(BUILD)/executed/.profile $(STAMP)
	@mkdir -p $(@D) $(BUILD)/executed/partial
	$(BIN)/papermill -k python3 --cwd $(CURDIR) -p profile "$$(cat $(BUILD)/executed/.profile)" \
	  $(PAPERMILL_FLAGS) $< $(BUILD)/executed/partial/$*.ipynb
	mv $(BUILD)/executed/partial/$*.ipynb $@

# --- tests -----------------------------------------------------------------------------------
# make test: the unit tests, the notebook regression tests, the smoke runs' key numbers against
# their goldens, then the book of those smoke runs, built and checked in Chromium.
test: pytest
	@$(MAKE) --no-print-directory nbval
	@$(MAKE) --no-print-directory check-goldens
	@$(MAKE) --no-print-directory test-book
	@$(MAKE) --no-print-directory test-browser

pytest: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadscope $(PYTEST_FLAGS) tests

# Notebook regression: every notebooks/*.py, executed fresh with the smoke profile (an empty
# results folder, so every run the chapters show happens here), then re-executed by nbval, which
# compares each cell's text output with the papermill run (after tests/nbval_sanitize.cfg).
# nbval reads the records papermill made (a second computation of every run would double the
# time; seeded reproducibility of a run is what the unit tests check), so it checks that the
# chapters render their records reproducibly. Both runs use the executed notebook's folder as
# working directory (nbval starts its kernel there): chapters must not depend on it.
TEST_DIR := $(BUILD)/test
TEST_NB  := $(NB_SRC:notebooks/%.py=$(TEST_DIR)/executed/%.ipynb)

nbval: $(STAMP)
ifeq ($(strip $(NB_SRC)),)
	@echo "nbval: no notebooks/*.py yet; skipping the notebook regression tests"
else
	rm -rf $(TEST_DIR)
	mkdir -p $(TEST_DIR)/executed $(TEST_DIR)/results
	for src in $(NB_SRC); do \
	  name=$$(basename "$$src" .py); \
	  $(BIN)/jupytext --to ipynb --output $(TEST_DIR)/$$name.ipynb "$$src"; \
	  $(BIN)/papermill -k python3 --cwd $(TEST_DIR)/executed \
	    -p profile smoke -p results_dir $(CURDIR)/$(TEST_DIR)/results $(PAPERMILL_FLAGS) \
	    $(TEST_DIR)/$$name.ipynb $(TEST_DIR)/executed/$$name.ipynb; \
	done
	cp tests/nbval_sanitize.cfg $(TEST_DIR)/nbval_sanitize.cfg
	$(PY) -c 'import re, sys; print("\n[repository_path]\nregex: " + re.escape(sys.argv[1]) + "\nreplace: REPO")' \
	  "$(CURDIR)" >> $(TEST_DIR)/nbval_sanitize.cfg
	$(PY) -m pytest --nbval --nbval-current-env --nbval-sanitize-with $(TEST_DIR)/nbval_sanitize.cfg \
	  -p no:randomly -p no:cacheprovider $(NBVAL_FLAGS) $(TEST_NB)
endif

# The book of the chapters nbval's papermill step executed (smoke profile) in _build/test/executed/,
# built like `make book` (warnings are errors) into _build/test/html.
test-book: $(VENDOR_STAMP) | $(STAMP)
	$(call build-book,$(TEST_DIR)/executed,$(TEST_DIR))

# The built book in Chromium (tests/book): every page offline, figures, math, widgets, the image
# browser's slider; full-page screenshots beside the HTML folder (_build/test/screenshots/).
# Check `make book`'s output with `make test-browser BOOK_HTML=_build/html`.
BOOK_HTML ?= $(TEST_DIR)/html
test-browser: $(STAMP)
	$(PY) -m pytest --confcutdir tests/book -p no:randomly -p no:cacheprovider $(BROWSER_FLAGS) \
	  tests/book --book-html $(BOOK_HTML)

# --- benchmarks ------------------------------------------------------------------------------
# make bench: every benchmark at its default sizes (CIFAR-10 shapes; real CIFAR-10 images when
# IEMLIB_DATA has them). Each is timed against its baseline in the same run, with a check that
# both compute the same (exit status 1 when one fails). Run it alone: timings on a busy machine
# mean little (the run warns when the load average says so).
BENCH_FLAGS ?=

.PHONY: bench
bench: $(STAMP)
	@mkdir -p $(BUILD)
	$(PY) -m iemlib bench --json $(BUILD)/bench.json $(BENCH_FLAGS)

# --- notebook sweeps and key-number goldens --------------------------------------------------
# make sweep NOTEBOOK=notebooks/06_ablation.py PARAMS='-p seed 0 1 2 -p ipc 1 10'
#   executes the notebook with papermill for every combination of the PARAMS values, with
#   -p profile $(PROFILE), into _build/sweeps/<stem>/ (SWEEP_FLAGS: --out DIR, --force to rerun
#   copies that exist), and collects the key numbers of every copy into summary.csv there.
# make goldens        writes tests/goldens/<chapter>.json from the smoke runs that `make nbval`
#   left in _build/test/executed/ (a refresh keeps each golden's tolerances).
# make check-goldens  compares the key numbers of those runs with the goldens, within their
#   tolerances, and fails listing every difference.
GOLDENS     := tests/goldens
SWEEP_FLAGS ?=

.PHONY: sweep goldens check-goldens

sweep: $(STAMP)
	$(if $(NOTEBOOK),,$(error make sweep needs NOTEBOOK=notebooks/NAME.py and PARAMS='-p NAME VALUE...'))
	$(PY) -m iemlib sweep --notebook $(NOTEBOOK) --profile $(PROFILE) $(PARAMS) $(SWEEP_FLAGS)

goldens: $(STAMP)
	$(PY) -m iemlib goldens write $(TEST_DIR)/executed --goldens $(GOLDENS)

check-goldens: $(STAMP)
ifeq ($(strip $(NB_SRC)),)
	@echo "check-goldens: no notebooks/*.py yet; nothing to compare"
else
	$(PY) -m iemlib goldens check $(TEST_DIR)/executed --goldens $(GOLDENS)
endif

# --- working on the notebooks ----------------------------------------------------------------
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: $(STAMP)
	$(BIN)/jupyter lab $(LAB_FLAGS)

clean:
	rm -rf $(BUILD) .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

FORCE:
