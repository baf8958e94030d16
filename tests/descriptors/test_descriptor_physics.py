"""Physics every atom-centred descriptor must obey: symmetries, periodic images, smoothness, exact gradients."""

import numpy as np
import pytest
import torch
from ase import Atoms
from torch.autograd import forward_ad
from torch_geometric.data import Batch

from gnnpot.nn.geometry import edge_vectors
from tests.descriptors.structures import (
    ATOM_CENTRED,
    CUTOFF,
    STRUCTURES,
    ethanol,
    features,
    graph,
    random_rotation,
    rocksalt,
)

KINDS = sorted(ATOM_CENTRED)


def transformed(atoms: Atoms, transform: str) -> tuple[Atoms, np.ndarray]:
    """``atoms`` rotated, translated or permuted, and the original index of each new atom."""
    new = atoms.copy()
    order = np.arange(len(atoms))
    if transform == "rotation":
        rotation = random_rotation(7)
        new.positions = atoms.positions @ rotation.T
        new.cell = atoms.cell.array @ rotation.T
    elif transform == "translation":
        new.positions = atoms.positions + np.array([0.7, -1.3, 2.9])
    else:
        order = np.random.default_rng(5).permutation(len(atoms))
        new = atoms[order]
    return new, order


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
@pytest.mark.parametrize("transform", ["rotation", "translation", "permutation"])
@pytest.mark.parametrize("kind", KINDS)
def test_invariant_under_rotation_translation_and_permutation(kind, transform, structure):
    build, elements = STRUCTURES[structure]
    descriptor = ATOM_CENTRED[kind](elements)
    atoms = build()
    expected = features(descriptor, atoms)
    assert expected.abs().sum() > 1.0  # the environments are not empty
    new, order = transformed(atoms, transform)
    torch.testing.assert_close(features(descriptor, new), expected[order], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_supercell_gives_the_same_per_atom_features(kind):
    descriptor = ATOM_CENTRED[kind]([11, 17])
    atoms = rocksalt()  # lattice vectors shorter than the cutoff: atoms see their own images
    single = features(descriptor, atoms)
    double = features(descriptor, atoms.repeat((2, 1, 1)))
    torch.testing.assert_close(double, torch.cat([single, single]), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_gives_the_features_of_each_frame(kind):
    descriptor = ATOM_CENTRED[kind]([1, 6, 8, 11, 17])
    frames = [ethanol(), rocksalt()]
    batched = descriptor.forward_data(Batch.from_data_list([graph(a) for a in frames])).detach()
    torch.testing.assert_close(batched, torch.cat([features(descriptor, a) for a in frames]), rtol=1e-12, atol=1e-12)


def trimer(r: float) -> Atoms:
    """C at the origin, H at 1.1 Å, and O at ``r`` along x (beyond H's cutoff for r near the cutoff)."""
    return Atoms("CHO", positions=[[0.0, 0.0, 0.0], [0.0, 1.1, 0.0], [r, 0.0, 0.0]])


def features_and_slope(descriptor, r: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of :func:`trimer` and their derivative with respect to ``r`` (forward mode), [N, F] each."""
    data = graph(trimer(r), CUTOFF + 1.0)
    direction = torch.zeros_like(data.pos)
    direction[2, 0] = 1.0
    with forward_ad.dual_level():
        pos = forward_ad.make_dual(data.pos, direction)
        edge_vec = edge_vectors(pos, data.cell, data.edge_index, data.edge_shift, torch.zeros(3, dtype=torch.long))
        value, slope = forward_ad.unpack_dual(descriptor(data.z, data.edge_index, data.edge_shift, edge_vec))
    return value.detach(), slope.detach()


@pytest.mark.parametrize("kind", KINDS)
def test_value_and_slope_go_to_zero_as_a_neighbour_crosses_the_cutoff(kind):
    descriptor = ATOM_CENTRED[kind]([1, 6, 8])
    far, far_slope = features_and_slope(descriptor, CUTOFF + 0.5)
    assert far_slope.abs().max() == 0.0
    # Just outside: exactly the features without the neighbour, and no slope.
    outside, outside_slope = features_and_slope(descriptor, CUTOFF + 1e-9)
    assert torch.equal(outside, far) and outside_slope.abs().max() == 0.0
    # Inside: the neighbour's contribution and its slope shrink to zero with the distance to the cutoff.
    changes, slopes = [], []
    for gap in (1e-2, 1e-3, 1e-4):
        inside, inside_slope = features_and_slope(descriptor, CUTOFF - gap)
        changes.append(float((inside - far).abs().max()))
        slopes.append(float(inside_slope.abs().max()))
    assert changes[0] > 0.0 and slopes[0] > 0.0  # the neighbour is seen inside the cutoff
    assert changes[-1] < 1e-8 and slopes[-1] < 1e-4
    assert changes[2] < 0.02 * changes[1] < 0.02**2 * changes[0]  # value ~ gap^2 or faster
    assert slopes[2] < 0.2 * slopes[1] < 0.2**2 * slopes[0]  # slope ~ gap or faster


def scalar(descriptor_features: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear scalar function of the features (an 'energy')."""
    weights = torch.linspace(-1.0, 1.0, descriptor_features.shape[-1], dtype=descriptor_features.dtype)
    return (descriptor_features * weights).sum() + 0.1 * descriptor_features.pow(2).sum()


def energy(descriptor, data, pos: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """:func:`scalar` of the features with positions and cell deformed by ``I + deformation``."""
    matrix = torch.eye(3, dtype=pos.dtype) + deformation
    batch = torch.zeros(pos.shape[0], dtype=torch.long)
    edge_vec = edge_vectors(pos @ matrix, data.cell @ matrix, data.edge_index, data.edge_shift, batch)
    return scalar(descriptor(data.z, data.edge_index, data.edge_shift, edge_vec))


def central_differences(function, x: torch.Tensor, step: float = 1e-5) -> torch.Tensor:
    """Central finite-difference gradient of a scalar ``function`` at ``x``."""
    grad = torch.zeros_like(x)
    for index in np.ndindex(*x.shape):
        plus, minus = x.clone(), x.clone()
        plus[index] += step
        minus[index] -= step
        grad[index] = (function(plus) - function(minus)) / (2 * step)
    return grad


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
@pytest.mark.parametrize("kind", KINDS)
def test_position_gradients_match_finite_differences(kind, structure):
    build, elements = STRUCTURES[structure]
    descriptor = ATOM_CENTRED[kind](elements)
    data = graph(build())
    zero = torch.zeros(3, 3, dtype=torch.float64)
    pos = data.pos.clone().requires_grad_(True)
    (analytic,) = torch.autograd.grad(energy(descriptor, data, pos, zero), pos)
    with torch.no_grad():
        numeric = central_differences(lambda p: energy(descriptor, data, p, zero), data.pos)
    assert analytic.abs().max() > 1e-3
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_strain_gradient_matches_finite_differences(kind):
    descriptor = ATOM_CENTRED[kind]([11, 17])
    data = graph(rocksalt())
    deformation = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    (analytic,) = torch.autograd.grad(energy(descriptor, data, data.pos, deformation), deformation)
    with torch.no_grad():
        numeric = central_differences(lambda d: energy(descriptor, data, data.pos, d), torch.zeros(3, 3).double())
    assert analytic.abs().max() > 1e-3
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-6)
    # A small rotation does not change the features, so the derivative has no antisymmetric part.
    torch.testing.assert_close(analytic, analytic.T, rtol=1e-9, atol=1e-9)
