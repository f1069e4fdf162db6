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

test: toolchains lint
	$(BIN)/pytest -q

bench: toolchains
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
