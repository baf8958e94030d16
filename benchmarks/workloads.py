"""The measurements: data, the timing rule, workloads W1-W4 and one step of the scaling run.

Each workload takes a float32 model with random weights and returns a :class:`Measurement`; the
JSON lines are made in :mod:`benchmarks.records`.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import all_changes
from torch_geometric.data import Batch

import gnnpot
from gnnpot import keys
from gnnpot.data import AtomicData, Frames, frame_labels, read_frames
from gnnpot.models import ForceField

WORKLOADS = {"W1": "W1_train_step", "W2": "W2_infer_single", "W3": "W3_infer_batch", "W4": "W4_md_cu108"}
UNITS = {"W1": "structures/s", "W2": "calls/s", "W3": "structures/s", "W4": "calls/s"}
MOLECULE_WORKLOADS = ("W1", "W2", "W3")  # the workloads on rMD17 aspirin
SCALING = "scaling_md"
SCALING_UNIT = "us/atom/step"
SCALING_REPEATS = (3, 4, 5, 6, 8, 10, 12, 14)  # fcc cubic cells per side: 108 ... 10,976 atoms
CU_LATTICE = 3.61  # Å
W1_FRAMES = 5
W3_FRAMES = 32
# extra_rates key of the rate with representation.prepare inside the forward pass (the name dates
# from DimeNet++'s triplets, the only tensors a family prepares today).
PREPARED_IN_FORWARD = "triplets_in_forward"

# ---------------------------------------------------------------------------------------- data


def rmd17_frames(directory: str | Path, molecule: str = "aspirin", split: str = "train", index: int = 1) -> Frames:
    """Frames of ``rmd17_<molecule>_<split>_<index:02d>.npz``, labels in eV and eV/Å (:func:`read_frames`).

    Args:
        directory: folder of the rMD17 split files.
        molecule: rMD17 molecule name.
        split: ``"train"`` or ``"test"``.
        index: split number, 1-5.

    Raises:
        FileNotFoundError: the file is not in ``directory``.
    """
    path = Path(directory) / f"rmd17_{molecule}_{split}_{index:02d}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"rMD17 file {path} not found (set RMD17_DIR or --rmd17-dir)")
    return read_frames(path)


def mean_energy(frames: Frames) -> float:
    """Mean energy label of all ``frames``, eV."""
    return float(np.mean([frame_labels(atoms)[keys.ENERGY] for atoms in frames]))


def molecule_graphs(
    frames: Frames, indices: Sequence[int], cutoff: float, energy_offset: float | None = None
) -> list[AtomicData]:
    """Graphs of ``frames[indices]``, with labels when ``energy_offset`` is given.

    Args:
        frames: labelled frames (energies in eV, forces [N, 3] in eV/Å).
        indices: which ones.
        cutoff: neighbour radius, Å.
        energy_offset: subtracted from the energy labels, eV (the mean of the file); ``None`` for
            unlabelled graphs (inference).
    """
    graphs = []
    for index in indices:
        atoms = frames[index]
        labels = None
        if energy_offset is not None:
            found = frame_labels(atoms)
            labels = {keys.ENERGY: float(found[keys.ENERGY]) - energy_offset, keys.FORCES: found[keys.FORCES]}
        graphs.append(AtomicData.from_atoms(atoms, cutoff, labels=labels, source=frames.source))
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


def num_edges(atoms: Atoms, cutoff: float) -> int:
    """Directed edges of the graph of ``atoms`` within ``cutoff`` (Å)."""
    return int(AtomicData.from_atoms(atoms, cutoff).edge_index.shape[1])


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
        device: torch device of the models and graphs (``cuda``: each timed call ends with a
            synchronisation, and the calculators run device-resident).
    """

    target_s: float = 1.0
    repeats: int = 5
    warmup: int = 3
    compile: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.repeats < 3:
            raise ValueError(f"the protocol needs >= 3 timed repeats, got {self.repeats!r}")
        if not self.target_s > 0:
            raise ValueError(f"target_s must be > 0, got {self.target_s!r}")

    def extra(self) -> Settings:
        """Shorter settings for the secondary rates in the notes (as the peers time theirs)."""
        return Settings(target_s=0.5 * self.target_s, repeats=3, warmup=2, compile=self.compile, device=self.device)

    def sync(self) -> None:
        """Wait for the device's queued work (a no-op on the CPU), so that a timed call is a whole call."""
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)


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

    Args:
        fn: one call of the workload.
        items_per_call: structures (or calls) one call counts for.
        settings: target seconds per repeat, repeats and warm-up calls.
    """
    start = time.perf_counter()
    warm = []
    for k in range(max(2, settings.warmup)):
        t0 = time.perf_counter()
        fn()
        settings.sync()
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
            settings.sync()
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


def rounded(value: float | None, digits: int = 4) -> float | None:
    """``value`` rounded to ``digits`` decimals; None stays None."""
    return None if value is None else round(float(value), digits)


# ---------------------------------------------------------------------------------- workloads


@dataclass
class Measurement:
    """One workload's result before it becomes a JSON line."""

    timing: Timing
    unit: str
    notes: str
    extra: dict[str, Any] = field(default_factory=dict)


