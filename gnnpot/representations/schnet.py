"""SchNet: continuous-filter convolutions over a radial basis (Schütt et al., 2018).

Defaults follow the SchNet rMD17/MD17 setting: 64 features, 3 interactions, Gaussians every
0.1 Å up to the cutoff (50 at 5 Å), cosine cutoff, shifted-softplus activations.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.nn import CosineCutoff, GaussianRBF, gather, pair_lengths, pair_mul, scatter_sum
from gnnpot.representations.base import Representation


class ShiftedSoftplus(nn.Module):
    """``softplus(x) - log 2``: smooth, zero at zero (SchNet's activation)."""

    def forward(self, x: Tensor) -> Tensor:
        """Element-wise ``softplus(x) - log 2``."""
        return F.softplus(x) - math.log(2.0)


class CFConvInteraction(nn.Module):
    """One SchNet interaction: atom-wise in2f, continuous-filter convolution, f2out, residual."""

    def __init__(self, num_features: int, num_rbf: int, num_filters: int) -> None:
        super().__init__()
        self.filter_net = nn.Sequential(
            nn.Linear(num_rbf, num_filters), ShiftedSoftplus(), nn.Linear(num_filters, num_filters)
        )
        self.in2f = nn.Linear(num_features, num_filters, bias=False)
        self.f2out = nn.Sequential(
            nn.Linear(num_filters, num_features), ShiftedSoftplus(), nn.Linear(num_features, num_features)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, edge_index: Tensor, rbf: Tensor, envelope: Tensor, paired: bool = False) -> Tensor:
        """One interaction.

        Args:
            x: [N, F] atom features.
            edge_index: [2, E], row 0 centre i, row 1 neighbour j.
            rbf: [E', num_rbf] radial basis, with E' = E // 2 when ``paired`` (one row per edge
                pair, see :mod:`gnnpot.nn.pairs`), else E.
            envelope: [E'] cutoff envelope.
            paired: edges follow the pair convention.

        Returns:
            [N, F] updated atom features.
        """
        filters = self.filter_net(rbf) * envelope.unsqueeze(-1)
        messages = pair_mul(gather(self.in2f(x), edge_index[1]), filters, paired)
        return x + self.f2out(scatter_sum(messages, edge_index[0], x.shape[0]))


class SchNet(Representation):
    """SchNet representation: ``forward(graph) -> [N, num_features]`` invariant features.

    Args:
        num_elements: size of the species embedding.
        cutoff: neighbour radius, Å.
        num_features: width of atom features (and of the filters unless ``num_filters`` is set).
        num_interactions: number of continuous-filter interaction blocks.
        num_rbf: number of Gaussians on ``[0, cutoff]``.
        num_filters: filter width, default ``num_features``.
    """

    tiny_hparams = {"num_features": 8, "num_interactions": 2, "num_rbf": 6}

    def __init__(
        self,
        num_elements: int,
        cutoff: float,
        num_features: int = 64,
        num_interactions: int = 3,
        num_rbf: int = 50,
        num_filters: int | None = None,
    ) -> None:
        super().__init__(cutoff, num_features)
        self.embedding = nn.Embedding(num_elements, num_features)
        self.rbf = GaussianRBF(num_rbf, cutoff)
        self.envelope = CosineCutoff(cutoff)
        self.interactions = nn.ModuleList(
            CFConvInteraction(num_features, num_rbf, num_filters or num_features) for _ in range(num_interactions)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise the embedding and every interaction."""
        self.embedding.reset_parameters()
        for interaction in self.interactions:
            interaction.reset_parameters()

    def forward(self, graph: Data) -> Tensor:
        """Invariant features [N, num_features] of the family graph (see :mod:`gnnpot.representations.base`)."""
        edge_index, edge_len = graph[keys.EDGE_INDEX], graph[keys.EDGE_LEN]
        # The radial basis and envelope are shared by all interactions (and by both edges of a pair).
        paired = bool(graph.get(keys.EDGE_PAIRED, False))
        lengths = pair_lengths(edge_len, paired)
        rbf = self.rbf(lengths)
        envelope = self.envelope(lengths)
        x = self.embedding(graph[keys.SPECIES])
        for interaction in self.interactions:
            x = interaction(x, edge_index, rbf, envelope, paired)
        return x

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_features={self.num_features}, "
            f"num_interactions={len(self.interactions)}, num_rbf={self.rbf.num_rbf}, cutoff={self.cutoff})"
        )
