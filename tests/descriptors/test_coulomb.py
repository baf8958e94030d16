"""Coulomb-matrix eigenvalues: values, ordering, padding, symmetries, errors and gradients."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from torch_geometric.data import Batch

from gnnpot.descriptors import CoulombMatrixEigenvalues
from tests.descriptors.structures import ethanol, graph, random_rotation, rocksalt


def eigenvalues(atoms_list, max_atoms: int = 12) -> torch.Tensor:
    batch = Batch.from_data_list([graph(atoms) for atoms in atoms_list])
    return CoulombMatrixEigenvalues(max_atoms).forward_data(batch)


def test_hydrogen_molecule_has_the_analytic_eigenvalues():
    r = 0.74
    out = eigenvalues([Atoms("H2", positions=[[0, 0, 0], [0, 0, r]])], max_atoms=4)
    expected = torch.tensor([[0.5 + 1 / r, 0.5 - 1 / r, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)


def test_eigenvalues_are_sorted_by_value_then_padded_and_frames_are_independent():
    water, ethanol_atoms = molecule("H2O"), ethanol()
    out = eigenvalues([water, ethanol_atoms])
    alone = eigenvalues([ethanol_atoms])
    torch.testing.assert_close(out[1], alone[0])
    for row, size in zip(out, (3, 9)):
        assert torch.all(row[: size - 1] >= row[1:size]) and torch.equal(row[size:], torch.zeros(12 - size).double())
    # The trace of M is the sum of its diagonal 0.5 Z^2.4.
    trace = sum(0.5 * z**2.4 for z in ethanol_atoms.numbers)
    assert float(alone.sum()) == pytest.approx(trace, rel=1e-12)


def test_invariant_under_rotation_translation_and_permutation():
    atoms = ethanol()
    moved = atoms[np.random.default_rng(3).permutation(len(atoms))]
    moved.positions = moved.positions @ random_rotation(4).T + np.array([3.0, -2.0, 1.0])
    torch.testing.assert_close(eigenvalues([moved]), eigenvalues([atoms]), rtol=1e-10, atol=1e-10)


def test_periodic_frames_and_too_large_molecules_are_refused_by_frame():
    with pytest.raises(ValueError, match="frame 1 of the batch is periodic"):
        eigenvalues([ethanol(), rocksalt()])
    with pytest.raises(ValueError, match=r"frame 1 of the batch has 9 atoms, more than max_atoms=5"):
        eigenvalues([molecule("H2O"), ethanol()], max_atoms=5)
    with pytest.raises(ValueError, match="max_atoms"):
        CoulombMatrixEigenvalues(0)


def test_position_gradient_matches_finite_differences():
    data = graph(ethanol())
    descriptor = CoulombMatrixEigenvalues(10)
    batch = torch.zeros(len(data.z), dtype=torch.long)
    weights = torch.linspace(-1.0, 1.0, 10, dtype=torch.float64)

    def energy(pos: torch.Tensor) -> torch.Tensor:
        out = descriptor(data.z, pos, batch, data.pbc)
        return (out * weights).sum() + 1e-3 * out.pow(2).sum()

    pos = data.pos.clone().requires_grad_(True)
    (analytic,) = torch.autograd.grad(energy(pos), pos)
    step, numeric = 1e-5, torch.zeros_like(analytic)
    with torch.no_grad():
        for atom in range(pos.shape[0]):
            for axis in range(3):
                plus, minus = data.pos.clone(), data.pos.clone()
                plus[atom, axis] += step
                minus[atom, axis] -= step
                numeric[atom, axis] = (energy(plus) - energy(minus)) / (2 * step)
    assert analytic.abs().max() > 1.0
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-6)
    assert math.isfinite(float(analytic.sum()))
