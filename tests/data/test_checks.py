"""The input checks of gnnpot.data.checks, and that the readers and AtomicData use the same ones."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

import gnnpot.data
import gnnpot.data.atomic_data
from gnnpot.data import AtomicData, read_frames, write_frames
from gnnpot.data.checks import DataError, check_cell, check_cutoff, check_labels, stress_matrix


def test_data_error_is_one_class_wherever_imported():
    assert gnnpot.data.DataError is gnnpot.data.atomic_data.DataError is DataError
    assert issubclass(DataError, ValueError)


def test_voigt_stress_is_ase_order():
    xx, yy, zz, yz, xz, xy = 1.0, 2.0, 3.0, 4.0, 5.0, 6.0
    want = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    np.testing.assert_array_equal(stress_matrix([xx, yy, zz, yz, xz, xy]), want)
    np.testing.assert_array_equal(stress_matrix(want.reshape(9)), want)
    with pytest.raises(ValueError, match="expected"):
        stress_matrix(np.zeros(4))


def test_check_labels_standard_shapes():
    labels = check_labels({"energy": [2.0], "forces": np.ones((2, 3)), "stress": np.arange(6.0), "x": 1}, 2, "w")
    assert labels["energy"] == 2.0 and isinstance(labels["energy"], float)
    assert labels["forces"].shape == (2, 3) and labels["stress"].shape == (3, 3) and "x" not in labels
    assert check_labels({"energy": None}, 2, "w") == {}


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        ({"energy": [1.0, 2.0]}, "energy label has shape"),
        ({"energy": "high"}, "malformed energy label"),
        ({"forces": np.zeros(6)}, r"forces label has shape \(6,\), expected \(2, 3\)"),
        ({"forces": np.zeros((3, 2))}, r"forces label has shape \(3, 2\)"),
        ({"stress": np.zeros(5)}, "malformed stress label"),
        ({"stress": np.full(6, np.inf)}, "stress label contains NaN or inf"),
    ],
)
def test_check_labels_rejects(labels, pattern):
    with pytest.raises(DataError, match=r"f\.xyz, frame 4: " + pattern):
        check_labels(labels, 2, "f.xyz, frame 4")


def test_check_cell():
    check_cell(np.zeros((3, 3)), [False] * 3, "w")  # not periodic: not looked at
    with pytest.raises(DataError, match="w: periodic lattice vector has zero length"):
        check_cell(np.diag([3.0, 3.0, 0.0]), [True, True, True], "w")
    with pytest.raises(DataError, match="w: cell has NaN or inf entries"):
        check_cell(np.diag([3.0, np.nan, 3.0]), [True, False, False], "w")


@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("nan"), float("inf")])
def test_check_cutoff(cutoff):
    with pytest.raises(ValueError, match="cutoff must be a finite number > 0"):
        check_cutoff(cutoff)


def test_reader_and_graph_reject_the_same_labels(tmp_path):
    """A frame read from a file and the same frame given to AtomicData meet the same check."""
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    bad = {"energy": -1.0, "forces": np.zeros((2, 3)), "stress": np.array([0.0, 0, 0, np.nan, 0, 0])}
    atoms.calc = SinglePointCalculator(atoms, **bad)
    path = tmp_path / "bad.xyz"
    write_frames(path, [atoms])
    with pytest.raises(DataError, match="frame 0: stress label contains NaN or inf") as from_file:
        read_frames(path)
    with pytest.raises(DataError, match="frame 0: stress label contains NaN or inf") as from_atoms:
        AtomicData.from_atoms(atoms, 3.0, labels=bad, source=str(path))
    assert str(from_file.value) == str(from_atoms.value)


def test_reader_and_graph_reject_the_same_overlap(tmp_path):
    close = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.05]])
    close.calc = SinglePointCalculator(close, energy=0.0, forces=np.zeros((2, 3)))
    path = tmp_path / "close.xyz"
    write_frames(path, [close])
    with pytest.raises(DataError) as from_file:
        read_frames(path)
    with pytest.raises(DataError) as from_atoms:
        AtomicData.from_atoms(close, 3.0, source=str(path))
    assert str(from_file.value) == str(from_atoms.value)
