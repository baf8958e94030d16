"""Behler symmetry functions against a direct evaluation of their definition."""

import itertools
import math

import numpy as np
import pytest
from ase import Atoms

from gnnpot.descriptors import SymmetryFunctions, centred_angular_params, shifted_radial_params
from tests.descriptors.structures import ethanol, graph

CUTOFF = 3.5


def fc(r: float) -> float:
    return 0.5 * (math.cos(math.pi * r / CUTOFF) + 1.0) if r < CUTOFF else 0.0


def brute_force(atoms, elements, g2, g4, g5) -> np.ndarray:
    """G2, G4, G5 by explicit loops over neighbours (finite molecule), in the documented layout."""
    pos, numbers = atoms.positions, atoms.numbers
    num_elements = len(elements)
    num_pairs = num_elements * (num_elements + 1) // 2
    out = np.zeros((len(atoms), num_elements * len(g2) + num_pairs * (len(g4) + len(g5))))
    for i in range(len(atoms)):
        others = [j for j in range(len(atoms)) if j != i and np.linalg.norm(pos[j] - pos[i]) < CUTOFF]
        for j in others:
            r = np.linalg.norm(pos[j] - pos[i])
            b = elements.index(numbers[j])
            for n, (eta, shift) in enumerate(g2):
                out[i, b * len(g2) + n] += math.exp(-eta * (r - shift) ** 2) * fc(r)
        for j, k in itertools.combinations(others, 2):
            rij, rik, rjk = (np.linalg.norm(d) for d in (pos[j] - pos[i], pos[k] - pos[i], pos[k] - pos[j]))
            cos = np.dot(pos[j] - pos[i], pos[k] - pos[i]) / (rij * rik)
            b, c = sorted((elements.index(numbers[j]), elements.index(numbers[k])), reverse=True)
            offset = num_elements * len(g2) + (b * (b + 1) // 2 + c) * (len(g4) + len(g5))
            for n, (eta, zeta, lam) in enumerate(g4):
                angular = 2 ** (1 - zeta) * (1 + lam * cos) ** zeta
                out[i, offset + n] += (
                    angular * math.exp(-eta * (rij**2 + rik**2 + rjk**2)) * fc(rij) * fc(rik) * fc(rjk)
                )
            for n, (eta, zeta, lam) in enumerate(g5):
                angular = 2 ** (1 - zeta) * (1 + lam * cos) ** zeta
                out[i, offset + len(g4) + n] += angular * math.exp(-eta * (rij**2 + rik**2)) * fc(rij) * fc(rik)
    return out


def test_matches_the_definition_on_a_molecule():
    atoms = ethanol()
    g2 = [(0.0, 0.0), (1.5, 1.0), (0.7, 2.2)]
    g4 = [(0.2, 1.0, -1.0), (0.05, 2.0, 1.0)]
    g5 = [(0.3, 4.0, 1.0), (0.01, 1.0, -1.0), (0.1, 16.0, -1.0)]
    descriptor = SymmetryFunctions([8, 1, 6], CUTOFF, g2, g4, g5)
    out = descriptor.forward_data(graph(atoms, 5.0)).numpy()
    assert out.shape == (9, 3 * 3 + 6 * 5) == (9, descriptor.num_features)
    np.testing.assert_allclose(out, brute_force(atoms, [1, 6, 8], g2, g4, g5), rtol=1e-12, atol=1e-12)


def test_default_parameters_follow_the_documented_grids():
    radial = shifted_radial_params(5.0)
    assert radial[0] == (0.0, 0.0) and len(radial) == 9
    np.testing.assert_allclose([shift for _, shift in radial[1:]], np.linspace(1.0, 4.5, 8))
    np.testing.assert_allclose([eta for eta, _ in radial[1:]], 2.0)  # 1 / (2 * 0.5^2)
    angular = centred_angular_params(5.0)
    assert len(angular) == 12
    np.testing.assert_allclose(sorted({eta for eta, _, _ in angular}), [1 / (2 * 4.5**2), 1 / (2 * 2.75**2), 0.5])
    descriptor = SymmetryFunctions([1, 6], 5.0)
    assert (descriptor.num_g2, descriptor.num_g4, descriptor.num_g5) == (9, 12, 12)
    assert descriptor.num_features == 2 * 9 + 3 * 24


def test_radial_only_and_bad_parameters():
    descriptor = SymmetryFunctions([1, 8], CUTOFF, g2_params=[(1.0, 1.0)], g4_params=[], g5_params=[])
    assert descriptor.forward_data(graph(Atoms("OH", positions=[[0, 0, 0], [1, 0, 0]]))).shape == (2, 2)
    with pytest.raises(ValueError, match="eta"):
        SymmetryFunctions([1], CUTOFF, g2_params=[(-1.0, 0.0)])
    with pytest.raises(ValueError, match="zeta"):
        SymmetryFunctions([1], CUTOFF, g4_params=[(0.1, 0.5, 1.0)])
    with pytest.raises(ValueError, match="lambda"):
        SymmetryFunctions([1], CUTOFF, g5_params=[(0.1, 1.0, 0.5)])
