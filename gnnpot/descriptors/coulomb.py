"""Coulomb-matrix eigenvalues of finite molecules (Rupp et al., Phys. Rev. Lett. 108, 058301 (2012)).

For the atoms ``I, J`` of one molecule, with atomic numbers ``Z`` and distances ``R`` in Å::

    M_II = 0.5 Z_I^2.4,        M_IJ = Z_I Z_J / R_IJ   (I != J)

over all pairs (no cutoff). The descriptor of a molecule is the eigenvalues of ``M`` sorted in
**descending order by value** (the largest, positive, first; negative ones last), padded with
zeros to ``max_atoms``. Sorting by value keeps every entry a continuous function of the positions;
DScribe's ``permutation="eigenspectrum"`` sorts by descending absolute value instead, which jumps
where a positive and a negative eigenvalue swap magnitude, so the two agree up to that order.
The eigenvalues are invariant under rotation, translation and permutation of the atoms.

Gradients come from :func:`torch.linalg.eigvalsh` (``dlambda_n = v_n^T dM v_n``). They are exact
where the eigenvalues are distinct; at a degeneracy the sorted eigenvalues have a kink, are not
differentiable, and the gradient returned is that of one arbitrary eigenvector basis (symmetric
molecules such as CH4 have degenerate eigenvalues).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys


def coulomb_matrix(z: Tensor, pos: Tensor) -> Tensor:
    """Coulomb matrices of molecules of equal size.

    Args:
        z: [M, n] atomic numbers.
        pos: [M, n, 3] positions, Å.

    Returns:
        [M, n, n] symmetric Coulomb matrices; off the diagonal ``Z_I Z_J / R_IJ`` with ``R`` in Å
        (as DScribe; Rupp et al. used bohr).
    """
    charge = z.to(pos.dtype)
    eye = torch.eye(z.shape[-1], dtype=pos.dtype, device=pos.device)
    diff = pos.unsqueeze(-2) - pos.unsqueeze(-3)
    # The diagonal's distance is set to 1 (not 0) so that neither it nor its gradient is inf/NaN.
    dist = torch.sqrt(diff.pow(2).sum(-1) + eye)
    outer = charge.unsqueeze(-1) * charge.unsqueeze(-2)
    return outer / dist * (1.0 - eye) + torch.diag_embed(0.5 * charge.pow(2.4))


class CoulombMatrixEigenvalues(nn.Module):
    """Sorted, zero-padded Coulomb-matrix eigenvalues per molecule: ``forward -> [B, max_atoms]``.

    Args:
        max_atoms: length of every frame's feature vector; larger molecules are an error.

    Output:
        [B, max_atoms] eigenvalues in descending order, then zeros.
    """

    def __init__(self, max_atoms: int) -> None:
        super().__init__()
        if int(max_atoms) < 1:
            raise ValueError(f"max_atoms must be >= 1, got {max_atoms!r}")
        self.max_atoms = int(max_atoms)
        self.num_features = self.max_atoms

    def reset_parameters(self) -> None:
        """Nothing to reset: the descriptor has no learnable parameters."""

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor, pbc: Tensor) -> Tensor:
        """Eigenvalues of each frame's Coulomb matrix.

        Args:
            z: [N] atomic numbers.
            pos: [N, 3] positions, Å.
            batch: [N] frame of each atom, non-decreasing (as PyG batches are).
            pbc: [B, 3] periodicity of each frame; all must be False.

        Returns:
            [B, max_atoms] sorted eigenvalues, padded with zeros.

        Raises:
            ValueError: a periodic frame, a frame with more than ``max_atoms`` atoms, or a
                ``batch`` that is not sorted.
        """
        num_frames = pbc.shape[0]
        periodic = torch.nonzero(pbc.reshape(num_frames, -1).any(dim=-1)).flatten().tolist()
        if periodic:
            raise ValueError(
                f"the Coulomb matrix is defined for finite molecules only; frame {periodic[0]} of the batch is "
                f"periodic (pbc={pbc[periodic[0]].tolist()})"
            )
        if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("batch must be non-decreasing (the atoms of a frame contiguous)")
        natoms = torch.bincount(batch, minlength=num_frames)
        too_big = torch.nonzero(natoms > self.max_atoms).flatten().tolist()
        if too_big:
            frame = too_big[0]
            raise ValueError(
                f"frame {frame} of the batch has {int(natoms[frame])} atoms, more than max_atoms={self.max_atoms}"
            )
        start = torch.cumsum(natoms, 0) - natoms
        out = pos.new_zeros(num_frames, self.max_atoms)
        # Frames of equal size go through one batched eigensolver call.
        for size in sorted(set(natoms.tolist()) - {0}):
            frames = torch.nonzero(natoms == size).flatten()
            atoms = start[frames].unsqueeze(-1) + torch.arange(size, device=pos.device)
            eigenvalues = torch.linalg.eigvalsh(coulomb_matrix(z[atoms], pos[atoms]))
            out[frames, :size] = eigenvalues.flip(-1)  # eigvalsh is ascending
        return out

    def forward_data(self, data: Data) -> Tensor:
        """:meth:`forward` of an :class:`~gnnpot.data.AtomicData` or a batch of them.

        Args:
            data: a graph with ``z``, ``pos``, ``pbc`` and, when batched, ``batch``.

        Returns:
            [B, max_atoms] sorted eigenvalues, padded with zeros.
        """
        pos = data[keys.POSITIONS]
        batch = data.get(keys.BATCH)
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        return self(data[keys.ATOMIC_NUMBERS], pos, batch, data[keys.PBC])

    def extra_repr(self) -> str:
        """The settings shown by ``repr``."""
        return f"max_atoms={self.max_atoms}"
