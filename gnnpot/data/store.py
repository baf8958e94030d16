"""An on-disk frame store (LMDB) for datasets larger than memory: ``gnnpot data convert``.

One LMDB record per frame, keyed by its index (8 bytes, big-endian), plus one metadata record.
LMDB was chosen over HDF5 by measurement (``python -m benchmarks.ondisk``, docs/ondisk.md): random
single-frame reads, the access pattern of a shuffled DataLoader, are the operation that matters.

A record is a small JSON header (atom count, cell, pbc, energy, which arrays follow, ``info``)
followed by the raw arrays (atomic numbers as uint8, positions, forces, stress and ASE's
``initial_charges`` as float64), so reading one never unpickles anything. The charges come last
and only when the frame has them, so records written before they were stored read the same.
Frames are checked (:func:`gnnpot.data.io.check_atoms`) once, when converted, and keep every digit
of their float64 values.

:class:`FrameStore` is a read-only ``Sequence[Atoms]`` that opens the database lazily in each
process, so DataLoader workers (forked or spawned) each get their own handle.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from gnnpot import keys
from gnnpot.data.checks import DataError
from gnnpot.data.io import frame_labels

FORMAT = "gnnpot-frames"
FORMAT_VERSION = 1
META_KEY = b"__meta__"
MAP_SIZE = 2**40  # 1 TiB of address space; the file grows with the data only (sparse)
_HEADER = struct.Struct("<I")  # length of the JSON header


def frame_key(index: int) -> bytes:
    """The LMDB key of frame ``index``: 8 bytes, big-endian, so keys sort as indices."""
    return int(index).to_bytes(8, "big")


def encode_frame(atoms: Atoms) -> bytes:
    """A frame with its calculator labels as bytes (see the module docstring)."""
    labels = frame_labels(atoms)
    arrays = [np.asarray(atoms.numbers, dtype=np.uint8), np.asarray(atoms.positions, dtype=np.float64)]
    header: dict[str, Any] = {
        "n": len(atoms),
        "cell": np.asarray(atoms.cell.array, dtype=np.float64).reshape(-1).tolist(),
        "pbc": [bool(p) for p in atoms.pbc],
        "energy": None if labels.get(keys.ENERGY) is None else float(labels[keys.ENERGY]),
        "forces": labels.get(keys.FORCES) is not None,
        "stress": labels.get(keys.STRESS) is not None,
        "info": _plain_info(atoms.info),
    }
    if header["forces"]:
        arrays.append(np.asarray(labels[keys.FORCES], dtype=np.float64))
    if header["stress"]:
        arrays.append(np.asarray(labels[keys.STRESS], dtype=np.float64).reshape(3, 3))
    if atoms.has("initial_charges"):  # for a long-range head's fixed charges (keys.CHARGES)
        header["charges"] = True
        arrays.append(np.asarray(atoms.get_initial_charges(), dtype=np.float64))
    text = json.dumps(header, separators=(",", ":")).encode()
    return _HEADER.pack(len(text)) + text + b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)


def decode_frame(data: bytes) -> Atoms:
    """The frame of :func:`encode_frame`, labels on a ``SinglePointCalculator``."""
    (length,) = _HEADER.unpack_from(data)
    header = json.loads(data[_HEADER.size : _HEADER.size + length])
    n, offset = header["n"], _HEADER.size + length

    def take(dtype: type, shape: tuple[int, ...]) -> np.ndarray:
        nonlocal offset
        count = int(np.prod(shape))
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += array.nbytes
        return array.copy()

    numbers = take(np.uint8, (n,)).astype(np.int64)
    positions = take(np.float64, (n, 3))
    atoms = Atoms(numbers=numbers, positions=positions, cell=np.reshape(header["cell"], (3, 3)), pbc=header["pbc"])
    atoms.info.update(header["info"])
    labels: dict[str, Any] = {}
    if header["energy"] is not None:
        labels[keys.ENERGY] = header["energy"]
    if header["forces"]:
        labels[keys.FORCES] = take(np.float64, (n, 3))
    if header["stress"]:
        labels[keys.STRESS] = take(np.float64, (3, 3))
    if header.get("charges"):
        atoms.set_initial_charges(take(np.float64, (n,)))
    atoms.calc = SinglePointCalculator(atoms, **labels)
    return atoms


def write_store(frames: Iterable[Atoms], path: str | Path, source: str = "<frames>", commit_every: int = 1000) -> int:
    """Write frames one by one into a new LMDB file at ``path`` (memory stays flat); returns the count.

    The database is built under a temporary name beside ``path`` and renamed when complete, so a
    killed conversion never leaves a half-written store that looks whole.
    """
    import lmdb

    from gnnpot import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    env = lmdb.open(str(temporary), map_size=MAP_SIZE, subdir=False, lock=False, sync=False)
    try:
        txn = env.begin(write=True)
        for atoms in frames:
            try:
                record = encode_frame(atoms)
            except DataError as err:
                raise DataError(f"{source}, frame {count}: {err}") from err
            txn.put(frame_key(count), record)
            count += 1
            if count % commit_every == 0:
                txn.commit()
                txn = env.begin(write=True)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "num_frames": count,
            "source": str(source),
            "units": dict(keys.UNITS),
            "gnnpot_version": __version__,
        }
        txn.put(META_KEY, json.dumps(meta).encode())
        txn.commit()
        env.sync(True)
    except BaseException:
        env.close()
        temporary.unlink(missing_ok=True)
        raise
    env.close()
    if count == 0:
        temporary.unlink(missing_ok=True)
        raise DataError(f"{source}: no frames to write")
    os.replace(temporary, path)
    return count


class FrameStore(Sequence[Atoms]):
    """Read-only frames of a store written by :func:`write_store`, read one at a time.

    Args:
        path: the ``.lmdb`` file.

    Raises:
        FileNotFoundError: no such file.
        DataError: not a gnnpot frame store, or one of a newer format.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file")
        self._env: Any = None
        self._pid: int | None = None
        with self._open().begin() as txn:
            raw = txn.get(META_KEY)
        try:
            meta = json.loads(raw) if raw is not None else {}
        except ValueError:
            meta = {}
        if meta.get("format") != FORMAT:
            raise DataError(f"{self.path}: not a gnnpot frame store (write one with gnnpot data convert)")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise DataError(f"{self.path}: frame store version {meta['format_version']} is newer than this gnnpot's")
        self.meta = meta
        self.source = str(self.path)

    def _open(self) -> Any:
        """This process's handle (a DataLoader worker opens its own)."""
        if self._pid != os.getpid():
            import lmdb

            if self._env is not None:  # inherited through fork: unusable here, and lmdb allows one per path
                self._env.close()
            try:
                self._env = lmdb.open(
                    str(self.path), subdir=False, readonly=True, lock=False, readahead=False, meminit=False
                )
            except lmdb.Error as err:
                raise DataError(f"{self.path}: not a readable LMDB file ({err})") from err
            self._pid = os.getpid()
        return self._env

    def __len__(self) -> int:
        return int(self.meta["num_frames"])

    @overload
    def __getitem__(self, index: int) -> Atoms: ...

    @overload
    def __getitem__(self, index: slice) -> list[Atoms]: ...

    def __getitem__(self, index: int | slice) -> Atoms | list[Atoms]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError(f"{self.path}: frame {index} out of range ({len(self)} frames)")
        with self._open().begin() as txn:
            data = txn.get(frame_key(position))
        if data is None:
            raise DataError(f"{self.path}, frame {position}: missing from the store")
        return decode_frame(data)

    def __iter__(self) -> Iterator[Atoms]:
        for index in range(len(self)):
            yield self[index]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_env": None, "_pid": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, frames={len(self)})"


def _plain_info(info: dict[str, Any]) -> dict[str, Any]:
    """``atoms.info`` as JSON values (numpy scalars and arrays become numbers and lists)."""
    plain = {}
    for key, value in info.items():
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        try:
            json.dumps(value)
        except TypeError as err:
            raise DataError(f"info entry {key!r} ({type(value).__name__}) cannot be stored: {err}") from err
        plain[str(key)] = value
    return plain
