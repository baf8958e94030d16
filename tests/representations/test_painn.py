"""PaiNN-specific checks; energy, forces and stress are covered by tests/test_contract.py."""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk, molecule
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.data import AtomicData
from gnnpot.models import build_model
from gnnpot.representations.painn import PaiNN


def _graph(data: Data, edge_vec: torch.Tensor) -> Data:
    """The graph a family receives from ``Potential``, with the given edge vectors."""
    graph = data.clone()
    graph[keys.BATCH] = torch.zeros(data[keys.POSITIONS].shape[0], dtype=torch.long)
    graph[keys.SPECIES] = (data[keys.ATOMIC_NUMBERS] != 1).long()  # H -> 0, C/O -> 1
    graph[keys.EDGE_VEC] = edge_vec
    graph[keys.EDGE_LEN] = torch.linalg.vector_norm(edge_vec, dim=-1)
    return graph


def _random_rotation(generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=generator))
    q = q * torch.sign(torch.diagonal(r))
    return q * torch.sign(torch.linalg.det(q))


@pytest.mark.parametrize("shared_filters", [False, True])
def test_vector_features_rotate_with_the_input(shared_filters: bool) -> None:
    torch.manual_seed(0)
    model = PaiNN(num_elements=2, cutoff=4.0, num_features=8, num_rbf=6, shared_filters=shared_filters)
    model = model.double()
    data = AtomicData.from_atoms(molecule("CH3CH2OH"), 4.0, dtype=torch.float64)
    edge_vec = data[keys.POSITIONS][data[keys.EDGE_INDEX][1]] - data[keys.POSITIONS][data[keys.EDGE_INDEX][0]]
    rotation = _random_rotation(torch.Generator().manual_seed(1))

    s, v = model.features(_graph(data, edge_vec))
    s_rot, v_rot = model.features(_graph(data, edge_vec @ rotation.T))

    assert v.abs().max() > 1e-3  # the vectors are not trivially zero
    torch.testing.assert_close(s_rot, s, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(v_rot, torch.einsum("ab,nbf->naf", rotation, v), rtol=1e-10, atol=1e-10)


def test_isolated_atoms_keep_zero_vectors() -> None:
    model = PaiNN(num_elements=2, cutoff=4.0, num_features=8, num_rbf=6)
    graph = Data(
        num_nodes=2,
        species=torch.arange(2),
        edge_index=torch.zeros(2, 0, dtype=torch.long),
        edge_vec=torch.zeros(0, 3),
        edge_len=torch.zeros(0),
    )
    s, v = model.features(graph)
    assert s.shape == (2, 8) and torch.isfinite(s).all()
    assert torch.equal(v, torch.zeros(2, 3, 8))


def test_force_training_gradients_are_finite() -> None:
    # Vectors start at zero: the vector norm must have finite second derivatives there.
    torch.manual_seed(0)
    model = build_model("painn", cutoff=4.0, elements=["Cu"], num_features=8, num_rbf=6).double()
    model.train()
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.rattle(0.05, seed=0)
    out = model(AtomicData.from_atoms(atoms, 4.0, dtype=torch.float64))
    out[keys.FORCES].pow(2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_shared_filters_has_one_filter_set() -> None:
    separate = PaiNN(num_elements=1, cutoff=5.0, num_features=8, num_rbf=6, num_interactions=3)
    shared = PaiNN(num_elements=1, cutoff=5.0, num_features=8, num_rbf=6, num_interactions=3, shared_filters=True)
    assert separate.filter_net.out_features == 3 * shared.filter_net.out_features
