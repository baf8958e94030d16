"""The embedded default dataset: Cu-Au alloys labelled by ASE's EMT potential, made offline.

Each trajectory starts from one of four kinds of fcc Cu-Au structure with a random composition,
and samples frames by Langevin molecular dynamics at one of several temperatures:

    * ``bulk``: cubic or primitive supercells, 8 to 64 atoms;
    * ``vacancy``: cubic supercells with one or two atoms removed;
    * ``strained``: bulk cells under a random strain of a few per cent, shear included (triclinic);
    * ``slab``: an fcc(111) slab, periodic in-plane only (``pbc = (T, T, F)``, vacuum along z).

Every frame has an energy and forces; the fully periodic ones also have a stress. The slab has
no stress label: with one non-periodic direction the volume, and so the stress, is not defined.
This also exercises partly labelled batches. The same seed gives the same frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

KINDS = ("bulk", "vacancy", "strained", "slab")
TEMPERATURES_K = (300.0, 600.0, 900.0, 1200.0)
# EMT's lattice constants, Å; an alloy's follows Vegard's law.
LATTICE_CU = 3.61
LATTICE_AU = 4.07

_TIMESTEP_FS = 4.0
_FRICTION_PER_FS = 0.02
_EQUILIBRATION_STEPS = 20
_STEPS_BETWEEN_FRAMES = 5


def generate_emt_dataset(
    num_frames: int = 1000,
    seed: int = 0,
    frames_per_trajectory: int = 25,
    temperatures: Sequence[float] = TEMPERATURES_K,
    kinds: Sequence[str] = KINDS,
) -> list[Atoms]:
    """Cu-Au frames with EMT energy, forces and (periodic cells) stress, in eV and Å.

    Args:
        num_frames: how many frames in all.
        seed: seeds every random choice; equal seeds give equal frames.
        frames_per_trajectory: frames sampled per MD run. At least one run per kind of structure
            is made when ``num_frames`` allows it.
        temperatures: MD temperatures (K), taken in turn after every kind has had one run at the
            previous one (e.g. ``[300]`` for start data, ``[1200]`` for a hotter held-out set).
        kinds: structure kinds, a subset of :data:`KINDS`.

    Returns:
        The frames, labels on a ``SinglePointCalculator``; ``info`` holds ``config_type``,
        ``temperature_K``, ``trajectory`` and ``md_step``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames!r}")
    if frames_per_trajectory < 1:
        raise ValueError(f"frames_per_trajectory must be >= 1, got {frames_per_trajectory!r}")
    if not temperatures or any(not t > 0 for t in temperatures):
        raise ValueError(f"temperatures must be positive kelvins, got {list(temperatures)!r}")
    if not kinds or set(kinds) - set(KINDS):
        raise ValueError(f"kinds must be among {KINDS}, got {list(kinds)!r}")
    num_trajectories = max(min(len(kinds), num_frames), -(-num_frames // frames_per_trajectory))
    frames: list[Atoms] = []
    for trajectory in range(num_trajectories):
        count = num_frames // num_trajectories + (trajectory < num_frames % num_trajectories)
        kind = kinds[trajectory % len(kinds)]
        temperature = float(temperatures[(trajectory // len(kinds)) % len(temperatures)])
        rng = np.random.default_rng((seed, trajectory))
        atoms = _initial_structure(kind, rng)
        for frame in _langevin_frames(atoms, temperature, count, rng):
            frame.info.update(config_type=kind, temperature_K=temperature, trajectory=trajectory)
            frames.append(frame)
    return frames


def _initial_structure(kind: str, rng: np.random.Generator) -> Atoms:
    """An fcc Cu-Au structure of the given kind, random composition, lightly rattled."""
    au_fraction = float(rng.uniform(0.0, 1.0))
    lattice = LATTICE_CU + au_fraction * (LATTICE_AU - LATTICE_CU)
    if kind == "slab":
        size = ((2, 2, 4), (3, 2, 4), (3, 3, 4))[rng.integers(3)]
        atoms = fcc111("Cu", size=size, a=lattice, vacuum=6.0, periodic=False)
        atoms.pbc = (True, True, False)
    elif kind == "bulk":
        cubic, repeat = [(False, (2, 2, 2)), (False, (3, 3, 3)), (True, (2, 2, 2)), (True, (2, 2, 4))][rng.integers(4)]
        atoms = bulk("Cu", "fcc", a=lattice, cubic=cubic) * repeat
    elif kind == "vacancy":
        atoms = bulk("Cu", "fcc", a=lattice, cubic=True) * ((2, 2, 2), (2, 2, 3), (2, 2, 4))[rng.integers(3)]
        del atoms[rng.choice(len(atoms), size=int(rng.integers(1, 3)), replace=False).tolist()]
    elif kind == "strained":
        cubic, repeat = [(False, (2, 2, 2)), (False, (3, 3, 3)), (True, (2, 2, 2))][rng.integers(3)]
        atoms = bulk("Cu", "fcc", a=lattice, cubic=cubic) * repeat
        strain = np.diag(rng.uniform(-0.04, 0.04, 3))
        shear = np.triu(rng.uniform(-0.03, 0.03, (3, 3)), k=1)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain + shear + shear.T), scale_atoms=True)
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    num_au = int(round(au_fraction * len(atoms)))
    numbers = np.array([79] * num_au + [29] * (len(atoms) - num_au))
    atoms.numbers = rng.permutation(numbers)
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    return atoms


def _langevin_frames(atoms: Atoms, temperature: float, count: int, rng: np.random.Generator) -> list[Atoms]:
    """``count`` frames of Langevin MD at ``temperature`` (K), after a short equilibration."""
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    # ASE's default fixcm=True, kept so that a seed gives the datasets it always gave (the shipped Cu-Au
    # models were trained on them). It runs mixed-mass cells slightly hot: measured +1-4.5% at 600 K
    # for 8-32-atom Cu-Au cells with EMT. MD (calculators.dynamics) uses fixcm=False, which matters
    # most for molecules with hydrogen.
    dynamics = Langevin(
        atoms,
        timestep=_TIMESTEP_FS * units.fs,
        temperature_K=temperature,
        friction=_FRICTION_PER_FS / units.fs,
        rng=rng,
    )
    dynamics.run(_EQUILIBRATION_STEPS)
    frames = []
    for _ in range(count):
        dynamics.run(_STEPS_BETWEEN_FRAMES)
        frames.append(_labelled_copy(atoms, md_step=dynamics.nsteps))
    return frames


def _labelled_copy(atoms: Atoms, md_step: int) -> Atoms:
    """A bare copy of ``atoms`` (no momenta) with its EMT labels on a SinglePointCalculator."""
    copy = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    copy.info["md_step"] = md_step
    labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        labels["stress"] = atoms.get_stress(voigt=False)
    copy.calc = SinglePointCalculator(copy, **labels)
    return copy
