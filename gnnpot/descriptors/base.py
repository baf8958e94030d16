"""What every atom-centred descriptor shares: element bookkeeping, the cutoff and neighbour pairs.

An atom-centred descriptor maps the neighbour list of :mod:`gnnpot.data.neighbors` to invariant
per-atom features::

    forward(z, edge_index, edge_shift, edge_vec) -> [num_atoms, num_features]

The edge vectors come from :func:`gnnpot.nn.geometry.edge_vectors`, so gradients of the features
reach positions and cell (forces and stress). The neighbour list may be built with a larger radius
than the descriptor's cutoff; edges beyond the cutoff are dropped before any work is done. It has to
be a *full* list (every edge ``i -> j`` with its reverse ``j -> i``), as gnnpot's lists are, because
angles come from :func:`gnnpot.nn.triplets.build_triplets`.

Elements are kept in increasing atomic number. Unordered element pairs ``(a, b)`` with ``a >= b``
are numbered in lower-triangular order, ``a (a + 1) / 2 + b``: (0, 0), (1, 0), (1, 1), (2, 0), ...
(the order of DScribe's ACSF).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.data.checks import MAX_ATOMIC_NUMBER, check_cutoff
from gnnpot.nn.geometry import edge_vectors
from gnnpot.nn.scatter import gather
from gnnpot.nn.triplets import build_triplets


def pair_index(a: Tensor, b: Tensor) -> Tensor:
    """Index of the unordered element pair ``{a, b}`` in lower-triangular order.

    Args:
        a: [M] element indices.
        b: [M] element indices.

    Returns:
        [M] int64 pair indices in ``[0, S (S + 1) / 2)`` for S elements.
    """
    high, low = torch.maximum(a, b), torch.minimum(a, b)
    return high * (high + 1) // 2 + low


class NeighbourPairs(NamedTuple):
    """Every ordered pair of distinct neighbours ``(j, k)`` of a centre atom ``i``.

    Both orders ``(j, k)`` and ``(k, j)`` are present, so a sum over unordered pairs is half the
    sum over these. ``j`` and ``k`` are distinct edges: two periodic images of one atom count as
    two neighbours.

    Attributes:
        centre: [T] atom ``i``.
        first: [T] atom ``j``.
        second: [T] atom ``k``.
        len_first: [T] ``r_ij``, Å.
        len_second: [T] ``r_ik``, Å.
        len_between: [T] ``r_jk``, Å (between the two images taken).
        cos_angle: [T] cosine of the angle ``theta_jik`` at ``i``.
    """

    centre: Tensor
    first: Tensor
    second: Tensor
    len_first: Tensor
    len_second: Tensor
    len_between: Tensor
    cos_angle: Tensor


def neighbour_pairs(edge_index: Tensor, edge_shift: Tensor, edge_vec: Tensor, num_atoms: int) -> NeighbourPairs:
    """The pairs of neighbours of every atom, from a full edge list.

    :func:`~gnnpot.nn.triplets.build_triplets` pairs the edge ``j -> k`` with the edge ``i -> j``;
    read with ``j`` as the centre, that is the pair of neighbours ``(i, k)`` of ``j``, the vector
    to ``i`` being the reverse of the edge ``i -> j``.

    Args:
        edge_index: [2, E], row 0 centre, row 1 neighbour; a full list.
        edge_shift: [E, 3] integer cell shifts.
        edge_vec: [E, 3] edge vectors, Å.
        num_atoms: N.

    Returns:
        The :class:`NeighbourPairs`, differentiable in ``edge_vec``.
    """
    triplet_kj, triplet_ji = build_triplets(edge_index, edge_shift, num_atoms)
    return pairs_from_triplets(edge_index, edge_vec, triplet_kj, triplet_ji)


def pairs_from_triplets(edge_index: Tensor, edge_vec: Tensor, triplet_kj: Tensor, triplet_ji: Tensor) -> NeighbourPairs:
    """:class:`NeighbourPairs` from the triplets of :func:`~gnnpot.nn.triplets.build_triplets`.

    The triplet ``(j -> k, i -> j)`` read with ``j`` as the centre is the pair of neighbours
    ``(i, k)`` of ``j``, the vector to ``i`` being the reverse of the edge ``i -> j``. Families that
    build their triplets once (in ``prepare``, outside a traced graph) call this directly.

    Args:
        edge_index: [2, E] a full edge list.
        edge_vec: [E, 3] edge vectors, Å.
        triplet_kj: [T] edge ``j -> k`` of each triplet.
        triplet_ji: [T] edge ``i -> j`` of each triplet.
    """
    vec_first = -gather(edge_vec, triplet_ji)
    vec_second = gather(edge_vec, triplet_kj)
    len_first = torch.linalg.vector_norm(vec_first, dim=-1)
    len_second = torch.linalg.vector_norm(vec_second, dim=-1)
    cos_angle = (vec_first * vec_second).sum(-1) / (len_first * len_second)
    return NeighbourPairs(
        centre=gather(edge_index[0], triplet_kj),
        first=gather(edge_index[0], triplet_ji),
        second=gather(edge_index[1], triplet_kj),
        len_first=len_first,
        len_second=len_second,
        len_between=torch.linalg.vector_norm(vec_second - vec_first, dim=-1),
        cos_angle=cos_angle.clamp(-1.0, 1.0),
    )


class AtomCentredDescriptor(nn.Module):
    """Base of the atom-centred descriptors: ``forward(z, edge_index, edge_shift, edge_vec) -> [N, F]``.

    Subclasses set ``num_features`` and implement :meth:`forward`. Descriptors have no learnable
    parameters; their constants are buffers, so ``.to(dtype)`` and ``.to(device)`` move them.

    Args:
        elements: atomic numbers the descriptor knows, any order (kept sorted, increasing).
        cutoff: radius, Å; every feature and its derivatives vanish as a neighbour reaches it.
    """

    num_features: int

    def __init__(self, elements: Sequence[int], cutoff: float) -> None:
        super().__init__()
        numbers = sorted({int(z) for z in elements})
        if not numbers or numbers[0] < 1 or numbers[-1] > MAX_ATOMIC_NUMBER:
            raise ValueError(f"elements must be atomic numbers in 1..{MAX_ATOMIC_NUMBER}, got {list(elements)!r}")
        if len(numbers) != len(elements):
            raise ValueError(f"elements must not repeat, got {list(elements)!r}")
        self.elements = tuple(numbers)
        self.cutoff = check_cutoff(cutoff)
        lookup = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(numbers)] = torch.arange(len(numbers))
        self.register_buffer("species_of_z", lookup, persistent=False)

    @property
    def num_elements(self) -> int:
        """S, the number of elements."""
        return len(self.elements)

    @property
    def num_pairs(self) -> int:
        """S (S + 1) / 2, the number of unordered element pairs."""
        return self.num_elements * (self.num_elements + 1) // 2

    def reset_parameters(self) -> None:
        """Nothing to reset: descriptors have no learnable parameters."""

    def species(self, z: Tensor) -> Tensor:
        """Index of each atom's element in :attr:`elements`.

        Args:
            z: [N] atomic numbers.

        Returns:
            [N] int64 element indices.

        Raises:
            ValueError: an atomic number that is not in :attr:`elements`.
        """
        species = self.species_of_z[z.clamp(0, MAX_ATOMIC_NUMBER)]
        unknown = (species < 0) | (z < 0) | (z > MAX_ATOMIC_NUMBER)
        if bool(unknown.any()):
            missing = sorted(set(z[unknown].tolist()))
            raise ValueError(f"atomic numbers {missing} are not among the descriptor's elements {list(self.elements)}")
        return species

    def within_cutoff(self, edge_index: Tensor, edge_shift: Tensor, edge_vec: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The edges shorter than the cutoff (a full list stays full).

        Args:
            edge_index: [2, E] row 0 centre, row 1 neighbour.
            edge_shift: [E, 3] integer cell shifts.
            edge_vec: [E, 3] edge vectors, Å.

        Returns:
            ``(edge_index, edge_shift, edge_vec)`` of the E' <= E edges within the cutoff.
        """
        keep = torch.linalg.vector_norm(edge_vec.detach(), dim=-1) < self.cutoff
        index = torch.nonzero(keep).squeeze(-1)
        return edge_index.index_select(1, index), edge_shift.index_select(0, index), gather(edge_vec, index)

    def forward(self, z: Tensor, edge_index: Tensor, edge_shift: Tensor, edge_vec: Tensor) -> Tensor:
        """Per-atom features.

        Args:
            z: [N] atomic numbers.
            edge_index: [2, E] int64, row 0 centre ``i``, row 1 neighbour ``j`` (a full list).
            edge_shift: [E, 3] int64 integer cell shifts of the neighbour's image.
            edge_vec: [E, 3] ``pos[j] - pos[i] + shift @ cell``, Å.

        Returns:
            [N, num_features] features.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def forward_data(self, data: Data) -> Tensor:
        """:meth:`forward` of an :class:`~gnnpot.data.AtomicData` or a batch of them.

        The edge vectors are computed here from ``pos`` and ``cell``, so gradients reach both.

        Args:
            data: a graph with ``z``, ``pos``, ``cell``, ``edge_index``, ``edge_shift`` and, when
                batched, ``batch``.

        Returns:
            [N, num_features] features.
        """
        pos = data[keys.POSITIONS]
        batch = data.get(keys.BATCH)
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        edge_index, edge_shift = data[keys.EDGE_INDEX], data[keys.EDGE_SHIFT]
        edge_vec = edge_vectors(pos, data[keys.CELL], edge_index, edge_shift, batch)
        return self(data[keys.ATOMIC_NUMBERS], edge_index, edge_shift, edge_vec)

    def extra_repr(self) -> str:
        """The settings shown by ``repr``."""
        return f"elements={list(self.elements)}, cutoff={self.cutoff}, num_features={self.num_features}"
