"""Radial bases and smooth cutoff envelopes for edge lengths.

Every envelope goes to zero with zero slope at the cutoff, so energies built from it are smooth
as neighbours cross the cutoff. Bases are plain functions of the edge length; multiply by an
envelope to make them vanish at the cutoff.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class CosineCutoff(nn.Module):
    """``0.5 (cos(pi r / r_c) + 1)`` inside the cutoff, 0 outside (SchNet, PaiNN)."""

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, edge_len: Tensor) -> Tensor:
        """The envelope of each edge.

        Args:
            edge_len: [E] edge lengths, Å.

        Returns:
            [E] envelope values in [0, 1], 0 from the cutoff on.
        """
        value = 0.5 * (torch.cos(edge_len * (math.pi / self.cutoff)) + 1.0)
        return value * (edge_len < self.cutoff).to(edge_len.dtype)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(cutoff={self.cutoff})"


class PolynomialCutoff(nn.Module):
    """Polynomial envelope of DimeNet/NequIP, ``C^(p-1)`` smooth at the cutoff.

    ``u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)`` with ``x = r / r_c``.
    """

    def __init__(self, cutoff: float, p: int = 6) -> None:
        super().__init__()
        if p < 2:
            raise ValueError(f"polynomial cutoff exponent p must be >= 2, got {p!r}")
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, edge_len: Tensor) -> Tensor:
        """The envelope of each edge.

        Args:
            edge_len: [E] edge lengths, Å.

        Returns:
            [E] envelope values in [0, 1], 0 from the cutoff on.
        """
        p = self.p
        x = edge_len / self.cutoff
        value = 1.0 - 0.5 * (p + 1) * (p + 2) * x.pow(p) + p * (p + 2) * x.pow(p + 1) - 0.5 * p * (p + 1) * x.pow(p + 2)
        return value * (x < 1.0).to(edge_len.dtype)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(cutoff={self.cutoff}, p={self.p})"


class GaussianRBF(nn.Module):
    """Gaussians with centres evenly spaced on ``[start, cutoff]`` and width = spacing (SchNet)."""

    def __init__(self, num_rbf: int, cutoff: float, start: float = 0.0) -> None:
        super().__init__()
        self.num_rbf = int(num_rbf)
        self.cutoff = float(cutoff)
        self.register_buffer("centers", torch.linspace(start, cutoff, num_rbf))
        spacing = (cutoff - start) / max(num_rbf - 1, 1)
        self.coeff = -0.5 / spacing**2

    def forward(self, edge_len: Tensor) -> Tensor:
        """Gaussians of each edge length.

        Args:
            edge_len: [E] edge lengths, Å.

        Returns:
            [E, num_rbf] basis values.
        """
        diff = edge_len.unsqueeze(-1) - self.centers.to(edge_len.dtype)
        return torch.exp(self.coeff * diff.pow(2))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_rbf={self.num_rbf}, cutoff={self.cutoff})"


class BesselRBF(nn.Module):
    """``sqrt(2/r_c) sin(n pi r / r_c) / r`` for n = 1..num_rbf (DimeNet, PaiNN, NequIP).

    Args:
        trainable: learn the frequencies ``n pi / r_c`` (NequIP's default).
    """

    def __init__(self, num_rbf: int, cutoff: float, trainable: bool = False) -> None:
        super().__init__()
        self.num_rbf = int(num_rbf)
        self.cutoff = float(cutoff)
        freqs = torch.arange(1, num_rbf + 1, dtype=torch.get_default_dtype()) * math.pi / cutoff
        if trainable:
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs)
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, edge_len: Tensor) -> Tensor:
        """Bessel functions of each edge length.

        Args:
            edge_len: [E] edge lengths, Å, > 0.

        Returns:
            [E, num_rbf] basis values, 1/Å.
        """
        r = edge_len.unsqueeze(-1)
        return self.prefactor * torch.sin(self.freqs * r) / r

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_rbf={self.num_rbf}, cutoff={self.cutoff})"
