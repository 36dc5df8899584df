# Two commands for a fresh machine (each creates and fills .venv when it is missing or pyproject.toml changed):
#   make book   build the book (HTML in _build/html; executes the notebooks, re-using cached results)
#   make test   run the unit tests and every notebook (nbval)
# Data: EMBEDLESSONS_DATA if set, else the first of ./data, ../data, ../shared/data that exists, else the
# loaders' own fallbacks (~/.cache/embedlessons/data, then the Hugging Face hub where a network exists).
PYTHON ?= python3
VENV   ?= .venv
# the CPU build of torch (an unpinned install pulls a multi-GB CUDA build); on a GPU machine pass
# TORCH="torch --index-url <your CUDA wheel index>" or install torch into .venv yourself first
TORCH  ?= torch==2.13.0

DATA := $(or $(EMBEDLESSONS_DATA),$(firstword $(realpath $(wildcard data ../data ../shared/data))))
ifneq ($(DATA),)
export EMBEDLESSONS_DATA := $(DATA)
endif

# two pytest-xdist workers, a notebook's cells on one worker, the slowest notebooks first (conftest.py);
# PYTEST_ARGS= (empty) runs everything in one process
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder

PIP := $(VENV)/bin/pip install -q --disable-pip-version-check

.PHONY: book book-strict test env clean
book: $(VENV)/.installed
	$(VENV)/bin/jupyter-book build .

# what CI checks: any warning fails the build
book-strict: $(VENV)/.installed
	$(VENV)/bin/jupyter-book build -W -n --keep-going .

test: $(VENV)/.installed
	$(VENV)/bin/pytest $(PYTEST_ARGS)

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(PIP) $(TORCH)
	$(PIP) -e ".[book]"
	touch $@

clean:
	rm -rf _build
