"""The physics contract, run over every registered family in float64 with tight tolerances."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from gnnpot import REGISTRY, build_model, testing
from gnnpot.representations import Representation, check_hparams

CUTOFF = 4.0
ELEMENTS = ["H", "C", "O", "Cu", "Au"]
E0 = {1: -13.6, 6: -1030.5, 8: -2040.1, 29: -1.3, 79: -0.7}
FAMILIES = sorted(REGISTRY)
_MODELS: dict = {}


def make_model(name: str, dtype: torch.dtype = torch.float64):
    key = (name, dtype)
    if key not in _MODELS:
        torch.manual_seed(0)
        model = build_model(name, cutoff=CUTOFF, elements=ELEMENTS, e0=E0, scale=0.7, **testing.tiny_hparams(name))
        _MODELS[key] = model.to(dtype).eval()
    return _MODELS[key]


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=0)
    return atoms


def triclinic_cuau() -> Atoms:
    return testing.triclinic_cell()


def one_atom_cell() -> Atoms:
    return bulk("Cu", "fcc", a=3.6)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_follows_the_written_contract(name):
    """Subclass of Representation, tiny sizes that are small, hyperparameters by name, statistics callable."""
    family = REGISTRY[name]
    assert issubclass(family, Representation)
    tiny = family.tiny_hparams  # required: without it the suite would run the family at full size
    check_hparams(name, tiny)
    model = make_model(name)
    tiny_size = sum(p.numel() for p in model.parameters())
    full = build_model(name, cutoff=CUTOFF, elements=ELEMENTS)
    assert tiny_size < sum(p.numel() for p in full.parameters()) / 3, "tiny_hparams should give a tiny model"
    rep = model.potential.representation
    assert rep.cutoff == CUTOFF and rep.num_features > 0
    assert all(callable(fn) for fn in family.data_statistics.values())
    assert set(family.data_statistics) <= set(family.hparam_names())
    with pytest.raises(ValueError, match=f"unknown hyperparameter 'num_feature' for {name}; accepted: "):
        build_model(name, cutoff=CUTOFF, elements=ELEMENTS, num_feature=3)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("system", [ethanol, triclinic_cuau])
def test_invariance(name, system):
    testing.check_invariance(make_model(name), system())


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("system", [ethanol, triclinic_cuau])
def test_forces_match_finite_differences(name, system):
    testing.check_forces_fd(make_model(name), system())


@pytest.mark.parametrize("name", FAMILIES)
def test_stress_matches_finite_strain(name):
    testing.check_stress_fd(make_model(name), triclinic_cuau())


@pytest.mark.parametrize("name", FAMILIES)
def test_batch_equals_single_frames(name):
    testing.check_batch(make_model(name), [ethanol(), triclinic_cuau(), one_atom_cell(), molecule("H2O")])


@pytest.mark.parametrize("name", FAMILIES)
def test_paired_and_shuffled_edges_agree(name):
    testing.check_edge_order(make_model(name), [ethanol(), triclinic_cuau(), one_atom_cell()])


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("system", [triclinic_cuau, one_atom_cell])
def test_supercell_is_extensive(name, system):
    testing.check_supercell(make_model(name), system())


@pytest.mark.parametrize("name", FAMILIES)
def test_wrapping_changes_nothing(name):
    testing.check_wrapping(make_model(name), triclinic_cuau())


@pytest.mark.parametrize("name", FAMILIES)
def test_cell_smaller_than_twice_cutoff(name):
    atoms = one_atom_cell()
    assert np.linalg.norm(atoms.cell, axis=1).max() < 2 * CUTOFF
    (result,) = testing.evaluate(make_model(name), [atoms])
    assert np.abs(result["forces"]).max() < 1e-10  # every atom is a centre of symmetry
    assert np.isfinite(result["stress"]).all() and np.abs(result["stress"]).max() > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_cutoff_continuity(name):
    testing.check_cutoff_continuity(make_model(name))


@pytest.mark.parametrize("name", FAMILIES)
def test_isolated_atom_gets_e0(name):
    testing.check_isolated_atom(make_model(name), E0)


@pytest.mark.parametrize("name", FAMILIES)
def test_float32_agrees_with_float64(name):
    frames = [ethanol(), triclinic_cuau()]
    single = testing.evaluate(make_model(name, torch.float32), frames)
    double = testing.evaluate(make_model(name, torch.float64), frames)
    for low, high in zip(single, double):
        scale = np.abs(high["forces"]).max()
        assert abs(low["energy"] - high["energy"]) < 1e-4 * abs(high["energy"])
        assert np.abs(low["forces"] - high["forces"]).max() < 1e-4 * scale + 1e-5
