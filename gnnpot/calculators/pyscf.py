"""``PySCFCalculator``: an ASE calculator over PySCF's Hartree-Fock and DFT energies and gradients.

Written here because ASE ships no PySCF calculator and PySCF ships no ASE one; the work is all
PySCF's (``scf``, ``dft`` and their analytic nuclear gradients), this class only converts units
(Hartree and Bohr to eV and Å) and refuses what it cannot do: periodic cells (PySCF's ``pbc``
module would be needed) and an SCF that does not converge (a wrong label is worse than none).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes


class SCFNotConverged(CalculationFailed):
    """The SCF did not converge, so the structure has no label."""


class PySCFCalculator(Calculator):
    """Energy (eV) and forces (eV/Å) of a molecule from PySCF.

    Args:
        method: ``hf`` (restricted or unrestricted by ``spin``) or an exchange-correlation functional
            that ``pyscf.dft`` knows (``b3lyp``, ``pbe``, ``wb97x-d``, ...).
        basis: a basis set name (``def2-svp``, ``6-31g*``, ``cc-pvdz``, ...).
        charge: total charge.
        spin: number of unpaired electrons (2S), PySCF's convention.
        max_cycle: SCF iterations before giving up.
        conv_tol: SCF energy convergence, Hartree.
        **kwargs: passed to ASE's ``Calculator``.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(
        self,
        method: str = "b3lyp",
        basis: str = "def2-svp",
        charge: int = 0,
        spin: int = 0,
        max_cycle: int = 100,
        conv_tol: float = 1e-9,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.method = str(method)
        self.basis = str(basis)
        self.charge = int(charge)
        self.spin = int(spin)
        self.max_cycle = int(max_cycle)
        self.conv_tol = float(conv_tol)

    def calculate(
        self, atoms: Atoms | None = None, properties: list[str] | None = None, system_changes: list[str] = all_changes
    ) -> None:
        """Run the SCF and its analytic gradient; store ``energy`` and ``forces``.

        Raises:
            NotImplementedError: a periodic structure.
            SCFNotConverged: the SCF did not converge within ``max_cycle`` iterations.
        """
        super().calculate(atoms, properties, system_changes)
        from pyscf import dft, gto, scf  # imported when used: an optional dependency

        if self.atoms.pbc.any():
            raise NotImplementedError("PySCFCalculator labels molecules; a periodic cell needs pyscf.pbc")
        mol = gto.M(
            atom=[(symbol, tuple(xyz)) for symbol, xyz in zip(self.atoms.get_chemical_symbols(), self.atoms.positions)],
            unit="Angstrom",
            basis=self.basis,
            charge=self.charge,
            spin=self.spin,
            verbose=0,
        )
        if self.method.lower() in ("hf", "rhf", "uhf"):
            mean_field = scf.HF(mol)
        else:
            mean_field = dft.KS(mol)
            mean_field.xc = self.method
        mean_field.max_cycle = self.max_cycle
        mean_field.conv_tol = self.conv_tol
        energy = mean_field.kernel()
        if not mean_field.converged:
            raise SCFNotConverged(f"{self.method}/{self.basis} SCF did not converge in {self.max_cycle} cycles")
        gradient = np.asarray(mean_field.nuc_grad_method().kernel())  # Hartree/Bohr
        self.results = {
            "energy": float(energy) * units.Hartree,
            "forces": -gradient * units.Hartree / units.Bohr,
        }

    def __repr__(self) -> str:
        options = f"method={self.method!r}, basis={self.basis!r}, charge={self.charge}, spin={self.spin}"
        return f"{type(self).__name__}({options})"
