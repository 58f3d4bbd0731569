# Every target installs what it needs through .venv/.installed, so any one of them works on a fresh clone.
# The environment comes from requirements/dev.lock (hash-checked), never from a fresh resolution.
PY := .venv/bin/python
BIN := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)
# One resolution for every lock: the same Python, every platform, hashes of every file of a pinned release.
COMPILE := $(BIN)/uv pip compile -q --universal --python-version 3.11 --generate-hashes --no-header pyproject.toml
RELEASED := $(shell cat protos/RELEASED)
TS := clients/typescript

.PHONY: install lock check-lock gen check-gen ts-gen ts-check-gen ts-build ts-test third-party lint typecheck breaking dist-check test test-embedded run demo bench bench-mlflow clean

.venv/.installed: requirements/dev.lock pyproject.toml
	python3 -m venv .venv && $(PY) -m pip install -q --require-hashes --no-deps -r requirements/dev.lock && $(PY) -m pip install -q --no-deps --no-build-isolation -e . && touch $@

install: .venv/.installed

lock: .venv/.installed
	$(COMPILE) --upgrade --extra dev -o requirements/dev.lock && $(COMPILE) -c requirements/dev.lock --extra server -o requirements/server.lock && $(COMPILE) -c requirements/dev.lock -o requirements/base.lock

check-lock: .venv/.installed
	rm -rf build/lock && mkdir -p build/lock && cp requirements/*.lock build/lock/ && $(COMPILE) --extra dev -o build/lock/dev.lock && $(COMPILE) -c build/lock/dev.lock --extra server -o build/lock/server.lock && $(COMPILE) -c build/lock/dev.lock -o build/lock/base.lock && diff -r -I '^ *#' requirements build/lock && echo "the locks match pyproject.toml"

gen: .venv/.installed
	$(PY) scripts/gen_protos.py && $(PY) scripts/gen_errors.py && $(PY) scripts/gen_service_config.py && $(PY) scripts/gen_openapi.py

check-gen: .venv/.installed
	rm -rf build/gen && mkdir -p build/gen && $(PY) scripts/gen_protos.py build/gen && diff -r build/gen/modelplane/v1 clients/modelplane/v1 && $(PY) scripts/gen_errors.py --check && $(PY) scripts/gen_service_config.py --check && $(PY) scripts/gen_openapi.py --check && $(PY) scripts/copy_third_party_protos.py --check && echo "generated code matches protos/"

$(TS)/node_modules/.installed: $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund && touch node_modules/.installed

ts-gen: .venv/.installed $(TS)/node_modules/.installed
	$(BIN)/buf generate --template $(TS)/buf.gen.yaml

ts-check-gen: .venv/.installed $(TS)/node_modules/.installed
	rm -rf build/ts-gen && $(BIN)/buf generate --template $(TS)/buf.gen.yaml --output build/ts-gen && diff -r build/ts-gen/$(TS)/src/gen $(TS)/src/gen && echo "generated TypeScript matches protos/"

ts-build: $(TS)/node_modules/.installed
	cd $(TS) && npm run --silent build

ts-test: .venv/.installed ts-build
	cd $(TS) && npm test

third-party: .venv/.installed
	$(PY) scripts/copy_third_party_protos.py

lint: .venv/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/buf lint

typecheck: .venv/.installed
	$(BIN)/mypy

breaking: .venv/.installed
	rm -rf build/released && mkdir -p build/released && git archive $(RELEASED) protos buf.yaml | tar -x -C build/released && cp -r third_party build/released/ && $(BIN)/buf breaking --against build/released && echo "protos/ keeps the contract released at $(RELEASED)"

dist-check: .venv/.installed
	$(PY) scripts/check_dist.py

test: .venv/.installed
	$(BIN)/pytest

test-embedded: .venv/.installed
	MODELPLANE_TEST_EMBEDDED=1 $(BIN)/pytest

run: .venv/.installed
	$(BIN)/modelplane serve --address 127.0.0.1:50051 --http-address 127.0.0.1:8080 --data-dir .modelplane --no-auth

demo: .venv/.installed
	$(PY) -m modelplane.demo

bench: .venv/.installed
	$(PY) bench/run.py

bench-mlflow: .venv/.installed
	$(PY) -m bench.mlflow_compare

clean:
	rm -rf .venv build .mypy_cache .ruff_cache .pytest_cache $(TS)/node_modules $(TS)/dist
