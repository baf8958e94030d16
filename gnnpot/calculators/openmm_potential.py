"""gnnpot models in OpenMM through OpenMM-ML: ``MLPotential("gnnpot", model=...)``.

    from openmmml import MLPotential
    potential = MLPotential("gnnpot", model="mace-rmd17-ethanol", dtype="float64")
    system = potential.createSystem(topology)          # then any OpenMM integrator and Simulation

``model`` is anything :class:`~gnnpot.calculators.GNNPotCalculator` takes: a model file, a
checkpoint, a run folder or a pretrained name. The registration is the ``openmmml.potentials``
entry point in ``pyproject.toml`` (extra ``engines``). A topology with periodic box vectors gives a
periodic model (any box shape); ``createMixedSystem`` and ``atoms=`` apply it to part of a system.

Why OpenMM's ``PythonForce`` and not openmm-torch's ``TorchForce``: the ``openmmtorch`` wheel on
PyPI (1.5) links the CUDA build of torch (``libtorch_cuda``, ``libc10_cuda``, ``libnvrtc``) and does
not load beside the CPU torch gnnpot installs; building it needs its sources and a compiler. A
``PythonForce`` (OpenMM >= 8.3) calls Python at each force evaluation with the positions OpenMM
holds; the model runs there through ``GNNPotCalculator``, whose skin neighbour list is kept
between steps. Units: OpenMM's nm and kJ/mol in, gnnpot's Å and eV inside.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import openmm
from ase import Atoms, units
from ase.data import chemical_symbols
from openmm import app, unit
from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

from gnnpot.calculators.calculator import GNNPotCalculator

KJ_PER_MOL_PER_EV = 1.0 / (units.kJ / units.mol)  # 96.485... kJ/mol in one eV
OPTIONS = ("model", "dtype", "device", "skin")


class GnnpotForceFunction:
    """The ``PythonForce`` function: an OpenMM ``State`` to energy (kJ/mol) and forces (kJ/mol/nm).

    It pickles as its arguments (OpenMM's ``XmlSerializer`` pickles the function); the calculator is
    built on the first call.

    Args:
        model: what :class:`GNNPotCalculator` takes (a file or pretrained name keeps it picklable).
        numbers: atomic numbers of the atoms the force acts on, in OpenMM's order.
        periodic: whether the state's box vectors are the cell.
        dtype: ``"float32"``, ``"float64"`` or ``None`` for the model's own.
        device: torch device.
        skin: the neighbour list's skin, Å.
    """

    def __init__(
        self,
        model: Any,
        numbers: Sequence[int],
        periodic: bool,
        dtype: str | None = None,
        device: str = "cpu",
        skin: float = 0.5,
    ) -> None:
        self.model, self.numbers, self.periodic = model, [int(z) for z in numbers], bool(periodic)
        self.dtype, self.device, self.skin = dtype, device, skin
        self._atoms: Atoms | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_atoms"} | {"_atoms": None}

    @property
    def atoms(self) -> Atoms:
        """The ASE structure the model sees, with its calculator (built once)."""
        if self._atoms is None:
            atoms = Atoms(numbers=self.numbers, pbc=self.periodic)
            atoms.calc = GNNPotCalculator(self.model, dtype=self.dtype, device=self.device, skin=self.skin)
            self._atoms = atoms
        return self._atoms

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces ([N, 3] kJ/mol/nm) at the state's positions (and box)."""
        atoms = self.atoms
        atoms.positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        if self.periodic:
            atoms.cell = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom)
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        # eV -> kJ/mol; eV/Å -> kJ/mol/nm (10 Å per nm)
        return energy * KJ_PER_MOL_PER_EV, forces * (10.0 * KJ_PER_MOL_PER_EV)


