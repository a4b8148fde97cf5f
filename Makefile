# Grönvåg — the two commands: `make demo` and `make test`. Each creates .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gronvag demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(BIN)/python -m bench --smoke --out .bench-smoke

bench: $(STAMP)
	$(BIN)/python -m bench --out bench/results

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .bench-smoke build *.egg-info
