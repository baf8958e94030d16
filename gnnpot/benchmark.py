"""CPU speed benchmark of gnnpot, the runner that alternates it with the peer harnesses, and the tables.

The gnnpot side follows ``../shared/peers/PROTOCOL.md`` as the peer harnesses there do
(``peers/<peer>/bench.py``): the same workloads, sizes, timing rule and JSON line fields, so that
their output can be put side by side.

Workloads (float32, ``torch.set_num_threads(2)`` unless ``--threads``, ``torch.manual_seed(0)``):
    * ``W1_train_step``: aspirin ``train_01`` frames 0-4 in one batch: forces with ``create_graph``
      (``ForceField`` in ``train()`` mode), loss ``1 * MSE(E/atom) + 100 * MSE(F)``
      (:class:`~gnnpot.training.PotentialLoss`), backward, Adam step. structures/s.
    * ``W2_infer_single``: one aspirin structure, energy + forces in ``eval()`` mode. calls/s.
    * ``W3_infer_batch``: 32 aspirin structures in one batch. structures/s.
    * ``W4_md_cu108``: periodic fcc Cu, 3x3x3 cubic cells (108 atoms, a = 3.61 Å, rattled 0.05 Å
      with seed 1) through :class:`~gnnpot.GNNPotCalculator`, alternating two geometries so that every
      call computes. calls/s. The headline uses the calculator's default skin list; the rate with the
      list rebuilt at every call (``skin=0``, as the peers do) is in ``value_skin0`` and the notes.

W1-W3 run on graphs built beforehand (:meth:`AtomicData.from_atoms` + ``Batch.from_data_list``),
as the peers' headline numbers do; ``extra_rates`` holds the rate with the graphs built at every
call. DimeNet++ graphs carry their triplets (as PyG's harness prebuilds them); ``extra_rates``
also has the rate with triplets built inside the forward pass, gnnpot's default pipeline.

``--scaling`` times one MD step (energy + forces through the calculator) on periodic fcc Cu from
108 to 10,976 atoms for every family, and reports µs per atom per step, so that linear scaling
shows as a flat column.

Each family and size runs in its own process unless ``--in-process``, so that ``peak_rss_mb`` is
the peak of a process that built and ran only that model (sizes of the scaling run go in rising
order in one process, so the peak after each size is that size's). ``--peers`` runs the peer
harnesses, each in its own virtual environment, one process at a time, alternating with gnnpot:
each gnnpot family and size is followed by its matched peers. ``--markdown`` writes the tables of
gnnpot/peer ratios, from this run or from saved JSONL files (``--from-jsonl``).

    python scripts/benchmark.py --out bench.jsonl --markdown docs/benchmarks.md \\
        --peers schnetpack,pyg,mace,nequip --scaling
    python scripts/benchmark.py --from-jsonl bench.jsonl --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import all_changes
from torch_geometric.data import Batch

import gnnpot
from gnnpot import keys
from gnnpot.data import AtomicData, mean_num_neighbors
from gnnpot.models import ForceField
from gnnpot.nn.triplets import build_triplets

PEER = "gnnpot"
KCAL_MOL_TO_EV = 0.0433641  # the protocol's constant, as every peer harness uses it
WORKLOADS = {"W1": "W1_train_step", "W2": "W2_infer_single", "W3": "W3_infer_batch", "W4": "W4_md_cu108"}
UNITS = {"W1": "structures/s", "W2": "calls/s", "W3": "structures/s", "W4": "calls/s"}
SCALING = "scaling_md"
SCALING_REPEATS = (3, 4, 5, 6, 8, 10, 12, 14)  # fcc cubic cells per side: 108 ... 10,976 atoms
CU_LATTICE = 3.61  # Å
W1_FRAMES = 5
W3_FRAMES = 32
_REPO = Path(__file__).resolve().parents[1]
DEFAULT_PEERS_DIR = _REPO.parent / "shared" / "peers"

# --------------------------------------------------------------------------------- model sizes


@dataclass(frozen=True)
class Variant:
    """One benchmarked configuration of a family.

    Attributes:
        family: a name in :data:`gnnpot.REGISTRY`.
        name: ``"paper"``, ``"paper_r4"``/``"paper_r5"`` (NequIP at its published and the protocol
            cutoff), ``"small"`` or ``"tiny"`` (tests and smoke runs only).
        size: the protocol size the variant belongs to: ``"paper"``, ``"small"`` or ``"tiny"``.
        cutoff: neighbour radius, Å.
        hparams: keyword arguments of :func:`gnnpot.build_model` besides cutoff and elements.
        source: where the hyperparameters come from.
    """

    family: str
    name: str
    size: str
    cutoff: float
    hparams: dict[str, Any] = field(default_factory=dict)
    source: str = ""


# "paper" = representation_hparams and data.cutoff of configs/<family>_rmd17.yaml (a test checks
# that they agree). "small" = the protocol's matched size: 64 features, 3 interactions, cutoff 5,
# l_max 1 where the family has it; everything else as "paper".
_PAPER = {
    "schnet": dict(num_features=128, num_interactions=6, num_rbf=20),
    "dimenet": dict(
        num_features=128,
        num_interactions=4,
        num_rbf=6,
        num_spherical=7,
        int_emb_size=64,
        basis_emb_size=8,
        out_emb_size=256,
        envelope_exponent=5,
    ),
    "painn": dict(num_features=128, num_interactions=3, num_rbf=20),
    "nequip": dict(
        num_features=64,
        num_interactions=5,
        num_rbf=8,
        l_max=3,
        parity=True,
        radial_features=64,
        radial_layers=3,
        polynomial_p=6,
    ),
}
_SMALL = {
    "schnet": dict(_PAPER["schnet"], num_features=64, num_interactions=3),
    # Inner widths halved with num_features (int_emb 64 -> 32, out_emb 256 -> 128), as PyG's "small".
    "dimenet": dict(_PAPER["dimenet"], num_features=64, num_interactions=3, int_emb_size=32, out_emb_size=128),
    "painn": dict(_PAPER["painn"], num_features=64, num_interactions=3),
    "nequip": dict(_PAPER["nequip"], num_interactions=3, l_max=1),
}
_SMALL_SOURCE = {
    "schnet": "protocol 'small': 64 features, 3 interactions, cutoff 5; num_rbf as paper (no l_max)",
    "dimenet": "protocol 'small': 64 features, 3 blocks, cutoff 5; int_emb_size 32 and out_emb_size 128 "
    "(halved with num_features, as PyG's small), bases as paper (no l_max: angles enter as a basis)",
    "painn": "protocol 'small': 64 features, 3 interactions, cutoff 5; num_rbf as paper "
    "(scalar + vector, i.e. l = 0 and 1, features by construction)",
    "nequip": "protocol 'small': 64 features, 3 interactions, l_max 1, cutoff 5; rest as paper",
}
TINY_HPARAMS = {
    "schnet": {"num_features": 8, "num_interactions": 2, "num_rbf": 6},
    "dimenet": {
        "num_features": 8,
        "num_interactions": 1,
        "num_rbf": 4,
        "num_spherical": 3,
        "int_emb_size": 4,
        "basis_emb_size": 2,
        "out_emb_size": 8,
    },
    "painn": {"num_features": 8, "num_interactions": 2, "num_rbf": 6},
    "nequip": {"num_features": 4, "num_interactions": 2, "num_rbf": 4, "l_max": 1},
}


def variants(family: str) -> dict[str, Variant]:
    """The variants of ``family`` by name, in benchmark order.

    Raises:
        ValueError: ``family`` is not in :data:`gnnpot.REGISTRY`.
    """
    if family not in gnnpot.REGISTRY:
        raise ValueError(f"unknown family {family!r}; choose from {sorted(gnnpot.REGISTRY)}")
    config = f"configs/{family}_rmd17.yaml"
    if family == "nequip":
        paper = [
            Variant(family, "paper_r4", "paper", 4.0, _PAPER[family], f"{config} (published cutoff 4 Å)"),
            Variant(family, "paper_r5", "paper", 5.0, _PAPER[family], f"{config} at the protocol cutoff 5 Å"),
        ]
    else:
        paper = [Variant(family, "paper", "paper", 5.0, _PAPER[family], config)]
    out = [
        *paper,
        Variant(family, "small", "small", 5.0, _SMALL[family], _SMALL_SOURCE[family]),
        Variant(family, "tiny", "tiny", 5.0, TINY_HPARAMS[family], "smoke tests only"),
    ]
    return {v.name: v for v in out}


def select_variants(family: str, sizes: Iterable[str]) -> list[Variant]:
    """Variants of ``family`` named by ``sizes``: a protocol size (``paper`` = every paper variant) or a name."""
    table = variants(family)
    chosen: list[Variant] = []
    for size in sizes:
        found = [v for v in table.values() if size in (v.name, v.size)]
        if not found:
            raise ValueError(f"unknown size {size!r} for {family}; choose from {sorted(table)} or 'paper'")
        chosen += [v for v in found if v not in chosen]
    return chosen


# ---------------------------------------------------------------------------------------- data


@dataclass
class Molecules:
    """Frames of one molecule (rMD17 layout), in eV and Å.

    Attributes:
        numbers: [N] atomic numbers.
        positions: [F, N, 3] Å.
        energies: [F] eV.
        forces: [F, N, 3] eV/Å.
        source: file they were read from.
    """

    numbers: np.ndarray
    positions: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    source: str = "<memory>"

    def atoms(self, index: int) -> Atoms:
        """Frame ``index`` as (non-periodic) ``Atoms``."""
        return Atoms(numbers=self.numbers, positions=self.positions[index])


def load_rmd17(directory: str | Path, molecule: str = "aspirin", split: str = "train", index: int = 1) -> Molecules:
    """Read ``rmd17_<molecule>_<split>_<index:02d>.npz`` with the protocol's kcal/mol -> eV factor.

    Raises:
        FileNotFoundError: the file is not in ``directory``.
    """
    path = Path(directory) / f"rmd17_{molecule}_{split}_{index:02d}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"rMD17 file {path} not found (set RMD17_DIR or --rmd17-dir)")
    with np.load(path) as data:
        return Molecules(
            numbers=data["nuclear_charges"].astype(np.int64),
            positions=data["coords"].astype(np.float64),
            energies=data["energies"].astype(np.float64) * KCAL_MOL_TO_EV,
            forces=data["forces"].astype(np.float64) * KCAL_MOL_TO_EV,
            source=str(path),
        )


def molecule_graphs(
    molecules: Molecules, frames: Sequence[int], cutoff: float, labels: bool = False, triplets: bool = False
) -> list[AtomicData]:
    """Graphs of ``frames``; labels are energies minus the mean over all frames (eV) and forces.

    Args:
        molecules: the frames.
        frames: which ones.
        cutoff: neighbour radius, Å.
        labels: attach energy and force labels (for the loss).
        triplets: store DimeNet++'s triplets on each graph (batched through ``AtomicData.__inc__``).
    """
    mean = float(molecules.energies.mean())
    graphs = []
    for frame in frames:
        frame_labels = None
        if labels:
            frame_labels = {
                keys.ENERGY: float(molecules.energies[frame]) - mean,
                keys.FORCES: molecules.forces[frame],
            }
        graph = AtomicData.from_atoms(molecules.atoms(frame), cutoff, labels=frame_labels, source=molecules.source)
        if triplets:
            graph[keys.TRIPLET_KJ], graph[keys.TRIPLET_JI] = build_triplets(
                graph[keys.EDGE_INDEX], graph[keys.EDGE_SHIFT], graph.num_nodes
            )
        graphs.append(graph)
    return graphs


def fcc_cu(repeat: int) -> Atoms:
    """Periodic fcc Cu, ``repeat``^3 cubic cells (4 atoms each), a = 3.61 Å, rattled 0.05 Å with seed 1."""
    # the cell of ase.build.bulk("Cu", "fcc", a, cubic=True), written out: importing ase.build pulls in
    # ase.io and scipy (~40 MB), which the benchmark's peak memory would count
    basis = [[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    cubic = Atoms("Cu4", scaled_positions=basis, cell=[CU_LATTICE] * 3, pbc=True)
    atoms = cubic.repeat((repeat, repeat, repeat))
    atoms.rattle(stdev=0.05, seed=1)
    atoms.pbc = True
    return atoms


# -------------------------------------------------------------------------------------- timing


@dataclass
class Settings:
    """How long to time.

    Attributes:
        target_s: seconds one timed repeat should last.
        repeats: timed repeats (the median is reported), at least 3.
        warmup: most warm-up calls, excluded from the timing.
        compile: run gnnpot's compiled path (``ForceField.enable_compile``); its one-off
            compilation falls in the first warm-up call.
    """

    target_s: float = 1.0
    repeats: int = 5
    warmup: int = 3
    compile: bool = False

    def __post_init__(self) -> None:
        if self.repeats < 3:
            raise ValueError(f"the protocol needs >= 3 timed repeats, got {self.repeats!r}")
        if not self.target_s > 0:
            raise ValueError(f"target_s must be > 0, got {self.target_s!r}")

    def extra(self) -> Settings:
        """Shorter settings for the secondary rates in the notes (as the peers time theirs)."""
        return Settings(target_s=0.5 * self.target_s, repeats=3, warmup=2, compile=self.compile)


@dataclass
class Timing:
    """A timed rate.

    Attributes:
        value: median of the per-repeat rates, items per second.
        rates: the rate of each repeat.
        calls_per_repeat: calls planned per repeat.
        seconds_per_call: median seconds per call.
    """

    value: float
    rates: list[float]
    calls_per_repeat: int
    seconds_per_call: float


def timeit(fn: Callable[[], Any], items_per_call: int, settings: Settings) -> Timing:
    """Time ``fn`` as the peer harnesses do.

    Warm-up calls are excluded: at most ``settings.warmup``, at least 2, stopping after 2 once the
    warm-up took longer than ``target_s``. Each of ``repeats`` timed blocks makes ``n`` calls, ``n``
    chosen from the fastest warm-up call so that a block lasts about ``target_s``; a block stops
    early (after at least one call) once it ran 4 x ``target_s``. When one call alone is longer than
    ``target_s``, the protocol's minimum of 3 repeats of one call each is timed.
    """
    start = time.perf_counter()
    warm = []
    for k in range(max(2, settings.warmup)):
        t0 = time.perf_counter()
        fn()
        warm.append(max(time.perf_counter() - t0, 1e-6))
        if k >= 1 and time.perf_counter() - start > settings.target_s:
            break
    fastest = min(warm)
    calls = max(1, int(round(settings.target_s / fastest)))
    repeats = 3 if fastest > settings.target_s else settings.repeats
    rates, per_call = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = 0
        while done < calls:
            fn()
            done += 1
            if time.perf_counter() - t0 > 4 * settings.target_s:
                break
        elapsed = time.perf_counter() - t0
        rates.append(done * items_per_call / elapsed)
        per_call.append(elapsed / done)
    return Timing(statistics.median(rates), rates, calls, statistics.median(per_call))


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------- workloads


@dataclass
class Measurement:
    """One workload's result before it becomes a JSON line."""

    timing: Timing
    unit: str
    notes: str
    extra: dict[str, Any] = field(default_factory=dict)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def w1_train_step(model: ForceField, molecules: Molecules, cutoff: float, settings: Settings) -> Measurement:
    """One optimisation step on a batch of aspirin frames 0-4 (graphs prebuilt)."""
    frames = list(range(W1_FRAMES))
    dimenet = model.config.get("representation") == "dimenet"
    batch = Batch.from_data_list(molecule_graphs(molecules, frames, cutoff, labels=True, triplets=dimenet))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()  # ForceField keeps the graph of the forces (create_graph) while training

    def step(data: Batch = batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(data)
        natoms = data[keys.NUM_ATOMS].to(out[keys.ENERGY].dtype)
        energy = ((out[keys.ENERGY] - data[keys.ENERGY]) / natoms).square().mean()
        forces = (out[keys.FORCES] - data[keys.FORCES]).square().mean()
        (1.0 * energy + 100.0 * forces).backward()
        optimizer.step()

    timing = timeit(step, len(frames), settings)
    extra = {
        "with_graph_build": timeit(
            lambda: step(Batch.from_data_list(molecule_graphs(molecules, frames, cutoff, labels=True))),
            len(frames),
            settings.extra(),
        ).value
    }
    notes = (
        f"aspirin {Path(molecules.source).name} frames 0-4 in one batch; graphs prebuilt "
        "(AtomicData.from_atoms + Batch.from_data_list, not timed); ForceField in train() mode -> forces "
        "with create_graph; loss = MSE(E/atom) + 100 MSE(F) in eV (gnnpot.training.PotentialLoss's default "
        "terms, written out so that Lightning is not imported), E minus the mean of the file; Adam lr 1e-3. "
        f"Incl. graph building every step: {extra['with_graph_build']:.3f} structures/s"
    )
    if dimenet:
        plain = Batch.from_data_list(molecule_graphs(molecules, frames, cutoff, labels=True))
        extra["triplets_in_forward"] = timeit(lambda: step(plain), len(frames), settings.extra()).value
        notes += _triplet_note(extra["triplets_in_forward"], "structures/s")
    return Measurement(timing, UNITS["W1"], notes, extra)


def _triplet_note(rate: float, unit: str) -> str:
    return (
        f". DimeNet++: the headline graphs carry their triplets (built beforehand, as PyG's harness does); "
        f"with triplets built inside forward from prebuilt edges (gnnpot's default pipeline): {rate:.3f} {unit}"
    )


def _inference(
    model: ForceField, molecules: Molecules, cutoff: float, settings: Settings, frames: list[int]
) -> tuple[Timing, dict[str, float]]:
    """The rate of energy + forces on a prebuilt batch of ``frames``, and the secondary rates."""
    dimenet = model.config.get("representation") == "dimenet"
    batch = Batch.from_data_list(molecule_graphs(molecules, frames, cutoff, triplets=dimenet))
    model.eval()  # no create_graph

    def call(data: Batch = batch) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(data)
        return out[keys.ENERGY].detach(), out[keys.FORCES].detach()

    timing = timeit(call, len(frames), settings)
    extra = {
        "with_graph_build": timeit(
            lambda: call(Batch.from_data_list(molecule_graphs(molecules, frames, cutoff))),
            len(frames),
            settings.extra(),
        ).value
    }
    if dimenet:
        plain = Batch.from_data_list(molecule_graphs(molecules, frames, cutoff))
        extra["triplets_in_forward"] = timeit(lambda: call(plain), len(frames), settings.extra()).value
    return timing, extra


def w2_infer_single(model: ForceField, molecules: Molecules, cutoff: float, settings: Settings) -> Measurement:
    """Energy and forces of aspirin frame 0, many calls (the MD latency regime)."""
    timing, extra = _inference(model, molecules, cutoff, settings, [0])
    calc = gnnpot.GNNPotCalculator(model, skin=0.0)
    atoms = molecules.atoms(0)
    extra["calculator_skin0"] = _calculator_rate(calc, atoms, settings.extra()).value
    notes = (
        f"aspirin {Path(molecules.source).name} frame 0; prebuilt graph (Batch of 1, neighbour list not timed); "
        "ForceField in eval() mode, no create_graph. Incl. graph building every call: "
        f"{extra['with_graph_build']:.3f} calls/s; through GNNPotCalculator(skin=0) (fresh neighbour list every "
        f"call, alternating two geometries): {extra['calculator_skin0']:.3f} calls/s"
    )
    if "triplets_in_forward" in extra:
        notes += _triplet_note(extra["triplets_in_forward"], "calls/s")
    return Measurement(timing, UNITS["W2"], notes, extra)


def w3_infer_batch(model: ForceField, molecules: Molecules, cutoff: float, settings: Settings) -> Measurement:
    """Energy and forces of aspirin frames 0-31 in one batch."""
    timing, extra = _inference(model, molecules, cutoff, settings, list(range(W3_FRAMES)))
    notes = (
        f"aspirin {Path(molecules.source).name} frames 0-31 in one batch; graphs prebuilt (not timed); eval(), "
        f"no create_graph. Incl. graph building every call: {extra['with_graph_build']:.3f} structures/s"
    )
    if "triplets_in_forward" in extra:
        notes += _triplet_note(extra["triplets_in_forward"], "structures/s")
    return Measurement(timing, UNITS["W3"], notes, extra)


def _calculator_rate(calc: gnnpot.GNNPotCalculator, atoms: Atoms, settings: Settings) -> Timing:
    """Calls/s of ``calc.calculate`` on ``atoms``, alternating two geometries (atom 0 moved by 1e-4 Å)."""
    atoms = atoms.copy()
    atoms.calc = calc
    first = atoms.get_positions()
    second = first.copy()
    second[0, 0] += 1e-4
    state = {"k": 0}

    def call() -> None:
        atoms.set_positions(second if state["k"] % 2 else first)
        state["k"] += 1
        calc.calculate(atoms, ["energy", "forces"], all_changes)

    return timeit(call, 1, settings)


def w4_md_cu108(model: ForceField, settings: Settings, repeat: int = 3) -> Measurement:
    """Periodic Cu108 through ``GNNPotCalculator`` with its default skin, and with ``skin=0``."""
    atoms = fcc_cu(repeat)
    calc = gnnpot.GNNPotCalculator(model)
    skin = calc.neighbors.skin
    timing = _calculator_rate(calc, atoms, settings)
    builds = calc.neighbors.num_builds
    fresh = gnnpot.GNNPotCalculator(model, skin=0.0)
    skin0 = _calculator_rate(fresh, atoms, settings)
    num_edges = int(AtomicData.from_atoms(atoms, model.cutoff).edge_index.shape[1])
    extra = {
        "value_skin0": skin0.value,
        "repeat_values_skin0": [_round(r) for r in skin0.rates],
        "skin": skin,
        "neighbor_list_builds": builds,
        "neighbor_list_builds_skin0": fresh.neighbors.num_builds,
        "num_atoms": len(atoms),
        "num_edges": num_edges,
    }
    notes = (
        f"fcc Cu {repeat}x{repeat}x{repeat} cubic ({len(atoms)} atoms, a={CU_LATTICE}, rattle 0.05 seed 1, pbc), "
        f"{num_edges} directed edges at {model.cutoff} Å; GNNPotCalculator(model).calculate(atoms, "
        "['energy', 'forces'], all_changes), alternating two geometries (atom 0 moved by 1e-4 Å); ForceField "
        f"also computes the stress of a periodic cell. Headline: default skin {skin} Å (vesin list at cutoff + "
        f"skin reused while no atom moved > skin/2: {builds} builds in all calls); with skin=0 (fresh list every "
        f"call, as the peers): {skin0.value:.3f} calls/s. Separate Cu-only model, same hyperparameters; "
        "random weights"
    )
    return Measurement(timing, UNITS["W4"], notes, extra)


# ------------------------------------------------------------------------------- JSON records


@functools.cache
def _git_describe() -> str | None:
    """Short commit of the gnnpot checkout, ``+dirty`` with uncommitted changes; None outside git."""
    if not (_REPO / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(_REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if head and dirty else head or None


def make_record(
    variant: Variant,
    n_params: int | None,
    workload: str,
    measurement: Measurement | None,
    hparams: dict[str, Any],
    notes: str | None = None,
    unit: str = "",
) -> dict[str, Any]:
    """The JSON line of one measurement, with the fields of the peer harnesses (``value`` None: failed)."""
    timing = measurement.timing if measurement else None
    record = {
        "peer": PEER,
        "peer_version": gnnpot.__version__,
        "model": variant.family,
        "variant": variant.name,
        "size": variant.size,
        "n_params": n_params,
        "workload": workload,
        "value": _round(timing.value) if timing else None,
        "unit": measurement.unit if measurement else unit,
        "repeats": len(timing.rates) if timing else 0,
        "notes": measurement.notes if measurement else notes,
        "calls_per_repeat": timing.calls_per_repeat if timing else 0,
        "repeat_values": [_round(r) for r in timing.rates] if timing else [],
        "seconds_per_call": _round(timing.seconds_per_call, 7) if timing else None,
        "hparams": hparams,
        "hparams_source": variant.source,
        "dtype": "float32",
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "git": _git_describe(),
    }
    if measurement:
        for name, value in measurement.extra.items():
            if name in ("value_skin0",):
                record[name] = _round(value)
            elif name in ("with_graph_build", "triplets_in_forward", "calculator_skin0"):
                record.setdefault("extra_rates", {})[name] = _round(value)
            else:
                record[name] = value
    return record


def build(
    variant: Variant, elements: Sequence[str | int], avg_num_neighbors: float | None, compile: bool = False
) -> ForceField:
    """The float32 model of ``variant`` with random weights (seed 0), compiled if asked."""
    torch.manual_seed(0)
    hparams = dict(variant.hparams)
    if variant.family == "nequip":
        hparams["avg_num_neighbors"] = avg_num_neighbors
    model = gnnpot.build_model(variant.family, cutoff=variant.cutoff, elements=list(elements), **hparams).float()
    return model.enable_compile(compile)


def _hparams(variant: Variant, avg_num_neighbors: float | None, note: str, compile: bool) -> dict[str, Any]:
    out = dict(variant.hparams, cutoff=variant.cutoff, dtype="float32", readout="AtomwiseReadout", e0=0, scale=1)
    out["compiled"] = compile
    if variant.family == "nequip":
        out["avg_num_neighbors"] = _round(avg_num_neighbors)
        out["avg_num_neighbors_from"] = note
    return out


def n_params_of(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_variant(
    variant: Variant, workloads: Sequence[str], settings: Settings, molecules: Molecules | None
) -> Iterator[dict[str, Any]]:
    """Run ``workloads`` (``W1``..``W4``) for one variant; yields one JSON record per workload.

    A failing workload yields a record with ``value`` None and the error in ``notes``, as the peers do.
    """
    aspirin_model = init_state = avg_aspirin = None
    aspirin_note = ""
    if any(w in ("W1", "W2", "W3") for w in workloads):
        if molecules is None:
            raise ValueError("workloads W1-W3 need the rMD17 aspirin frames")
        frames = [molecules.atoms(k) for k in range(min(100, len(molecules.energies)))]
        avg_aspirin = mean_num_neighbors(frames, variant.cutoff)
        aspirin_note = f"mean neighbours of aspirin frames 0-{len(frames) - 1} at the cutoff"
        aspirin_model = build(variant, sorted({int(z) for z in molecules.numbers}), avg_aspirin, settings.compile)
        init_state = {k: v.clone() for k, v in aspirin_model.state_dict().items()}
    functions = {"W1": w1_train_step, "W2": w2_infer_single, "W3": w3_infer_batch}
    for workload in workloads:
        t0 = time.perf_counter()
        name = WORKLOADS[workload]
        n_params, hparams = None, _hparams(variant, avg_aspirin, aspirin_note, settings.compile)
        try:
            if workload == "W4":  # a Cu-only model with the same hyperparameters
                avg_cu = mean_num_neighbors([fcc_cu(3)], variant.cutoff)
                hparams = _hparams(variant, avg_cu, "mean neighbours of the Cu108 cell at the cutoff", settings.compile)
                model = build(variant, ["Cu"], avg_cu, settings.compile)
                n_params = n_params_of(model)
                measurement = w4_md_cu108(model, settings)
            else:  # every workload starts from the same weights
                torch.manual_seed(0)
                aspirin_model.load_state_dict(init_state)
                n_params = n_params_of(aspirin_model)
                measurement = functions[workload](aspirin_model, molecules, variant.cutoff, settings)
        except Exception as error:  # report and go on, as the peer harnesses do
            traceback.print_exc(file=sys.stderr)
            yield make_record(variant, n_params, name, None, hparams, f"FAILED: {error!r}", UNITS[workload])
            continue
        record = make_record(variant, n_params, name, measurement, hparams)
        _log(
            f"[gnnpot] {variant.family}/{variant.name} {name}: {record['value']} {record['unit']} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        yield record


def available_memory_mb() -> float | None:
    """``MemAvailable`` of ``/proc/meminfo`` in MB, or None where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def run_scaling(
    variant: Variant,
    repeats: Sequence[int],
    settings: Settings,
    max_step_s: float = 10.0,
    max_rss_mb: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Time one MD step on fcc Cu of ``repeat``^3 cubic cells for each repeat, smallest first.

    The value is µs per atom per step with the calculator's default skin; ``value_skin0`` rebuilds
    the neighbour list at every step (timed with the shorter :meth:`Settings.extra`). Sizes run in
    rising order in one process, so ``peak_rss_mb`` after each size is the peak of that size.

    A size is skipped (a line with ``value`` None and notes ``SKIPPED: ...``) when the last measured
    size, scaled linearly in the number of atoms, predicts a step longer than ``max_step_s`` or a
    peak RSS above ``max_rss_mb`` (default: 3/4 of this process's RSS plus the available memory).
    DimeNet++ holds about 1,800 triplets per Cu atom at 5 Å, so it stops well before 10,000 atoms.
    """
    avg_cu = mean_num_neighbors([fcc_cu(3)], variant.cutoff)
    model = build(variant, ["Cu"], avg_cu, settings.compile)
    hparams = _hparams(variant, avg_cu, "mean neighbours of the Cu108 cell at the cutoff", settings.compile)
    baseline = peak_rss_mb()
    if max_rss_mb is None:
        available = available_memory_mb()
        max_rss_mb = None if available is None else 0.75 * (available + baseline)
    last: tuple[int, float, float] | None = None  # atoms, seconds per step, peak RSS
    for repeat in sorted(repeats):
        t0 = time.perf_counter()
        atoms = fcc_cu(repeat)
        n = len(atoms)
        if last is not None:
            step = last[1] * n / last[0]
            rss = baseline + (last[2] - baseline) * n / last[0]
            if step > max_step_s or (max_rss_mb is not None and rss > max_rss_mb):
                notes = (
                    f"SKIPPED: {n} atoms predicted from {last[0]} atoms at {step:.1f} s per step (limit {max_step_s} "
                    f"s) and {rss:.0f} MB peak RSS (limit {max_rss_mb or float('inf'):.0f} MB)"
                )
                _log(f"[gnnpot] scaling {variant.family}/{variant.name}: {notes}")
                record = make_record(variant, n_params_of(model), SCALING, None, hparams, notes, "us/atom/step")
                record.update(num_atoms=n, repeat=repeat)
                yield record
                continue
        try:
            calc = gnnpot.GNNPotCalculator(model)
            timing = _calculator_rate(calc, atoms, settings)
            skin = calc.neighbors.skin
            del calc
            skin0 = _calculator_rate(gnnpot.GNNPotCalculator(model, skin=0.0), atoms, settings.extra())
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            record = make_record(variant, n_params_of(model), SCALING, None, hparams, f"FAILED: {error!r}")
            record.update(num_atoms=n, repeat=repeat, unit="us/atom/step")
            yield record
            continue
        last = (n, 1.0 / timing.value, peak_rss_mb())
        per_atom = Timing(
            value=1e6 / (timing.value * n),
            rates=[1e6 / (r * n) for r in timing.rates],
            calls_per_repeat=timing.calls_per_repeat,
            seconds_per_call=timing.seconds_per_call,
        )
        num_edges = int(AtomicData.from_atoms(atoms, variant.cutoff).edge_index.shape[1])
        notes = (
            f"fcc Cu {repeat}^3 cubic cells ({n} atoms, {num_edges} edges, a={CU_LATTICE}, rattle 0.05 seed 1, pbc); "
            "one MD step = GNNPotCalculator.calculate(['energy', 'forces']) alternating two geometries; value = "
            f"µs per atom per step with the default skin {skin} Å (list reused); value_skin0 = fresh list every "
            "step (3 repeats of half the target time); peak_rss_mb = process peak after this size (sizes run "
            "smallest first)"
        )
        measurement = Measurement(
            per_atom,
            "us/atom/step",
            notes,
            {
                "num_atoms": n,
                "num_edges": num_edges,
                "repeat": repeat,
                "steps_per_s": _round(timing.value),
                "value_skin0": 1e6 / (skin0.value * n),
                "steps_per_s_skin0": _round(skin0.value),
                "skin": skin,
            },
        )
        record = make_record(variant, n_params_of(model), SCALING, measurement, hparams)
        _log(
            f"[gnnpot] scaling {variant.family}/{variant.name} {n} atoms: {record['value']} µs/atom/step, "
            f"{record['peak_rss_mb']} MB ({time.perf_counter() - t0:.1f} s)"
        )
        yield record


# ----------------------------------------------------------------------------------- the runner

PEER_DIRS = ("schnetpack", "pyg", "mace", "nequip")
# gnnpot family -> (peer folder, the peer's model name) of its matched peers.
PEER_MATCH: dict[str, list[tuple[str, str | None]]] = {
    "schnet": [("schnetpack", "schnet"), ("pyg", "schnet")],
    "painn": [("schnetpack", "painn")],
    "dimenet": [("pyg", "dimenetpp")],
    "nequip": [("nequip", None), ("mace", None)],
}
# The peer size run against a gnnpot variant; a variant missing here has no match in that peer
# (MACE's "paper" is a different architecture, 256 channels and 2 layers: only "small" matches).
PEER_SIZES: dict[str, dict[str, str]] = {
    "schnetpack": {"paper": "paper", "small": "small"},
    "pyg": {"paper": "paper", "small": "small"},
    "nequip": {"paper_r4": "paper_r4", "paper_r5": "paper_r5", "small": "small"},
    "mace": {"small": "small"},
}
# The "peer" field each harness writes, and how its "model" names map to gnnpot families.
PEER_NAMES = {"schnetpack": "schnetpack", "pyg": "torch-geometric", "mace": "mace", "nequip": "nequip"}


def default_peer_venv(peer: str) -> Path:
    """``/tmp/peer-spk`` for SchNetPack, ``/tmp/peer-<peer>`` otherwise (as ``run_all.sh``)."""
    return Path("/tmp/peer-spk" if peer == "schnetpack" else f"/tmp/peer-{peer}")


def peer_command(
    peer: str, python: str | Path, peers_dir: Path, model: str | None, size: str, args: argparse.Namespace
) -> list[str]:
    """The command line of one peer harness run, restricted to one model and size."""
    script = str(Path(peers_dir) / peer / "bench.py")
    workloads = ",".join(args.workloads)
    if peer in ("schnetpack", "pyg"):
        return [
            str(python), script, "--models", str(model), "--sizes", size, "--workloads", workloads,
            "--target-s", str(args.target_s), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
        ]  # fmt: skip
    return [
        str(python), script, "--sizes", size, "--workloads", workloads, "--target-seconds", str(args.target_s),
        "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--rmd17-dir", str(args.rmd17_dir),
    ]  # fmt: skip


@dataclass
class Job:
    """One step of the runner: a gnnpot variant (in this process or a child) or a peer harness run."""

    label: str
    command: list[str] | None = None
    variant: Variant | None = None
    scaling: bool = False


def _child_command(args: argparse.Namespace, child: str) -> list[str]:
    command = [sys.executable, "-m", "gnnpot.benchmark", "--child", child, "--workloads", ",".join(args.workloads)]
    command += ["--target-s", str(args.target_s), "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    command += ["--threads", str(args.threads), "--rmd17-dir", str(args.rmd17_dir)]
    command += ["--eager"] if args.eager else []
    command += ["--scaling-repeats", ",".join(str(r) for r in args.scaling_repeats)]
    command += ["--scaling-max-step-s", str(args.scaling_max_step_s)]
    if args.scaling_max_rss_mb is not None:
        command += ["--scaling-max-rss-mb", str(args.scaling_max_rss_mb)]
    return command


def plan(args: argparse.Namespace) -> list[Job]:
    """The runs in order: each gnnpot family and size, then its matched peers; the scaling runs last.

    A requested peer whose virtual environment is missing is left out with a message on stderr.
    """
    pythons: dict[str, Path] = {}
    for peer in args.peers:
        venv = args.peer_venv.get(peer, default_peer_venv(peer))
        python = Path(venv) / "bin" / "python"
        if not python.exists():
            _log(
                f"skipping peer {peer}: no virtual environment at {venv} ({python} missing); make it with "
                f"`bash {Path(args.peers_dir) / peer / 'setup.sh'} {venv}` or give --peer-venv {peer}=PATH"
            )
            continue
        pythons[peer] = python
    jobs = []
    if args.workloads:
        for family in args.models:
            for variant in select_variants(family, args.sizes):
                label = f"gnnpot {family}/{variant.name}"
                if args.in_process:
                    jobs.append(Job(label, variant=variant))
                else:
                    jobs.append(Job(label, command=_child_command(args, f"{family}:{variant.name}")))
                for peer, model in PEER_MATCH[family]:
                    size = PEER_SIZES[peer].get(variant.name)
                    if peer in pythons and size is not None:
                        command = peer_command(peer, pythons[peer], args.peers_dir, model, size, args)
                        jobs.append(Job(f"{peer} {model or peer}/{size}", command=command))
    if args.scaling:
        for family in args.models:
            variant = variants(family)[args.scaling_size]
            label = f"gnnpot scaling {family}/{variant.name}"
            if args.in_process:
                jobs.append(Job(label, variant=variant, scaling=True))
            else:
                jobs.append(Job(label, command=_child_command(args, f"scaling:{family}:{variant.name}")))
    return jobs


class Sink:
    """Where JSON lines go (a file or stdout); keeps the records for the tables."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()
        self.records.append(record)


def _run_command(job: Job, env: dict[str, str], sink: Sink) -> int:
    """Run a harness; its stdout JSON lines go to ``sink``, its stderr to ours. Returns its exit status."""
    process = subprocess.Popen(job.command, stdout=subprocess.PIPE, env=env, text=True)
    assert process.stdout is not None
    for record in _json_records(process.stdout, f"[{job.label}] stdout"):
        sink.write(record)
    return process.wait()


def _json_records(lines: Iterable[str], where: str) -> Iterable[dict[str, Any]]:
    """The JSON objects among ``lines``; other non-empty lines are reported on stderr and skipped."""
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            _log(f"{where}:{number}: not a JSON line, skipped: {line[:200]}")
            continue
        if isinstance(record, dict):
            yield record


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, load, torch and Python versions, OpenMP policy and the date (UTC)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gnnpot": gnnpot.__version__,
        "git": _git_describe(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _command_line(argv: Sequence[str], program: str) -> str:
    """``argv`` as a shell command, with the environment variables that change the results."""
    names = ("RMD17_DIR", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")
    env = [f"{name}={shlex.quote(os.environ[name])}" for name in names if name in os.environ]
    return " ".join([*env, program, shlex.join(list(argv))]).strip()


def meta_path(jsonl: str | Path) -> Path:
    """The sidecar with the machine and command of a JSONL file: ``a.jsonl`` -> ``a.meta.json``."""
    path = Path(jsonl)
    return path.with_name(path.stem + ".meta.json")


# ------------------------------------------------------------------------------------ Markdown

_FAMILY_ORDER = sorted(gnnpot.REGISTRY)
_PEER_ORDER = ["schnetpack", "torch-geometric", "nequip", "mace"]
_PEER_MODEL_FAMILY = {
    ("schnetpack", "schnet"): "schnet",
    ("schnetpack", "painn"): "painn",
    ("torch-geometric", "schnet"): "schnet",
    ("torch-geometric", "dimenetpp"): "dimenet",
}


def match_key(record: dict[str, Any]) -> tuple[str, str] | None:
    """``(gnnpot family, gnnpot variant)`` a JSON line compares with, or None when it has no match."""
    peer, model, size = record.get("peer"), str(record.get("model", "")), record.get("size")
    if peer == PEER:
        return model, record.get("variant", size)
    if (peer, model) in _PEER_MODEL_FAMILY:
        return _PEER_MODEL_FAMILY[peer, model], size
    if peer == "nequip" and model.startswith("NequIPGNNModel[") and model.endswith("]"):
        return "nequip", model[len("NequIPGNNModel[") : -1]
    if peer == "mace" and model == "ScaleShiftMACE[small]":
        return "nequip", "small"
    return None


def _workload_key(name: str) -> str | None:
    if len(name) >= 2 and name[0] == "W" and name[1].isdigit():
        return name[:2]
    return None


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


@dataclass
class _Entry:
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # workload -> record
    peak_rss: float | None = None
    n_params: int | None = None
    threads: int | None = None
    model: str = ""
    source: str = ""


def _collect(records: Iterable[dict[str, Any]]) -> tuple[dict, list[dict], list[str]]:
    """Group records by (family, variant) and peer; the last record of a measurement wins."""
    table: dict[tuple[str, str], dict[str, _Entry]] = {}
    scaling: list[dict] = []
    unmatched: list[str] = []
    for record in records:
        if record.get("workload") == SCALING:
            scaling.append(record)
            continue
        key = match_key(record)
        peer = str(record.get("peer"))
        if key is None:
            label = f"{peer} {record.get('model')}/{record.get('size')} {record.get('workload')}"
            if label not in unmatched:
                unmatched.append(label)
            continue
        entry = table.setdefault(key, {}).setdefault(peer, _Entry())
        rss = record.get("value") if record.get("workload") == "peak_rss" else None
        for candidate in (record.get("peak_rss_mb"), rss):
            if isinstance(candidate, int | float):
                entry.peak_rss = max(entry.peak_rss or 0.0, float(candidate))
        workload = _workload_key(str(record.get("workload", "")))
        if workload is None:
            continue
        entry.values[workload] = record
        if record.get("n_params") is not None and workload != "W4":
            entry.n_params = int(record["n_params"])
        threads = record.get("threads", record.get("torch_threads"))
        entry.threads = threads if threads is not None else entry.threads
        entry.model = str(record.get("model"))
        entry.source = str(record.get("hparams_source") or record.get("hyperparameter_source") or "")
    return table, scaling, unmatched


def _variant_size(family: str, name: str) -> str:
    try:
        return variants(family)[name].size
    except (KeyError, ValueError):
        return name


def _row_order(key: tuple[str, str]) -> tuple[int, int]:
    family, name = key
    families = _FAMILY_ORDER.index(family) if family in _FAMILY_ORDER else len(_FAMILY_ORDER)
    try:
        names = list(variants(family)).index(name)
    except (KeyError, ValueError):
        names = 99
    return families, names


FAILED = "FAILED"
Cell = float | str | None  # a number, FAILED or missing


def _value(entry: _Entry | None, workload: str, field_name: str = "value") -> Cell:
    record = entry.values.get(workload) if entry else None
    if record is None:
        return None
    if record.get("value") is None:
        return FAILED
    value = record.get(field_name)
    return float(value) if isinstance(value, int | float) else None


def _show(value: Cell, integer: bool = False) -> str:
    if isinstance(value, str):
        return value
    if integer and value is not None:
        return f"{int(value):,}"
    return _fmt(value)


def _row_label(family: str, name: str) -> str:
    return family if name in ("paper", "small", "tiny") else f"{family} ({name})"


def _size_table(row_keys: list[tuple[str, str]], table: dict[tuple[str, str], dict[str, _Entry]]) -> list[str]:
    """One row per (model, workload): gnnpot's value, then each peer's value and the ratio gnnpot/peer."""
    present = {p for k in row_keys for p in table[k]} - {PEER}
    peers = [p for p in _PEER_ORDER if p in present] + sorted(present - set(_PEER_ORDER))
    header = ["model", "workload", "unit", "gnnpot"] + [c for p in peers for c in (p, f"gnnpot/{p}")]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (1 + 2 * len(peers))) + "|"]
    for key in row_keys:
        entries = table[key]
        ours = entries.get(PEER)
        # (workload, unit, gnnpot's value, the peers' value, integer)
        rows: list[tuple[str, str, Cell, Callable[[_Entry | None], Cell], bool]] = []
        for workload, unit in UNITS.items():
            rows.append((workload, unit, _value(ours, workload), lambda e, w=workload: _value(e, w), False))
            if workload == "W4" and isinstance(_value(ours, "W4", "value_skin0"), float):
                rows.append(("W4, skin 0", unit, _value(ours, "W4", "value_skin0"), lambda e: _value(e, "W4"), False))
        rows.append(("peak RSS", "MB", ours.peak_rss if ours else None, lambda e: e.peak_rss if e else None, False))
        rows.append(("parameters", "", ours.n_params if ours else None, lambda e: e.n_params if e else None, True))
        for workload, unit, value, get, integer in rows:
            others = [get(entries.get(p)) for p in peers]
            if value is None and all(o is None for o in others):
                continue
            cells = [_row_label(*key), workload, unit, _show(value, integer)]
            for other in others:
                ratio = (
                    _ratio(value, other) if isinstance(value, float | int) and isinstance(other, float | int) else "–"
                )
                cells += [_show(other, integer), ratio]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _scaling_table(records: list[dict]) -> list[str]:
    latest: dict[tuple[str, str, int], dict] = {}
    for record in records:
        latest[(str(record.get("model")), str(record.get("variant", record.get("size"))), record.get("num_atoms"))] = (
            record
        )
    lines = [
        "| model | atoms | edges | steps/s | µs/atom/step | steps/s, skin 0 | µs/atom/step, skin 0 | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (family, name, n), record in sorted(latest.items(), key=lambda item: (_row_order(item[0][:2]), item[0][2])):
        label = _row_label(family, name)
        if record.get("value") is None:
            what = "skipped" if str(record.get("notes", "")).startswith("SKIPPED") else FAILED
            lines.append(f"| {label} | {n:,} | – | {what} | – | – | – | – |")
            continue
        lines.append(
            f"| {label} | {n:,} | {record.get('num_edges', 0):,} | {_fmt(record.get('steps_per_s'))} | "
            f"{_fmt(record.get('value'))} | {_fmt(record.get('steps_per_s_skin0'))} | "
            f"{_fmt(record.get('value_skin0'))} | {_fmt(record.get('peak_rss_mb'))} |"
        )
    return lines


def render_markdown(records: Sequence[dict[str, Any]], metas: Sequence[dict[str, Any]], command: str) -> str:
    """The benchmark page: machine, one ratio table per size, the scaling table and the model list.

    Args:
        records: JSON lines of gnnpot and of any peers.
        metas: machine and command of the runs that made them (the ``.meta.json`` sidecars); when empty,
            the machine this is rendered on is described instead.
        command: the command that rendered the page.
    """
    table, scaling, unmatched = _collect(records)
    lines = ["# Speed benchmark: gnnpot and its peers (CPU)", ""]
    lines += [
        "Protocol: `../shared/peers/PROTOCOL.md` (workloads W1-W4, float32, random weights, median of >= 3 timed "
        "repeats after warm-up). Peer harnesses: `../shared/peers/<peer>/bench.py`, each in its own virtual "
        "environment; gnnpot: `gnnpot/benchmark.py`. Ratios are **gnnpot / peer**: for throughput (W1-W4) above 1 "
        "means gnnpot is faster; for peak RSS and parameters below 1 means gnnpot is smaller.",
        "",
        "## Machine and commands",
        "",
    ]
    if not metas:
        metas = [{"machine": machine_info(), "command": None, "note": "machine this page was rendered on"}]
    for meta in metas:
        machine = meta.get("machine", {})
        lines.append(
            f"- {machine.get('date', '?')}: {machine.get('cpu', '?')}, {machine.get('usable_cores', '?')} usable of "
            f"{machine.get('logical_cores', '?')} logical cores, load average at start {machine.get('load_average')}"
            f", {machine.get('platform', '?')}, Python {machine.get('python', '?')}, torch {machine.get('torch', '?')},"
            f" gnnpot {machine.get('gnnpot', '?')} ({machine.get('git') or 'no git'}), OMP_WAIT_POLICY="
            f"{machine.get('omp_wait_policy') or 'unset'}" + (f" ({meta['note']})" if meta.get("note") else "")
        )
        if meta.get("load_average_end") is not None:
            lines.append(f"  load average at the end {meta['load_average_end']}")
        if meta.get("command"):
            lines.append(f"  - command: `{meta['command']}`")
    threads = {}
    for entries in table.values():
        for peer, entry in entries.items():
            if entry.threads is not None:
                threads.setdefault(peer, set()).add(entry.threads)
    if threads:
        lines.append(
            "- torch threads: " + ", ".join(f"{p} {'/'.join(map(str, sorted(t)))}" for p, t in sorted(threads.items()))
        )
    if all(meta.get("command") != command for meta in metas):
        lines.append(f"- page rendered with `{command}`")
    sizes: dict[str, list[tuple[str, str]]] = {}
    for key in sorted(table, key=_row_order):
        sizes.setdefault(_variant_size(*key), []).append(key)
    for size in sorted(
        sizes, key=lambda s: ("small", "paper", "tiny").index(s) if s in ("small", "paper", "tiny") else 9
    ):
        lines += ["", f'## Size "{size}"', ""]
        lines += _size_table(sizes[size], table)
    lines += [
        "",
        "W1-W3 time the model on graphs built beforehand (every harness); W4 includes the neighbour list and the "
        'ASE calculator. gnnpot\'s W4 reuses a skin neighbour list (0.5 Å) between calls; the row "W4, skin 0" '
        "rebuilds it every call, as the peers do, and is compared with the same peer W4 numbers. gnnpot's W4 and "
        "MACE's compute the stress too. Peak RSS is the peak of the process that ran the row's model (per model "
        "and size when the runner started it); parameter counts are of the aspirin (H, C, O) models.",
        "",
        "gnnpot rows run the compiled path (`ForceField.enable_compile`, records with `hparams.compiled` true) "
        "unless the run used `--eager`. Its one-off compilation falls in the warm-up calls, which the protocol "
        "excludes for every harness; it costs seconds (SchNet) to minutes (NequIP paper) and about 150 MB of "
        "resident memory (TorchInductor's import ~40 MB, tracing ~30 MB, compiling ~80 MB), which the peak RSS "
        "rows include.",
    ]
    if scaling:
        lines += ["", "## Scaling: one MD step on periodic fcc Cu (energy + forces through the calculator)", ""]
        lines += _scaling_table(scaling)
        lines += [
            "",
            "µs/atom/step stays flat when the cost is linear in the number of atoms. Peak RSS is that of the process "
            "after the size (sizes run smallest first in one process per model).",
        ]
        skipped = [r for r in scaling if str(r.get("notes", "")).startswith("SKIPPED")]
        lines += [f"- {r.get('model')} ({r.get('variant')}): {r['notes'][len('SKIPPED: ') :]}" for r in skipped]
    models = []
    for key in sorted(table, key=_row_order):
        for peer, entry in sorted(table[key].items()):
            if entry.n_params is not None or entry.source:
                models.append(
                    f"| {key[0]} ({key[1]}) | {peer} | {entry.model} | "
                    f"{f'{entry.n_params:,}' if entry.n_params else '–'} | {entry.source} |"
                )
    if models:
        lines += ["", "## Models", "", "| row | peer | peer's model | parameters | hyperparameters from |"]
        lines += ["|---|---|---|---:|---|", *models]
    failed = [
        r
        for r in records
        if r.get("value") is None and r.get("workload") != "peak_rss" and not str(r.get("notes")).startswith("SKIPPED")
    ]
    if failed:
        lines += ["", "## Failed measurements", ""]
        lines += [
            f"- {r.get('peer')} {r.get('model')}/{r.get('size')} {r.get('workload')}: {r.get('notes')}" for r in failed
        ]
    if unmatched:
        lines += ["", "Lines without a gnnpot counterpart (not in the tables): " + "; ".join(unmatched) + "."]
    return "\n".join(lines) + "\n"


def read_jsonl(paths: Iterable[str | Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """JSON lines of several files (non-JSON lines skipped with a message) and their ``.meta.json`` sidecars."""
    records, metas = [], []
    for path in paths:
        records.extend(_json_records(Path(path).read_text().splitlines(), str(path)))
        sidecar = meta_path(path)
        if sidecar.is_file():
            metas.append(json.loads(sidecar.read_text()))
    return records, metas


# ------------------------------------------------------------------------------------------ CLI


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip() and item.strip().lower() != "none"]


def _peer_venvs(items: Sequence[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        peer, sep, path = item.partition("=")
        if not sep or peer not in PEER_DIRS:
            raise argparse.ArgumentTypeError(f"--peer-venv must be PEER=PATH with PEER in {PEER_DIRS}, got {item!r}")
        out[peer] = Path(path)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``gnnpot benchmark`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="gnnpot benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    families = ",".join(sorted(gnnpot.REGISTRY))
    parser.add_argument("--models", default=families, help=f"comma list of families (default {families})")
    parser.add_argument(
        "--sizes",
        default="paper,small",
        help="comma list of paper, small, tiny or a variant name (paper_r4, paper_r5); 'paper' is every paper variant",
    )
    parser.add_argument("--workloads", default="W1,W2,W3,W4", help="comma list of W1..W4, or 'none' (default all)")
    parser.add_argument("--target-s", type=float, default=1.0, help="seconds per timed repeat (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, median reported, >= 3 (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="most warm-up calls, not timed (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, as the protocol)")
    parser.add_argument(
        "--eager",
        action="store_true",
        help="time gnnpot's eager path (default: the compiled path, ForceField.enable_compile)",
    )
    parser.add_argument(
        "--rmd17-dir",
        default=os.environ.get("RMD17_DIR", "../shared/data/rmd17"),
        help="folder of rmd17_aspirin_train_01.npz (default $RMD17_DIR or ../shared/data/rmd17)",
    )
    parser.add_argument("--out", help="write the JSON lines here (default stdout) and the run's machine and command "
                        "beside it as <name>.meta.json")  # fmt: skip
    parser.add_argument("--in-process", action="store_true", help="run gnnpot in this process, not one per model")
    parser.add_argument("--scaling", action="store_true", help="also time MD steps on fcc Cu, 108 to 10,976 atoms")
    parser.add_argument(
        "--scaling-repeats",
        default=",".join(map(str, SCALING_REPEATS)),
        help="cubic cells per side of the scaling cells (default %(default)s: 4 n^3 atoms)",
    )
    parser.add_argument("--scaling-size", default="small", help="variant of the scaling run (default small)")
    parser.add_argument(
        "--scaling-max-step-s",
        type=float,
        default=10.0,
        help="skip scaling sizes predicted to take longer per step (default 10 s)",
    )
    parser.add_argument(
        "--scaling-max-rss-mb",
        type=float,
        help="skip scaling sizes predicted to need more peak RSS (default 3/4 of the available memory)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the runs in order and stop")
    parser.add_argument("--peers", default="", help=f"comma list of peer harnesses to alternate with: {PEER_DIRS}")
    parser.add_argument(
        "--peer-venv",
        action="append",
        default=[],
        metavar="PEER=PATH",
        help="virtual environment of a peer (default /tmp/peer-spk for schnetpack, /tmp/peer-<peer> otherwise)",
    )
    parser.add_argument("--peers-dir", default=str(DEFAULT_PEERS_DIR), help="folder of the peer harnesses")
    parser.add_argument("--markdown", help="write the ratio tables to this Markdown file")
    parser.add_argument("--from-jsonl", nargs="+", metavar="FILE", help="only render --markdown from these files")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    try:
        args.models = _comma_list(args.models)
        args.sizes = _comma_list(args.sizes)
        args.workloads = [w.upper() for w in _comma_list(args.workloads)]
        args.peers = _comma_list(args.peers)
        args.peer_venv = _peer_venvs(args.peer_venv)
        args.scaling_repeats = [int(r) for r in _comma_list(args.scaling_repeats)]
        for family in args.models:
            select_variants(family, args.sizes)
        variants(args.models[0] if args.models else "schnet")[args.scaling_size]
    except (ValueError, KeyError, argparse.ArgumentTypeError) as error:
        parser.error(str(error))
    if unknown := [w for w in args.workloads if w not in WORKLOADS]:
        parser.error(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}")
    if unknown := [p for p in args.peers if p not in PEER_DIRS]:
        parser.error(f"unknown peers {unknown}; choose from {list(PEER_DIRS)}")
    if args.repeats < 3:
        parser.error(f"the protocol needs --repeats >= 3, got {args.repeats}")
    if args.from_jsonl and not args.markdown:
        parser.error("--from-jsonl needs --markdown")
    if args.peers and args.threads != 2:
        _log(f"note: the peer harnesses always use 2 torch threads; gnnpot uses --threads {args.threads}")
    return args


def _scaling_limits(args: argparse.Namespace) -> tuple[float, float | None]:
    return args.scaling_max_step_s, args.scaling_max_rss_mb


def _setup(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)


def _run_child(args: argparse.Namespace, sink: Sink) -> None:
    _setup(args.threads)
    settings = Settings(args.target_s, args.repeats, args.warmup, compile=not args.eager)
    parts = args.child.split(":")
    if parts[0] == "scaling":
        variant = variants(parts[1])[parts[2]]
        for record in run_scaling(variant, args.scaling_repeats, settings, *_scaling_limits(args)):
            sink.write(record)
        return
    variant = variants(parts[0])[parts[1]]
    need_molecules = any(w in ("W1", "W2", "W3") for w in args.workloads)
    molecules = load_rmd17(args.rmd17_dir) if need_molecules else None
    for record in run_variant(variant, args.workloads, settings, molecules):
        sink.write(record)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (and the peers), or render the tables from saved JSON lines. Returns the exit status."""
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    program = f"python {sys.argv[0]}" if argv is None else "python -m gnnpot.benchmark"
    args = _parse(parser, raw)
    args.rmd17_dir = str(Path(args.rmd17_dir).resolve())
    if args.from_jsonl:
        records, metas = read_jsonl(args.from_jsonl)
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(render_markdown(records, metas, _command_line(raw, program)))
        _log(f"wrote {args.markdown} from {len(records)} lines")
        return 0
    if args.dry_run:
        for job in plan(args):
            print(job.label + (f": {shlex.join(job.command)}" if job.command else " (in this process)"))
        return 0
    stream = open(args.out, "w") if args.out else sys.stdout
    sink = Sink(stream)
    try:
        if args.child:
            _run_child(args, sink)
            return 0
        meta = {"command": _command_line(raw, program), "machine": machine_info()}
        if args.out:  # written now, so that an interrupted run has it too
            meta_path(args.out).write_text(json.dumps(meta, indent=1) + "\n")
        env = dict(os.environ, RMD17_DIR=args.rmd17_dir)
        jobs = plan(args)
        status = 0
        molecules: Molecules | None = None
        for job in jobs:
            t0 = time.perf_counter()
            _log(f"=== {job.label} ===")
            if job.command is not None:
                rc = _run_command(job, env, sink)
                if rc != 0:
                    _log(f"{job.label} exited with status {rc}")
                    status = status or (1 if job.label.startswith("gnnpot") else 0)
            else:
                _setup(args.threads)
                settings = Settings(args.target_s, args.repeats, args.warmup, compile=not args.eager)
                if job.scaling:
                    records = run_scaling(job.variant, args.scaling_repeats, settings, *_scaling_limits(args))
                else:
                    if molecules is None and any(w in ("W1", "W2", "W3") for w in args.workloads):
                        molecules = load_rmd17(args.rmd17_dir)
                    records = run_variant(job.variant, args.workloads, settings, molecules)
                for record in records:
                    sink.write(record)
            _log(f"=== {job.label} done in {time.perf_counter() - t0:.1f} s ===")
        meta["load_average_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
        if args.out:
            meta_path(args.out).write_text(json.dumps(meta, indent=1) + "\n")
        if args.markdown:
            Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
            Path(args.markdown).write_text(render_markdown(sink.records, [meta], _command_line(raw, program)))
            _log(f"wrote {args.markdown}")
        return status
    finally:
        if stream is not sys.stdout:
            stream.close()


if __name__ == "__main__":
    sys.exit(main())
