"""GNNPotCalculator through ASE: numerical force and stress checks for every family."""

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from gnnpot import REGISTRY, GNNPotCalculator, build_model, testing


def rattled_cuau():
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.numbers[[1, 2]] = 79
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_ase_numerical_forces_and_stress(name):
    torch.manual_seed(0)
    model = build_model(name, cutoff=5.0, elements=["Cu", "Au"], **testing.tiny_hparams(name))
    atoms = rattled_cuau()
    atoms.calc = GNNPotCalculator(model, dtype="float64")
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    assert np.abs(forces - numerical).max() < 1e-6 * max(np.abs(forces).max(), 1.0)
    stress = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.abs(stress - numerical).max() < 1e-6 * max(np.abs(stress).max(), 1e-3)
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    assert np.isclose(energies.sum(), atoms.get_potential_energy())
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()


def test_unknown_element_is_a_clear_error():
    model = build_model("schnet", cutoff=4.0, elements=["Cu", "Au"], **testing.tiny_hparams("schnet"))
    atoms = molecule("H2O")
    atoms.calc = GNNPotCalculator(model)
    with pytest.raises(ValueError, match=r"unknown element\(s\) \['H', 'O'\]"):
        atoms.get_potential_energy()


def test_stress_needs_periodic_cell():
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **testing.tiny_hparams("schnet"))
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.pbc = False
    atoms.calc = GNNPotCalculator(model)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_dtype_copy_leaves_model_alone():
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **testing.tiny_hparams("schnet"))
    calc = GNNPotCalculator(model, dtype="float64")
    assert next(model.parameters()).dtype == torch.float32
    assert next(calc.model.parameters()).dtype == torch.float64
    with pytest.raises(ValueError, match="dtype"):
        GNNPotCalculator(model, dtype="float16")


def _tiny(name="schnet", elements=("Cu", "Au"), seed=0, cutoff=4.0):
    torch.manual_seed(seed)
    return build_model(name, cutoff=cutoff, elements=list(elements), **testing.tiny_hparams(name))


@pytest.mark.parametrize("periodic", [True, False])
def test_skin_reuse_equals_rebuilding_every_step(periodic):
    from ase.md.verlet import VelocityVerlet

    from gnnpot.calculators.dynamics import thermalize_momenta

    model = _tiny("painn")
    runs = {}
    for skin in (0.0, 1.0):
        atoms = rattled_cuau().repeat((2, 1, 1))
        atoms.pbc = periodic
        thermalize_momenta(atoms, temperature_K=2000, rng=np.random.default_rng(0))
        atoms.calc = GNNPotCalculator(model, dtype="float64", skin=skin)
        frames = []
        dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs)
        for _ in range(30):
            dyn.run(1)
            frames.append((atoms.get_potential_energy(), atoms.get_forces().copy(), atoms.positions.copy()))
        runs[skin] = (frames, atoms.calc.neighbors.num_builds)
    (rebuilt, builds_rebuilt), (reused, builds_reused) = runs[0.0], runs[1.0]
    assert builds_rebuilt == 31 and 1 <= builds_reused < 10  # the skin saved most builds...
    for (e0, f0, x0), (e1, f1, x1) in zip(rebuilt, reused):  # ...and changed nothing
        assert e0 == e1 and np.array_equal(f0, f1) and np.array_equal(x0, x1)


def test_cell_change_rebuilds_the_list():
    atoms = rattled_cuau()
    atoms.calc = GNNPotCalculator(_tiny(), dtype="float64", skin=2.0)
    atoms.get_potential_energy()
    atoms.set_cell(atoms.cell * 1.01, scale_atoms=True)
    strained = atoms.get_potential_energy()
    assert atoms.calc.neighbors.num_builds == 2
    fresh = atoms.copy()
    fresh.calc = GNNPotCalculator(_tiny(), dtype="float64", skin=0.0)
    assert strained == fresh.get_potential_energy()


def test_committee_means_and_stds():
    members = [_tiny("schnet", seed=s) for s in range(3)]
    atoms = rattled_cuau()
    atoms.calc = GNNPotCalculator(members, dtype="float64")
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    singles = []
    for member in members:
        single = atoms.copy()
        single.calc = GNNPotCalculator(member, dtype="float64")
        singles.append((single.get_potential_energy(), single.get_forces(), single.get_stress()))
    energies = np.array([s[0] for s in singles])
    all_forces = np.stack([s[1] for s in singles])
    stresses = np.stack([s[2] for s in singles])
    assert energy == pytest.approx(energies.mean(), abs=1e-12)
    np.testing.assert_allclose(forces, all_forces.mean(0), atol=1e-12)
    np.testing.assert_allclose(stress, stresses.mean(0), atol=1e-12)
    results = atoms.calc.results
    assert results["energy_std"] == pytest.approx(energies.std(), abs=1e-12) and results["energy_std"] > 0
    expected = np.sqrt(((all_forces - all_forces.mean(0)) ** 2).sum(-1).mean(0))
    np.testing.assert_allclose(results["forces_std"], expected, atol=1e-12)
    assert results["forces_std"].shape == (len(atoms),)
    np.testing.assert_allclose(results["stress_std"], stresses.std(0), atol=1e-12)
    assert atoms.calc.get_property("energy_std", atoms) == results["energy_std"]
    with pytest.raises(ValueError, match="share cutoff and elements"):
        GNNPotCalculator([_tiny(cutoff=4.0), _tiny(cutoff=3.5)])