def _batch_rates(
    model: ForceField,
    call: Callable[[Batch], Any],
    make_batch: Callable[[], Batch],
    items: int,
    settings: Settings,
    unit: str,
) -> tuple[Timing, dict[str, float], str]:
    """The rate of ``call`` on a prebuilt batch, and the secondary rates.

    The headline batch carries the tensors of ``representation.prepare``, built beforehand. The
    secondary rates (shorter settings) build the graphs at every call (``with_graph_build``) and,
    where the family prepares tensors, leave that to the forward pass (:data:`PREPARED_IN_FORWARD`).

    Returns:
        The headline timing, the secondary rates by name, and the end of the notes on the prepared
        tensors (empty when the family prepares none).
    """
    device = settings.device
    batch = make_batch().to(device)
    prepared = model.potential.representation.prepare(batch)
    batch.update(prepared)
    timing = timeit(lambda: call(batch), items, settings)
    extra = {"with_graph_build": timeit(lambda: call(make_batch().to(device)), items, settings.extra()).value}
    if not prepared:
        return timing, extra, ""
    plain = make_batch().to(device)
    rate = extra[PREPARED_IN_FORWARD] = timeit(lambda: call(plain), items, settings.extra()).value
    note = (
        f". The headline graphs carry representation.prepare's {', '.join(sorted(prepared))} (built beforehand, as "
        f"PyG's harness does DimeNet++'s triplets); built inside forward from prebuilt edges (gnnpot's default "
        f"pipeline): {rate:.3f} {unit}"
    )
    return timing, extra, note


