"""gnnpot's side of a run: the models, and the JSON lines of one variant or of the scaling series.

Every line has the fields of the peer harnesses (``../shared/peers/PROTOCOL.md``); a failed or
skipped measurement is a line with ``value`` None and the reason in ``notes``. Messages go to
stderr, so that stdout carries JSON lines only.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ase import Atoms

import gnnpot
from benchmarks import REPO
from benchmarks.peers import PEER
from benchmarks.sizes import Variant
from benchmarks.workloads import (
    MOLECULE_WORKLOADS,
    PREPARED_IN_FORWARD,
    SCALING,
    SCALING_UNIT,
    UNITS,
    WORKLOADS,
    Measurement,
    Settings,
    fcc_cu,
    peak_rss_mb,
    rounded,
    scaling_step,
    w1_train_step,
    w2_infer_single,
    w3_infer_batch,
    w4_md_cu108,
)
from gnnpot import launch
from gnnpot.data import AtomicData, Frames
from gnnpot.models import ForceField
from gnnpot.representations import get_family

# Where the data statistics of the Cu models (W4 and the scaling run) come from.
CU_STATISTICS_FROM = "the Cu108 cell at the cutoff"


def log(message: str) -> None:
    """Write ``message`` to stderr at once."""
    print(message, file=sys.stderr, flush=True)


@functools.cache
def git_describe() -> str | None:
    """Short commit of the gnnpot checkout, ``+dirty`` with uncommitted changes; None outside git."""
    if not (REPO / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if head and dirty else head or None


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
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gnnpot": gnnpot.__version__,
        "git": git_describe(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where there are none."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _gpu_fields() -> dict[str, Any]:
    """The GPU's name and this process's peak GPU memory (MB), once CUDA has been used (``--device cuda``)."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {}
    return {"gpu": torch.cuda.get_device_name(), "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def make_record(
    variant: Variant,
    n_params: int | None,
    workload: str,
    measurement: Measurement | None,
    hparams: dict[str, Any],
    notes: str | None = None,
    unit: str = "",
) -> dict[str, Any]:
    """The JSON line of one measurement, with the fields of the peer harnesses.

    Args:
        variant: the benchmarked variant.
        n_params: trainable parameters of the model, None when it was not built.
        workload: the workload's full name (``W1_train_step``, ..., ``scaling_md``).
        measurement: the result; None for a failed or skipped measurement (``value`` None).
        hparams: the model's hyperparameters as recorded (:func:`record_hparams`).
        notes: the reason of a failed or skipped measurement.
        unit: the unit of a failed or skipped measurement.
    """
    timing = measurement.timing if measurement else None
    record = {
        "peer": PEER,
        "peer_version": gnnpot.__version__,
        "model": variant.family,
        "variant": variant.name,
        "size": variant.size,
        "n_params": n_params,
        "workload": workload,
        "value": rounded(timing.value) if timing else None,
        "unit": measurement.unit if measurement else unit,
        "repeats": len(timing.rates) if timing else 0,
        "notes": measurement.notes if measurement else notes,
        "calls_per_repeat": timing.calls_per_repeat if timing else 0,
        "repeat_values": [rounded(r) for r in timing.rates] if timing else [],
        "seconds_per_call": rounded(timing.seconds_per_call, 7) if timing else None,
        "hparams": hparams,
        "hparams_source": variant.source,
        "dtype": "float32",
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),  # the allocator setting (gnnpot.launch)
        "malloc_reuse_switched": launch.reusing(),  # GNNPOT_MALLOC=auto switched to reuse at a large system
        **_gpu_fields(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "git": git_describe(),
    }
    if measurement:
        for name, value in measurement.extra.items():
            if name in ("value_skin0",):
                record[name] = rounded(value)
            elif name in ("with_graph_build", PREPARED_IN_FORWARD, "calculator_skin0"):
                record.setdefault("extra_rates", {})[name] = rounded(value)
            else:
                record[name] = value
    return record


def data_statistics(family: str, frames: Sequence[Atoms], cutoff: float) -> dict[str, float]:
    """The family's hyperparameters taken from data (NequIP's ``avg_num_neighbors``).

    Args:
        family: a name in :data:`gnnpot.REGISTRY`.
        frames: the structures the statistics are taken over.
        cutoff: neighbour radius of their graphs, Å.

    Returns:
        ``{name: value}`` for each of the family's ``data_statistics``; empty without any.
    """
    functions = get_family(family).data_statistics
    if not functions:
        return {}
    graphs = [AtomicData.from_atoms(atoms, cutoff) for atoms in frames]
    return {name: float(function(graphs)) for name, function in functions.items()}


def build(
    variant: Variant, elements: Sequence[str | int], statistics: Mapping[str, float], compile: bool = False
) -> ForceField:
    """The float32 model of ``variant`` with random weights (seed 0), compiled if asked.

    Args:
        variant: family, cutoff (Å) and hyperparameters.
        elements: the model's elements, symbols or atomic numbers.
        statistics: hyperparameters from data (:func:`data_statistics`).
        compile: run the compiled path (``ForceField.enable_compile``).
    """
    torch.manual_seed(0)
    hparams = {**variant.hparams, **statistics}
    model = gnnpot.build_model(variant.family, cutoff=variant.cutoff, elements=list(elements), **hparams).float()
    return model.enable_compile(compile)


