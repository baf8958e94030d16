"""DimeNet++-specific checks: triplets, spherical Bessel functions and their zeros.

Energy, forces and stress of the family are covered by tests/test_contract.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from torch_geometric.data import Batch

from gnnpot import keys
from gnnpot.data import AtomicData
from gnnpot.models import build_model
from gnnpot.nn.triplets import build_triplets
from gnnpot.representations.dimenet import (
    DimeNetPlusPlus,
    _series_table,
    _spherical_jn,
    _spherical_jn_zeros,
)

CUTOFF = 5.0


def _brute_force_triplets(edge_index: torch.Tensor, edge_shift: torch.Tensor) -> set[tuple[int, int]]:
    """Every (kj, ji) with centre(kj) == neighbour(ji), except the same-image edge straight back."""
    centre, neighbour = edge_index.tolist()
    shifts = edge_shift.tolist()
    pairs = set()
    for ji in range(len(centre)):
        for kj in range(len(centre)):
            if centre[kj] != neighbour[ji]:
                continue
            if neighbour[kj] == centre[ji] and shifts[kj] == [-s for s in shifts[ji]]:
                continue
            pairs.add((kj, ji))
    return pairs


def _as_set(triplet_kj: torch.Tensor, triplet_ji: torch.Tensor) -> set[tuple[int, int]]:
    pairs = set(zip(triplet_kj.tolist(), triplet_ji.tolist()))
    assert len(pairs) == triplet_kj.numel(), "duplicate triplets"
    return pairs


def _with_triplets(atoms: Atoms) -> AtomicData:
    data = AtomicData.from_atoms(atoms, CUTOFF)
    kj, ji = build_triplets(data[keys.EDGE_INDEX], data[keys.EDGE_SHIFT], data.num_nodes)
    data[keys.TRIPLET_KJ], data[keys.TRIPLET_JI] = kj, ji
    return data


def test_triplets_match_brute_force_on_a_molecule():
    data = AtomicData.from_atoms(molecule("CH3CH2OH"), CUTOFF)
    edge_index, edge_shift = data[keys.EDGE_INDEX], data[keys.EDGE_SHIFT]
    triplets = build_triplets(edge_index, edge_shift, data.num_nodes)
    assert _as_set(*triplets) == _brute_force_triplets(edge_index, edge_shift)
    # Sorted by the receiving edge, and no edge pairs with itself.
    assert bool((triplets[1][1:] >= triplets[1][:-1]).all())
    assert bool((triplets[0] != triplets[1]).all())


def test_triplets_keep_other_images_in_a_one_atom_cell():
    data = AtomicData.from_atoms(bulk("Cu", "fcc", a=3.6), CUTOFF)
    edge_index, edge_shift = data[keys.EDGE_INDEX], data[keys.EDGE_SHIFT]
    num_edges = edge_index.shape[1]
    assert num_edges == 42  # 12 + 6 + 24 neighbours, all images of atom 0
    triplet_kj, triplet_ji = build_triplets(edge_index, edge_shift, data.num_nodes)
    assert _as_set(triplet_kj, triplet_ji) == _brute_force_triplets(edge_index, edge_shift)
    # Every edge pairs with all edges but its own reverse: k == i in another image is kept.
    assert triplet_kj.numel() == num_edges * (num_edges - 1)
    back = (edge_shift[triplet_kj] == -edge_shift[triplet_ji]).all(dim=-1)
    assert not bool(back.any())


def test_triplets_of_a_batch_are_offset_by_edges():
    cu3 = Atoms("CuAuCu", scaled_positions=[[0, 0, 0], [0.5, 0.4, 0.5], [0.1, 0.6, 0.3]], cell=[3.2, 3.4, 3.6])
    cu3.pbc = True
    frames = [molecule("H2O"), bulk("Cu", "fcc", a=3.6), cu3, molecule("CH3CH2OH")]
    batch = Batch.from_data_list([_with_triplets(atoms) for atoms in frames])
    expected = build_triplets(batch[keys.EDGE_INDEX], batch[keys.EDGE_SHIFT], batch.num_nodes)
    assert _as_set(batch[keys.TRIPLET_KJ], batch[keys.TRIPLET_JI]) == _as_set(*expected)


def test_triplets_of_no_edges():
    empty = torch.zeros(2, 0, dtype=torch.long)
    triplet_kj, triplet_ji = build_triplets(empty, empty.view(0, 3), 3)
    assert triplet_kj.shape == triplet_ji.shape == (0,)


def test_precomputed_triplets_give_the_same_model_output():
    torch.manual_seed(0)
    model = build_model(
        "dimenet",
        cutoff=CUTOFF,
        elements=["H", "C", "O", "Cu", "Au"],
        num_features=8,
        num_interactions=2,
        num_rbf=4,
        int_emb_size=4,
        basis_emb_size=3,
        out_emb_size=8,
    ).double()
    frames = [molecule("CH3CH2OH"), bulk("Cu", "fcc", a=3.6), bulk("CuAu", "rocksalt", a=5.0)]
    with_triplets = Batch.from_data_list([_with_triplets(atoms) for atoms in frames])
    without = Batch.from_data_list([AtomicData.from_atoms(atoms, CUTOFF) for atoms in frames])
    assert keys.TRIPLET_KJ not in without
    out_pre, out_built = model(with_triplets), model(without)
    for key in (keys.ENERGY, keys.FORCES, keys.STRESS):
        torch.testing.assert_close(out_pre[key], out_built[key], rtol=1e-10, atol=1e-10)


def test_spherical_jn_zeros():
    zeros = _spherical_jn_zeros(7, 6)
    assert zeros.shape == (7, 6)
    torch.testing.assert_close(zeros[0], torch.arange(1, 7, dtype=torch.float64) * math.pi, rtol=0, atol=1e-12)
    assert zeros[1, 0].item() == pytest.approx(4.493409457909064, abs=1e-12)
    assert zeros[2, 0].item() == pytest.approx(5.763459196894550, abs=1e-12)
    assert zeros[6, 5].item() == pytest.approx(27.5079, abs=1e-4)
    values = _jn(torch.arange(7).repeat_interleave(6), zeros.flatten())
    assert values.abs().max().item() < 1e-14


# (l, x, j_l(x), j_l'(x)), from the closed forms in high precision.
REFERENCE = [
    (0, 0.3, 0.9850673555377986, -0.09910288804064196),
    (1, 0.05, 0.01666250037200661, 0.3330833705333023),
    (2, 1.0, 0.062035052011373916, 0.11506352290563532),
    (3, 2.5, 0.10392046970240404, 0.09379397796505878),
    (4, 4.999, 0.18697482512690813, 0.04285746594511369),
    (4, 5.001, 0.1870604310381563, 0.042748416521584676),
    (5, 0.2, 3.0736702297657195e-08, 7.679445880638082e-07),
    (6, 0.2, 4.729693776233892e-10, 1.4182774080838574e-08),
    (6, 7.5, 0.15076910832880525, 0.016136961507816683),
    (6, 15.0, 0.045792862271461426, 0.04459800468317329),
    (3, 28.0, -0.03578767107917162, -0.00084221899570991),
]


def _jn(order: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """j_order(x) elementwise, through the all-orders evaluator."""
    thresholds, coeffs = _series_table(7)
    grid = x.unsqueeze(0).expand(7, -1)
    return _spherical_jn(grid, thresholds.to(x), coeffs.to(x)).gather(0, order.unsqueeze(0)).squeeze(0)


def test_spherical_jn_values_and_derivatives():
    order = torch.tensor([row[0] for row in REFERENCE])
    x = torch.tensor([row[1] for row in REFERENCE], dtype=torch.float64, requires_grad=True)
    value = _jn(order, x)
    (slope,) = torch.autograd.grad(value.sum(), x)
    expected = torch.tensor([row[2] for row in REFERENCE], dtype=torch.float64)
    expected_slope = torch.tensor([row[3] for row in REFERENCE], dtype=torch.float64)
    torch.testing.assert_close(value.detach(), expected, rtol=1e-12, atol=1e-17)
    torch.testing.assert_close(slope, expected_slope, rtol=1e-11, atol=1e-16)
    value32 = _jn(order, x.detach().float())
    torch.testing.assert_close(value32, expected.float(), rtol=2e-4, atol=1e-7)


def test_spherical_jn_twice_differentiable_across_branches():
    # Points at both sides of each order's branch switch (x = l + 1) and at very small x.
    order = torch.arange(7).repeat_interleave(4)
    x = torch.stack([torch.tensor([1e-3, 0.5 * (n + 1), n + 1 - 1e-3, n + 1 + 1e-3]) for n in range(7)]).flatten()
    x = x.double().requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda t: _jn(order, t), (x,))


def test_zero_edges_and_repr():
    model = DimeNetPlusPlus(num_elements=2, cutoff=CUTOFF, num_features=8, num_interactions=1, num_rbf=3)
    empty = torch.zeros(0, dtype=torch.long)
    graph = AtomicData(
        species=torch.tensor([0, 1]),
        edge_index=empty.view(2, 0),
        edge_shift=empty.view(0, 3),
        edge_vec=torch.zeros(0, 3),
        edge_len=torch.zeros(0),
        num_nodes=2,
    )
    graph.update(model.prepare(graph))  # the contract: prepare, then forward
    assert graph[keys.TRIPLET_KJ].numel() == 0
    assert model(graph).shape == (2, 8)
    assert "num_spherical=7" in repr(model)
