"""AtomicData: conversion from and to ase.Atoms, edge geometry, batching of partly labelled frames."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list as ase_neighbor_list
from torch_geometric.data import Batch

from gnnpot import keys
from gnnpot.data import AtomicData, build_graphs


def labelled_bulk() -> Atoms:
    rng = np.random.default_rng(0)
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 2, 1)
    atoms.numbers[0] = 79
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    atoms.calc = SinglePointCalculator(
        atoms, energy=-12.5, forces=rng.normal(size=(4, 3)), stress=np.array([0.01, 0.02, 0.03, 0.004, 0.005, 0.006])
    )
    return atoms


def test_round_trip_to_atoms():
    atoms = labelled_bulk()
    data = AtomicData.from_atoms(atoms, 4.0, labels=atoms.calc.results, source="x.xyz", frame_id=3)
    back = data.to_atoms()
    assert (back.numbers == atoms.numbers).all() and (back.pbc == atoms.pbc).all()
    np.testing.assert_allclose(back.positions, atoms.positions, atol=1e-5)
    np.testing.assert_allclose(back.cell.array, atoms.cell.array, atol=1e-5)
    assert back.get_potential_energy() == pytest.approx(-12.5)
    np.testing.assert_allclose(back.get_forces(), atoms.get_forces(), atol=1e-5)
    np.testing.assert_allclose(back.get_stress(), atoms.get_stress(), atol=1e-6)
    assert int(data[keys.FRAME_ID]) == 3


def test_unlabelled_round_trip_has_no_calculator():
    atoms = molecule("CH4")
    data = AtomicData.from_atoms(atoms, 3.0)
    assert data.get(keys.ENERGY) is None
    assert data.to_atoms().calc is None


@pytest.mark.parametrize("atoms", [labelled_bulk(), fcc111("Cu", (2, 2, 3), vacuum=5.0), molecule("C6H6")])
def test_edges_match_ase(atoms):
    """Same pairs and distances as ase.neighborlist, and edge_vec = pos[j] - pos[i] + shift @ cell."""
    data = AtomicData.from_atoms(atoms, 3.0)
    i, j = data[keys.EDGE_INDEX].numpy()
    shift = data[keys.EDGE_SHIFT].numpy()
    vec = atoms.positions[j] - atoms.positions[i] + shift @ atoms.cell.array
    ai, aj, ashift, adist = ase_neighbor_list("ijSd", atoms, 3.0)
    got = sorted(zip(i.tolist(), j.tolist(), map(tuple, shift.tolist()), strict=True))
    want = sorted(zip(ai.tolist(), aj.tolist(), map(tuple, ashift.tolist()), strict=True))
    assert got == want
    np.testing.assert_allclose(np.sort(np.linalg.norm(vec, axis=1)), np.sort(adist), atol=1e-9)


def test_batch_of_partly_labelled_frames():
    """Frames missing energy, forces or stress batch uniformly: NaN labels with weight 0."""
    full = labelled_bulk()
    no_stress = molecule("H2O")
    no_stress.calc = SinglePointCalculator(no_stress, energy=-14.0, forces=np.ones((3, 3)))
    forces_only = molecule("CH4")
    forces_only.calc = SinglePointCalculator(forces_only, forces=np.full((5, 3), 2.0))
    graphs = build_graphs([full, no_stress, forces_only], 4.0, source="mixed.xyz")
    batch = Batch.from_data_list(graphs)

    assert batch.num_graphs == 3
    assert batch[keys.ENERGY].shape == (3,) and batch[keys.STRESS].shape == (3, 3, 3)
    assert batch[keys.CELL].shape == (3, 3, 3) and batch[keys.PBC].shape == (3, 3)
    assert batch[keys.FORCES].shape == (12, 3) and batch[keys.NUM_ATOMS].tolist() == [4, 3, 5]
    assert batch[keys.ENERGY_WEIGHT].tolist() == [1, 1, 0]
    assert batch[keys.FORCES_WEIGHT].tolist() == [1, 1, 1]
    assert batch[keys.STRESS_WEIGHT].tolist() == [1, 0, 0]
    assert torch.isnan(batch[keys.ENERGY][2]) and torch.isnan(batch[keys.STRESS][1:]).all()
    assert batch[keys.BATCH].tolist() == [0] * 4 + [1] * 3 + [2] * 5

    # Edge indices are offset per frame and never cross frames.
    src, dst = batch[keys.EDGE_INDEX]
    assert (batch[keys.BATCH][src] == batch[keys.BATCH][dst]).all()
    assert sum(g[keys.EDGE_INDEX].size(1) for g in graphs) == batch[keys.EDGE_INDEX].size(1)

    # A masked loss is finite: weights select, NaNs are zeroed out before they can spread.
    prediction = torch.zeros(3)
    error = torch.where(batch[keys.ENERGY_WEIGHT] > 0, batch[keys.ENERGY] - prediction, 0.0)
    loss = (batch[keys.ENERGY_WEIGHT] * error**2).sum() / batch[keys.ENERGY_WEIGHT].sum()
    assert torch.isfinite(loss) and loss == pytest.approx((12.5**2 + 14.0**2) / 2)

    # Unbatching gives back each frame with only its real labels.
    frames = batch.to_data_list()
    assert frames[1].has_label(keys.FORCES) and not frames[1].has_label(keys.STRESS)
    assert set(frames[2].to_atoms().calc.results) == {"forces"}


def test_custom_weights():
    atoms = labelled_bulk()
    data = AtomicData.from_atoms(atoms, 3.0, labels=atoms.calc.results, weights={"energy": 0.5})
    assert data[keys.ENERGY_WEIGHT].item() == 0.5 and data[keys.FORCES_WEIGHT].item() == 1.0
