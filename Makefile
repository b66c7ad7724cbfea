# The two commands of the README. Everything they need is installed from here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench clean

# native/: the producers' and the fan-out's Rust fast paths (PyO3, built by maturin with
# cargo; ~35 s the first time). Without cargo both run their pure-Python paths and the tests
# that want the module installed fail, saying so.
NATIVE := native/pyproject.toml native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)

$(BIN)/.installed: pyproject.toml $(NATIVE)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@if command -v cargo >/dev/null; then $(BIN)/pip install -q ./native; \
	  else echo "cargo not found: native/ not built, the producers and the fan-out use their Python paths"; fi
	touch $@

## Run the pipeline end to end on the embedded Kafka + registry.
demo: $(BIN)/.installed
	$(BIN)/pulse demo $(ARGS)

# The live board's page is tested in a real headless browser: Debian's chromium, installed
# here when missing and we may (root with apt-get); without it that one test is skipped.
$(BIN)/.browser: | $(BIN)/.installed
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the board's browser test will be skipped"; }
	touch $@

## Lint, type-check, then every test (unit and integration against a real broker + registry).
test: $(BIN)/.installed $(BIN)/.browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m tests.support.typecheck
	$(BIN)/python -m pytest $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
