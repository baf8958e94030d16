"""``AtomsDataModule``: train, validation and test graphs from files, for Lightning.

Where each split comes from:
    * its own file (``val_file``, ``test_file``), used whole, or
    * seeded fractions of ``train_file`` (``val_fraction``, ``test_fraction``), or
    * a split file naming frame indices of each split (``split_file``).

Each split reads its own file when one is given, else ``train_file``. The split is written
as ``split.json`` to ``run_dir`` (or the trainer's log directory), and that file can be passed
back as ``split_file`` to repeat it. Graphs are built once and kept in memory, except for an
on-disk frame store (``.lmdb``, written by ``gnnpot data convert``): its frames are read and their
graphs built when a batch asks for them, in the DataLoader workers (``num_workers``), so memory
stays flat however large the dataset. Under DDP, Lightning's distributed sampler gives each
process its own shard of the indices, so each reads only its own frames.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch_geometric.loader import DataLoader

from gnnpot import keys
from gnnpot.data.atomic_data import AtomicData
from gnnpot.data.checks import DataError, check_cutoff
from gnnpot.data.io import DEFAULT_REQUIRE, Frames, build_graphs, frame_labels, read_frames
from gnnpot.data.store import FrameStore

SPLITS = ("train", "val", "test")
SPLIT_FORMAT = "gnnpot-split/1"
SPLIT_FILE_NAME = "split.json"


class AtomsDataModule(L.LightningDataModule):
    """Train/val/test radius graphs of labelled structures.

    Args:
        train_file: training structures (any format :func:`~gnnpot.data.io.read_frames` reads).
        val_file: validation structures, used whole; else ``val_fraction`` of ``train_file``.
        test_file: test structures, used whole; else ``test_fraction`` of ``train_file``.
        val_fraction: share of ``train_file`` for validation when there is no ``val_file``.
        test_fraction: share of ``train_file`` for testing when there is no ``test_file``.
        split_file: frame indices per split, instead of fractions. Either JSON, as the
            ``split.json`` this module writes or ``{"train": [0, 3, ...], "val": [...]}``, or
            text with one line per split, ``train: 0 3 5 ...``. The indices select from the
            split's own file if given, else from ``train_file``. A split it leaves out is
            empty unless it has its own file.
        seed: seeds the fraction split and the shuffling of training batches.
        cutoff: neighbour-list radius, Å.
        batch_size: training batch size (frames).
        val_batch_size: validation and test batch size, default ``batch_size``.
        num_workers: data-loader worker processes.
        key_map: label names in the files, e.g. ``{"energy": "REF_energy"}``.
        require: labels every frame must carry.
        run_dir: where ``split.json`` goes; default the trainer's ``log_dir`` when attached.
    """

    def __init__(
        self,
        train_file: str,
        val_file: str | None = None,
        test_file: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        split_file: str | None = None,
        seed: int = 0,
        cutoff: float = 5.0,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        key_map: dict[str, str] | None = None,
        require: tuple[str, ...] = DEFAULT_REQUIRE,
        run_dir: str | None = None,
    ) -> None:
        super().__init__()
        for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= fraction < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {fraction!r}")
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.save_hyperparameters()
        self.files = {"train": train_file, "val": val_file or train_file, "test": test_file or train_file}
        self.own_file = {"train": True, "val": val_file is not None, "test": test_file is not None}
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_file = split_file
        self.seed = seed
        self.cutoff = check_cutoff(cutoff)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.key_map = dict(key_map or {})
        self.require = tuple(require)
        self.run_dir = run_dir
        self.split: dict[str, list[int]] | None = None
        self.graphs: dict[str, list[AtomicData]] = {}
        self._frames: dict[str, Frames | FrameStore] = {}

    # --- Lightning hooks -------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Read the files, decide the split, build every graph (once) and write ``split.json``."""
        if self.split is None:
            self.split = self._decide_split()
            for name in SPLITS:
                source = self._read(self.files[name])
                if isinstance(source, FrameStore):
                    self.graphs[name] = LazyGraphs(source, self.split[name], self.cutoff)
                else:
                    self.graphs[name] = build_graphs(source.select(self.split[name]), self.cutoff)
        out = self.run_dir
        if out is None and self.trainer is not None:
            out = self.trainer.log_dir
            if self.trainer.global_rank != 0:
                out = None
        if out is not None:
            self.write_split(Path(out) / SPLIT_FILE_NAME)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches, in an order that depends on the seed and the epoch only.

        A run resumed at epoch k then sees the batches an uninterrupted run sees at epoch k
        (Lightning calls the sampler's ``set_epoch``); a generator carried over epochs would
        restart from the seed instead.
        """
        sampler = EpochShuffle(len(self._graphs("train")), self.seed)
        return self._loader("train", self.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches in file order (an empty list when there is no validation split)."""
        return self._loader("val", self.val_batch_size) if self.graphs.get("val") else []

    def test_dataloader(self) -> DataLoader | list:
        """Test batches in file order (an empty list when there is no test split)."""
        return self._loader("test", self.val_batch_size) if self.graphs.get("test") else []

    # --- public helpers ----------------------------------------------------------------------

    @property
    def train_data(self) -> list[AtomicData]:
        """The training graphs."""
        return self._graphs("train")

    @property
    def val_data(self) -> list[AtomicData]:
        """The validation graphs."""
        return self._graphs("val")

    @property
    def test_data(self) -> list[AtomicData]:
        """The test graphs."""
        return self._graphs("test")

    @property
    def elements(self) -> list[int]:
        """Atomic numbers present in the training graphs, sorted."""
        return sorted({int(z) for data in self.train_data for z in data[keys.ATOMIC_NUMBERS].tolist()})

    def write_split(self, path: str | Path) -> None:
        """Write the split (files, frame indices, seed and fractions) as JSON."""
        if self.split is None:
            raise RuntimeError("call setup() before write_split()")
        record: dict[str, Any] = {
            "format": SPLIT_FORMAT,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "split_file": self.split_file,
            "cutoff": self.cutoff,
            "units": dict(keys.UNITS),
        }
        for name in SPLITS:
            record[name] = {"file": str(self.files[name]), "indices": self.split[name]}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")

    def __repr__(self) -> str:
        sizes = {name: len(self.graphs[name]) for name in self.graphs}
        return f"{type(self).__name__}(files={self.files}, cutoff={self.cutoff}, sizes={sizes or 'not set up'})"

    # --- internals -----------------------------------------------------------------------------

    def _graphs(self, name: str) -> list[AtomicData]:
        if name not in self.graphs:
            raise RuntimeError(f"call setup() before reading {name} data")
        return self.graphs[name]

    def _loader(self, name: str, batch_size: int, shuffle: bool = False, **kwargs: Any) -> DataLoader:
        return DataLoader(
            self._graphs(name),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def _read(self, path: str) -> Frames | FrameStore:
        key = str(Path(path).resolve())
        if key not in self._frames:
            if Path(path).suffix == ".lmdb":
                self._frames[key] = FrameStore(path)  # checked and labelled when converted
            else:
                self._frames[key] = read_frames(path, key_map=self.key_map, require=self.require)
        return self._frames[key]

    def _decide_split(self) -> dict[str, list[int]]:
        """Frame indices of each split, into that split's file."""
        if self.split_file is not None:
            split = self._split_from_file(Path(self.split_file))
        else:
            split = self._split_by_fraction()
        by_file: dict[str, list[str]] = {}
        for name in SPLITS:
            num_frames = len(self._read(self.files[name]))
            bad = [k for k in split[name] if not 0 <= k < num_frames]
            if bad:
                raise DataError(f"{self.files[name]}: {name} split asks for frames {bad[:5]}, file has {num_frames}")
            by_file.setdefault(str(Path(self.files[name]).resolve()), []).append(name)
        for names in by_file.values():
            for a, b in ((a, b) for k, a in enumerate(names) for b in names[k + 1 :]):
                common = np.intersect1d(split[a], split[b]).tolist()  # no sets of a million ints
                if common:
                    raise DataError(
                        f"{self.files[a]}: {a} and {b} splits share frames {common[:5]}"
                        f"{' ...' if len(common) > 5 else ''}"
                    )
        if not split["train"]:
            raise DataError(f"{self.files['train']}: the training split is empty")
        return split

    def _split_by_fraction(self) -> dict[str, list[int]]:
        num_frames = len(self._read(self.files["train"]))
        fractions = [
            0.0 if self.own_file[name] else fraction
            for name, fraction in (("val", self.val_fraction), ("test", self.test_fraction))
        ]
        val, test, train = split_indices(num_frames, fractions, self.seed)
        split = {"train": train, "val": val, "test": test}
        for name in ("val", "test"):
            if self.own_file[name]:
                split[name] = list(range(len(self._read(self.files[name]))))
        return split

    def _split_from_file(self, path: Path) -> dict[str, list[int]]:
        listed = _read_split_file(path)
        split = {}
        for name in SPLITS:
            entry = listed.get(name)
            if entry is None:
                split[name] = list(range(len(self._read(self.files[name])))) if self.own_file[name] else []
                continue
            indices, file = entry
            if file is not None and Path(file).resolve() != Path(self.files[name]).resolve():
                raise DataError(
                    f"{path}: the {name} split indexes {file}, but {name} frames are read from {self.files[name]}"
                )
            split[name] = indices
        return split


def _read_split_file(path: Path) -> dict[str, tuple[list[int], str | None]]:
    """``{split: (indices, file or None)}`` from a JSON or text split file."""
    text = path.read_text()
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise ValueError(f"expected a JSON object with keys among {SPLITS}")
            listed = {}
            for name in SPLITS:
                entry = raw.get(name)
                if isinstance(entry, dict):
                    listed[name] = ([int(k) for k in entry["indices"]], entry.get("file"))
                elif entry is not None:
                    listed[name] = ([int(k) for k in entry], None)
            return listed
        listed = {}
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, _, values = line.partition(":")
            if name.strip() not in SPLITS:
                raise ValueError(f"line {line!r} does not start with one of {SPLITS} and ':'")
            listed[name.strip()] = ([int(k) for k in values.split()], None)
        return listed
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a split file ({err})") from err


class LazyGraphs(torch.utils.data.Dataset):
    """Graphs of frames in an on-disk store, built when indexed (in the DataLoader's workers).

    Args:
        store: the frames.
        indices: which frames of ``store``, in order.
        cutoff: neighbour radius, Å.
    """

    def __init__(self, store: FrameStore, indices: Sequence[int], cutoff: float) -> None:
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.cutoff = check_cutoff(cutoff)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> AtomicData:
        frame_id = int(self.indices[position])
        atoms = self.store[frame_id]
        return AtomicData.from_atoms(
            atoms,
            self.cutoff,
            labels=frame_labels(atoms),
            source=self.store.source,
            frame_id=frame_id,
            dtype=torch.float64,
        )  # float64 as build_graphs: the model casts to its own dtype

    def __iter__(self) -> Iterator[AtomicData]:
        for position in range(len(self)):
            yield self[position]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store.path}, frames={len(self)}, cutoff={self.cutoff})"


class EpochShuffle(torch.utils.data.Sampler[int]):
    """A random permutation of ``range(num_items)`` for each epoch, seeded by ``(seed, epoch)``.

    Args:
        num_items: dataset size.
        seed: base seed.
    """

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every training epoch."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng((self.seed, self.epoch)).permutation(self.num_items).tolist())

    def __len__(self) -> int:
        return self.num_items


def split_indices(num_frames: int, fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Seeded disjoint subsets of ``range(num_frames)`` of the given fractions, plus the rest.

    Returns ``len(fractions) + 1`` sorted index lists; the last holds the remaining frames.
    """
    order = np.random.default_rng(seed).permutation(num_frames)
    parts, start = [], 0
    for fraction in fractions:
        count = int(round(fraction * num_frames))
        parts.append(sorted(order[start : start + count].tolist()))
        start += count
    parts.append(sorted(order[start:].tolist()))
    return parts
