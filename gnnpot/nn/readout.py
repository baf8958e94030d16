"""Atomwise readout and the per-element shift and scale of atomic energies."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class AtomwiseReadout(nn.Module):
    """Two-layer MLP from invariant features [N, num_features] to per-atom outputs [N]."""

    def __init__(self, num_features: int, num_hidden: int | None = None) -> None:
        super().__init__()
        num_hidden = num_hidden or max(num_features // 2, 1)
        self.net = nn.Sequential(nn.Linear(num_features, num_hidden), nn.SiLU(), nn.Linear(num_hidden, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, zero biases."""
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> Tensor:
        """One number per atom.

        Args:
            features: [N, num_features] invariant features.

        Returns:
            [N] readout values (before scale and shift).
        """
        return self.net(features).squeeze(-1)


class ScaleShift(nn.Module):
    """``E_i = scale * y_i + shift[species_i]``: E0 per element and one energy scale, in eV.

    Both come from the training data statistics and are buffers (saved, not trained). The shift
    stays float64 through ``.to(dtype)``: E0s are large (hundreds of eV for molecules), and a
    round trip through float32 would move an isolated atom's energy by 1e-6 eV.

    With ``train_e0``, a trained correction ``delta[species]`` (eV, starting at 0) is added to the
    shift, as NequIP's trainable per-type shifts. The potential references its readout to the
    isolated atom (:meth:`gnnpot.models.potential.Potential.atomic_energies`), so nothing else in
    the model can move the energy by a constant per element: when the E0s are a least-squares
    estimate (one molecule's mean energy, say) rather than isolated-atom energies, the error of
    that estimate is otherwise learned only slowly through the features.
    """

    def __init__(
        self, num_elements: int, shift: Sequence[float] | None = None, scale: float = 1.0, train_e0: bool = False
    ) -> None:
        super().__init__()
        shift_tensor = torch.zeros(num_elements, dtype=torch.float64)
        if shift is not None:
            shift_tensor = torch.as_tensor(shift, dtype=torch.float64)
        if shift_tensor.shape != (num_elements,):
            raise ValueError(f"shift needs {num_elements} values, got shape {tuple(shift_tensor.shape)}")
        self.register_buffer("shift", shift_tensor)
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.get_default_dtype()))
        self.delta = nn.Parameter(torch.zeros(num_elements)) if train_e0 else None

    def _apply(self, fn, recurse=True):
        shift = self.shift
        super()._apply(fn, recurse)
        self.shift = shift.to(device=self.scale.device)
        return self

    def forward(self, atomic: Tensor, species: Tensor) -> Tensor:
        """Scaled and shifted per-atom values.

        Args:
            atomic: [N] readout values.
            species: [N] species index of each atom.

        Returns:
            [N] per-atom energies, eV.
        """
        shifted = self.scale * atomic + self.shift[species].to(atomic.dtype)
        if self.delta is not None:
            shifted = shifted + self.delta[species].to(atomic.dtype)
        return shifted

    def e0(self) -> Tensor:
        """[num_elements] the isolated-atom energies in use, eV (float64): the shift plus any trained correction."""
        if self.delta is None:
            return self.shift
        return self.shift + self.delta.detach().to(self.shift)

    def __repr__(self) -> str:
        trained = ", train_e0=True" if self.delta is not None else ""
        return f"{self.__class__.__name__}(num_elements={self.shift.numel()}, scale={float(self.scale):.4g}{trained})"


class LinearReadout(nn.Module):
    """Per-atom outputs linear in the features, ``y_i = sum_f x_if w_f``: no hidden layer, no bias.

    The readout of kernel models (:mod:`gnnpot.representations.kernel`), whose weights are fitted in
    closed form. A bias would cancel against the isolated-atom reference of
    :class:`~gnnpot.models.Potential`, so there is none.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal weights of standard deviation ``1 / sqrt(num_features)``."""
        nn.init.normal_(self.weight, std=self.weight.numel() ** -0.5)

    def forward(self, features: Tensor) -> Tensor:
        """``features`` [N, num_features] to [N] readout values (before scale and shift)."""
        return features @ self.weight

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_features={self.weight.numel()})"
