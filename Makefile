# Two commands on a fresh machine with only Python 3.11:
#   make demo   -- install, build a synthetic workspace, train all models, serve the API
#   make test   -- install (with dev tools) and run the test suite
PYTHON ?= python3
UV := $(PYTHON) -m uv

.PHONY: setup demo test lint bench

setup:
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv>=0.5"
	$(UV) sync --frozen

demo: setup
	$(UV) run portrait demo

test: setup
	@# The audience report's browser test drives Debian's headless Chromium (as root, non-interactively).
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	fi
	$(UV) run pytest -q -n 2 --dist loadgroup

lint: setup
	$(UV) run ruff check .
	$(UV) run ruff format --check .

bench: setup
	$(UV) run python benchmarks/run_all.py
