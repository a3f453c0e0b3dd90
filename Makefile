# Everything runs from the project's own virtualenv; `make install` creates it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests use the tiktoken encodings stored beside the checkout when they are there.
TIKTOKEN_CACHE ?= $(abspath ../shared/tiktoken-cache)
export TIKTOKEN_CACHE_DIR ?= $(if $(wildcard $(TIKTOKEN_CACHE)/*),$(TIKTOKEN_CACHE),)

.PHONY: install test test-real test-browser serve-real lint fmt check bench bench-smoke clean

install: $(BIN)/parallelize

$(BIN)/parallelize: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

test: install
	$(BIN)/python -m pytest -q -n auto

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint test

bench: install
	$(BIN)/python bench/run.py

bench-smoke: install
	$(BIN)/python bench/run.py --smoke

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Integration tests against a real llama.cpp server built once from PyPI's llama-cpp-python sdist
# (cached under ~/.cache/parallelize/realserver; the first build takes 10-20 minutes on 2 cores).
test-real: install
	bash tools/realserver/build.sh
	$(BIN)/python -m pytest -q tests/integration

# Opt-in, not part of `make test`: the HTML reports of real runs (against tests/llmserver.py) in
# Debian's headless chromium: the DOM it builds (the winner marked, no element that fetches), no
# request but the page's own, and the screenshots under docs/screenshots/ that the README shows.
test-browser: install
	@test -x /usr/bin/chromium || command -v chromium >/dev/null || { \
		echo "make test-browser needs Debian's chromium: apt-get install -y chromium" >&2; exit 2; }
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/browser

# A real local model in two commands: `make serve-real`, then paste the export line it prints.
# 4 slots x 8,192 tokens and replies up to 1,024 on 127.0.0.1:8089 (serve.py --usable); pass
# other serve.py flags as SERVE_ARGS, e.g. SERVE_ARGS="--port 8090 --model my.gguf --threads 2".
serve-real: install
	bash tools/realserver/build.sh
	$(BIN)/python tools/realserver/serve.py --usable $(SERVE_ARGS)
