"""MD and relaxation: energy conservation for every family, early stops, the md/relax commands."""

import json

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.cluster import Icosahedron
from ase.io import read, write

from gnnpot import REGISTRY, GNNPotCalculator, build_model, list_pretrained, load_model, testing
from gnnpot.calculators import relax, run_md
from gnnpot.cli import main

torch.set_num_threads(1)


def cuau_cell():
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat((2, 2, 2))
    atoms.numbers[::5] = 79
    atoms.rattle(0.02, seed=2)
    return atoms


def cuau_cluster():
    atoms = Icosahedron("Cu", 2)  # 13 atoms
    atoms.numbers[::7] = 79
    atoms.center(vacuum=5.0)
    atoms.pbc = False
    return atoms


SHIPPED_CUAU = sorted(name for name in list_pretrained() if name.endswith("-emt-cuau"))


@pytest.mark.parametrize("name", SHIPPED_CUAU)
@pytest.mark.parametrize("system", ["cluster", "cell"])
def test_nve_conserves_energy(name, system):
    """float64 NVE with each shipped Cu-Au model: a finite cluster and a periodic cell."""
    atoms = cuau_cluster() if system == "cluster" else cuau_cell()
    calc = GNNPotCalculator(name, dtype="float64")
    result = run_md(atoms, calc, ensemble="nve", temperature=300, timestep=2.0, steps=100, interval=5)
    assert result.stopped is None and result.steps == 100
    assert 100 < result.mean_temperature < 600
    assert result.max_abs_drift_mev_per_atom < 1.0, result


def test_nve_of_a_molecule_with_the_ethanol_model():
    atoms = molecule("CH3CH2OH")
    calc = GNNPotCalculator("schnet-rmd17-ethanol", dtype="float64")
    result = run_md(atoms, calc, ensemble="nve", temperature=300, timestep=0.5, steps=200)
    assert result.stopped is None
    assert result.max_abs_drift_mev_per_atom < 1.0, result


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_nve_of_a_molecule_with_a_random_model(name):
    """Untrained weights, small energy scale: the integrator conserves whatever smooth energy it gets."""
    torch.manual_seed(0)
    model = build_model(name, cutoff=4.0, elements=["H", "C", "O"], scale=0.1, **testing.tiny_hparams(name))
    atoms = molecule("CH3CH2OH")
    result = run_md(atoms, GNNPotCalculator(model, dtype="float64"), timestep=0.25, steps=100, min_distance=None)
    assert result.stopped is None
    assert result.max_abs_drift_mev_per_atom < 0.5, result


def test_nvt_and_npt_run():
    atoms = cuau_cell()
    calc = GNNPotCalculator("painn-emt-cuau", dtype="float64")
    nvt = run_md(atoms, calc, ensemble="nvt", temperature=600, timestep=2.0, steps=100, friction=0.05)
    assert nvt.stopped is None and 300 < nvt.mean_temperature < 1000
    volume = atoms.get_volume()
    npt = run_md(atoms, calc, ensemble="npt", temperature=300, timestep=2.0, steps=50, pressure=5.0, pdamp=100.0)
    assert npt.stopped is None and atoms.get_volume() != volume
    atoms.pbc = False
    with pytest.raises(ValueError, match="npt needs a cell"):
        run_md(atoms, calc, ensemble="npt", steps=1)


def test_stops_when_atoms_come_too_close():
    atoms = molecule("H2O")
    atoms.positions[1] = atoms.positions[0] + [0.6, 0.0, 0.0]
    calc = GNNPotCalculator(build_model("schnet", cutoff=3.0, elements=["H", "O"], **testing.tiny_hparams("schnet")))
    result = run_md(atoms, calc, steps=10, min_distance=0.7)
    assert result.steps == 0 and "closer than the safe distance 0.7 Å" in result.stopped


def test_stops_when_the_committee_disagrees(tmp_path):
    members = []
    for seed in range(2):
        torch.manual_seed(seed)
        members.append(build_model("schnet", cutoff=4.0, elements=["Cu", "Au"], **testing.tiny_hparams("schnet")))
    atoms = cuau_cell()
    traj = tmp_path / "md.extxyz"
    result = run_md(atoms, GNNPotCalculator(members, dtype="float64"), steps=20, max_force_std=1e-6, trajectory=traj)
    assert result.steps == 0 and "committee force uncertainty" in result.stopped
    assert len(read(traj, ":")) == 1  # the frame that stopped the run is kept
    with pytest.raises(ValueError, match="needs a committee"):
        run_md(atoms, GNNPotCalculator(members[0]), steps=1, max_force_std=0.1)


def test_relax_positions_and_cell():
    atoms = cuau_cell()
    atoms.rattle(0.05, seed=5)
    calc = GNNPotCalculator("schnet-emt-cuau", dtype="float64")
    result = relax(atoms, calc, fmax=0.01, steps=500)
    assert result.converged and result.final_energy < result.initial_energy
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.01
    atoms.set_cell(atoms.cell * 1.03, scale_atoms=True)
    result = relax(atoms, calc, fmax=0.01, steps=500, cell=True)
    # FrechetCellFilter's cell "forces" are the virial divided by the number of atoms.
    assert result.converged and np.abs(atoms.get_stress()).max() * atoms.get_volume() / len(atoms) < 0.01


