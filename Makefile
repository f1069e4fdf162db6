# The two commands of the README:
#   make demo   set up, run the bundled hello-world workload, then the attestation flow on sim
#   make test   set up (incl. guest toolchains), then lint and run every test
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup toolchains demo test lint bench

setup:
	@bash scripts/setup.sh

toolchains: setup
	@VENV=$(VENV) bash scripts/install-toolchains.sh

demo: setup
	@ENARX=$(BIN)/enarx bash scripts/demo.sh

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# The host-call tests run twice: once on the pure-Python path (ENARX_NATIVE=0), then the
# whole suite with the native fast path (built by setup when a C compiler exists).
test: toolchains lint
	ENARX_NATIVE=0 $(BIN)/pytest -q -p no:cacheprovider tests/wasi tests/cli/test_run.py tests/test_languages.py
	$(BIN)/pytest -q

bench: toolchains
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
