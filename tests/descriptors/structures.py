"""Small structures, graphs and descriptor factories shared by the descriptor tests (float64).

Imported as ``tests.descriptors.structures`` (the repository root is on ``sys.path``).
"""

from collections.abc import Callable

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, molecule

from gnnpot.data import AtomicData
from gnnpot.descriptors import SymmetryFunctions, ThreeBodyHistogram, TwoBodyHistogram

CUTOFF = 4.0  # descriptor radius, Å
LIST_CUTOFF = 5.0  # neighbour lists are built wider: the descriptors drop the extra edges


def small_acsf(elements, cutoff=CUTOFF):
    """ACSF with a few functions of each kind (G1, two G2, three G4, three G5)."""
    g2 = [(0.0, 0.0), (2.0, 1.2), (0.5, 2.5)]
    angular = [(0.3, 1.0, -1.0), (0.1, 2.0, 1.0), (0.05, 4.0, -1.0)]
    return SymmetryFunctions(elements, cutoff, g2_params=g2, g4_params=angular, g5_params=angular)


# Atom-centred descriptors, small settings: name -> factory(elements, cutoff).
ATOM_CENTRED: dict[str, Callable] = {
    "two_body": lambda elements, cutoff=CUTOFF: TwoBodyHistogram(elements, cutoff, num_bins=8, width=0.3),
    "three_body": lambda elements, cutoff=CUTOFF: ThreeBodyHistogram(elements, cutoff, num_radial=3, num_angular=4),
    "acsf": small_acsf,
}


def ethanol() -> Atoms:
    """Rattled ethanol (H, C, O; 9 atoms), no symmetry left."""
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return atoms


def rocksalt() -> Atoms:
    """Rattled primitive NaCl (2 atoms, lattice vectors 2.9 Å < cutoff: several images of each atom)."""
    atoms = bulk("NaCl", "rocksalt", a=4.1)
    atoms.rattle(0.1, seed=2)
    return atoms


STRUCTURES = {"ethanol": (ethanol, [1, 6, 8]), "rocksalt": (rocksalt, [11, 17])}


def graph(atoms: Atoms, cutoff: float = LIST_CUTOFF) -> AtomicData:
    """The float64 graph of ``atoms`` with every neighbour within ``cutoff``."""
    return AtomicData.from_atoms(atoms, cutoff, dtype=torch.float64)


def features(descriptor, atoms: Atoms, cutoff: float = LIST_CUTOFF) -> torch.Tensor:
    """Per-atom (or per-frame) features of ``atoms``, detached."""
    return descriptor.forward_data(graph(atoms, cutoff)).detach()


def random_rotation(seed: int) -> np.ndarray:
    """A random proper rotation matrix (det = +1)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q
