# Every target installs what it needs through .venv/.installed, so any one of them works on a fresh clone.
PY := .venv/bin/python
BIN := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: install gen check-gen third-party lint typecheck test test-embedded run bench clean

.venv/.installed: pyproject.toml
	python3 -m venv .venv && $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[dev]' && touch $@

install: .venv/.installed

gen: .venv/.installed
	$(PY) scripts/gen_protos.py

check-gen: .venv/.installed
	rm -rf build/gen && mkdir -p build/gen && $(PY) scripts/gen_protos.py build/gen && diff -r build/gen/modelplane/v1 clients/modelplane/v1 && echo "generated code matches protos/"

third-party: .venv/.installed
	$(PY) scripts/copy_third_party_protos.py

lint: .venv/.installed third-party
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/buf lint

typecheck: .venv/.installed
	$(BIN)/mypy

test: .venv/.installed
	$(BIN)/pytest

test-embedded: .venv/.installed
	MODELPLANE_TEST_EMBEDDED=1 $(BIN)/pytest

run: .venv/.installed
	$(BIN)/modelplane serve --address 127.0.0.1:50051 --data-dir .modelplane --no-auth

bench: .venv/.installed
	$(PY) bench/run.py

clean:
	rm -rf .venv build third_party .mypy_cache .ruff_cache .pytest_cache