class GnnpotPotentialImpl(MLPotentialImpl):
    """Adds a gnnpot model to an OpenMM ``System`` as a ``PythonForce``.

    Args:
        name: the name it was created under (``gnnpot``).
        model: the model (see the module docstring); required.
        dtype: ``"float32"`` or ``"float64"``; default the model's own.
        device: torch device, default ``cpu``.
        skin: neighbour-list skin, Å (default 0.5; 0 rebuilds the list at every step).
    """

    def __init__(
        self, name: str, model: Any = None, dtype: str | None = None, device: str = "cpu", skin: float = 0.5
    ) -> None:
        if model is None:
            raise ValueError('give the model: MLPotential("gnnpot", model="<model file or pretrained name>")')
        self.name = name
        self.options = {"model": model, "dtype": dtype, "device": device, "skin": skin}
        self._elements: list[str] | None = None

    def addForces(
        self,
        topology: app.Topology,
        system: openmm.System,
        atoms: Iterable[int] | None,
        forceGroup: int,  # noqa: N803 (OpenMM-ML's signature)
        **args: Any,
    ) -> None:
        """Add the ``PythonForce``; ``createSystem``'s ``dtype``, ``device`` and ``skin`` override the constructor's."""
        if unknown := sorted(set(args) - set(OPTIONS) - {"removeCMMotion"}):
            raise TypeError(f"gnnpot's MLPotential takes {list(OPTIONS[1:])} in createSystem, not {unknown}")
        options = self.options | {k: v for k, v in args.items() if k in OPTIONS}
        selected = list(topology.atoms())
        if atoms is not None:
            atoms = [int(i) for i in atoms]
            selected = [selected[i] for i in atoms]
        if untyped := [atom.index for atom in selected if atom.element is None]:
            raise ValueError(f"atoms {untyped[:10]} of the topology have no element; gnnpot needs every element")
        numbers = [atom.element.atomic_number for atom in selected]
        function = GnnpotForceFunction(
            numbers=numbers, periodic=topology.getPeriodicBoxVectors() is not None, **options
        )
        known = {int(z) for z in function.atoms.calc.elements}
        if missing := sorted(set(numbers) - known):
            raise ValueError(
                f"the model {options['model']!r} knows the elements {[chemical_symbols[z] for z in sorted(known)]}, "
                f"the topology also has {[chemical_symbols[z] for z in missing]}"
            )
        force = openmm.PythonForce(function)
        force.setForceGroup(forceGroup)
        force.setUsesPeriodicBoundaryConditions(function.periodic)
        if atoms is not None:
            force.setParticles(atoms)
        system.addForce(force)


class GnnpotPotentialImplFactory(MLPotentialImplFactory):
    """The ``openmmml.potentials`` entry point ``gnnpot``."""

    def createImpl(self, name: str, **args: Any) -> GnnpotPotentialImpl:  # noqa: N802 (OpenMM-ML's name)
        """A :class:`GnnpotPotentialImpl` with the ``MLPotential`` arguments."""
        return GnnpotPotentialImpl(name, **args)


def topology_from_atoms(atoms: Atoms) -> tuple[app.Topology, unit.Quantity]:
    """An OpenMM topology (one residue, no bonds) and positions for an ASE structure.

    A structure periodic in all three directions gets its cell as the box vectors (OpenMM needs a
    reduced box: ``a`` along x, ``b`` in the xy plane, as ASE's :meth:`~ase.Atoms.cell` of a
    standard-form cell); a partly periodic one is refused.
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and not pbc.all():
        raise ValueError(f"OpenMM boxes are periodic in all three directions, the structure has pbc {pbc.tolist()}")
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for index, z in enumerate(atoms.numbers):
        element = app.Element.getByAtomicNumber(int(z))
        topology.addAtom(f"{element.symbol}{index}", element, residue)
    if pbc.all():
        cell = atoms.cell.array
        if abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) > 1e-10:
            raise ValueError("OpenMM needs a reduced box (a along x, b in the xy plane); rotate the cell first")
        topology.setPeriodicBoxVectors(cell * 0.1 * unit.nanometer)
    return topology, atoms.positions * 0.1 * unit.nanometer
