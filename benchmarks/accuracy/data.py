"""The frames every model trains and is tested on, and the one error formula for all of them.

One folder per molecule under the work folder holds the split (gnnpot's ``split.json`` format, into
the rMD17 train file) and the same frames as extxyz in eV and Å for the peers: ``train.xyz``,
``val.xyz`` and ``test.xyz``. Labels are written twice, as ASE calculator results (``energy``,
``forces``: what NequIP's ``ASEDataModule`` reads) and as ``REF_energy``/``REF_forces`` (what
``mace_run_train`` reads), both from gnnpot's reader, so every model sees the same numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
from ase.data import chemical_symbols

from gnnpot.data.datamodule import split_indices
from gnnpot.data.io import Frames, read_frames

# The validation share and seed of the split: those of configs/<family>_rmd17.yaml (950 / 50).
VAL_FRACTION = 0.05
SPLIT_SEED = 0
MEV = 1000.0  # meV per eV


def rmd17_file(rmd17_dir: str | Path, molecule: str, part: str) -> Path:
    """``<rmd17_dir>/rmd17_<molecule>_<part>_01.npz`` (``part``: ``train`` or ``test``), split 01."""
    return Path(rmd17_dir) / f"rmd17_{molecule}_{part}_01.npz"


@dataclass(frozen=True)
class MoleculeData:
    """The files of one molecule's benchmark data.

    Attributes:
        molecule: rMD17 name (``ethanol``).
        train_npz: the rMD17 train file; ``split`` indexes it.
        test_npz: the rMD17 test file; the first ``test_frames`` frames are the test set.
        split: gnnpot split file (``{"train": {"file", "indices"}, "val": {...}}``).
        train_xyz: the training frames, extxyz in eV and Å.
        val_xyz: the validation frames.
        test_xyz: the test frames.
        num_train: training frames.
        num_val: validation frames.
        num_test: test frames.
        elements: chemical symbols present, sorted by atomic number.
    """

    molecule: str
    train_npz: Path
    test_npz: Path
    split: Path
    train_xyz: Path
    val_xyz: Path
    test_xyz: Path
    num_train: int
    num_val: int
    num_test: int
    elements: tuple[str, ...]


def write_extxyz(path: Path, frames: Frames) -> None:
    """Write ``frames`` as extxyz with their labels under the ASE names and as ``REF_*`` (eV, eV/Å)."""
    out = []
    for atoms in frames:
        copy = atoms.copy()
        copy.calc = atoms.calc
        copy.info["REF_energy"] = float(atoms.get_potential_energy())
        copy.arrays["REF_forces"] = np.array(atoms.get_forces(), dtype=float)
        out.append(copy)
    ase.io.write(path, out, format="extxyz")


def prepare(
    molecule: str, rmd17_dir: str | Path, folder: str | Path, train_frames: int | None, test_frames: int | None
) -> MoleculeData:
    """Decide the split of one molecule and write its files into ``folder`` (again each time: cheap).

    The split is gnnpot's seeded fraction split of the first ``train_frames`` frames of the train
    file (:func:`gnnpot.data.datamodule.split_indices`, ``VAL_FRACTION`` at seed ``SPLIT_SEED``):
    the split ``gnnpot fit --config configs/<family>_rmd17.yaml`` makes on its own.

    Args:
        molecule: rMD17 name.
        rmd17_dir: folder of ``rmd17_<molecule>_<train|test>_01.npz``.
        folder: where the split and the extxyz files go.
        train_frames: use the first this many frames of the train file; None: all (1000).
        test_frames: use the first this many frames of the test file; None: all (1000).

    Raises:
        FileNotFoundError: a missing rMD17 file.
    """
    train_npz, test_npz = rmd17_file(rmd17_dir, molecule, "train"), rmd17_file(rmd17_dir, molecule, "test")
    for path in (train_npz, test_npz):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no rMD17 file (see README.md, 'Reference DFT datasets')")
    frames = read_frames(train_npz, index=":" if train_frames is None else f":{train_frames}")
    test = read_frames(test_npz, index=":" if test_frames is None else f":{test_frames}")
    val, _, train = split_indices(len(frames), [VAL_FRACTION, 0.0], SPLIT_SEED)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    split = folder / "split.json"
    record = {
        "train": {"file": str(train_npz), "indices": train},
        "val": {"file": str(train_npz), "indices": val},
        "seed": SPLIT_SEED,
        "val_fraction": VAL_FRACTION,
    }
    split.write_text(json.dumps(record) + "\n")
    paths = {name: folder / f"{name}.xyz" for name in ("train", "val", "test")}
    write_extxyz(paths["train"], frames.select(train))
    write_extxyz(paths["val"], frames.select(val))
    write_extxyz(paths["test"], test)
    numbers = sorted({int(z) for atoms in frames for z in atoms.numbers})
    symbols = tuple(chemical_symbols[z] for z in numbers)
    return MoleculeData(
        molecule, train_npz, test_npz, split, paths["train"], paths["val"], paths["test"],
        len(train), len(val), len(test), symbols,
    )  # fmt: skip


@dataclass(frozen=True)
class Predictions:
    """Energies and forces of a set of frames, predicted or reference.

    Attributes:
        energy: total energy per frame [num_frames], eV.
        forces: forces of all atoms, frames one after another [num_atoms_total, 3], eV/Å.
        num_atoms: atoms per frame [num_frames].
    """

    energy: np.ndarray
    forces: np.ndarray
    num_atoms: np.ndarray

    @classmethod
    def of_frames(cls, frames: Frames) -> Predictions:
        """The reference labels of ``frames``."""
        return cls(
            np.array([atoms.get_potential_energy() for atoms in frames], dtype=float),
            np.concatenate([np.asarray(atoms.get_forces(), dtype=float) for atoms in frames]),
            np.array([len(atoms) for atoms in frames], dtype=np.int64),
        )

    @classmethod
    def load(cls, path: str | Path) -> Predictions:
        """Read the ``.npz`` of an evaluator (``energy``, ``forces``, ``num_atoms``)."""
        with np.load(path) as data:
            return cls(data["energy"].astype(float), data["forces"].astype(float), data["num_atoms"].astype(np.int64))

    def save(self, path: str | Path) -> None:
        """Write them as the ``.npz`` that :meth:`load` reads."""
        np.savez(path, energy=self.energy, forces=self.forces, num_atoms=self.num_atoms)


def errors(predicted: Predictions, reference: Predictions) -> dict[str, float]:
    """Mean absolute errors, the one formula for every model.

    Returns:
        ``force_mae`` (meV/Å, over all force components), ``energy_mae`` (meV per molecule) and
        ``energy_mae_per_atom`` (meV/atom: the mean of ``|ΔE| / N`` over frames).

    Raises:
        ValueError: the two sets differ in frames or atoms.
    """
    if not np.array_equal(predicted.num_atoms, reference.num_atoms) or predicted.forces.shape != reference.forces.shape:
        raise ValueError(
            f"predictions for {len(predicted.num_atoms)} frames of {int(predicted.num_atoms.sum())} atoms, "
            f"reference has {len(reference.num_atoms)} frames of {int(reference.num_atoms.sum())} atoms"
        )
    energy_error = np.abs(predicted.energy - reference.energy)
    return {
        "force_mae": float(MEV * np.mean(np.abs(predicted.forces - reference.forces))),
        "energy_mae": float(MEV * np.mean(energy_error)),
        "energy_mae_per_atom": float(MEV * np.mean(energy_error / reference.num_atoms)),
    }
