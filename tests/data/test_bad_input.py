"""Each kind of bad input gets a clear error naming the file and the frame."""

import re

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

from gnnpot.data import AtomicData, DataError, build_graphs, read_frames


def labelled(atoms: Atoms, energy=-1.0, forces="zeros", stress=None) -> Atoms:
    atoms = atoms.copy()
    results = {}
    if energy is not None:
        results["energy"] = energy
    if forces is not None:
        results["forces"] = np.zeros((len(atoms), 3)) if isinstance(forces, str) else forces
    if stress is not None:
        results["stress"] = stress
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def good() -> Atoms:
    return labelled(molecule("H2O"))


def write(path, frames):
    ase.io.write(path, frames, format="extxyz")
    return path


def raises_at(path, frame, *patterns):
    """pytest.raises(DataError) whose message names ``path``, ``frame`` and each pattern."""
    return pytest.raises(
        DataError, match=re.escape(f"{path}, frame {frame}") + "".join(f"(?s:.*){p}" for p in patterns)
    )


def test_empty_file(tmp_path):
    path = tmp_path / "empty.xyz"
    path.write_text("")
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*empty"):
        read_frames(path)


def test_blank_file(tmp_path):
    path = tmp_path / "blank.xyz"
    path.write_text("\n\n")
    with pytest.raises(DataError, match=re.escape(str(path))):
        read_frames(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.xyz"):
        read_frames(tmp_path / "nothere.xyz")


def test_unparsable_file(tmp_path):
    path = tmp_path / "garbage.xyz"
    path.write_text("this is not\nan xyz file at all\n")
    with raises_at(path, 0, "cannot parse"):
        read_frames(path)


def test_truncated_second_frame(tmp_path):
    path = write(tmp_path / "truncated.xyz", [good(), good()])
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-2]) + "\n")  # frame 1 loses two of its three atoms
    with raises_at(path, 1, "cannot parse"):
        read_frames(path)


def test_missing_energy(tmp_path):
    path = write(tmp_path / "no_energy.xyz", [good(), labelled(molecule("H2O"), energy=None)])
    with raises_at(path, 1, "no energy label"):
        read_frames(path)
    assert len(read_frames(path, require=("forces",))) == 2  # not asked for: fine


def test_missing_forces(tmp_path):
    path = write(tmp_path / "no_forces.xyz", [good(), good(), labelled(molecule("H2O"), forces=None)])
    with raises_at(path, 2, "no forces label"):
        read_frames(path)
    frames = read_frames(path, require=("energy",))
    graphs = build_graphs(frames, 3.0)
    assert not graphs[2].has_label("forces") and graphs[1].has_label("forces")


def test_missing_mapped_label_names_the_key(tmp_path):
    path = write(tmp_path / "frames.xyz", [good()])
    with raises_at(path, 0, "no energy label", "REF_energy"):
        read_frames(path, key_map={"energy": "REF_energy"})


def test_nan_position(tmp_path):
    bad = good()
    bad.positions[1, 2] = np.nan
    path = write(tmp_path / "nan_pos.xyz", [good(), bad])
    with raises_at(path, 1, r"positions of atoms \[1\]", "NaN"):
        read_frames(path)


def test_inf_position_in_memory_graph():
    bad = good()
    bad.positions[0, 0] = np.inf
    with pytest.raises(DataError, match="mem.xyz, frame 7.*NaN or inf"):
        AtomicData.from_atoms(bad, 3.0, source="mem.xyz", frame_id=7)


def test_nan_energy(tmp_path):
    path = write(tmp_path / "nan_energy.xyz", [good(), good(), labelled(molecule("H2O"), energy=np.nan)])
    with raises_at(path, 2, "energy", "NaN or inf"):
        read_frames(path)


def test_inf_forces(tmp_path):
    forces = np.zeros((3, 3))
    forces[2, 1] = np.inf
    path = write(tmp_path / "inf_forces.xyz", [labelled(molecule("H2O"), forces=forces)])
    with raises_at(path, 0, "forces", "NaN or inf"):
        read_frames(path)


def test_nan_stress(tmp_path):
    atoms = labelled(bulk("Cu", "fcc", a=3.6), stress=np.array([np.nan, 0, 0, 0, 0, 0]))
    path = write(tmp_path / "nan_stress.xyz", [atoms])
    with raises_at(path, 0, "stress", "NaN or inf"):
        read_frames(path)


def test_overlapping_atoms(tmp_path):
    close = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.05]])
    path = write(tmp_path / "close.xyz", [good(), labelled(close)])
    with raises_at(path, 1, "atoms 0 and 1", "0.0500 Å apart"):
        read_frames(path)


def test_overlapping_periodic_images(tmp_path):
    """An atom 0.05 Å from the periodic image of another, across the cell boundary."""
    atoms = Atoms("Cu2", positions=[[0.01, 1, 1], [2.96, 1, 1]], cell=[3.0, 3.0, 3.0], pbc=True)
    path = write(tmp_path / "close_pbc.xyz", [labelled(atoms)])
    with raises_at(path, 0, "0.0500 Å apart"):
        read_frames(path)


def test_zero_volume_cell(tmp_path):
    atoms = Atoms("Cu", positions=[[0, 0, 0]], cell=[[3.0, 0, 0], [0, 3.0, 0], [1.5, 1.5, 0]], pbc=True)
    path = write(tmp_path / "flat.xyz", [labelled(bulk("Cu", "fcc", a=3.6)), labelled(atoms)])
    with raises_at(path, 1, "zero volume"):
        read_frames(path)


@pytest.mark.parametrize("cutoff", [0.0, -2.0])
def test_non_positive_cutoff(tmp_path, cutoff):
    frames = read_frames(write(tmp_path / "ok.xyz", [good()]))
    with pytest.raises(ValueError, match=f"cutoff must be a finite number > 0, got {cutoff}"):
        build_graphs(frames, cutoff)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'ok.xyz'}, frame 0") + ".*cutoff"):
        AtomicData.from_atoms(frames[0], cutoff, source=str(tmp_path / "ok.xyz"))


def test_bad_npz_layout(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*unknown npz layout"):
        read_frames(path)


def test_npz_nan_forces(tmp_path):
    path = tmp_path / "md17.npz"
    forces = np.zeros((3, 2, 3))
    forces[2, 0, 0] = np.nan
    coords = np.array([[[0, 0, 0], [0, 0, 0.74]]] * 3, dtype=float)
    np.savez(path, z=np.array([1, 1]), R=coords, E=np.zeros((3, 1)), F=forces)
    with raises_at(path, 2, "forces", "NaN or inf"):
        read_frames(path)


def test_frame_out_of_range(tmp_path):
    path = write(tmp_path / "two.xyz", [good(), good()])
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*frame 5.*2 frames"):
        read_frames(path, index=[0, 5])


def test_unknown_key_map_name(tmp_path):
    with pytest.raises(ValueError, match="key_map"):
        read_frames(write(tmp_path / "ok.xyz", [good()]), key_map={"charges": "q"})
