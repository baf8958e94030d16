"""Cross-checks against DScribe (skipped when it is not installed).

Parameter mapping:
    * ACSF: DScribe's ``g2_params`` are our G2 list without its leading ``(0, 0)``, which is
      DScribe's G1 (always written first in each element block). ``g4_params`` and ``g5_params``
      are the same ``(eta, zeta, lambda)`` triples, ``r_cut`` is ``cutoff``, ``species`` is
      ``elements`` and ``periodic=True`` uses the pbc of each structure. No G3. The output
      columns then coincide one for one.
    * Coulomb matrix: ``CoulombMatrix(n_atoms_max=max_atoms, permutation="eigenspectrum")`` sorts
      by descending absolute value; we sort by descending value, so the first ``len(atoms)``
      entries agree once re-sorted by value.
"""

import numpy as np
import pytest

from gnnpot.descriptors import (
    CoulombMatrixEigenvalues,
    SymmetryFunctions,
    centred_angular_params,
    shifted_radial_params,
)
from tests.descriptors.structures import ethanol, graph, rocksalt

dscribe = pytest.importorskip("dscribe")
from dscribe.descriptors import ACSF, CoulombMatrix  # noqa: E402


@pytest.mark.parametrize(
    ("build", "elements", "cutoff"), [(ethanol, [1, 6, 8], 4.0), (rocksalt, [11, 17], 4.5)], ids=["ethanol", "rocksalt"]
)
def test_acsf_matches_dscribe(build, elements, cutoff):
    atoms = build()
    g2 = shifted_radial_params(cutoff, num=4)
    angular = centred_angular_params(cutoff, zetas=(1.0, 2.0, 16.0))
    ours = SymmetryFunctions(elements, cutoff, g2_params=g2, g4_params=angular, g5_params=angular)
    reference = ACSF(
        r_cut=cutoff,
        g2_params=g2[1:],
        g4_params=angular,
        g5_params=angular,
        species=elements,
        periodic=bool(atoms.pbc.any()),
    ).create(atoms)
    out = ours.forward_data(graph(atoms)).numpy()
    assert out.shape == reference.shape
    assert np.abs(reference).max() > 0.1
    np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-6)


def test_coulomb_matrix_eigenvalues_match_dscribe():
    atoms = ethanol()
    reference = CoulombMatrix(n_atoms_max=12, permutation="eigenspectrum").create(atoms)
    out = CoulombMatrixEigenvalues(12).forward_data(graph(atoms))[0].numpy()
    by_value = np.sort(reference[: len(atoms)])[::-1]
    np.testing.assert_allclose(out[: len(atoms)], by_value, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[len(atoms) :], reference[len(atoms) :])
