# The two commands: `make demo` (the main job on embedded defaults) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint bench install install-dev clean chromium reliability

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# constraints.txt pins every package to what the last passing `make test` used.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/reelrank demo

test: install-dev chromium
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

# The web player's tests drive Debian's chromium through Playwright (never a downloaded browser);
# without apt they skip, saying so.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  echo "chromium not installed: tests/serving/web will be skipped"

# The reliability suite's long forms (schemathesis with 300 examples per operation, a 10-minute
# soak, 10-second fault phases); `make test` runs their short forms.
reliability: install-dev
	RELIABILITY_LONG=1 $(BIN)/pytest tests/reliability $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install-dev  # one at a time: they measure CPU-bound work on a shared machine
	for b in bus features ranker retrieval serve comments social following scaleout product; do $(BIN)/reelrank bench $$b || exit 1; done

clean:
	rm -rf var .pytest_cache
