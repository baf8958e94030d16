"""Three-body descriptor: smooth histograms over (r_ij, r_ik, cos theta_jik) per element triple.

For a centre atom ``i`` of element ``a`` and an unordered pair of neighbour elements ``{b, c}``::

    H_a{bc}[m, n, l](i) = sum_{unordered {j, k}: j in b, k in c, j != k}
        g_m(r_ij) g_n(r_ik) h_l(cos theta_jik) u(r_ij) u(r_ik)

``g_m`` are Gaussians of height 1 around the midpoints of ``num_radial`` equal bins on ``[0, r_c]``,
``h_l`` Gaussians around the midpoints of ``num_angular`` equal bins of ``cos theta`` on
``[-1, 1]``, and ``u`` a smooth envelope that vanishes with zero slope at ``r_c`` (default
:class:`~gnnpot.nn.radial.PolynomialCutoff`, p = 6), applied to both edges.

Choices, and why:
    * The angle is binned by its **cosine**, not by ``theta``: ``d theta / d cos = -1 / sin theta``
      is infinite for collinear triplets (theta = 0 or pi, common in crystals), which would give
      infinite or NaN forces. ``cos theta`` is smooth in the positions everywhere.
    * The histogram is the full product of radial and angular bins, ``num_radial^2 *
      num_angular`` per element triple (defaults 3 * 3 * 6 = 54). For a mixed pair ``b < c``
      the first radial index belongs to the neighbour of element ``b``; for ``b == c`` the
      histogram is symmetric in ``(m, n)`` (each pair adds both orders, halved), so half of that
      block repeats the other half. A factorisation into separate (r_ij, theta) histograms would
      be smaller but cannot tell which bond length goes with which angle.
    * No ``r_jk`` term or cutoff: ``(r_ij, r_ik, theta)`` fixes the triangle already.

The blocks of centre elements other than the atom's own are zero (as for
:class:`~gnnpot.descriptors.two_body.TwoBodyHistogram`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gnnpot.descriptors.base import AtomCentredDescriptor, neighbour_pairs, pair_index
from gnnpot.descriptors.two_body import check_bins, check_envelope, gaussian_bins
from gnnpot.nn.radial import PolynomialCutoff
from gnnpot.nn.scatter import gather, scatter_sum


class ThreeBodyHistogram(AtomCentredDescriptor):
    """Gaussian-broadened histograms over ``(r_ij, r_ik, cos theta_jik)`` per element triple.

    Args:
        elements: atomic numbers (kept in increasing order).
        cutoff: radius ``r_c``, Å, for both edges of the angle.
        num_radial: number of equal distance bins on ``[0, r_c]``.
        num_angular: number of equal bins of ``cos theta`` on ``[-1, 1]``.
        radial_width: standard deviation of the distance Gaussians, Å; default half a bin.
        angular_width: standard deviation of the ``cos theta`` Gaussians; default half a bin.
        envelope: smooth cutoff ``u(r)``, 1 at zero and 0 with zero slope at ``r_c``; default
            ``PolynomialCutoff(cutoff, p=6)``.

    Output:
        [N, S * P * num_radial^2 * num_angular] for S elements and P = S (S + 1) / 2 unordered
        neighbour pairs, laid out ``[centre element, neighbour pair, radial m, radial n, angular l]``
        with pairs in the lower-triangular order of :func:`~gnnpot.descriptors.base.pair_index`.
    """

    def __init__(
        self,
        elements: Sequence[int],
        cutoff: float,
        num_radial: int = 3,
        num_angular: int = 6,
        radial_width: float | None = None,
        angular_width: float | None = None,
        envelope: nn.Module | None = None,
    ) -> None:
        super().__init__(elements, cutoff)
        self.num_radial, self.radial_width = check_bins(num_radial, radial_width, self.cutoff, "num_radial")
        self.num_angular, self.angular_width = check_bins(num_angular, angular_width, 2.0, "num_angular")
        self.envelope = check_envelope(envelope or PolynomialCutoff(self.cutoff), self.cutoff)
        radial_spacing = self.cutoff / self.num_radial
        angular_spacing = 2.0 / self.num_angular
        self.register_buffer("radial_centres", (torch.arange(self.num_radial) + 0.5) * radial_spacing, persistent=False)
        self.register_buffer(
            "angular_centres", (torch.arange(self.num_angular) + 0.5) * angular_spacing - 1.0, persistent=False
        )
        self.num_bins = self.num_radial**2 * self.num_angular
        self.num_features = self.num_elements * self.num_pairs * self.num_bins

    def forward(self, z: Tensor, edge_index: Tensor, edge_shift: Tensor, edge_vec: Tensor) -> Tensor:
        """Per-atom three-body histograms.

        Args:
            z: [N] atomic numbers.
            edge_index: [2, E] int64, row 0 centre ``i``, row 1 neighbour ``j``; a full list.
            edge_shift: [E, 3] int64 integer cell shifts of the neighbour's image.
            edge_vec: [E, 3] ``pos[j] - pos[i] + shift @ cell``, Å.

        Returns:
            [N, num_features] smooth counts of neighbour pairs (dimensionless).
        """
        num_atoms = z.shape[0]
        species = self.species(z)
        edge_index, edge_shift, edge_vec = self.within_cutoff(edge_index, edge_shift, edge_vec)
        pairs = neighbour_pairs(edge_index, edge_shift, edge_vec, num_atoms)
        species_first, species_second = gather(species, pairs.first), gather(species, pairs.second)
        # Orient each pair so that the first radial index belongs to the lower element.
        swap = species_first > species_second
        len_low = torch.where(swap, pairs.len_second, pairs.len_first)
        len_high = torch.where(swap, pairs.len_first, pairs.len_second)
        radial_low = gaussian_bins(len_low, self.radial_centres, self.radial_width)
        radial_high = gaussian_bins(len_high, self.radial_centres, self.radial_width)
        angular = gaussian_bins(pairs.cos_angle, self.angular_centres, self.angular_width)
        # Both orders of every pair are present: the factor 1/2 counts each unordered pair once.
        weight = 0.5 * self.envelope(pairs.len_first) * self.envelope(pairs.len_second)
        counts = torch.einsum("t,tm,tn,tl->tmnl", weight, radial_low, radial_high, angular).reshape(-1, self.num_bins)
        slot = pairs.centre * self.num_pairs + pair_index(species_first, species_second)
        per_pair = scatter_sum(counts, slot, num_atoms * self.num_pairs).view(num_atoms, -1)
        own = F.one_hot(species, self.num_elements).to(per_pair.dtype)
        return (own.unsqueeze(-1) * per_pair.unsqueeze(1)).reshape(num_atoms, self.num_features)

    def extra_repr(self) -> str:
        """The settings shown by ``repr``."""
        return (
            f"{super().extra_repr()}, num_radial={self.num_radial}, num_angular={self.num_angular}, "
            f"radial_width={self.radial_width}, angular_width={self.angular_width}"
        )
