# iemlib: the library, its research book and its tests.
#
#   make book    execute the book's chapters with papermill and build the HTML into _build/html
#   make test    unit tests (pytest, 2 workers), then the notebook regression tests (nbval)
#   make env     create .venv and install the package with its [book,test] extras
#   make lab     JupyterLab on the notebooks/*.py sources
#   make clean   remove _build (keeps .venv and the results cache)
#
# Variables: PROFILE=smoke|cpu|paper (book; default paper with a GPU, cpu without),
#            PYTHON (interpreter that creates .venv), JB_FLAGS, PAPERMILL_FLAGS, PYTEST_FLAGS
#            (unit tests), NBVAL_FLAGS (notebook tests).

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

# --- sources ---------------------------------------------------------------------------------
NB_SRC   := $(sort $(wildcard notebooks/*.py))
LIB_SRC  := $(shell find iemlib -name '*.py' 2>/dev/null)
# The book's chapters: every notebooks/NAME named in _toc.yml, in toc order.
CHAPTERS := $(shell sed 's/\#.*//' _toc.yml 2>/dev/null | grep -oE '(^|[^A-Za-z0-9_/])notebooks/[A-Za-z0-9_-]+' | grep -oE 'notebooks/[A-Za-z0-9_-]+' | awk '!seen[$$0]++')
BOOK_NB  := $(CHAPTERS:notebooks/%=$(BUILD)/executed/notebooks/%.ipynb)
MISSING  := $(filter-out $(NB_SRC),$(CHAPTERS:=.py))

.PHONY: help env .venv book test pytest nbval lab clean FORCE

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
book: $(BOOK_NB) | $(STAMP)
	rm -rf $(BUILD)/src
	mkdir -p $(BUILD)/src/notebooks
	cp -p _config.yml _toc.yml $(BUILD)/src/
	cp -Rp book $(BUILD)/src/book
	$(if $(wildcard *.bib),cp -p $(wildcard *.bib) $(BUILD)/src/)
	$(if $(BOOK_NB),cp -p $(BOOK_NB) $(BUILD)/src/notebooks/)
	$(BIN)/jupyter-book build $(BUILD)/src --path-output . $(JB_FLAGS)
	test -f $(BUILD)/html/index.html
	@echo "The book: $(CURDIR)/$(BUILD)/html/index.html (profile $$(cat $(BUILD)/executed/.profile 2>/dev/null || echo none))"

ifneq ($(filter book,$(MAKECMDGOALS)),)
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
test: pytest
	@$(MAKE) --no-print-directory nbval

pytest: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadscope $(PYTEST_FLAGS) tests

# Notebook regression: every notebooks/*.py, executed fresh with the smoke profile, then
# re-executed by nbval, which compares each cell's text output with the papermill run (after
# tests/nbval_sanitize.cfg). nbval starts from an empty results folder too (papermill's records
# are kept in results-papermill/), so both runs compute the same things and the comparison checks
# that a seeded run reproduces itself. Both runs use the executed notebook's folder as working
# directory (nbval starts its kernel there): chapters must not depend on the working directory.
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
	mv $(TEST_DIR)/results $(TEST_DIR)/results-papermill
	mkdir -p $(TEST_DIR)/results
	cp tests/nbval_sanitize.cfg $(TEST_DIR)/nbval_sanitize.cfg
	$(PY) -c 'import re, sys; print("\n[repository_path]\nregex: " + re.escape(sys.argv[1]) + "\nreplace: REPO")' \
	  "$(CURDIR)" >> $(TEST_DIR)/nbval_sanitize.cfg
	$(PY) -m pytest --nbval --nbval-current-env --nbval-sanitize-with $(TEST_DIR)/nbval_sanitize.cfg \
	  -p no:randomly -p no:cacheprovider $(NBVAL_FLAGS) $(TEST_NB)
endif

# --- working on the notebooks ----------------------------------------------------------------
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: $(STAMP)
	$(BIN)/jupyter lab $(LAB_FLAGS)

clean:
	rm -rf $(BUILD) .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

FORCE:
