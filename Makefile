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

# Generate the EMT data, train PaiNN (configs/painn_demo.yaml) for DEMO_TIME, evaluate on the held-out
# test split, print the metrics and where the plots and checkpoints are.
DEMO_TIME ?= 00:00:04:00
DEMO_RUN := demo/runs/painn_demo/version_0
demo: install
	$(BIN)/gnnpot data generate --out demo/emt_cuau.xyz
	$(BIN)/gnnpot data stats demo/emt_cuau.xyz --cutoff 5.0
	rm -rf $(DEMO_RUN)
	$(BIN)/gnnpot fit --config configs/painn_demo.yaml --data.train_file demo/emt_cuau.xyz \
		--run.dir demo/runs --run.version 0 --trainer.max_time $(DEMO_TIME)
	@echo "== held-out test split (never seen in training or for E0/scale) =="
	$(BIN)/gnnpot eval --model $(DEMO_RUN)/checkpoints/best.ckpt --split $(DEMO_RUN)/split.json \
		--plot $(DEMO_RUN)/parity_test.png
	@echo "run folder  $(DEMO_RUN): config.yaml split.json metrics.csv learning_curves.png parity_val.png parity_test.png"
	@echo "checkpoint  $(DEMO_RUN)/checkpoints/best.ckpt (resume from checkpoints/last.ckpt with --ckpt_path)"

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo
