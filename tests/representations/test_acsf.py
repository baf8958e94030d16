"""Behler-Parrinello (``acsf``) checks; energy, forces and stress are covered by tests/test_contract.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from torch_geometric.data import Data

from gnnpot import build_model, keys, testing
from gnnpot.data import AtomicData
from gnnpot.nn import edge_vectors
from gnnpot.representations import family_graph
from gnnpot.representations.acsf import BehlerParrinello, ElementLinear, NeighbourChannels

CUTOFF = 4.0


def family_input(rep, atoms: Atoms, elements: list[int]) -> tuple[Data, torch.Tensor]:
    """The graph ``rep.forward`` receives for ``atoms`` (float64), and the species of its atoms."""
    data = AtomicData.from_atoms(atoms, CUTOFF, dtype=torch.float64)
    z = data[keys.ATOMIC_NUMBERS]
    species = torch.tensor([elements.index(int(n)) for n in z])
    batch = torch.zeros(len(atoms), dtype=torch.long)
    edge_index, edge_shift = data[keys.EDGE_INDEX], data[keys.EDGE_SHIFT]
    edge_vec = edge_vectors(data[keys.POSITIONS], data[keys.CELL], edge_index, edge_shift, batch)
    return family_graph(z, species, edge_index, edge_shift, edge_vec, batch, prepared=rep.prepare(data)), species


def rattled_ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=0)
    return atoms


def local_cluster(far: tuple[float, float, float]) -> Atoms:
    """Cu at the origin, Au and Cu within its cutoff, and a Cu at ``far`` (only atom 1 reaches it)."""
    positions = [(0.0, 0.0, 0.0), (2.5, 0.0, 0.0), (0.0, 2.5, 0.0), far]
    return Atoms("CuAuCuCu", positions=positions)


def check_locality(name: str) -> None:
    """Moving an atom that stays beyond the cutoff of atom 0 leaves atom 0's energy as it was."""
    torch.manual_seed(0)
    model = build_model(name, cutoff=CUTOFF, elements=["Cu", "Au"], **testing.tiny_hparams(name)).double()
    before, after = testing.evaluate(model, [local_cluster((5.5, 0.3, 0.0)), local_cluster((5.2, -0.4, 0.3))])
    energies = before[keys.ATOMIC_ENERGY], after[keys.ATOMIC_ENERGY]
    np.testing.assert_allclose(energies[1][[0, 2]], energies[0][[0, 2]], rtol=0, atol=1e-14)
    assert abs(energies[1][1] - energies[0][1]) > 1e-6  # atom 1 sees the move: the test can fail


@pytest.mark.parametrize("system", ["ethanol", "triclinic"])
def test_symmetry_functions_are_the_descriptor_by_neighbour_element(system):
    """The family's functions, folded to the descriptor's pair layout, equal ``SymmetryFunctions``."""
    atoms, elements = (rattled_ethanol(), [1, 6, 8]) if system == "ethanol" else (testing.triclinic_cell(), [29, 79])
    rep = BehlerParrinello(len(elements), CUTOFF, num_radial=3, num_angular=2, zetas=(1.0, 2.0, 4.0)).double()
    graph, species = family_input(rep, atoms, elements)
    radial, angular = rep.symmetry_functions(graph)
    sf = rep.descriptor
    expected = sf(species + 1, graph[keys.EDGE_INDEX], graph[keys.EDGE_SHIFT], graph[keys.EDGE_VEC])
    num_atoms, num_elements = len(atoms), len(elements)
    torch.testing.assert_close(
        radial.reshape(num_atoms, -1), expected[:, : num_elements * sf.num_g2], rtol=0, atol=1e-13
    )
    by_pair = expected[:, num_elements * sf.num_g2 :].reshape(num_atoms, sf.num_pairs, sf.num_g4 + sf.num_g5)
    for b in range(num_elements):
        for d in range(num_elements):
            pair = max(b, d) * (max(b, d) + 1) // 2 + min(b, d)
            torch.testing.assert_close(angular[:, b, d], by_pair[:, pair], rtol=0, atol=1e-13)
    assert angular.abs().max() > 0.1 and radial.abs().max() > 0.1


def test_energy_of_an_atom_depends_on_its_own_neighbourhood_only():
    check_locality("acsf")


def test_each_element_has_its_own_network():
    """Changing element 1's weights changes the features of element-1 atoms only."""
    torch.manual_seed(0)
    rep = BehlerParrinello(3, CUTOFF, **testing.tiny_hparams("acsf")).double()
    graph, species = family_input(rep, rattled_ethanol(), [1, 6, 8])
    before = rep(graph)
    with torch.no_grad():
        for layer in rep.layers:
            layer.weight[1].add_(0.1 * torch.randn_like(layer.weight[1]))
            layer.bias[1].add_(0.1)
    after = rep(graph)
    changed = (after - before).abs().amax(dim=-1) > 1e-6
    assert torch.equal(changed, species == 1)


def test_element_linear_is_one_matrix_per_atom_element():
    torch.manual_seed(0)
    layer = ElementLinear(3, 5, 4).double()
    with torch.no_grad():
        layer.bias.normal_()
    x, species = torch.randn(7, 5, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0, 2, 2])
    expected = torch.stack([x[n] @ layer.weight[s] + layer.bias[s] for n, s in enumerate(species.tolist())])
    torch.testing.assert_close(layer(x, species), expected, rtol=1e-14, atol=1e-14)


def test_identity_channels_keep_every_neighbour_element():
    """With ``w = I``, one channel per element, the inputs are the element-resolved functions: nothing is lost."""
    channels = NeighbourChannels(3, 3).double()
    with torch.no_grad():
        channels.weight.copy_(torch.eye(3))
    single, pairs = torch.rand(4, 3, 2, dtype=torch.float64), torch.rand(4, 3, 3, 5, dtype=torch.float64)
    pairs = pairs + pairs.transpose(1, 2)
    out = channels(single, pairs)
    upper = [pairs[:, b, d] for b in range(3) for d in range(b, 3)]  # [4, 5] each, channel pair (b, d)
    expected = torch.cat([single.transpose(1, 2).reshape(4, -1), torch.stack(upper, dim=-1).reshape(4, -1)], dim=-1)
    assert out.shape == (4, channels.num_outputs(2, 5)) == (4, 2 * 3 + 5 * 6)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_bad_hyperparameters_are_clear_errors():
    with pytest.raises(ValueError, match="num_channels must be >= 1, got 0"):
        BehlerParrinello(2, CUTOFF, num_channels=0)
    with pytest.raises(ValueError, match="need num >= 2"):
        BehlerParrinello(2, CUTOFF, num_radial=1)
