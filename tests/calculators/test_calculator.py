"""GNNPotCalculator through ASE: numerical force and stress checks for every family."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError

from gnnpot import REGISTRY, GNNPotCalculator, build_model, testing


def rattled_cuau():
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.numbers[[1, 2]] = 79
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_ase_numerical_forces_and_stress(name):
    torch.manual_seed(0)
    model = build_model(name, cutoff=5.0, elements=["Cu", "Au"], **testing.TINY_HPARAMS.get(name, {}))
    atoms = rattled_cuau()
    atoms.calc = GNNPotCalculator(model, dtype="float64")
    forces = atoms.get_forces()
    numerical = atoms.calc.calculate_numerical_forces(atoms, d=1e-5)
    assert np.abs(forces - numerical).max() < 1e-6 * max(np.abs(forces).max(), 1.0)
    stress = atoms.get_stress()
    numerical = atoms.calc.calculate_numerical_stress(atoms, d=1e-5)
    assert np.abs(stress - numerical).max() < 1e-6 * max(np.abs(stress).max(), 1e-3)
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    assert np.isclose(energies.sum(), atoms.get_potential_energy())
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()


def test_unknown_element_is_a_clear_error():
    model = build_model("schnet", cutoff=4.0, elements=["Cu", "Au"], **testing.TINY_HPARAMS["schnet"])
    atoms = molecule("H2O")
    atoms.calc = GNNPotCalculator(model)
    with pytest.raises(ValueError, match=r"unknown element\(s\) \['H', 'O'\]"):
        atoms.get_potential_energy()


def test_stress_needs_periodic_cell():
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **testing.TINY_HPARAMS["schnet"])
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.pbc = False
    atoms.calc = GNNPotCalculator(model)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_dtype_copy_leaves_model_alone():
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **testing.TINY_HPARAMS["schnet"])
    calc = GNNPotCalculator(model, dtype="float64")
    assert next(model.parameters()).dtype == torch.float32
    assert next(calc.model.parameters()).dtype == torch.float64
    with pytest.raises(ValueError, match="dtype"):
        GNNPotCalculator(model, dtype="float16")
