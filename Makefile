# The two set-up commands: `make demo` (the whole pipeline on the embedded default, CPU) and `make test`.
# Both create .venv on first use and (re)install the project when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first and on its own: 2.13.0 has a small CPU wheel on our CI machines (plain `torch` pulls
# a ~5 GB CUDA build). On a GPU machine: `make demo TORCH=torch` (or any CUDA build you prefer).
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here); installed once, as root
# (CI) or through sudo. A failed install does not stop `make test`: the browser test then fails saying why.
CHROMIUM ?= /usr/bin/chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vlm-rlhf pipeline --config configs/demo.yaml

$(CHROMIUM):
	-$(SUDO) apt-get update -qq
	-DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest

# ruff lints and formats (the formatter decides layout: no hand-kept `# fmt: skip` blocks)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf runs .pytest_cache test-artifacts
