"""Kernel ridge regression on Coulomb-matrix eigenvalues: the global molecular baseline.

Rupp, Tkatchenko, Müller and von Lilienfeld (Phys. Rev. Lett. 108, 058301 (2012)): a molecule is
described by the sorted eigenvalues ``d`` of its Coulomb matrix
(:class:`~gnnpot.descriptors.CoulombMatrixEigenvalues`), and its energy is a kernel expansion over
the training molecules::

    E = sum_i E0[z_i] + sum_n alpha_n k(d, d_n)
    k = exp(-|d - d_n|_1 / width)          (Laplacian, Rupp et al.'s choice)
    k = exp(-|d - d_n|^2 / (2 width^2))    (Gaussian)

Forces are ``-dE/dpos`` by autograd through the eigensolver. The model is global, not atomwise: it
is not a :class:`~gnnpot.models.ForceField` of a family, but it answers like one (``energy`` [B],
``forces`` [N, 3], ``atomic_energy`` [N]; ``cutoff``, ``elements``, ``config``), so model files,
:func:`~gnnpot.models.load_model`, ``gnnpot eval``, the ASE calculator and MD take it as they take
any model. Its per-atom energies are ``E0[z_i]`` plus an equal share of the kernel part (a global
model has no finer split). Molecules only: periodic frames are refused. Fitted by
:func:`gnnpot.training.kernel.fit_coulomb_krr`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ase.data import chemical_symbols
from torch import Tensor, nn
from torch_geometric.data import Data

from gnnpot import keys
from gnnpot.data.checks import check_cutoff
from gnnpot.descriptors import CoulombMatrixEigenvalues
from gnnpot.nn import ScaleShift, gather, scatter_sum

NAME = "coulomb_krr"  # the ``representation`` entry of its config and metadata
KERNELS = ("laplacian", "gaussian")


def kernel_matrix(a: Tensor, b: Tensor, kernel: str, width: float) -> Tensor:
    """``k(a_p, b_n)`` [P, Q] of descriptors ``a`` [P, F] and ``b`` [Q, F] (see the module docstring)."""
    if kernel == "laplacian":
        # |a - b|_1 by broadcasting: cdist's p=1 gradient is not defined where a term is 0
        return torch.exp(-(a.unsqueeze(1) - b.unsqueeze(0)).abs().sum(-1) / width)
    return torch.exp(-(a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1) / (2.0 * width**2))


class CoulombKRR(nn.Module):
    """Kernel ridge regression on sorted Coulomb-matrix eigenvalues, with forces.

    Args:
        elements: atomic numbers the model knows (sorted).
        max_atoms: length of the eigenvalue vectors (the largest molecule it takes).
        num_train: number of training molecules (rows of ``train_descriptors``).
        kernel: ``"laplacian"`` or ``"gaussian"``.
        width: the kernel's length scale, in the units of the eigenvalues (e^2/Å).
        e0: per-element energies (eV) by atomic number; missing ones are 0.
        cutoff: radius of the graphs it is given, Å; it uses none of their edges (the Coulomb matrix
            takes every pair), only the neighbour list's overlap check.
    """

    def __init__(
        self,
        elements: Sequence[int],
        max_atoms: int,
        num_train: int,
        kernel: str = "laplacian",
        width: float = 100.0,
        e0: Mapping[int, float] | None = None,
        cutoff: float = 2.0,
    ) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {list(KERNELS)}, got {kernel!r}")
        if not float(width) > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        if int(num_train) < 1:
            raise ValueError(f"num_train must be >= 1, got {num_train!r}")
        self.elements = [int(z) for z in elements]
        self.kernel, self.width, self._cutoff = kernel, float(width), check_cutoff(cutoff)
        self.descriptor = CoulombMatrixEigenvalues(max_atoms)
        self.register_buffer("train_descriptors", torch.zeros(int(num_train), self.descriptor.max_atoms))
        self.alpha = nn.Parameter(torch.zeros(int(num_train)))
        shift = [float((e0 or {}).get(z, 0.0)) for z in self.elements]
        self.scale_shift = ScaleShift(len(self.elements), shift=shift)  # E0s kept in float64
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(self.elements)] = torch.arange(len(self.elements))
        self.register_buffer("species_table", table, persistent=False)
        self.config = {
            "representation": NAME,
            "cutoff": self._cutoff,
            "elements": list(self.elements),
            "e0": dict(zip(self.elements, shift, strict=True)),
            "scale": 1.0,
            "zbl": False,
            "hparams": {
                "max_atoms": self.descriptor.max_atoms,
                "num_train": int(num_train),
                "kernel": kernel,
                "width": self.width,
            },
        }
        self.compiled = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CoulombKRR:
        """The model (untrained) its ``config`` describes."""
        e0 = {int(z): float(v) for z, v in dict(config.get("e0") or {}).items()}
        return cls(config["elements"], e0=e0, cutoff=config["cutoff"], **dict(config["hparams"]))

    @property
    def cutoff(self) -> float:
        """Radius of the graphs it is given, Å (see the class docstring)."""
        return self._cutoff

    def enable_compile(self, enabled: bool = True) -> CoulombKRR:
        """There is no compiled path: ``enabled=True`` is an error."""
        if enabled:
            raise ValueError(f"the {NAME} model has no compiled path")
        return self

    def species(self, z: Tensor) -> Tensor:
        """Species indices [N] of atomic numbers ``z``; ``ValueError`` naming an unknown element."""
        species = self.species_table[z.clamp(0, 118)]
        if bool((species < 0).any()):
            unknown = sorted({chemical_symbols[int(n)] for n in z[species < 0]})
            known = [chemical_symbols[n] for n in self.elements]
            raise ValueError(f"model knows elements {known}, got unknown element(s) {unknown}")
        return species

    def kernel_energy(self, descriptors: Tensor) -> Tensor:
        """The kernel part of the energy [B] (eV) of descriptors [B, max_atoms]."""
        train = self.train_descriptors.to(descriptors.dtype)
        return kernel_matrix(descriptors, train, self.kernel, self.width) @ self.alpha

    def forward(self, data: Data) -> dict[str, Tensor]:
        """``energy`` [B] eV, ``forces`` [N, 3] eV/Å and ``atomic_energy`` [N] eV of a batch of molecules."""
        pos = data[keys.POSITIONS].to(self.alpha.dtype)
        batch = data.get(keys.BATCH)
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        num_frames = int(data[keys.PBC].shape[0])
        z, species = data[keys.ATOMIC_NUMBERS], self.species(data[keys.ATOMIC_NUMBERS])
        with torch.enable_grad():
            if not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            descriptors = self.descriptor(z, pos, batch, data[keys.PBC])
            learned = self.kernel_energy(descriptors)
            (grad,) = torch.autograd.grad(learned.sum(), [pos], create_graph=self.training and torch.is_grad_enabled())
        natoms = torch.bincount(batch, minlength=num_frames).clamp(min=1).to(learned.dtype)
        atomic = self.scale_shift(gather(learned / natoms, batch), species)
        energy = scatter_sum(atomic, batch, num_frames)
        return {keys.ENERGY: energy, keys.FORCES: -grad, keys.ATOMIC_ENERGY: atomic}

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(elements={self.elements}, max_atoms={self.descriptor.max_atoms}, "
            f"num_train={self.alpha.numel()}, kernel={self.kernel!r}, width={self.width:.4g})"
        )
