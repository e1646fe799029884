# The README's two commands live here: `make demo` (main job) and `make test` (ruff, then the
# whole suite).
# Each one builds its own virtual environment first, so a fresh clone needs nothing else.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv browser docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an open range would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/kronos-quant demo

# Best effort, never failing: tests/test_browser.py opens the demo's pages in headless
# Chromium; where it cannot be installed (not root, no apt-get, offline) that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing chromium for the browser test (apt-get)"; \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	        >/dev/null 2>&1 || echo "note: could not install chromium; tests/test_browser.py will skip"; \
	    else echo "note: chromium missing and not installable here; tests/test_browser.py will skip"; fi; }

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 -q

# API reference from the docstrings (pdoc, offline) into build/api/index.html.
docs: $(STAMP)
	$(BIN)/python docs/build_api.py --out build/api

clean:
	rm -rf $(VENV) build *.egg-info