def test_from_path_name_and_float32(tmp_path):
    from gnnpot import save_model

    model = _tiny("schnet")
    path = save_model(model, tmp_path / "m.pt")
    atoms = rattled_cuau()
    by_object, by_path = GNNPotCalculator(model), GNNPotCalculator(str(path))
    assert by_path.dtype == torch.float32
    atoms.calc = by_object
    e_object = atoms.get_potential_energy()
    atoms.calc = by_path
    assert atoms.get_potential_energy() == e_object
    atoms.calc = GNNPotCalculator(path, dtype="float64")
    assert atoms.get_potential_energy() == pytest.approx(e_object, rel=1e-5)
    named = GNNPotCalculator("schnet-emt-cuau")
    atoms.calc = named
    assert np.isfinite(atoms.get_forces()).all() and "energy_std" not in atoms.calc.results


def test_bad_positions_are_clear_errors():
    from gnnpot.data import DataError

    atoms = rattled_cuau()
    atoms.calc = GNNPotCalculator(_tiny())
    atoms.positions[1] = atoms.positions[0] + 0.05
    with pytest.raises(DataError, match="atoms 0 and 1 are 0.0866 Å apart"):
        atoms.get_potential_energy()
    atoms.positions[1, 0] = np.nan
    with pytest.raises(DataError, match=r"positions of atoms \[1\] are NaN"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("periodic", [False, True])
def test_far_from_the_origin_float32_keeps_its_digits(periodic):
    """A float32 model gives the same energy, forces and stress for a structure moved by 1e8 Å."""
    torch.manual_seed(0)
    model = build_model("painn", cutoff=4.0, elements=["C", "H", "O", "Cu", "Au"], **testing.tiny_hparams("painn"))
    atoms = rattled_cuau() if periodic else molecule("CH3CH2OH")
    far = atoms.copy()
    far.positions += np.array([1e8, -3e7, 5e6])
    results = []
    for structure in (atoms, far):
        structure.calc = GNNPotCalculator(model, dtype="float32")
        results.append((structure.get_potential_energy(), structure.get_forces()))
        if periodic:
            results[-1] += (structure.get_stress(),)
    (e_near, f_near, *s_near), (e_far, f_far, *s_far) = results
    assert abs(e_far - e_near) < 1e-5 * max(1.0, abs(e_near))
    assert np.abs(f_far - f_near).max() < 1e-5
    if periodic:
        assert np.abs(s_far[0] - s_near[0]).max() < 1e-6


def test_sorted_atoms_give_the_results_in_the_callers_order(monkeypatch):
    """Z-order sorting inside the calculator, re-sorted along a trajectory, changes nothing the caller sees."""
    from gnnpot.calculators import calculator as module

    monkeypatch.setattr(module, "SORT_EVERY", 2)
    torch.manual_seed(0)
    members = [build_model("schnet", cutoff=4.0, elements=["Cu", "Au"], **testing.tiny_hparams("schnet"))
               for _ in range(2)]  # fmt: skip
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(3)
    atoms.numbers[::5] = 79
    atoms = atoms[np.random.default_rng(0).permutation(len(atoms))]
    plain, sorting = (GNNPotCalculator(members, dtype="float64", sort_atoms=s) for s in (False, True))
    rng = np.random.default_rng(1)
    for _ in range(3):
        atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
        results = []
        for calc in (plain, sorting):
            calc.calculate(atoms.copy(), ["energy", "forces", "stress"])
            results.append(calc.results)
        for name in ("energy", "forces", "stress", "energies", "forces_std"):
            np.testing.assert_allclose(results[1][name], results[0][name], rtol=0, atol=1e-10)
    assert sorting._order is not None and plain._order is None


def test_sorted_atoms_errors_name_the_callers_atoms():
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **testing.tiny_hparams("schnet"))
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
    atoms = atoms[np.random.default_rng(0).permutation(len(atoms))]
    atoms.positions[5] = atoms.positions[11] + [0.05, 0.0, 0.0]
    calc = GNNPotCalculator(model, sort_atoms=True)
    with pytest.raises(ValueError, match=r"atoms 5 and 11 are 0\.0500 Å apart"):
        calc.calculate(atoms, ["energy"])
    atoms.positions[5] += 1.0
    atoms.positions[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"positions of atoms \[3\]"):
        calc.calculate(atoms, ["energy"])
