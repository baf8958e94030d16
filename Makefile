# Two commands: `make demo` (the main job) and `make test`. Each makes .venv when it is absent.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/gnnpot: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls the CUDA build on machines that have no GPU.
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/gnnpot

demo: install
	$(BIN)/gnnpot data generate --out demo/emt_cuau.xyz
	$(BIN)/gnnpot data stats demo/emt_cuau.xyz --cutoff 5.0

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo
