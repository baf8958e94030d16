"""Histogram MLP: smooth two- and three-body histograms of each atom, then one MLP for all elements.

The fixed descriptors are :class:`~gnnpot.descriptors.TwoBodyHistogram` (neighbour distances per
neighbour element) and :class:`~gnnpot.descriptors.ThreeBodyHistogram` (``(r_ij, r_ik, cos
theta_jik)`` per pair of neighbour elements), the per-atom many-body-tensor idea of MBTR (Huo and
Rupp, Mach. Learn.: Sci. Technol. 3, 045017 (2022)). Both are smooth neighbour counts (>= 0).

Choices, and why:
    * **Normalisation**: ``log(1 + H)``, fixed and data-free, as in
      :mod:`~gnnpot.representations.acsf`: it compresses the large counts of dense structures and
      keeps zero at zero (absent elements, isolated atoms), with no buffer whose width depends on
      the element list.
    * **Neighbour-element channels**: the same learned channels as the ACSF family
      (:class:`~gnnpot.representations.acsf.NeighbourChannels`), so that each weight has at most one
      element axis (fine-tuning maps rows along it) and the width grows with ``num_channels``, not
      with the number of element pairs (the three-body histogram has ``num_radial^2 * num_angular``
      bins per pair, 54 by default).
    * **One MLP shared by all elements**, with a learned element embedding concatenated to its
      input. The centre's element is the only thing the histograms leave out (their blocks of other
      centre elements are zero); an embedding gives it with ``embedding_size`` numbers per element
      instead of a network per element, the opposite choice to the ACSF family's, so the two
      families compare both. Hidden layers use SiLU; the last hidden layer is the family's features.

As in the ACSF family, :meth:`HistogramMLP.prepare` builds the triplets and
:meth:`HistogramMLP.histograms` evaluates the descriptors' histograms from them (a traced graph
cannot build them), laid out by ordered neighbour elements: the three-body block ``[b, d]`` has its
first radial index on the neighbour of element ``b``, the descriptor's orientation for ``b < d``
(``[d, b]`` is the same histogram with the two radial indices swapped). The tests check both
against the descriptors.

Defaults: the descriptors' bins (16 two-body bins, 3 x 3 x 6 three-body bins on ``[0, r_c]`` and
``cos theta`` in ``[-1, 1]``, Gaussians of half a bin, polynomial envelope p = 6), 4 channels, an
embedding of 16, and widths 128-128-64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.descriptors import ThreeBodyHistogram, TwoBodyHistogram
from gnnpot.descriptors.two_body import gaussian_bins
from gnnpot.nn import gather, scatter_sum
from gnnpot.representations.acsf import NeighbourChannels, pair_slots, prepare_triplets, prepared_pairs
from gnnpot.representations.base import Representation


class HistogramMLP(Representation):
    """An MLP on smooth two- and three-body histograms: ``forward(graph) -> [N, num_features]``.

    Args:
        num_elements: number of species.
        cutoff: neighbour radius and histogram range ``[0, r_c]``, Å.
        num_features: width of the last hidden layer (the invariant features).
        hidden: widths of the hidden layers before it.
        num_channels: learned neighbour-element channels (lossless when >= num_elements).
        embedding_size: width of the element embedding concatenated to the histograms.
        num_bins: two-body distance bins.
        num_radial: three-body distance bins (for each of the two edges).
        num_angular: three-body bins of ``cos theta``.
    """

    tiny_hparams = {
        "num_features": 4,
        "hidden": [8],
        "num_channels": 2,
        "embedding_size": 2,
        "num_bins": 4,
        "num_radial": 2,
        "num_angular": 2,
    }

    def __init__(
        self,
        num_elements: int,
        cutoff: float,
        num_features: int = 64,
        hidden: Sequence[int] = (128, 128),
        num_channels: int = 4,
        embedding_size: int = 16,
        num_bins: int = 16,
        num_radial: int = 3,
        num_angular: int = 6,
    ) -> None:
        super().__init__(cutoff, num_features)
        self.num_elements = int(num_elements)
        # Element k of the descriptors is species k: atomic numbers are not needed.
        numbers = range(1, self.num_elements + 1)
        self.two_body = TwoBodyHistogram(numbers, self.cutoff, num_bins)
        self.three_body = ThreeBodyHistogram(numbers, self.cutoff, num_radial, num_angular)
        self.channels = NeighbourChannels(self.num_elements, num_channels)
        self.embedding = nn.Embedding(self.num_elements, embedding_size)
        inputs = self.channels.num_outputs(self.two_body.num_bins, self.three_body.num_bins) + embedding_size
        widths = [inputs, *hidden, self.num_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Unit-normal channel weights and embedding, Xavier-uniform layers with zero biases."""
        self.channels.reset_parameters()
        nn.init.normal_(self.embedding.weight)
        for layer in self.layers:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def prepare(self, data: Data) -> dict[str, Tensor]:
        """The triplets of :func:`~gnnpot.representations.acsf.prepare_triplets` (the neighbour pairs)."""
        return prepare_triplets(data)

    def histograms(self, graph: Data) -> tuple[Tensor, Tensor]:
        """The descriptors' histograms, by neighbour element.

        Returns:
            ``(two_body, three_body)``: [N, S, num_bins] per neighbour element, and
            [N, S, S, num_radial^2 * num_angular] per ordered pair of neighbour elements.
        """
        two, three, species = self.two_body, self.three_body, graph[keys.SPECIES]
        edge_index, edge_len = graph[keys.EDGE_INDEX], graph[keys.EDGE_LEN]
        num_atoms, num_elements = species.shape[0], self.num_elements
        counts = gaussian_bins(edge_len, two.centres, two.width) * two.envelope(edge_len).unsqueeze(-1)
        slot = edge_index[0] * num_elements + gather(species, edge_index[1])
        by_neighbour = scatter_sum(counts, slot, num_atoms * num_elements)

        pairs = prepared_pairs(graph)
        slot, weight = pair_slots(pairs, species, num_elements)
        radial_first = gaussian_bins(pairs.len_first, three.radial_centres, three.radial_width)
        radial_second = gaussian_bins(pairs.len_second, three.radial_centres, three.radial_width)
        angular = gaussian_bins(pairs.cos_angle, three.angular_centres, three.angular_width)
        weight = weight * three.envelope(pairs.len_first) * three.envelope(pairs.len_second)
        # [T, m, n, l] by broadcasting (a four-operand einsum fixes the traced sizes of the compiled path)
        counts = (weight.unsqueeze(-1) * radial_first).unsqueeze(-1) * radial_second.unsqueeze(1)
        counts = counts.unsqueeze(-1) * angular.unsqueeze(1).unsqueeze(1)
        by_pair = scatter_sum(counts.reshape(weight.shape[0], three.num_bins), slot, num_atoms * num_elements**2)
        return (
            by_neighbour.view(num_atoms, num_elements, two.num_bins),
            by_pair.view(num_atoms, num_elements, num_elements, three.num_bins),
        )

    def forward(self, graph: Data) -> Tensor:
        """Invariant features [N, num_features]: the last hidden layer of the shared MLP."""
        two_body, three_body = self.histograms(graph)
        x = torch.cat([self.channels(two_body.log1p(), three_body.log1p()), self.embedding(graph[keys.SPECIES])], -1)
        for layer in self.layers:
            x = F.silu(layer(x))
        return x

    def __repr__(self) -> str:
        widths = [layer.out_features for layer in self.layers]
        return (
            f"{self.__class__.__name__}(num_elements={self.num_elements}, cutoff={self.cutoff}, "
            f"num_bins={self.two_body.num_bins}, num_radial={self.three_body.num_radial}, "
            f"num_angular={self.three_body.num_angular}, num_channels={self.channels.num_channels}, "
            f"embedding_size={self.embedding.embedding_dim}, widths={widths})"
        )
