"""The calculator's device-resident path (neighbour list and graph on the model's device), tested on the CPU.

Every family gives the host path's results on molecules, slabs and cells; MD through the Verlet
skin follows the host path; the model reads no device tensor back for the checks the host made;
bad input still fails clearly. The same tests run on a GPU when one is there (marked ``gpu``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.md.verlet import VelocityVerlet
from test_predict import mixed_structures, tiny_model

from gnnpot import REGISTRY, GNNPotCalculator
from gnnpot.calculators.dynamics import thermalize_momenta
from gnnpot.data import DataError

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])]  # fmt: skip


def _results(calc: GNNPotCalculator, atoms) -> dict[str, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    out["energies"] = atoms.get_potential_energies()
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress()
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_family_equals_the_host_path(name, device):
    model = tiny_model(name)
    host = GNNPotCalculator(model, dtype="float64")
    resident = GNNPotCalculator(model, dtype="float64", device=device, resident=True)
    assert resident.resident and not host.resident
    for atoms in mixed_structures():
        expected, got = _results(host, atoms), _results(resident, atoms)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-10, err_msg=f"{name} {key}")
        assert resident.min_distance == pytest.approx(host.min_distance, abs=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_md_through_the_skin_follows_the_host_path(device):
    """NVE of a hot Cu-Au cell, with a committee, crossing several rebuilds of the Verlet list."""
    models = [tiny_model("painn"), tiny_model("schnet")]
    trajectories = []
    for resident in (False, True):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        atoms.numbers[::3] = 79
        thermalize_momenta(atoms, temperature_K=1500, rng=np.random.default_rng(1))
        atoms.calc = GNNPotCalculator(models, dtype="float64", device=device if resident else "cpu", resident=resident)
        positions = []
        dynamics = VelocityVerlet(atoms, timestep=2 * units.fs)
        dynamics.attach(lambda atoms=atoms, seen=positions: seen.append(atoms.positions.copy()), interval=1)
        dynamics.run(40)
        trajectories.append((np.array(positions), atoms.calc.results["forces_std"]))
    np.testing.assert_allclose(trajectories[1][0], trajectories[0][0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(trajectories[1][1], trajectories[0][1], rtol=0, atol=1e-9)
    moved = np.abs(trajectories[0][0][-1] - trajectories[0][0][0]).max()
    assert moved > 0.5  # past skin / 2 = 0.25 Å: the list was rebuilt on the way


def test_the_model_reads_nothing_back_for_host_facts(monkeypatch):
    """With the host's facts on the graph, the pair and element checks on the device are not run."""
    import gnnpot.models.forces as forces

    def refuse(*args, **kwargs):
        raise AssertionError("the pair check read the device")

    monkeypatch.setattr(forces, "edges_paired", refuse)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = GNNPotCalculator(tiny_model("painn"), dtype="float64", resident=True)
    atoms.get_forces()
    atoms.calc = GNNPotCalculator(tiny_model("painn"), dtype="float64", resident=False)
    with pytest.raises(AssertionError, match="read the device"):
        atoms.get_forces()


def test_bad_input_fails_clearly():
    calc = GNNPotCalculator(tiny_model("schnet"), dtype="float64", resident=True)
    water = molecule("H2O")
    water.numbers[0] = 3  # Li: not among the model's elements
    water.calc = calc
    with pytest.raises(ValueError, match=r"unknown element\(s\) \['Li'\]"):
        water.get_potential_energy()
    close = molecule("H2O")
    close.positions[1] = close.positions[0] + [0.05, 0, 0]
    close.calc = calc
    with pytest.raises(DataError, match="atoms 0 and 1 are 0.0500 Å apart"):
        close.get_potential_energy()
    broken = molecule("H2O")
    broken.positions[2, 1] = np.nan
    broken.calc = calc
    with pytest.raises(DataError, match="GNNPotCalculator"):
        broken.get_potential_energy()


def test_long_range_models_stay_on_the_host_path():
    from gnnpot import build_model
    from gnnpot.testing import tiny_hparams

    hparams = tiny_hparams("schnet")
    model = build_model("schnet", cutoff=4.0, elements=["H", "O"], long_range={"kind": "ewald"}, **hparams)
    assert not GNNPotCalculator(model, resident=True).resident


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_the_compiled_path_runs_resident(device):
    model = tiny_model("schnet")
    eager = GNNPotCalculator(model, dtype="float64", device=device, resident=True)
    compiled = GNNPotCalculator(model, dtype="float64", device=device, resident=True, compile=True)
    for atoms in mixed_structures()[:3]:
        expected, got = _results(eager, atoms), _results(compiled, atoms)
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-9, err_msg=key)
