# The two jobs of the README: `make demo` (index real sample photos, open the quick-start)
# and `make test` (set up, lint and run every test). Both create ./.venv on first use.
# `make docs` builds the documentation site (docs/, mkdocs.yml) into site/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= $(HOME)/imrec-demo

.PHONY: demo test test-fast venv browser lint tsc docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installs once, again only when pyproject.toml changes. TORCH_INDEX_URL (e.g.
# https://download.pytorch.org/whl/cpu) installs torch from there first: a CPU-only torch.
TORCH_INDEX_URL ?=
# pip's own lines (one per package, download bars in a terminal) show that it is moving.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "Installing imrec-widgets with torch and friends into $(VENV): a few minutes, several GB (docs/troubleshooting.md)"
	$(if $(TORCH_INDEX_URL),@echo "== torch and torchvision from $(TORCH_INDEX_URL)")
	$(if $(TORCH_INDEX_URL),$(BIN)/pip install torch torchvision --index-url $(TORCH_INDEX_URL))
	@echo "== imrec-widgets and its dependencies"
	$(BIN)/pip install -e ".[test]"
	@echo "== installed; the demo's commands are in $(BIN) (. $(BIN)/activate puts them on your PATH)"
	@touch $@

venv: $(VENV)/.installed

# Debian's Chromium drives the real-browser tests (never `playwright install`: it downloads).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

demo: venv
	$(BIN)/imrec demo $(DEMO_DIR)

test: venv browser lint
	$(BIN)/python -m pytest

# The inner loop: no browser, no notebooks, nothing marked slow (under a minute on 2 cores).
# Whole test files are spread over up to 4 processes (pytest-xdist), so a module's fixtures are
# made once; nbval is not loaded (no notebook runs here, and its import costs each process
# seconds), which is why addopts is given again without --nbval-lax.
FAST_ADDOPTS := -ra --strict-config --strict-markers
test-fast: venv
	$(BIN)/python -m pytest tests -m "not browser and not slow" -q -n auto --maxprocesses 4 \
	  --dist loadfile -p no:nbval -o addopts="$(FAST_ADDOPTS)"

lint: venv tsc
	$(BIN)/ruff check imrec_widgets tests benchmarks
	$(BIN)/ruff format --check imrec_widgets tests benchmarks
	$(BIN)/mypy

# The widgets' ES modules, type-checked from their JSDoc (js/tsconfig.json); nothing is compiled.
# npx fetches this TypeScript from npm once and keeps it in its cache (~/.npm/_npx).
TYPESCRIPT ?= typescript@5.9.3
tsc:
	npx --yes -p $(TYPESCRIPT) tsc -p js/

# The site, with an API reference from the docstrings; --strict: a broken link fails the build.
$(VENV)/.docs-installed: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install -q -e ".[docs]"
	@touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) dist build site .pytest_cache test-artifacts
