"""NequIP-specific checks; energy, forces and stress are covered by tests/test_contract.py."""

from __future__ import annotations

import re

import pytest
import torch
from e3nn import o3
from e3nn.util.test import assert_equivariant
from torch import Tensor
from torch_geometric.data import Data

from gnnpot import testing
from gnnpot.representations.nequip import NequIP, _Interaction

SPECIES = torch.tensor([0, 1, 1, 0, 1])


def _graph(edge_vec: Tensor, edge_index: Tensor, species: Tensor = SPECIES) -> Data:
    """The graph a family receives from ``Potential``."""
    num = species.numel()
    return Data(
        num_nodes=num,
        species=species,
        batch=torch.zeros(num, dtype=torch.long),
        natoms=torch.tensor([num]),
        edge_index=edge_index,
        edge_shift=torch.zeros(edge_index.shape[1], 3, dtype=torch.long),
        edge_vec=edge_vec,
        edge_len=torch.linalg.vector_norm(edge_vec, dim=-1),
    )


def _cluster(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Edge vectors [E, 3] and edge_index [2, E] of every pair in a random 5-atom cluster."""
    pos = torch.randn(SPECIES.numel(), 3, dtype=dtype, generator=torch.Generator().manual_seed(3)) * 1.2
    i, j = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
    keep = i != j
    edge_index = torch.stack([i[keep], j[keep]])
    return pos[edge_index[1]] - pos[edge_index[0]], edge_index


def _tiny(**hparams) -> NequIP:
    torch.manual_seed(0)
    defaults = {"num_features": 3, "num_interactions": 3, "num_rbf": 4, "radial_features": 8, "radial_layers": 1}
    return NequIP(num_elements=2, cutoff=4.0, **{**defaults, **hparams}).double()


@pytest.mark.parametrize("parity", [True, False])
def test_internal_features_are_o3_equivariant(parity: bool) -> None:
    model = _tiny(l_max=2, parity=parity, num_interactions=4)
    _, edge_index = _cluster()
    hidden = model.interactions[:-1]  # the last layer keeps only scalars
    captured: list[Tensor] = []
    for layer in hidden:
        layer.register_forward_hook(lambda module, args, out: captured.append(out))

    def features(edge_vec: Tensor) -> tuple[Tensor, ...]:
        captured.clear()
        model(_graph(edge_vec, edge_index))
        return tuple(captured)

    edge_vec, _ = _cluster()
    assert all(out.abs().max() > 1e-3 for out in features(edge_vec))  # not trivially zero
    # Rotations and (do_parity) improper rotations, including for parity=False: the irreps carry
    # their true parity either way. The model was built in float32 and converted with .double().
    with testing.default_dtype(torch.float64):
        assert_equivariant(
            features,
            args_in=[edge_vec],
            irreps_in=["cartesian_points"],
            irreps_out=[layer.irreps_out for layer in hidden],
            do_translation=False,
            tolerance=1e-13,  # float32-rounded Wigner 3j would give ~1e-11 here
        )


def test_wigner_3j_stay_exact_in_float64() -> None:
    def worst(model: NequIP) -> float:
        errors = []
        for name, buffer in model.named_buffers():
            match = re.search(r"_w3j_(\d+)_(\d+)_(\d+)$", name)
            if match:
                exact = o3.wigner_3j(*(int(order) for order in match.groups()), dtype=torch.float64)
                errors.append(float((buffer.double() - exact).abs().max()))
        return max(errors)

    converted = _tiny(l_max=2)  # built in float32, then .double()
    assert worst(converted) < 1e-15
    assert worst(_tiny(l_max=2).float()) > 1e-10  # float32 really rounds them
    loaded = _tiny(l_max=2)
    loaded.load_state_dict(_tiny(l_max=2).float().state_dict())  # float32 checkpoint into float64
    assert worst(loaded) < 1e-15


@pytest.mark.parametrize("parity", [True, False])
@pytest.mark.parametrize("l_max", [0, 1, 2, 3])
def test_every_l_max_builds_and_gives_invariant_features(l_max: int, parity: bool) -> None:
    model = _tiny(l_max=l_max, parity=parity, num_interactions=2)
    edge_vec, edge_index = _cluster()
    out = model(_graph(edge_vec, edge_index))
    assert out.shape == (5, 3) and torch.isfinite(out).all()
    torch.manual_seed(1)
    improper = -o3.rand_matrix(dtype=torch.float64)
    torch.testing.assert_close(model(_graph(edge_vec @ improper.T, edge_index)), out, rtol=1e-9, atol=1e-10)
    sh_ls = [ir.l for _, ir in model.irreps_sh]
    assert sh_ls == list(range(l_max + 1))


def _has_unnatural_parity(irreps: o3.Irreps) -> bool:
    return any(ir.p != (-1) ** ir.l for _, ir in irreps)


def test_irreps_are_checked_when_built() -> None:
    model = _tiny(l_max=2, parity=True, num_interactions=4)
    irreps = o3.Irreps("3x0e")
    for layer in model.interactions:
        assert layer.irreps_in == irreps
        irreps = layer.irreps_out
    assert irreps == o3.Irreps("3x0e") == model.output.irreps_in  # last layer: scalars only
    # Odd-parity channels appear once paths reach them (layer 1), and are pruned from the layer
    # before the last, whose 0e outputs only natural-parity inputs can reach.
    assert [_has_unnatural_parity(layer.irreps_out) for layer in model.interactions] == [False, True, False, False]
    assert model.interactions[2].irreps_out == o3.Irreps("3x0e + 3x1o + 3x2e")
    natural = _tiny(l_max=2, parity=False, num_interactions=4)
    assert not any(_has_unnatural_parity(layer.irreps_out) for layer in natural.interactions)
    # No path from 1e x 0e gives the 0e gates: refused at build time, not at run time.
    with pytest.raises(ValueError, match="0e"):
        _Interaction(o3.Irreps("2x1e"), o3.Irreps("0e"), o3.Irreps("2x0e + 2x1e"), 2, 4, 8, 1)
    with pytest.raises(ValueError, match="l_max"):
        NequIP(num_elements=2, cutoff=4.0, l_max=-1)
    with pytest.raises(ValueError, match="avg_num_neighbors"):
        NequIP(num_elements=2, cutoff=4.0, avg_num_neighbors=0.0)


def test_avg_num_neighbors_is_a_saved_buffer() -> None:
    model = _tiny(avg_num_neighbors=3.5)
    assert float(model.state_dict()["avg_num_neighbors"]) == 3.5
    other = _tiny(avg_num_neighbors=None)  # no normalisation
    assert float(other.avg_num_neighbors) == 1.0
    edge_vec, edge_index = _cluster()
    graph = _graph(edge_vec, edge_index)
    assert not torch.allclose(other(graph), model(graph))
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other(graph), model(graph))


def test_zero_edges_and_float32() -> None:
    model = _tiny(l_max=3).float()
    empty = _graph(torch.zeros(0, 3), torch.zeros(2, 0, dtype=torch.long), species=torch.tensor([0, 1, 0]))
    out = model(empty)
    assert out.dtype == torch.float32 and out.shape == (3, 3) and torch.isfinite(out).all()
    torch.testing.assert_close(out[0], out[2])  # isolated atoms depend on their species only
    edge_vec, edge_index = _cluster(torch.float32)
    assert torch.isfinite(model(_graph(edge_vec, edge_index))).all()


def test_features_vanish_smoothly_at_the_cutoff() -> None:
    # A pair just inside the cutoff looks like two isolated atoms: the radial weights carry the envelope.
    model = _tiny(l_max=2)
    species = torch.tensor([0, 1])
    edge_index = torch.tensor([[0, 1], [1, 0]])
    isolated = model(_graph(torch.zeros(0, 3, dtype=torch.float64), torch.zeros(2, 0, dtype=torch.long), species))
    vec = torch.tensor([[0.0, 0.0, 4.0 - 1e-4]], dtype=torch.float64)
    near = model(_graph(torch.cat([vec, -vec]), edge_index, species))
    assert (near - isolated).abs().max() < 1e-12