def test_md_and_relax_commands(tmp_path, capsys):
    structure = tmp_path / "cell.extxyz"
    write(structure, cuau_cell())
    traj, log = tmp_path / "md.traj", tmp_path / "md.log"
    args = ["md", "--model", "schnet-emt-cuau", "--structure", str(structure), "--steps", "20", "--timestep", "2",
            "--out", str(traj), "--log", str(log), "--interval", "5", "--json"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 20 and summary["ensemble"] == "nve" and summary["max_abs_drift_mev_per_atom"] < 1.0
    assert len(read(traj, ":")) == 5
    lines = log.read_text().splitlines()
    assert lines[0].split() == ["time_ps", "T_K", "E_pot_eV", "E_kin_eV", "E_tot_eV", "drift_eV"] and len(lines) == 6
    out = tmp_path / "relaxed.extxyz"
    assert main(["relax", "--model", "schnet-emt-cuau", "--structure", str(structure), "--out", str(out)]) == 0
    assert "converged" in capsys.readouterr().out and read(out).calc is not None
    assert main(["md", "--model", "nope", "--structure", str(structure)]) == 1
    assert "no such model file, run folder or pretrained name" in capsys.readouterr().err


def test_committee_from_model_files(tmp_path):
    from gnnpot import save_model

    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = build_model("schnet", cutoff=4.0, elements=["Cu", "Au"], **testing.tiny_hparams("schnet"))
        paths.append(save_model(model, tmp_path / f"m{seed}.pt"))
    calc = GNNPotCalculator(paths)
    atoms = cuau_cell()
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(
        np.mean([load_model(p).double()(_graph(atoms))["energy"].item() for p in paths]), rel=1e-5
    )
    assert calc.results["forces_std"].shape == (len(atoms),)


def _graph(atoms):
    from gnnpot.data import AtomicData

    return AtomicData.from_atoms(atoms, 4.0, dtype=torch.float64)


def test_auto_compile_decides_from_the_measured_costs(monkeypatch):
    from gnnpot.calculators import dynamics

    calc = GNNPotCalculator("schnet-emt-cuau")
    # SchNet's first compiled call ~40 s; a 1.25x faster step saves 20 % of it
    assert not dynamics.compile_pays(calc, seconds_per_step=0.01, steps_left=10_000)  # 20 s saved
    assert dynamics.compile_pays(calc, seconds_per_step=0.01, steps_left=30_000)  # 60 s saved
    committee = GNNPotCalculator(["schnet-emt-cuau", "painn-emt-cuau"])
    assert not dynamics.compile_pays(committee, seconds_per_step=0.01, steps_left=30_000)  # costs 40 + 45 s
    # a short run stays eager and says so
    result = run_md(cuau_cell(), calc, steps=30, timestep=2.0, auto_compile=True)
    assert result.compiled_at is None and not calc.model.compiled
    # with a free compilation the run switches after the probe steps, and carries on smoothly
    monkeypatch.setitem(dynamics.COMPILE_COST_S, "schnet", 0.0)
    calc = GNNPotCalculator("schnet-emt-cuau", dtype="float64")
    monkeypatch.setattr(type(calc), "enable_compile", lambda self, enabled=True: setattr(self, "switched", True))
    result = run_md(cuau_cell(), calc, steps=40, timestep=2.0, auto_compile=True)
    assert result.compiled_at == dynamics.PROBE_STEPS[1] and calc.switched and result.steps == 40


@pytest.mark.slow
def test_auto_compile_switches_to_the_compiled_path(monkeypatch):
    from gnnpot.calculators import dynamics

    monkeypatch.setitem(dynamics.COMPILE_COST_S, "schnet", 0.0)
    calc = GNNPotCalculator("schnet-emt-cuau", dtype="float64")
    result = run_md(cuau_cell(), calc, steps=60, timestep=2.0, auto_compile=True, interval=5)
    assert result.compiled_at == dynamics.PROBE_STEPS[1] and calc.model.compiled
    assert result.stopped is None and result.max_abs_drift_mev_per_atom < 1.0


def test_nvt_holds_a_small_molecule_at_its_temperature():
    """Langevin NVT of 9-atom ethanol averages the target temperature.

    ASE's default fixcm=True ran it about 30% hot (660 K for 500 K); the thermostat now leaves the
    centre of mass free.
    """
    atoms = molecule("CH3CH2OH")
    calc = GNNPotCalculator("schnet-rmd17-ethanol")
    result = run_md(atoms, calc, ensemble="nvt", temperature=500, timestep=0.5, steps=4000, friction=0.05, seed=1)
    assert result.stopped is None
    assert abs(result.mean_temperature - 500) < 40, result.mean_temperature
