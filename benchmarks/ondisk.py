r"""Datasets larger than memory: LMDB against HDF5 for random frame reads, and peak training memory by size.

Part 1 (``--read``): the same synthetic frames (about 100 atoms each) written as gnnpot's LMDB
frame store and as HDF5 (one array per field, all frames concatenated, with offsets: the layout
schnetpack and many others use), then the same random order of single-frame reads through each,
each read ending in an ``ase.Atoms`` with its labels (what the DataLoader needs). Frames/s of each
and their ratio, same run, alternating the two.

Part 2 (``--sizes``): synthetic stores of 10k, 100k and 1M frames, then ``gnnpot fit`` (tiny SchNet,
50 steps, one process, the store read lazily) in a fresh process; its peak resident memory
(sampled from ``/proc``: all, anonymous and file-backed). The statistics pass reads every
training frame, so its memory is in the peak too.
With ``--in-memory``, the smallest size is also trained from extxyz (graphs in memory) for contrast.

    python -m benchmarks.ondisk --read --sizes 10000 100000 1000000 --markdown docs/ondisk.md

Writes ``docs/ondisk.md`` (and prints the same). Disk: ~5.3 kB per frame (5.3 GB at 1M frames) in
``--workdir``, deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

REPO = Path(__file__).resolve().parents[1]


def synthetic_frames(count: int, seed: int = 0) -> Iterator[Atoms]:
    """``count`` Cu-Au frames of 108 atoms (3x3x3 fcc cells, rattled) with random labels."""
    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(3)
    for _ in range(count):
        atoms = base.copy()
        atoms.numbers = np.where(rng.random(len(atoms)) < 0.3, 79, 29)
        atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
        forces = rng.normal(0.0, 0.5, (len(atoms), 3))
        atoms.calc = SinglePointCalculator(atoms, energy=float(-3.5 * len(atoms) + rng.normal()), forces=forces)
        yield atoms


def write_hdf5(frames: Iterator[Atoms], path: Path, count: int) -> None:
    """HDF5 with concatenated per-atom arrays and per-frame offsets (written in one pass)."""
    import h5py

    with h5py.File(path, "w") as handle:
        numbers = handle.create_dataset("numbers", (0,), maxshape=(None,), dtype="u1", chunks=(65536,))
        positions = handle.create_dataset("positions", (0, 3), maxshape=(None, 3), dtype="f8", chunks=(16384, 3))
        forces = handle.create_dataset("forces", (0, 3), maxshape=(None, 3), dtype="f8", chunks=(16384, 3))
        energy, offsets = np.zeros(count), np.zeros(count + 1, dtype=np.int64)
        cells, pbc = np.zeros((count, 3, 3)), np.zeros((count, 3), dtype=bool)
        for k, atoms in enumerate(frames):
            n, start = len(atoms), int(offsets[k])
            for dataset, values in ((numbers, atoms.numbers), (positions, atoms.positions)):
                dataset.resize(start + n, axis=0)
                dataset[start : start + n] = values
            forces.resize(start + n, axis=0)
            forces[start : start + n] = atoms.get_forces()
            energy[k], offsets[k + 1] = atoms.get_potential_energy(), start + n
            cells[k], pbc[k] = atoms.cell.array, atoms.pbc
        for name, values in (("energy", energy), ("offsets", offsets), ("cell", cells), ("pbc", pbc)):
            handle.create_dataset(name, data=values)


class HDF5Frames:
    """Single-frame reads from :func:`write_hdf5`'s file, as ``Atoms`` with labels."""

    def __init__(self, path: Path) -> None:
        import h5py

        self.handle = h5py.File(path, "r")
        self.offsets = self.handle["offsets"][:]
        self.energy, self.cell, self.pbc = self.handle["energy"][:], self.handle["cell"][:], self.handle["pbc"][:]

    def __getitem__(self, k: int) -> Atoms:
        start, end = int(self.offsets[k]), int(self.offsets[k + 1])
        atoms = Atoms(
            numbers=self.handle["numbers"][start:end].astype(np.int64),
            positions=self.handle["positions"][start:end],
            cell=self.cell[k],
            pbc=self.pbc[k],
        )
        atoms.calc = SinglePointCalculator(atoms, energy=float(self.energy[k]), forces=self.handle["forces"][start:end])
        return atoms


def read_rates(workdir: Path, count: int, reads: int, repeats: int) -> dict:
    """Random single-frame read rates (frames/s) of the LMDB store and HDF5, alternated."""
    from gnnpot.data.store import FrameStore, write_store

    store_path, hdf5_path = workdir / "read.lmdb", workdir / "read.h5"
    write_store(synthetic_frames(count), store_path)
    write_hdf5(synthetic_frames(count), hdf5_path, count)
    readers = {"lmdb": FrameStore(store_path), "hdf5": HDF5Frames(hdf5_path)}
    order = np.random.default_rng(1).permutation(count)[:reads]
    for name, reader in readers.items():  # same frames from both
        a, b = readers["lmdb"][int(order[0])], reader[int(order[0])]
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.get_forces(), b.get_forces()), name
    rates: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(repeats):
        for name, reader in readers.items():
            start = time.perf_counter()
            for k in order:
                reader[int(k)]
            rates[name].append(reads / (time.perf_counter() - start))
    sizes = {"lmdb": store_path.stat().st_size, "hdf5": hdf5_path.stat().st_size}
    return {
        "frames": count,
        "reads": reads,
        "frames_per_s": {k: float(np.median(v)) for k, v in rates.items()},
        "bytes_per_frame": {k: v / count for k, v in sizes.items()},
    }


