"""Coulomb-matrix KRR: forces are -dE/dx, invariance, batching, model files, eval and the calculator."""

import json

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from gnnpot import GNNPotCalculator, keys, load_model, save_model, testing
from gnnpot.cli import main
from gnnpot.data import AtomicData, write_frames
from gnnpot.models.coulomb_krr import CoulombKRR
from gnnpot.training.kernel import fit_coulomb_krr


def emt_ethanols(count: int, seed: int) -> list:
    """Rattled ethanol molecules labelled by ASE's EMT (it has toy H, C, O parameters)."""
    frames = []
    for k in range(count):
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.08, seed=seed + k)
        atoms.calc = EMT()
        labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module", params=["laplacian", "gaussian"])
def model(request):
    fitted, selection = fit_coulomb_krr(emt_ethanols(20, 0), emt_ethanols(8, 100), kernels=[request.param])
    assert selection["kernel"] == request.param and selection["num_val"] == 8
    return fitted


def probe():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=7)
    return atoms


def test_forces_are_minus_the_energy_gradient(model):
    assert testing.check_forces_fd(model, probe(), rtol=1e-6) < 1e-6
    (result,) = testing.evaluate(model, [probe()])
    assert np.abs(result[keys.FORCES]).max() > 1e-3  # the check can fail


def test_invariant_under_rotation_translation_permutation(model):
    testing.check_invariance(model, probe())


def test_batch_equals_single_molecules(model):
    water = molecule("H2O")
    testing.check_batch(model, [probe(), water, molecule("CH4")])
    (result,) = testing.evaluate(model, [water])
    assert result[keys.ATOMIC_ENERGY].sum() == pytest.approx(result[keys.ENERGY], abs=1e-10)


def test_fits_the_training_energies_and_beats_the_mean_on_validation():
    train, val = emt_ethanols(20, 0), emt_ethanols(8, 100)
    fitted, selection = fit_coulomb_krr(train, val)
    energies = np.array([atoms.get_potential_energy() for atoms in val])
    assert selection["val_energy_mae"] < np.abs(energies - energies.mean()).mean()
    predicted = [r[keys.ENERGY] for r in testing.evaluate(fitted, val)]
    assert np.abs(np.array(predicted) - energies).mean() == pytest.approx(selection["val_energy_mae"], rel=1e-8)


def test_round_trip_and_calculator(model, tmp_path):
    path = save_model(model, tmp_path / "cm.pt", metadata={"note": "test"})
    loaded = load_model(path)
    assert isinstance(loaded, CoulombKRR) and loaded.metadata["representation"] == "coulomb_krr"
    assert loaded.metadata["note"] == "test" and loaded.metadata["elements"] == ["H", "C", "O"]
    graph = AtomicData.from_atoms(probe(), model.cutoff, dtype=torch.float64)
    before, after = model(graph), loaded(graph)
    for key in (keys.ENERGY, keys.FORCES, keys.ATOMIC_ENERGY):
        assert torch.equal(before[key], after[key]), key
    atoms = probe()
    atoms.calc = GNNPotCalculator(path, dtype="float64")
    np.testing.assert_allclose(atoms.get_forces(), before[keys.FORCES].numpy(), rtol=0, atol=1e-12)


def test_molecules_only_and_known_elements(model):
    boxed = probe()
    boxed.set_cell([8.0, 8.0, 8.0])
    boxed.pbc = True
    with pytest.raises(ValueError, match="finite molecules only"):
        testing.evaluate(model, [boxed])
    with pytest.raises(ValueError, match=r"unknown element\(s\) \['N'\]"):
        testing.evaluate(model, [molecule("NH3")])
    with pytest.raises(ValueError, match="no compiled path"):
        model.enable_compile()


def test_fit_kernel_then_eval(tmp_path, capsys):
    data, out = tmp_path / "ethanol.xyz", tmp_path / "cm.pt"
    write_frames(data, emt_ethanols(24, 0))
    args = ["fit-kernel", "--type", "coulomb_krr", "--data", str(data), "--out", str(out), "--val-fraction", "0.25"]
    assert main(args) == 0
    assert "validation energy MAE" in capsys.readouterr().out
    assert main(["eval", "--model", str(out), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model_info"]["representation"] == "coulomb_krr" and result["metrics"]["forces_mae"] > 0
    assert main([*args[:-1], "0"]) == 1
    assert capsys.readouterr().err.strip() == (
        "gnnpot fit-kernel: error: coulomb_krr chooses its kernel on validation frames: give --val or "
        "--val-fraction > 0"
    )
