"""The family contract: what a layer family is, receives and returns.

A family (a *representation*) maps one graph to invariant per-atom features::

    prepare(data) -> dict[str, Tensor]     # index work that depends on the data, done once, eagerly
    forward(graph) -> Tensor               # [num_atoms, num_features], invariant

``prepare`` sees the input graph (indices only: ``edge_index``, ``edge_shift``, ``species``, and
whatever the data pipeline stored). It runs once per model call, outside any traced graph, in the
eager and the compiled path alike; its tensors are added to the graph that ``forward`` receives.
DimeNet builds its triplets there. Most families need nothing and keep the default.

``forward`` receives the graph built by :func:`family_graph`, the one place that builds it. Its
fields (names and shapes in :mod:`gnnpot.keys`): ``z``, ``species``, ``edge_index``, ``edge_shift``,
``edge_vec``, ``edge_len``, ``batch``, ``edge_paired`` and the tensors of ``prepare``. Geometry is
already computed there from positions and cell, so that forces and stress reach it; a family never
calls autograd.

Class attributes every family sets:
    ``tiny_hparams``: a tiny model's hyperparameters (a few features, two interactions): the
        contract suite, the compiled checks and the benchmark's ``tiny`` rows use them.
    ``data_statistics``: hyperparameters taken from the training data, ``{name: function}``, each
        ``function(data) -> float`` of the training graphs or of their one-pass
        :class:`~gnnpot.data.stats.DataSummary` (the trainer passes the summary, so that data read
        lazily from disk is read once). A trainer fills every one whose value is ``"auto"``
        (NequIP: ``avg_num_neighbors``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.data.checks import check_cutoff

# Constructor arguments that build_model gives every family itself; the rest are hyperparameters.
BUILD_ARGUMENTS = ("num_elements", "cutoff")


class Representation(nn.Module):
    """Base class of the layer families: ``forward(graph) -> [num_atoms, num_features]``.

    Args:
        cutoff: neighbour radius, Å.
        num_features: width of the invariant per-atom features ``forward`` returns.
    """

    tiny_hparams: ClassVar[Mapping[str, Any]]
    data_statistics: ClassVar[Mapping[str, Callable[[Any], float]]] = {}
    # the readout build_model gives the family: "mlp" (AtomwiseReadout) or "linear" (kernel models)
    readout: ClassVar[str] = "mlp"

    def __init__(self, cutoff: float, num_features: int) -> None:
        super().__init__()
        self.cutoff = check_cutoff(cutoff)
        self.num_features = int(num_features)

    def prepare(self, data: Data) -> dict[str, Tensor]:
        """Data-dependent index tensors for :meth:`forward` (default: none).

        Args:
            data: the input graph: ``edge_index`` [2, E], ``edge_shift`` [E, 3], ``species`` [N]
                and any field the data pipeline stored.

        Returns:
            Tensors by key (in :mod:`gnnpot.keys`), added to the graph :meth:`forward` receives.
        """
        return {}

    def forward(self, graph: Data) -> Tensor:
        """Invariant per-atom features [num_atoms, num_features] of the graph of :func:`family_graph`."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(graph)")

    @classmethod
    def hparam_names(cls) -> list[str]:
        """The hyperparameters the family's constructor accepts (all but ``num_elements`` and ``cutoff``)."""
        parameters = inspect.signature(cls.__init__).parameters
        return [name for name in list(parameters)[1:] if name not in BUILD_ARGUMENTS]


def family_graph(
    z: Tensor,
    species: Tensor,
    edge_index: Tensor,
    edge_shift: Tensor,
    edge_vec: Tensor,
    batch: Tensor,
    paired: bool = False,
    prepared: Mapping[str, Tensor] | None = None,
) -> Data:
    """The graph a family's ``forward`` receives; every caller builds it here.

    Args:
        z: [N] atomic numbers.
        species: [N] index of each atom's element in the model's element list.
        edge_index: [2, E], row 0 centre i, row 1 neighbour j.
        edge_shift: [E, 3] integer cell shifts of the neighbour's image.
        edge_vec: [E, 3] Å, ``pos[j] - pos[i] + shift @ cell``, differentiable.
        batch: [N] frame of each atom.
        paired: edges follow the pair convention of :mod:`gnnpot.keys`.
        prepared: the tensors of :meth:`Representation.prepare`.

    Returns:
        A PyG ``Data`` with these fields and ``edge_len`` [E] (Å).
    """
    fields = {
        keys.ATOMIC_NUMBERS: z,
        keys.SPECIES: species,
        keys.EDGE_INDEX: edge_index,
        keys.EDGE_SHIFT: edge_shift,
        keys.EDGE_VEC: edge_vec,
        keys.EDGE_LEN: torch.linalg.vector_norm(edge_vec, dim=-1),
        keys.BATCH: batch,
        keys.EDGE_PAIRED: paired,
    }
    return Data(num_nodes=species.shape[0], **fields, **dict(prepared or {}))


def isolated_graph(z: Tensor) -> Data:
    """The input graph of one isolated atom per element, without edges.

    Args:
        z: [num_elements] atomic numbers, in the order of the species index.
    """
    empty = torch.zeros(0, dtype=torch.long, device=z.device)
    species = torch.arange(z.shape[0], device=z.device)
    fields = {
        keys.ATOMIC_NUMBERS: z,
        keys.SPECIES: species,
        keys.EDGE_INDEX: empty.view(2, 0),
        keys.EDGE_SHIFT: empty.view(0, 3),
        keys.BATCH: species,
    }
    return Data(num_nodes=z.shape[0], **fields)