def training_peak(workdir: Path, size: int, in_memory: bool = False) -> dict:
    """Peak RSS (MiB) of ``gnnpot fit`` on ``size`` synthetic frames, in a fresh process."""
    from gnnpot.data import write_frames
    from gnnpot.data.store import write_store

    start = time.perf_counter()
    if in_memory:
        data = workdir / f"frames_{size}.xyz"
        write_frames(data, list(synthetic_frames(size)))
    else:
        data = workdir / f"frames_{size}.lmdb"
        write_store(synthetic_frames(size), data)
    written = time.perf_counter() - start
    argv = [
        str(Path(sys.executable).with_name("gnnpot")),
        "fit",
        "--config",
        str(REPO / "configs" / "schnet_demo.yaml"),
        f"--data.train_file={data}",
        "--data.val_fraction=0.01",
        "--data.test_fraction=0.0",
        "--data.batch_size=8",
        "--data.cutoff=4.0",
        "--model.representation_hparams={num_features: 16, num_interactions: 1, num_rbf: 8}",
        "--trainer.max_steps=50",
        "--trainer.limit_val_batches=2",
        "--trainer.val_check_interval=25",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--run.plots=false",
        f"--run.dir={workdir / 'runs'}",
        f"--run.name=size_{size}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    log = workdir / f"fit_{size}.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env)
        peaks = _watch_memory(process.pid, process)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"training on {data} failed: {log.read_text()[-2000:]}")
    return {
        "frames": size,
        "format": "extxyz (in memory)" if in_memory else "lmdb (lazy)",
        "file_bytes": data.stat().st_size,
        "write_s": round(written, 1),
        "fit_s": round(seconds, 1),
        **{f"peak_{name}_mib": round(kib / 1024, 1) for name, kib in peaks.items()},
    }


def _watch_memory(pid: int, process: subprocess.Popen, interval_s: float = 0.2) -> dict[str, int]:
    """Peaks (KiB) of the process's resident memory while it runs: all, anonymous, and file pages.

    ``RssFile`` holds the pages of the LMDB file the process has mapped and read: page cache that
    the kernel reclaims under pressure, unlike ``RssAnon`` (the heap: tensors, graphs, lists).
    """
    peaks = {"rss": 0, "anon": 0, "file": 0}
    fields = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file"}
    while process.poll() is None:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                name = fields.get(line.split(":")[0] + ":")
                if name:
                    peaks[name] = max(peaks[name], int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(interval_s)
    process.wait()
    return peaks


def markdown(read: dict | None, rows: list[dict], machine: str) -> str:
    """The page ``docs/ondisk.md``."""
    lines = ["# Datasets larger than memory", "", f"Measured by `python -m benchmarks.ondisk` on {machine}.", ""]
    if read:
        lmdb, hdf5 = read["frames_per_s"]["lmdb"], read["frames_per_s"]["hdf5"]
        lines += [
            "## LMDB or HDF5: random single-frame reads",
            "",
            f"{read['reads']} random reads from {read['frames']} synthetic frames of 108 atoms (energy and forces),"
            " each ending in an `ase.Atoms` with its labels; median of the repeats, the two formats alternated.",
            "",
            "| format | frames/s | bytes/frame |",
            "|---|---:|---:|",
            f"| LMDB (gnnpot frame store) | {lmdb:,.0f} | {read['bytes_per_frame']['lmdb']:,.0f} |",
            f"| HDF5 (concatenated arrays + offsets) | {hdf5:,.0f} | {read['bytes_per_frame']['hdf5']:,.0f} |",
            "",
            f"LMDB/HDF5 = {lmdb / hdf5:.1f}x: one key lookup and one buffer per frame, against one chunked"
            " slice read per array in HDF5.",
            "",
        ]
    if rows:
        lines += [
            "## Peak training memory by dataset size",
            "",
            "`gnnpot fit`, tiny SchNet, 50 steps of batch 8, one process, one thread; the statistics pass"
            " (E0, scale, data hash) reads every training frame. Peaks of the process's resident memory,"
            " sampled every 0.2 s: all of it, the anonymous part (heap: graphs, tensors, lists) and the"
            " file-backed part (the LMDB pages it has read: page cache, which the kernel takes back under"
            " pressure).",
            "",
            "| frames | data | file | write | fit | peak RSS | peak anonymous | peak file-backed |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            lines.append(
                f"| {row['frames']:,} | {row['format']} | {row['file_bytes'] / 2**20:,.0f} MiB | {row['write_s']} s "
                f"| {row['fit_s']} s | {row['peak_rss_mib']:,.0f} MiB | {row['peak_anon_mib']:,.0f} MiB "
                f"| {row['peak_file_mib']:,.0f} MiB |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line of the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ondisk", description=__doc__.split("\n")[0])
    parser.add_argument("--read", action="store_true", help="part 1: LMDB against HDF5 read rates")
    parser.add_argument("--read-frames", type=int, default=20000)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=[], help="part 2: dataset sizes (frames)")
    parser.add_argument("--in-memory", action="store_true", help="also train the smallest size from extxyz")
    parser.add_argument("--workdir", default="/tmp/gnnpot-ondisk")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--markdown", default=None, help="write the page here (e.g. docs/ondisk.md)")
    parser.add_argument("--json", default=None, help="write the numbers here")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
    try:
        read = read_rates(workdir, args.read_frames, args.reads, args.repeats) if args.read else None
        rows = []
        if args.in_memory and args.sizes:
            rows.append(training_peak(workdir, min(args.sizes), in_memory=True))
        for size in args.sizes:
            rows.append(training_peak(workdir, size))
            for path in workdir.glob(f"frames_{size}.*"):
                if not args.keep:
                    path.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    page = markdown(read, rows, machine)
    print(page)
    if args.markdown:
        Path(args.markdown).write_text(page)
    if args.json:
        Path(args.json).write_text(json.dumps({"read": read, "training": rows, "machine": machine}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