def w1_train_step(model: ForceField, frames: Frames, cutoff: float, settings: Settings) -> Measurement:
    """One optimisation step on a batch of aspirin frames 0-4 (graphs prebuilt).

    Args:
        model: the float32 model; its weights change.
        frames: rMD17 aspirin frames with labels in eV and eV/Å.
        cutoff: neighbour radius of the graphs, Å.
        settings: how long to time.
    """
    indices = list(range(W1_FRAMES))
    offset = mean_energy(frames)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()  # ForceField keeps the graph of the forces (create_graph) while training

    def step(data: Batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(data)
        natoms = data[keys.NUM_ATOMS].to(out[keys.ENERGY].dtype)
        energy = ((out[keys.ENERGY] - data[keys.ENERGY]) / natoms).square().mean()
        forces = (out[keys.FORCES] - data[keys.FORCES]).square().mean()
        (1.0 * energy + 100.0 * forces).backward()
        optimizer.step()

    def make_batch() -> Batch:
        return Batch.from_data_list(molecule_graphs(frames, indices, cutoff, offset))

    timing, extra, prepared_note = _batch_rates(model, step, make_batch, len(indices), settings, UNITS["W1"])
    notes = (
        f"aspirin {Path(frames.source).name} frames 0-4 in one batch; graphs prebuilt "
        "(AtomicData.from_atoms + Batch.from_data_list, not timed); ForceField in train() mode -> forces "
        "with create_graph; loss = MSE(E/atom) + 100 MSE(F) in eV (gnnpot.training.PotentialLoss's default "
        "terms, written out so that Lightning is not imported), E minus the mean of the file; Adam lr 1e-3. "
        f"Incl. graph building every step: {extra['with_graph_build']:.3f} structures/s{prepared_note}"
    )
    return Measurement(timing, UNITS["W1"], notes, extra)


def _inference(
    model: ForceField, frames: Frames, cutoff: float, settings: Settings, indices: list[int], unit: str
) -> tuple[Timing, dict[str, float], str]:
    """The rate of energy + forces on a prebuilt batch of ``frames[indices]``, and the secondary rates."""
    model.eval()  # no create_graph

    def call(data: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(data)
        return out[keys.ENERGY].detach(), out[keys.FORCES].detach()

    def make_batch() -> Batch:
        return Batch.from_data_list(molecule_graphs(frames, indices, cutoff))

    return _batch_rates(model, call, make_batch, len(indices), settings, unit)


def w2_infer_single(model: ForceField, frames: Frames, cutoff: float, settings: Settings) -> Measurement:
    """Energy and forces of aspirin frame 0, many calls (the MD latency regime).

    Args:
        model: the float32 model.
        frames: rMD17 aspirin frames.
        cutoff: neighbour radius of the graphs, Å.
        settings: how long to time.
    """
    timing, extra, prepared_note = _inference(model, frames, cutoff, settings, [0], UNITS["W2"])
    calc = gnnpot.GNNPotCalculator(model, skin=0.0, device=settings.device)
    extra["calculator_skin0"] = _calculator_rate(calc, frames[0], settings.extra()).value
    notes = (
        f"aspirin {Path(frames.source).name} frame 0; prebuilt graph (Batch of 1, neighbour list not timed); "
        "ForceField in eval() mode, no create_graph. Incl. graph building every call: "
        f"{extra['with_graph_build']:.3f} calls/s; through GNNPotCalculator(skin=0) (fresh neighbour list every "
        f"call, alternating two geometries): {extra['calculator_skin0']:.3f} calls/s{prepared_note}"
    )
    return Measurement(timing, UNITS["W2"], notes, extra)


def w3_infer_batch(model: ForceField, frames: Frames, cutoff: float, settings: Settings) -> Measurement:
    """Energy and forces of aspirin frames 0-31 in one batch; arguments as :func:`w2_infer_single`."""
    indices = list(range(W3_FRAMES))
    timing, extra, prepared_note = _inference(model, frames, cutoff, settings, indices, UNITS["W3"])
    notes = (
        f"aspirin {Path(frames.source).name} frames 0-31 in one batch; graphs prebuilt (not timed); eval(), "
        f"no create_graph. Incl. graph building every call: {extra['with_graph_build']:.3f} structures/s"
        f"{prepared_note}"
    )
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


def _calculator_rates(
    model: ForceField, atoms: Atoms, settings: Settings, fresh_settings: Settings
) -> tuple[Timing, Timing, dict[str, Any]]:
    """Calls/s through ``GNNPotCalculator`` with its default skin list, then with ``skin=0``.

    Returns:
        The two timings, and the skin (Å) with the neighbour-list builds of each calculator.
    """
    calc = gnnpot.GNNPotCalculator(model, device=settings.device)
    timing = _calculator_rate(calc, atoms, settings)
    # the device-resident path (off the CPU) keeps vesin-torch's own Verlet list, which counts no builds
    info = {"skin": calc.neighbors.skin, "neighbor_list_builds": calc.neighbors.num_builds}
    del calc  # its neighbour list is freed before the next one is built
    fresh = gnnpot.GNNPotCalculator(model, skin=0.0, device=settings.device)
    skin0 = _calculator_rate(fresh, atoms, fresh_settings)
    info["neighbor_list_builds_skin0"] = fresh.neighbors.num_builds
    return timing, skin0, info


def w4_md_cu108(model: ForceField, settings: Settings, repeat: int = 3) -> Measurement:
    """Periodic Cu108 through ``GNNPotCalculator`` with its default skin, and with ``skin=0``.

    Args:
        model: a float32 model of Cu.
        settings: how long to time (both rates).
        repeat: cubic cells per side.
    """
    atoms = fcc_cu(repeat)
    timing, skin0, info = _calculator_rates(model, atoms, settings, settings)
    skin, builds = info["skin"], info["neighbor_list_builds"]
    edges = num_edges(atoms, model.cutoff)
    extra = {
        "value_skin0": skin0.value,
        "repeat_values_skin0": [rounded(r) for r in skin0.rates],
        **info,
        "num_atoms": len(atoms),
        "num_edges": edges,
    }
    notes = (
        f"fcc Cu {repeat}x{repeat}x{repeat} cubic ({len(atoms)} atoms, a={CU_LATTICE}, rattle 0.05 seed 1, pbc), "
        f"{edges} directed edges at {model.cutoff} Å; GNNPotCalculator(model).calculate(atoms, "
        "['energy', 'forces'], all_changes), alternating two geometries (atom 0 moved by 1e-4 Å); ForceField "
        f"also computes the stress of a periodic cell. Headline: default skin {skin} Å (vesin list at cutoff + "
        f"skin reused while no atom moved > skin/2: {builds} builds in all calls); with skin=0 (fresh list every "
        f"call, as the peers): {skin0.value:.3f} calls/s. Separate Cu-only model, same hyperparameters; "
        "random weights"
    )
    return Measurement(timing, UNITS["W4"], notes, extra)


def scaling_step(model: ForceField, atoms: Atoms, repeat: int, settings: Settings) -> Measurement:
    """One MD step on ``atoms``, fcc Cu of ``repeat``^3 cubic cells (:func:`fcc_cu`), in µs per atom per step.

    The value uses the calculator's default skin; ``value_skin0`` rebuilds the neighbour list at
    every step (timed with the shorter :meth:`Settings.extra`).

    Args:
        model: a float32 model of Cu.
        atoms: the cell, ``fcc_cu(repeat)``.
        repeat: its cubic cells per side (for the notes).
        settings: how long to time.
    """
    n = len(atoms)
    timing, skin0, info = _calculator_rates(model, atoms, settings, settings.extra())
    per_atom = Timing(
        value=1e6 / (timing.value * n),
        rates=[1e6 / (r * n) for r in timing.rates],
        calls_per_repeat=timing.calls_per_repeat,
        seconds_per_call=timing.seconds_per_call,
    )
    edges = num_edges(atoms, model.cutoff)
    notes = (
        f"fcc Cu {repeat}^3 cubic cells ({n} atoms, {edges} edges, a={CU_LATTICE}, rattle 0.05 seed 1, pbc); "
        "one MD step = GNNPotCalculator.calculate(['energy', 'forces']) alternating two geometries; value = "
        f"µs per atom per step with the default skin {info['skin']} Å (list reused); value_skin0 = fresh list every "
        "step (3 repeats of half the target time); peak_rss_mb = process peak after this size (sizes run "
        "smallest first)"
    )
    extra = {
        "num_atoms": n,
        "num_edges": edges,
        "repeat": repeat,
        "steps_per_s": rounded(timing.value),
        "value_skin0": 1e6 / (skin0.value * n),
        "steps_per_s_skin0": rounded(skin0.value),
        "skin": info["skin"],
    }
    return Measurement(per_atom, SCALING_UNIT, notes, extra)
