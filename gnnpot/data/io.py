"""Read labelled structures from files, check them, write them, and turn them into graphs.

Every reader returns :class:`Frames`: ``ase.Atoms`` whose labels sit on a
``SinglePointCalculator`` under the standard names ``energy`` (eV), ``forces`` (eV/Å) and
``stress`` (eV/Å³, ASE sign), whatever the file called them and whatever unit it used. The
``Frames`` carry the source path, each frame's index in that file and the units
(:data:`gnnpot.keys.UNITS`).

Supported inputs:
    * anything ``ase.io.read`` reads (extxyz first): labels are looked up in the calculator
      results, then ``atoms.info``, then ``atoms.arrays``, under the names of ``key_map``;
    * ASE databases (``.db``): calculator results, then key-value pairs, then ``row.data``;
    * MD17 and rMD17 ``.npz`` (``z, R, E, F`` or ``nuclear_charges, coords, energies, forces``),
      converted from kcal/mol to eV.

Bad input raises :class:`DataError` naming the file and the frame; no frame is ever dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from gnnpot import keys
from gnnpot.data.atomic_data import AtomicData
from gnnpot.data.checks import (
    DataError,
    check_cell,
    check_cutoff,
    check_labels,
    check_min_distance,
    check_numbers,
    check_positions,
    stress_matrix,
)
from gnnpot.data.neighbors import neighbor_list_arrays

# Label names a key map may redirect. ``virial`` (eV, -V * stress) is read only when no stress is.
LABEL_NAMES = (keys.ENERGY, keys.FORCES, keys.STRESS, "virial")
DEFAULT_REQUIRE = (keys.ENERGY, keys.FORCES)
# Why a label can be missing from an ASE database: sqlite stores a NaN float as NULL.
DB_NAN_NOTE = "an ASE database stores a NaN value as an empty one"
# Radius of the neighbour search for overlapping atoms, Å. Larger than MIN_DISTANCE because
# vesin's cell list has bins of the cutoff's size, which at 0.1 Å would be millions of bins.
_CLOSE_CONTACT_RADIUS = 1.0

# kcal/mol -> eV, and the label keys of the two MD17 npz layouts.
KCAL_MOL = units.kcal / units.mol
_MD17_KEYS = {
    "rmd17": ("nuclear_charges", "coords", "energies", "forces"),
    "md17": ("z", "R", "E", "F"),
}
_NPZ_ENERGY_UNITS = {"kcal/mol": KCAL_MOL, "ev": 1.0}

Index = int | str | slice | Sequence[int]


@dataclass
class Frames(Sequence[Atoms]):
    """Labelled structures read from one file, in eV and Å.

    Attributes:
        atoms: the structures; labels on ``atoms.calc`` (see :func:`frame_labels`).
        source: the file they came from (used in error messages).
        frame_ids: index of each structure in ``source``.
        units: units of positions and labels, :data:`gnnpot.keys.UNITS`.
    """

    atoms: list[Atoms]
    source: str = "<memory>"
    frame_ids: list[int] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=lambda: dict(keys.UNITS))

    def __post_init__(self) -> None:
        if not self.frame_ids:
            self.frame_ids = list(range(len(self.atoms)))
        if len(self.frame_ids) != len(self.atoms):
            raise ValueError(f"{len(self.atoms)} frames but {len(self.frame_ids)} frame ids")

    def __len__(self) -> int:
        return len(self.atoms)

    @overload
    def __getitem__(self, index: int) -> Atoms: ...

    @overload
    def __getitem__(self, index: slice) -> Frames: ...

    def __getitem__(self, index: int | slice) -> Atoms | Frames:
        if isinstance(index, slice):
            return self.select(range(len(self))[index])
        return self.atoms[index]

    def __iter__(self) -> Iterator[Atoms]:
        return iter(self.atoms)

    def select(self, positions: Sequence[int]) -> Frames:
        """The frames at ``positions`` (positions in this list, not source frame ids)."""
        positions = [int(p) for p in positions]
        return Frames(
            [self.atoms[p] for p in positions],
            self.source,
            [self.frame_ids[p] for p in positions],
            dict(self.units),
        )

    def where(self, position: int) -> str:
        """``"file, frame k"`` for error messages."""
        return f"{self.source}, frame {self.frame_ids[position]}"

    def __repr__(self) -> str:
        return f"Frames(source={self.source!r}, num_frames={len(self)}, units={self.units})"


def read_frames(
    path: str | Path,
    index: Index = ":",
    key_map: Mapping[str, str] | None = None,
    require: Sequence[str] = DEFAULT_REQUIRE,
    format: str | None = None,
) -> Frames:
    """Read labelled structures, convert them to eV/Å and check them.

    Args:
        path: an extxyz (or any ``ase.io`` format), ASE ``.db`` or MD17/rMD17 ``.npz`` file.
        index: which frames: an int, a slice string (``":"``, ``"10:20"``, ``"::2"``), a
            ``slice`` or a list of frame indices. Frame ids stay those of the file.
        key_map: where each label is stored, e.g. ``{"energy": "REF_energy", "forces":
            "DFT_forces"}``; names not given are looked up under their own name. Keys may be
            ``energy``, ``forces``, ``stress`` and ``virial`` (``stress = -virial / volume``).
        require: labels every frame must have, default energy and forces. A one-atom frame
            without forces gets zero forces, which translation invariance makes exact.
        format: ``ase.io`` format name, guessed from the file when ``None``.

    Returns:
        The frames, labels on a ``SinglePointCalculator`` under the standard names.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: an empty or unparsable file, a missing required label, or a frame that
            :func:`check_atoms` rejects; the message names the file and frame.
    """
    path = Path(path)
    key_map = _check_key_map(key_map)
    for name in require:
        if name not in (keys.ENERGY, keys.FORCES, keys.STRESS):
            raise ValueError(f"require must name energy, forces or stress, got {name!r}")
    check_readable(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file, no frames")
    source = str(path)
    if path.suffix == ".npz" and format is None:
        atoms_list = _read_npz(path)
    elif path.suffix == ".db" and format is None:
        atoms_list = _read_db(path)
    elif path.suffix == ".lmdb" and format is None:
        from gnnpot.data.store import FrameStore  # the on-disk format holds checked frames already

        store = FrameStore(path)
        ids = _select(index, len(store), source)
        return Frames([store[i] for i in ids], source, ids)
    else:
        atoms_list = _read_ase(path, format)
    if not atoms_list:
        raise DataError(f"{source}: no frames found")
    ids = _select(index, len(atoms_list), source)
    missing_note = f" ({DB_NAN_NOTE})" if path.suffix == ".db" else ""
    frames = []
    for frame_id in ids:
        frames.append(_labelled(atoms_list[frame_id], key_map, require, f"{source}, frame {frame_id}", missing_note))
    return Frames(frames, source, ids)


def stream_frames(
    path: str | Path,
    key_map: Mapping[str, str] | None = None,
    require: Sequence[str] = DEFAULT_REQUIRE,
    format: str | None = None,
) -> Iterator[Atoms]:
    """The frames of an ``ase.io`` file one at a time, checked and labelled as :func:`read_frames` does.

    Memory stays flat however long the file is (ASE's extxyz reader keeps only frame offsets).
    ``.npz`` and ``.db`` files are read whole by :func:`read_frames` and then yielded.

    Raises:
        DataError: as :func:`read_frames`, naming the file and frame.
    """
    path = Path(path)
    if path.suffix in (".npz", ".db", ".lmdb") and format is None:
        yield from read_frames(path, key_map=key_map, require=require)
        return
    key_map = _check_key_map(key_map)
    check_readable(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file, no frames")
    for frame_id, atoms in enumerate(_iter_ase(path, format)):
        yield _labelled(atoms, key_map, require, f"{path}, frame {frame_id}")


def _labelled(
    atoms: Atoms, key_map: Mapping[str, str], require: Sequence[str], where: str, missing_note: str = ""
) -> Atoms:
    """``atoms`` checked, its labels moved onto a ``SinglePointCalculator`` under the standard names."""
    labels = check_atoms(atoms, _extract_labels(atoms, key_map, require, where, missing_note), where)
    for name in keys.LABEL_KEYS:  # labels live on the calculator only, so writing is unambiguous
        atoms.info.pop(name, None)
        if name in atoms.arrays:
            del atoms.arrays[name]
    atoms.calc = SinglePointCalculator(atoms, **labels)
    return atoms


def write_frames(path: str | Path, frames: Sequence[Atoms]) -> None:
    """Write structures and their calculator labels as extended XYZ."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import ase.io  # imported when used: ase.io pulls in scipy (~40 MB of memory)

    ase.io.write(path, list(frames), format="extxyz")


def check_readable(path: Path) -> None:
    """Raise a clear error when ``path`` is not a regular file this process can read.

    Raises:
        FileNotFoundError: no such file.
        DataError: a directory, a special file, or a file without read permission.
    """
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file, expected a data file")
    try:
        with path.open("rb"):
            pass
    except PermissionError as err:
        raise DataError(f"{path}: permission denied, cannot read the file") from err


def frame_labels(atoms: Atoms) -> dict[str, Any]:
    """The ``energy``, ``forces`` and ``stress`` of a frame read by :func:`read_frames`.

    Labels are the calculator results; a label the frame lacks is not in the dict.
    """
    results = atoms.calc.results if atoms.calc is not None else {}
    return {name: results[name] for name in keys.LABEL_KEYS if results.get(name) is not None}


def build_graphs(
    frames: Sequence[Atoms], cutoff: float, source: str | None = None, dtype: torch.dtype = torch.float64
) -> list[AtomicData]:
    """Radius graphs of labelled frames, ready for batching.

    Every graph carries all three labels; one a frame lacks is NaN with loss weight 0. Positions,
    cells and labels are kept in float64 by default, as read: a model casts positions to its own
    dtype, and the loss and metrics cast labels to the prediction's, so a float64 model
    (``--trainer.precision 64-true``) sees every digit of the data and a float32 one the same
    numbers as from float32 graphs.

    Args:
        frames: :class:`Frames` (their source and frame ids are kept) or a list of ``Atoms``
            labelled through their calculator.
        cutoff: neighbour-list radius, Å.
        source: file name for error messages; defaults to ``frames.source``.
        dtype: float dtype of positions, cells and labels.

    Raises:
        ValueError: ``cutoff`` is not a finite number > 0.
        DataError: a frame is invalid (named by file and frame).
    """
    cutoff = check_cutoff(cutoff)
    if isinstance(frames, Frames):
        source = source or frames.source
        frame_ids = frames.frame_ids
    else:
        frame_ids = list(range(len(frames)))
    source = source or "<atoms>"
    return [
        AtomicData.from_atoms(atoms, cutoff, labels=frame_labels(atoms), source=source, frame_id=frame_id, dtype=dtype)
        for atoms, frame_id in zip(frames, frame_ids, strict=True)
    ]


def check_atoms(atoms: Atoms, labels: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check a frame as it is read, with the checks of :mod:`gnnpot.data.checks`.

    Rejects NaN or inf positions, a degenerate periodic cell, malformed labels and atoms closer
    than :data:`~gnnpot.data.checks.MIN_DISTANCE`, whatever the cutoff the graphs get later.

    Args:
        atoms: the structure; positions in Å.
        labels: its labels in standard names: ``energy`` (eV), ``forces`` ([N, 3], eV/Å),
            ``stress`` ([3, 3] or Voigt [6], eV/Å³).
        where: ``"file, frame k"`` for the message.

    Returns:
        The labels in standard shapes (see :func:`~gnnpot.data.checks.check_labels`).

    Raises:
        DataError: the first problem found, naming ``where``.
    """
    if len(atoms) == 0:
        raise DataError(f"{where}: the frame has no atoms")
    check_numbers(atoms.numbers, where)
    pos = np.asarray(atoms.positions, dtype=np.float64)
    check_positions(pos, where)
    check_cell(atoms.cell.array, atoms.pbc, where)
    labels = check_labels(labels, len(atoms), where)
    try:
        i, j, shifts = neighbor_list_arrays(pos, atoms.cell.array, atoms.pbc, _CLOSE_CONTACT_RADIUS)
    except ValueError as err:
        raise DataError(f"{where}: {err}") from err
    check_min_distance(i, j, np.linalg.norm(pos[j] - pos[i] + shifts @ atoms.cell.array, axis=1), where)
    return labels


def read_index_file(path: str | Path) -> list[int]:
    """Frame indices from a JSON list or a text file of whitespace-separated integers."""
    path = Path(path)
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix == ".json" else [int(tok) for tok in text.split()]
        indices = [int(v) for v in values]
    except (ValueError, TypeError) as err:
        raise DataError(f"{path}: expected a list of integer frame indices ({err})") from err
    return indices


# --- readers ------------------------------------------------------------------------------


def _read_ase(path: Path, format: str | None) -> list[Atoms]:
    return list(_iter_ase(path, format))


def _iter_ase(path: Path, format: str | None) -> Iterator[Atoms]:
    """``ase.io.iread`` with its many exception types turned into a :class:`DataError` naming the frame."""
    import ase.io

    count = 0
    try:
        for atoms in ase.io.iread(path, index=":", format=format):
            yield atoms
            count += 1
    except Exception as err:  # ase raises many types for a malformed file
        # ase's xyz readers index the whole file before the first frame, so a broken frame 5000
        # fails with no frame read; find the frame that is really broken.
        located = _locate_xyz_error(path) if (format or path.suffix.lstrip(".")) in _XYZ_FORMATS else None
        if located is not None:
            frame, line, problem = located
            raise DataError(f"{path}, frame {frame} (line {line}): cannot parse file, {problem}") from err
        reason = " ".join(str(err).split())
        raise DataError(f"{path}, frame {count}: cannot parse file ({type(err).__name__}: {reason})") from err


_XYZ_FORMATS = ("xyz", "extxyz")


def _locate_xyz_error(path: Path) -> tuple[int, int, str] | None:
    """``(frame, line, problem)`` of the first broken frame of an (extended) XYZ file, or ``None``.

    Walks the frames by their atom-count lines (this is the layout, not the parser), then parses
    the frames one at a time with ASE: a layout error names the frame where the layout breaks, a
    parse error the frame ASE cannot read. Runs only after ASE failed, so a good file pays nothing.
    """
    import io

    import ase.io

    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    chunks: list[tuple[int, int]] = []  # first and end line of each frame
    start = 0
    while start < len(lines):
        if not any(line.strip() for line in lines[start:]):
            break  # blank lines at the end
        frame = len(chunks)
        try:
            text = lines[start].decode()
        except UnicodeDecodeError:
            return frame, start + 1, "not UTF-8 text"
        try:
            natoms = int(text.strip())
        except ValueError:
            hint = f"; the atom count of frame {frame - 1} may be too small" if frame else ""
            return frame, start + 1, f"expected an atom count, got {text.strip()[:60]!r}{hint}"
        end = start + 2 + natoms
        if natoms < 0 or end > len(lines):
            return frame, start + 1, f"{natoms} atoms announced, the file ends before them"
        for number in range(start + 1, end):
            try:
                fields = lines[number].decode().split()
            except UnicodeDecodeError:
                return frame, number + 1, "not UTF-8 text"
            if number > start + 1 and len(fields) < 4:
                return (
                    frame,
                    number + 1,
                    f"atom line with {len(fields)} field(s), expected a species and x y z; "
                    f"is the atom count {natoms} right?",
                )
        chunks.append((start, end))
        start = end
    for frame, (first, end) in enumerate(chunks):
        text = b"\n".join(lines[first:end]).decode() + "\n"
        try:
            ase.io.read(io.StringIO(text), format="extxyz")
        except Exception as err:
            reason = " ".join(str(err).split())
            return frame, first + 1, f"{type(err).__name__}: {reason}"
    return None


def _read_db(path: Path) -> list[Atoms]:
    import ase.db

    frames: list[Atoms] = []
    try:
        with ase.db.connect(path) as db:
            for row in db.select():
                atoms = row.toatoms()
                atoms.info.update(row.key_value_pairs)
                atoms.info.update(row.data)
                frames.append(atoms)
    except Exception as err:
        raise DataError(f"{path}, frame {len(frames)}: cannot read ASE database ({type(err).__name__}: {err})") from err
    return frames


def _read_npz(path: Path) -> list[Atoms]:
    """MD17 (``z, R, E, F``) or rMD17 (``nuclear_charges, coords, energies, forces``), kcal/mol."""
    try:
        npz = np.load(path)
        found = set(npz.files)
    except Exception as err:
        raise DataError(f"{path}: cannot read npz file ({type(err).__name__}: {err})") from err
    for layout in _MD17_KEYS.values():
        if set(layout) <= found:
            z_key, pos_key, energy_key, forces_key = layout
            break
    else:
        raise DataError(
            f"{path}: unknown npz layout with keys {sorted(found)}; expected rMD17 "
            f"{list(_MD17_KEYS['rmd17'])} or MD17 {list(_MD17_KEYS['md17'])}"
        )

    def array(key: str, dtype: type) -> np.ndarray:
        try:  # object arrays are refused (allow_pickle=False), text or other junk fails to convert
            return np.asarray(npz[key], dtype=dtype)
        except Exception as err:
            raise DataError(f"{path}: array {key!r} is not {dtype.__name__} numbers ({err})") from err

    unit = str(array("e_unit", str)).strip().lower() if "e_unit" in found else "kcal/mol"
    if unit not in _NPZ_ENERGY_UNITS:
        raise DataError(f"{path}: energy unit {unit!r} not understood (known: {sorted(_NPZ_ENERGY_UNITS)})")
    to_ev = _NPZ_ENERGY_UNITS[unit]
    numbers = array(z_key, np.int64).reshape(-1)
    coords = array(pos_key, np.float64)
    energies = array(energy_key, np.float64).reshape(-1)
    forces = array(forces_key, np.float64)
    shape = (len(coords), len(numbers), 3)
    if coords.shape != shape or forces.shape != shape or energies.shape != (len(coords),):
        raise DataError(
            f"{path}: inconsistent shapes: {z_key} {numbers.shape}, {pos_key} {coords.shape}, "
            f"{energy_key} {energies.shape}, {forces_key} {forces.shape}"
        )
    frames = []
    for pos, energy, force in zip(coords, energies, forces, strict=True):
        atoms = Atoms(numbers=numbers, positions=pos, pbc=False)
        atoms.calc = SinglePointCalculator(atoms, energy=energy * to_ev, forces=force * to_ev)
        frames.append(atoms)
    return frames


# --- labels and indices ---------------------------------------------------------------------


def _check_key_map(key_map: Mapping[str, str] | None) -> dict[str, str]:
    key_map = dict(key_map or {})
    unknown = sorted(set(key_map) - set(LABEL_NAMES))
    if unknown:
        raise ValueError(f"key_map keys must be among {list(LABEL_NAMES)}, got {unknown}")
    return key_map


def _lookup(atoms: Atoms, key: str) -> Any:
    """A label stored under ``key``: calculator results, then info, then per-atom arrays."""
    if atoms.calc is not None and atoms.calc.results.get(key) is not None:
        return atoms.calc.results[key]
    if atoms.info.get(key) is not None:
        return atoms.info[key]
    return atoms.arrays.get(key)


def _extract_labels(
    atoms: Atoms, key_map: Mapping[str, str], require: Sequence[str], where: str, missing_note: str = ""
) -> dict[str, Any]:
    labels: dict[str, Any] = {}
    for name in (keys.ENERGY, keys.FORCES, keys.STRESS):
        value = _lookup(atoms, key_map.get(name, name))
        if value is not None:
            labels[name] = value
    if keys.STRESS not in labels:
        virial = _lookup(atoms, key_map.get("virial", "virial"))
        if virial is not None:
            labels[keys.STRESS] = _virial_to_stress(virial, atoms, where)
    if keys.FORCES not in labels and len(atoms) == 1:
        labels[keys.FORCES] = np.zeros((1, 3))
    for name in require:
        if name not in labels:
            key = key_map.get(name, name)
            raise DataError(
                f"{where}: no {name} label (looked for {key!r} in calculator results, info and arrays){missing_note}"
            )
    return labels


def _virial_to_stress(virial: Any, atoms: Atoms, where: str) -> np.ndarray:
    if not atoms.pbc.all():
        raise DataError(f"{where}: a virial label needs a periodic cell to convert to stress")
    try:
        matrix = stress_matrix(virial)
    except (ValueError, TypeError) as err:
        raise DataError(f"{where}: malformed virial label ({err})") from err
    return -matrix / atoms.get_volume()


def _select(index: Index, num_frames: int, source: str) -> list[int]:
    """Frame ids picked by ``index`` out of ``num_frames``."""
    if isinstance(index, str):
        text = index.strip()
        if ":" in text:
            parts = [int(p) if p.strip() else None for p in text.split(":")]
            if len(parts) > 3:
                raise ValueError(f"index {index!r} is not a slice")
            index = slice(*parts)
        else:
            index = int(text)
    if isinstance(index, slice):
        return list(range(num_frames)[index])
    picked = [index] if isinstance(index, int | np.integer) else list(index)
    ids = []
    for k in picked:
        k = int(k)
        if not -num_frames <= k < num_frames:
            raise DataError(f"{source}: frame {k} requested, but the file has {num_frames} frames")
        ids.append(k % num_frames)
    return ids
