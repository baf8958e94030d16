"""Two-body descriptor: smooth histograms of neighbour distances per (centre, neighbour) element pair.

For a centre atom ``i`` of element ``a`` the feature block of neighbour element ``b`` is::

    H_ab[n](i) = sum_{j in b, r_ij < r_c} exp(-(r_ij - c_n)^2 / (2 w^2)) u(r_ij)

with bin centres ``c_n`` at the midpoints of ``num_bins`` equal bins on ``[0, r_c]`` and a smooth
envelope ``u`` (default :class:`~gnnpot.nn.radial.PolynomialCutoff`, p = 6), which vanishes with zero
slope at ``r_c``. Each neighbour adds a Gaussian bump of height at most 1, so a bin is a smooth
neighbour count (dimensionless). This is the radial distribution function behind MBTR's k = 2 term
(Huo and Rupp, Mach. Learn.: Sci. Technol. 3, 045017 (2022)), resolved per atom.

The blocks of centre elements other than the atom's own are zero, so a linear model on the
features is element-specific on both ends of the bond.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gnnpot.descriptors.base import AtomCentredDescriptor
from gnnpot.nn.radial import PolynomialCutoff
from gnnpot.nn.scatter import gather, scatter_sum


def check_envelope(envelope: nn.Module, cutoff: float) -> nn.Module:
    """The envelope, checked to be 1 at zero and 0 at ``cutoff``.

    Args:
        envelope: maps [E] edge lengths (Å) to [E] weights.
        cutoff: the descriptor's radius, Å.

    Raises:
        ValueError: the envelope is not 1 at r = 0 or not 0 at the cutoff.
    """
    values = envelope(torch.tensor([0.0, cutoff], dtype=torch.float64)).tolist()
    if abs(values[0] - 1.0) > 1e-12 or values[1] != 0.0:
        raise ValueError(f"envelope must be 1 at r=0 and 0 at the cutoff {cutoff}, got {values} ({envelope!r})")
    return envelope


def gaussian_bins(x: Tensor, centres: Tensor, width: float) -> Tensor:
    """Gaussian bumps of height 1 around each bin centre.

    Args:
        x: [M] values.
        centres: [K] bin centres, same unit as ``x``.
        width: standard deviation of the bumps, same unit as ``x``.

    Returns:
        [M, K] ``exp(-(x - c_k)^2 / (2 width^2))``.
    """
    diff = x.unsqueeze(-1) - centres.to(x.dtype)
    return torch.exp(diff.pow(2) * (-0.5 / width**2))


def check_bins(num_bins: int, width: float | None, span: float, name: str) -> tuple[int, float]:
    """``num_bins`` and the Gaussian width (default half a bin) for bins on an interval of length ``span``."""
    if int(num_bins) < 1:
        raise ValueError(f"{name} must be >= 1, got {num_bins!r}")
    spacing = span / int(num_bins)
    width = 0.5 * spacing if width is None else float(width)
    if not width > 0.0:
        raise ValueError(f"width of the {name} must be > 0, got {width!r}")
    return int(num_bins), width


class TwoBodyHistogram(AtomCentredDescriptor):
    """Gaussian-broadened histograms of neighbour distances per (centre, neighbour) element pair.

    Args:
        elements: atomic numbers (kept in increasing order).
        cutoff: radius ``r_c``, Å.
        num_bins: number of equal bins on ``[0, r_c]``.
        width: standard deviation of each neighbour's Gaussian, Å; default half a bin.
        envelope: smooth cutoff ``u(r)``, 1 at zero and 0 with zero slope at ``r_c``; default
            ``PolynomialCutoff(cutoff, p=6)``.

    Output:
        [N, S * S * num_bins] for S elements, laid out ``[centre element, neighbour element, bin]``.
    """

    def __init__(
        self,
        elements: Sequence[int],
        cutoff: float,
        num_bins: int = 16,
        width: float | None = None,
        envelope: nn.Module | None = None,
    ) -> None:
        super().__init__(elements, cutoff)
        self.num_bins, self.width = check_bins(num_bins, width, self.cutoff, "num_bins")
        self.envelope = check_envelope(envelope or PolynomialCutoff(self.cutoff), self.cutoff)
        spacing = self.cutoff / self.num_bins
        self.register_buffer("centres", (torch.arange(self.num_bins) + 0.5) * spacing, persistent=False)
        self.num_features = self.num_elements**2 * self.num_bins

    def forward(self, z: Tensor, edge_index: Tensor, edge_shift: Tensor, edge_vec: Tensor) -> Tensor:
        """Per-atom distance histograms.

        Args:
            z: [N] atomic numbers.
            edge_index: [2, E] int64, row 0 centre ``i``, row 1 neighbour ``j``.
            edge_shift: [E, 3] int64 cell shifts (not needed for two-body terms; taken so that
                every atom-centred descriptor is called alike).
            edge_vec: [E, 3] ``pos[j] - pos[i] + shift @ cell``, Å.

        Returns:
            [N, S * S * num_bins] smooth neighbour counts (dimensionless).
        """
        num_atoms, num_elements = z.shape[0], self.num_elements
        species = self.species(z)
        edge_index, _, edge_vec = self.within_cutoff(edge_index, edge_shift, edge_vec)
        edge_len = torch.linalg.vector_norm(edge_vec, dim=-1)
        counts = gaussian_bins(edge_len, self.centres, self.width) * self.envelope(edge_len).unsqueeze(-1)
        centre, neighbour = edge_index[0], edge_index[1]
        slot = centre * num_elements + gather(species, neighbour)
        per_neighbour = scatter_sum(counts, slot, num_atoms * num_elements).view(num_atoms, -1)
        own = F.one_hot(species, num_elements).to(per_neighbour.dtype)
        return (own.unsqueeze(-1) * per_neighbour.unsqueeze(1)).reshape(num_atoms, self.num_features)

    def extra_repr(self) -> str:
        """The settings shown by ``repr``."""
        return f"{super().extra_repr()}, num_bins={self.num_bins}, width={self.width}"