def record_hparams(
    variant: Variant, statistics: Mapping[str, float], statistics_from: str, compile: bool
) -> dict[str, Any]:
    """The ``hparams`` field of a JSON line: the variant's, the build settings and the data statistics.

    Args:
        variant: the benchmarked variant.
        statistics: hyperparameters from data, each recorded with ``<name>_from`` = ``statistics_from``.
        statistics_from: the structures they were taken over.
        compile: whether the compiled path runs.
    """
    out = dict(variant.hparams, cutoff=variant.cutoff, dtype="float32", readout="AtomwiseReadout", e0=0, scale=1)
    out["compiled"] = compile
    for name, value in statistics.items():
        out[name] = rounded(value)
        out[f"{name}_from"] = statistics_from
    return out


def n_params_of(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def _cu_model(variant: Variant, settings: Settings) -> tuple[ForceField, dict[str, Any]]:
    """The Cu-only model of ``variant`` (W4 and the scaling run) and its recorded hyperparameters."""
    statistics = data_statistics(variant.family, [fcc_cu(3)], variant.cutoff)
    hparams = record_hparams(variant, statistics, CU_STATISTICS_FROM, settings.compile)
    return build(variant, ["Cu"], statistics, settings.compile).to(settings.device), hparams


def run_variant(
    variant: Variant, workloads: Sequence[str], settings: Settings, molecules: Frames | None
) -> Iterator[dict[str, Any]]:
    """Run ``workloads`` (``W1``..``W4``) for one variant; yields one JSON record per workload.

    A failing workload yields a record with ``value`` None and the error in ``notes``, as the peers do.

    Args:
        variant: the benchmarked variant.
        workloads: keys of :data:`~benchmarks.workloads.WORKLOADS`, in order.
        settings: how long to time.
        molecules: rMD17 aspirin frames (labels in eV), needed by W1-W3.
    """
    aspirin_model = init_state = None
    statistics: dict[str, float] = {}
    statistics_from = ""
    if any(w in MOLECULE_WORKLOADS for w in workloads):
        if molecules is None:
            raise ValueError("workloads W1-W3 need the rMD17 aspirin frames")
        frames = [molecules[k] for k in range(min(100, len(molecules)))]
        statistics = data_statistics(variant.family, frames, variant.cutoff)
        statistics_from = f"aspirin frames 0-{len(frames) - 1} at the cutoff"
        elements = sorted({int(z) for z in molecules[0].numbers})
        aspirin_model = build(variant, elements, statistics, settings.compile).to(settings.device)
        init_state = {k: v.clone() for k, v in aspirin_model.state_dict().items()}
    functions = {"W1": w1_train_step, "W2": w2_infer_single, "W3": w3_infer_batch}
    for workload in workloads:
        t0 = time.perf_counter()
        name = WORKLOADS[workload]
        n_params, hparams = None, record_hparams(variant, statistics, statistics_from, settings.compile)
        try:
            if workload == "W4":  # a Cu-only model with the same hyperparameters
                model, hparams = _cu_model(variant, settings)
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
        log(
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

    The value is µs per atom per step (:func:`~benchmarks.workloads.scaling_step`). Sizes run in
    rising order in one process, so ``peak_rss_mb`` after each size is the peak of that size.

    A size is skipped (a line with ``value`` None and notes ``SKIPPED: ...``) when the last measured
    size, scaled linearly in the number of atoms, predicts a step longer than ``max_step_s`` or a
    peak RSS above ``max_rss_mb``. DimeNet++ holds about 1,800 triplets per Cu atom at 5 Å, so it
    stops well before 10,000 atoms.

    Args:
        variant: the benchmarked variant.
        repeats: cubic cells per side of each size (``4 * repeat**3`` atoms).
        settings: how long to time.
        max_step_s: longest predicted step that still runs, s.
        max_rss_mb: largest predicted peak RSS that still runs, MB; default 3/4 of this process's
            RSS plus the available memory.
    """
    model, hparams = _cu_model(variant, settings)
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
                log(f"[gnnpot] scaling {variant.family}/{variant.name}: {notes}")
                record = make_record(variant, n_params_of(model), SCALING, None, hparams, notes, SCALING_UNIT)
                record.update(num_atoms=n, repeat=repeat)
                yield record
                continue
        try:
            measurement = scaling_step(model, atoms, repeat, settings)
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            record = make_record(variant, n_params_of(model), SCALING, None, hparams, f"FAILED: {error!r}")
            record.update(num_atoms=n, repeat=repeat, unit=SCALING_UNIT)
            yield record
            continue
        last = (n, 1e-6 * measurement.timing.value * n, peak_rss_mb())
        record = make_record(variant, n_params_of(model), SCALING, measurement, hparams)
        log(
            f"[gnnpot] scaling {variant.family}/{variant.name} {n} atoms: {record['value']} µs/atom/step, "
            f"{record['peak_rss_mb']} MB ({time.perf_counter() - t0:.1f} s)"
        )
        yield record


def json_records(lines: Iterable[str], where: str) -> Iterator[dict[str, Any]]:
    """The JSON objects among ``lines``; other non-empty lines are reported on stderr and skipped.

    Args:
        lines: the text, one JSON object a line.
        where: what to call it in the messages (a file or a harness's stdout).
    """
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log(f"{where}:{number}: not a JSON line, skipped: {line[:200]}")
            continue
        if isinstance(record, dict):
            yield record


def meta_path(jsonl: str | Path) -> Path:
    """The sidecar with the machine and command of a JSONL file: ``a.jsonl`` -> ``a.meta.json``."""
    path = Path(jsonl)
    return path.with_name(path.stem + ".meta.json")


def read_jsonl(paths: Iterable[str | Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """JSON lines of several files (non-JSON lines skipped with a message) and their ``.meta.json`` sidecars."""
    records, metas = [], []
    for path in paths:
        records.extend(json_records(Path(path).read_text().splitlines(), str(path)))
        sidecar = meta_path(path)
        if sidecar.is_file():
            metas.append(json.loads(sidecar.read_text()))
    return records, metas
