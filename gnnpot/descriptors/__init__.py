"""Differentiable, hand-made descriptors of atomic structures (baselines for the learned families).

Atom-centred descriptors map a full neighbour list to invariant per-atom features,
``forward(z, edge_index, edge_shift, edge_vec) -> [num_atoms, num_features]``; the Coulomb matrix
maps a finite molecule to one vector, ``forward(z, pos, batch, pbc) -> [num_frames, max_atoms]``.
All are plain torch, so gradients reach positions and cell (forces, stress).
"""

from gnnpot.descriptors.acsf import SymmetryFunctions, centred_angular_params, shifted_radial_params
from gnnpot.descriptors.base import AtomCentredDescriptor, NeighbourPairs, neighbour_pairs, pair_index
from gnnpot.descriptors.coulomb import CoulombMatrixEigenvalues, coulomb_matrix
from gnnpot.descriptors.three_body import ThreeBodyHistogram
from gnnpot.descriptors.two_body import TwoBodyHistogram

__all__ = [
    "AtomCentredDescriptor",
    "CoulombMatrixEigenvalues",
    "NeighbourPairs",
    "SymmetryFunctions",
    "ThreeBodyHistogram",
    "TwoBodyHistogram",
    "centred_angular_params",
    "coulomb_matrix",
    "neighbour_pairs",
    "pair_index",
    "shifted_radial_params",
]
