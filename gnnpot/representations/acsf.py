"""Behler-Parrinello network: atom-centred symmetry functions, then one MLP per element.

Behler and Parrinello (Phys. Rev. Lett. 98, 146401 (2007)); the ANI networks (Smith, Isayev and
Roitberg, Chem. Sci. 8, 3192 (2017)) are the same design with other functions. Each atom is
described by the fixed :class:`~gnnpot.descriptors.SymmetryFunctions` (G2 per neighbour element,
G4 and G5 per pair of neighbour elements) and fed to the network of its own element; the last
hidden layer is the family's invariant features, which the shared readout turns into energies.

Three steps between the descriptor and the per-element network, and why:
    * **Normalisation**: ``log(1 + G)``, fixed and data-free. Every function is >= 0; the log
      compresses the large, coordination-like values (G1 counts up to tens of neighbours) and keeps
      zero at zero, so absent neighbour elements and isolated atoms give exactly zero inputs.
      Per-feature statistics would need a buffer as wide as the descriptor, whose width depends on
      the element list (fine-tuning could not map it), and would shift those zeros.
    * **Neighbour-element channels** (:class:`NeighbourChannels`): the functions of neighbour
      element ``b`` enter as ``sum_b w[b, c] log(1 + G2_b)``, those of a neighbour pair ``{b, d}`` as
      ``sum_{b, d} w[b, c] w[d, c'] log(1 + G4_bd)`` for ``c <= c'``, with one learned ``w``
      [num_elements, num_channels]. A plain BP network has a first-layer weight per (centre element,
      neighbour element(s), function); this is the same first layer, factorised so that every weight
      has at most one element axis (fine-tuning maps tensors row by row along one element axis,
      :func:`~gnnpot.models.build.transfer_weights`) and the width does not grow with the number of
      element pairs. With ``num_channels >= num_elements`` and ``w`` of full rank it loses nothing:
      any plain first layer is reached. Element-weighted ACSF (Gastegger et al., J. Chem. Phys. 148,
      241709 (2018)) are the one-channel, fixed-weight case.
    * **Per-element MLP** (:class:`ElementLinear`): every layer holds ``[num_elements, in, out]``
      weights; all atoms go through one matmul against every element's weights, and each atom keeps
      its own element's output. That costs ``num_elements`` times one network's matmul, cheaper for
      a potential's few elements than gathering an ``[in, out]`` matrix per atom, and fixed in shape
      (a traced graph cannot split a batch by element).

The descriptor's own ``forward`` finds its neighbour pairs itself, which a traced graph cannot do
(:mod:`gnnpot.models.compiled`); here :meth:`BehlerParrinello.prepare` builds the triplets once
and :meth:`BehlerParrinello.symmetry_functions` evaluates the same functions from them, laid out by
ordered neighbour elements (``[N, S, S, ...]``, symmetric; each pair of different elements appears
at ``[b, d]`` and ``[d, b]``). The tests check it against the descriptor.

Defaults: the descriptor's grids (G1 + 8 shifted G2; G4 and G5 with 3 widths, zeta 1 and 4, lambda
+-1: 24 angular functions per element pair), 4 channels, and ANI-like widths 128-128-64 with SiLU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.descriptors import SymmetryFunctions, centred_angular_params, shifted_radial_params
from gnnpot.descriptors.base import NeighbourPairs, pairs_from_triplets
from gnnpot.nn import gather, scatter_sum
from gnnpot.nn.triplets import build_triplets
from gnnpot.representations.base import Representation


def prepare_triplets(data: Data) -> dict[str, Tensor]:
    """The triplets [T] of :mod:`gnnpot.keys`: stored on ``data``, or built from its edges."""
    triplet_kj, triplet_ji = data.get(keys.TRIPLET_KJ), data.get(keys.TRIPLET_JI)
    if triplet_kj is None or triplet_ji is None:
        edge_index = data[keys.EDGE_INDEX]
        if edge_index.shape[1] == 0:  # no edges, no triplets (and nothing data-dependent to trace)
            triplet_kj = triplet_ji = edge_index.new_zeros(0)
        else:
            triplet_kj, triplet_ji = build_triplets(edge_index, data[keys.EDGE_SHIFT], data.num_nodes)
    return {keys.TRIPLET_KJ: triplet_kj, keys.TRIPLET_JI: triplet_ji}


def prepared_pairs(graph: Data) -> NeighbourPairs:
    """:func:`~gnnpot.descriptors.base.neighbour_pairs` from the triplets of :func:`prepare_triplets`.

    Both orders of every pair are present.
    """
    return pairs_from_triplets(
        graph[keys.EDGE_INDEX], graph[keys.EDGE_VEC], graph[keys.TRIPLET_KJ], graph[keys.TRIPLET_JI]
    )


def pair_slots(pairs: NeighbourPairs, species: Tensor, num_elements: int) -> tuple[Tensor, Tensor]:
    """Where each ordered pair of neighbours goes in an ``[N, S, S]`` layout, and its weight.

    Returns:
        ``(slot, weight)``: [T] int64 ``(centre, element of first, element of second)`` flattened,
        and [T] 1/2 for neighbours of the same element (both orders land in one slot), else 1, so
        that every slot holds each unordered pair once, as the pair layout of the descriptors does.
    """
    first, second = gather(species, pairs.first), gather(species, pairs.second)
    slot = (pairs.centre * num_elements + first) * num_elements + second
    weight = 1.0 - 0.5 * (first == second).to(pairs.len_first.dtype)
    return slot, weight


class NeighbourChannels(nn.Module):
    """Learned element channels for the neighbour-element axes of a descriptor.

    Args:
        num_elements: S.
        num_channels: C.

    ``forward(by_neighbour [N, S, K], by_pair [N, S, S, K']) -> [N, K * C + K' * C (C + 1) / 2]``:
    ``sum_b w[b, c] x[n, b, k]``, then ``sum_{b, d} w[b, c] w[d, c'] y[n, b, d, k]`` for ``c <= c'``.
    """

    def __init__(self, num_elements: int, num_channels: int) -> None:
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels!r}")
        self.num_channels = int(num_channels)
        self.weight = nn.Parameter(torch.empty(num_elements, self.num_channels))
        self.num_channel_pairs = self.num_channels * (self.num_channels + 1) // 2
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Unit-normal channel weights."""
        nn.init.normal_(self.weight)

    def num_outputs(self, num_single: int, num_pair: int) -> int:
        """The output width for ``num_single`` functions per neighbour and ``num_pair`` per pair."""
        return self.num_channels * num_single + self.num_channel_pairs * num_pair

    def forward(self, by_neighbour: Tensor, by_pair: Tensor) -> Tensor:
        """Per-atom inputs [N, K * C + K' * C (C + 1) / 2], function-major (see the class docstring)."""
        num_atoms, num_single, num_pair = by_neighbour.shape[0], by_neighbour.shape[-1], by_pair.shape[-1]
        weight = self.weight
        # Plain matmuls and slices: for the compiled path (gnnpot.models.compiled), a multi-operand
        # einsum fixed the traced sizes, and index_select with a buffer of indices failed to compile.
        single = by_neighbour.transpose(1, 2).matmul(weight)  # [N, K, C]
        double = weight.T.matmul(by_pair.permute(0, 3, 1, 2)).matmul(weight)  # [N, K', C, C]
        double = torch.cat([double[..., c, c:] for c in range(self.num_channels)], dim=-1)  # c <= c'
        return torch.cat(
            [
                single.reshape(num_atoms, num_single * self.num_channels),
                double.reshape(num_atoms, num_pair * self.num_channel_pairs),
            ],
            dim=-1,
        )

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_elements={self.weight.shape[0]}, num_channels={self.num_channels})"


class ElementLinear(nn.Module):
    """One linear map per element: ``y_n = x_n @ weight[s_n] + bias[s_n]``, all atoms in one matmul.

    Args:
        num_elements: S.
        in_features: width of the input.
        out_features: width of the output.
    """

    def __init__(self, num_elements: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_elements, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_elements, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights (each element's matrix alike), zero biases."""
        _, in_features, out_features = self.weight.shape
        bound = math.sqrt(6.0 / (in_features + out_features))
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, species: Tensor) -> Tensor:
        """[N, out_features] outputs of inputs ``x`` [N, in_features] of species ``species`` [N]."""
        num_elements, in_features, out_features = self.weight.shape
        every = x @ self.weight.transpose(0, 1).reshape(in_features, num_elements * out_features)
        every = every.view(x.shape[0], num_elements, out_features)
        own = every.gather(1, species.view(-1, 1, 1).expand(-1, 1, out_features)).squeeze(1)
        return own + gather(self.bias, species)

    def __repr__(self) -> str:
        num_elements, in_features, out_features = self.weight.shape
        return f"{self.__class__.__name__}({num_elements} x {in_features} -> {out_features})"


class BehlerParrinello(Representation):
    """Behler-Parrinello network on symmetry functions: ``forward(graph) -> [N, num_features]``.

    Args:
        num_elements: number of species (one network, and one channel-weight row, per element).
        cutoff: neighbour radius and symmetry-function cutoff ``r_c``, Å.
        num_features: width of the last hidden layer (the invariant features).
        hidden: widths of the hidden layers before it.
        num_channels: learned neighbour-element channels (lossless when >= num_elements).
        num_radial: shifted Gaussians G2 on ``[1 Å, r_c - 0.5 Å]``, besides G1.
        num_angular: widths of the G4 and G5 functions on ``[1 Å, r_c - 0.5 Å]``.
        zetas: angular resolutions of G4 and G5 (each with lambda = +1 and -1).
    """

    tiny_hparams = {"num_features": 4, "hidden": [8], "num_channels": 2, "num_radial": 2, "num_angular": 2}

    def __init__(
        self,
        num_elements: int,
        cutoff: float,
        num_features: int = 64,
        hidden: Sequence[int] = (128, 128),
        num_channels: int = 4,
        num_radial: int = 8,
        num_angular: int = 3,
        zetas: Sequence[float] = (1.0, 4.0),
    ) -> None:
        super().__init__(cutoff, num_features)
        self.num_elements = int(num_elements)
        angular = centred_angular_params(self.cutoff, num_angular, zetas=zetas)
        # Element k of the descriptor is species k: atomic numbers are not needed.
        self.descriptor = SymmetryFunctions(
            range(1, self.num_elements + 1),
            self.cutoff,
            shifted_radial_params(self.cutoff, num_radial),
            angular,
            angular,
        )
        self.channels = NeighbourChannels(self.num_elements, num_channels)
        widths = [self.channels.num_outputs(self.descriptor.num_g2, 2 * len(angular)), *hidden, self.num_features]
        self.layers = nn.ModuleList(
            ElementLinear(self.num_elements, a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def reset_parameters(self) -> None:
        """Re-initialise the channel weights and every layer."""
        self.channels.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()

    def prepare(self, data: Data) -> dict[str, Tensor]:
        """The triplets of :func:`prepare_triplets` (the neighbour pairs of the angular functions)."""
        return prepare_triplets(data)

    def symmetry_functions(self, graph: Data) -> tuple[Tensor, Tensor]:
        """The descriptor's functions, by neighbour element.

        Returns:
            ``(radial, angular)``: [N, S, n2] G2 of each neighbour element, and [N, S, S, n4 + n5]
            G4 then G5 of each pair of neighbour elements (symmetric in the two element axes).
        """
        sf, species = self.descriptor, graph[keys.SPECIES]
        edge_index, edge_len = graph[keys.EDGE_INDEX], graph[keys.EDGE_LEN]
        num_atoms, num_elements = species.shape[0], self.num_elements
        g2 = sf.radial_terms(edge_len)
        slot = edge_index[0] * num_elements + gather(species, edge_index[1])
        radial = scatter_sum(g2, slot, num_atoms * num_elements).view(num_atoms, num_elements, sf.num_g2)

        pairs = prepared_pairs(graph)
        slot, weight = pair_slots(pairs, species, num_elements)
        values = sf.angular_terms(pairs) * weight.unsqueeze(-1)
        angular = scatter_sum(values, slot, num_atoms * num_elements**2)
        return radial, angular.view(num_atoms, num_elements, num_elements, values.shape[-1])

    def forward(self, graph: Data) -> Tensor:
        """Invariant features [N, num_features]: the last hidden layer of each atom's element network."""
        species = graph[keys.SPECIES]
        radial, angular = self.symmetry_functions(graph)
        x = self.channels(radial.log1p(), angular.log1p())
        for layer in self.layers:
            x = F.silu(layer(x, species))
        return x

    def __repr__(self) -> str:
        widths = [layer.weight.shape[2] for layer in self.layers]
        sf = self.descriptor
        return (
            f"{self.__class__.__name__}(num_elements={self.num_elements}, cutoff={self.cutoff}, "
            f"num_g2={sf.num_g2}, num_g4={sf.num_g4}, num_g5={sf.num_g5}, "
            f"num_channels={self.channels.num_channels}, widths={widths})"
        )
