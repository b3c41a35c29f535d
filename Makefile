# The two jobs of the README: `make demo` (index real sample photos, open the quick-start)
# and `make test` (set up and run every test). Both create ./.venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= $(HOME)/imrec-demo

.PHONY: demo test venv browser lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

venv: $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"

# Debian's Chromium drives the real-browser tests (never `playwright install`: it downloads).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

demo: venv
	$(BIN)/imrec demo $(DEMO_DIR)

test: venv browser
	$(BIN)/ruff check imrec_widgets tests benchmarks
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check imrec_widgets tests benchmarks

clean:
	rm -rf $(VENV) dist build .pytest_cache test-artifacts
