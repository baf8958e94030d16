"""Active learning: a committee finds the structures it is unsure about, a reference method labels them.

``gnnpot learn --config al.yaml`` runs :func:`run_active_learning`. Each iteration:

1. trains a committee of ``committee`` members with ``gnnpot fit`` on the data so far (member ``m``
   with seed ``seed + m``; from the second iteration on, each member starts from its predecessor,
   ``--model.init_from``, when ``finetune``);
2. measures the members' held-out errors on ``test_file``;
3. runs ``trajectories`` MD runs (``ensemble`` at ``temperature``) with the committee calculator, each
   for up to ``md_time_ps``; a run stops at the first step where the committee's largest per-atom
   force spread passes ``threshold`` (eV/Å) or two atoms come closer than ``min_distance``, and that
   structure is selected; with ``labels_per_trajectory`` above 1 an uncertain run goes on and selects
   up to that many (a trust window, as in DP-GEN: ``spacing_fs`` apart, ended past ``abort_threshold``);
4. stops when every run held for the whole ``md_time_ps`` ("stable") or when the label budget is
   spent; otherwise labels the selected structures with the reference ``calculator``
   (:func:`gnnpot.data.label.label_file`), adds them to the data and goes on.

Every iteration writes one JSON line to ``<out>/log.jsonl`` (labels so far, training frames,
held-out errors, the stable MD time of each run and why it stopped); a re-run with the same
``out`` continues after the last logged iteration. The training data grows in ``<out>/data.xyz``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gnnpot.data.io import read_frames, write_frames

LOG_NAME = "log.jsonl"
DATA_NAME = "data.xyz"
FINISHED = "finished"  # in a member's run folder once its training has ended


@dataclass
class ActiveLearningConfig:
    """The settings of :func:`run_active_learning` (the keys of ``al.yaml``).

    Attributes:
        fit_config: the ``gnnpot fit`` config of every committee member (model, loss, trainer).
        initial_data: labelled start frames (any readable format).
        structures: MD start structures, used in turn; default the frames of ``initial_data``.
        test_file: labelled held-out frames for the error of each iteration (optional).
        calculator: the reference: ``emt``, ``pyscf``, ``xtb`` or ``module:Class``.
        calc_args: keyword arguments of the reference calculator.
        workers: labelling worker processes.
        committee_workers: processes that train the committee's members side by side (an equal
            share of the threads each; each member has its own seed, so the members are the same).
        md_workers: processes that run an iteration's MD runs side by side (each loads the
            committee and takes an equal share of this process's torch threads). The runs are the
            same as one after another: each has its own seeds, and the calculator keeps no state
            between runs that changes a result.
        fit_args: extra ``gnnpot fit`` arguments, e.g. ``["--trainer.max_epochs", "50"]``.
        committee: members per committee (at least 2).
        finetune: start each member from its predecessor of the last iteration.
        ensemble: MD ensemble, ``nve``, ``nvt`` or ``npt``.
        temperature: MD temperature, K.
        timestep: MD time step, fs.
        md_time_ps: how long each MD run must hold, ps.
        trajectories: MD runs per iteration.
        threshold: committee force spread (eV/Å) that marks a structure as uncertain.
        labels_per_trajectory: structures one MD run may select. With more than one, a run goes on past
            its first uncertain structure (its held time still ends there) and selects the next ones
            that pass ``threshold``, each at least ``spacing_fs`` after the last, until it has this
            many, its time is up, or the spread passes ``abort_threshold``: DP-GEN's trust window,
            which labels more per iteration and so trains fewer committees for the same labels.
        spacing_fs: least MD time between two structures one run selects, fs.
        abort_threshold: spread (eV/Å) past which a run that went on is ended and that structure not
            selected: so far out the structure is likely unphysical (DP-GEN's upper trust level).
            ``None`` for no such end.
        min_distance: closest approach (Å) that ends a run as broken.
        label_budget: reference calculations allowed in all.
        max_iterations: iterations at most.
        seed: seeds the members, the velocities and the thermostat.
        out: the folder of the loop (data, iterations, log).
    """

    fit_config: str
    initial_data: str
    structures: str | None = None
    test_file: str | None = None
    calculator: str = "emt"
    calc_args: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    committee_workers: int = 1
    md_workers: int = 1
    fit_args: list[str] = field(default_factory=list)
    committee: int = 4
    finetune: bool = True
    ensemble: str = "nvt"
    temperature: float = 300.0
    timestep: float = 1.0
    md_time_ps: float = 1.0
    trajectories: int = 4
    threshold: float = 0.1
    labels_per_trajectory: int = 1
    spacing_fs: float = 10.0
    abort_threshold: float | None = None
    min_distance: float = 0.5
    label_budget: int = 200
    max_iterations: int = 10
    seed: int = 0
    out: str = "runs/active"

    def __post_init__(self) -> None:
        if self.committee < 2:
            raise ValueError(f"committee must be >= 2 (the force spread needs two members), got {self.committee}")
        for name in ("timestep", "md_time_ps", "threshold", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.abort_threshold is not None and not self.abort_threshold > self.threshold:
            raise ValueError(f"abort_threshold must be above threshold {self.threshold}, got {self.abort_threshold!r}")
        if not self.spacing_fs > 0:
            raise ValueError(f"spacing_fs must be > 0, got {self.spacing_fs!r}")
        for name in (
            "trajectories",
            "label_budget",
            "max_iterations",
            "workers",
            "md_workers",
            "committee_workers",
            "labels_per_trajectory",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> ActiveLearningConfig:
        """Read ``al.yaml``; unknown keys are an error naming the file."""
        import yaml

        path = Path(path)
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(values) - known):
            raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as err:  # a required setting is missing
            raise ValueError(f"{path}: {err}") from err


def run_active_learning(config: ActiveLearningConfig, echo: Any = print) -> list[dict[str, Any]]:
    """Run the loop (see the module docstring); returns the log, one dict per iteration.

    Args:
        config: the settings.
        echo: where each iteration's one-line summary goes (``print`` by default).
    """
    from gnnpot.data.label import label_file

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / DATA_NAME
    log_file = out / LOG_NAME
    log = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.exists() else []
    capped = log and log[-1]["stop"] and log[-1]["stop"].endswith("iterations done")
    if log and log[-1]["stop"] and (not capped or len(log) >= config.max_iterations):
        echo(f"{out}: finished before ({log[-1]['stop']}); nothing to do")
        return log
    if not data.exists():
        write_frames(data, list(read_frames(config.initial_data)))
    starts = list(read_frames(config.structures, require=())) if config.structures else list(read_frames(data))
    # Labels spent so far: the last row's count is from before its own labelling (a failed one spent too).
    labels = log[-1]["labels"] + log[-1].get("labelled", 0) + len(log[-1].get("label_failures", {})) if log else 0
    for iteration in range(len(log), config.max_iterations):
        start = time.perf_counter()
        folder = out / f"iter_{iteration}"
        members = _train_committee(config, data, folder, out / f"iter_{iteration - 1}" if iteration else None)
        row: dict[str, Any] = {"iteration": iteration, "labels": labels, "train_frames": len(read_frames(data))}
        row.update(_held_out(config, members))
        runs = _explore(config, members, starts, iteration, folder)
        row["md_stable_ps"] = [run["stable_ps"] for run in runs]
        row["md_stopped"] = [run["stopped"] for run in runs]
        row["md_selected"] = [len(run["atoms"]) for run in runs]
        # Round robin over the runs (every run's first structure, then every second one...), so that a
        # budget cut keeps the most different structures.
        depth = max((len(run["atoms"]) for run in runs), default=0)
        selected = [run["atoms"][k] for k in range(depth) for run in runs if k < len(run["atoms"])]
        stop = None
        if not selected:
            stop = f"stable: every MD run held for {config.md_time_ps} ps"
        elif labels >= config.label_budget:
            stop = f"label budget of {config.label_budget} spent"
        elif iteration == config.max_iterations - 1:
            stop = f"{config.max_iterations} iterations done"
        if stop is None:
            selected = selected[: config.label_budget - labels]
            candidates = folder / "selected.xyz"
            write_frames(candidates, selected)
            report = label_file(
                candidates, folder / "labelled.xyz", config.calculator, config.calc_args, workers=config.workers
            )
            row["labelled"] = report.labelled
            row["label_failures"] = {str(k): v for k, v in report.failed.items()}
            labels += report.labelled + len(report.failed)  # a failed calculation spent its budget too
            if report.labelled:
                write_frames(data, list(read_frames(data)) + list(read_frames(folder / "labelled.xyz")))
        row["stop"] = stop
        row["seconds"] = round(time.perf_counter() - start, 1)
        log.append(row)
        with log_file.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        echo(_summary(row))
        if stop:
            break
    return log


def _train_committee(config: ActiveLearningConfig, data: Path, folder: Path, previous: Path | None) -> list[Path]:
    """Fit the members (or reuse those a killed run finished); returns their run folders."""
    members = [folder / "committee" / f"member_{member}" for member in range(config.committee)]
    todo = {}
    for member, run in enumerate(members):
        # Not best.ckpt: Lightning writes it at every better validation, so a killed member has one too.
        if not (run / FINISHED).exists():
            shutil.rmtree(run, ignore_errors=True)  # a killed member's files; Lightning would version around them
            argv = ["fit", "--config", config.fit_config, *config.fit_args]
            argv += ["--data.train_file", str(data), "--seed_everything", str(config.seed + member)]
            argv += ["--run.dir", str(folder), "--run.name", "committee", "--run.version", f"member_{member}"]
            argv += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
            if config.finetune and previous is not None:
                argv += ["--model.init_from", str(previous / "committee" / f"member_{member}")]
            todo[member] = argv
    workers = min(config.committee_workers, len(todo))
    if workers <= 1:
        codes: Any = ((member, _fit_member(argv)) for member, argv in todo.items())  # lazy: ends at a failure
    else:
        pool, threads = _worker_pool(workers)
        with pool:
            futures = {m: pool.submit(_fit_member, [*argv, "--threads", str(threads)]) for m, argv in todo.items()}
            codes = [(member, future.result()) for member, future in futures.items()]
    failed = []
    for member, code in codes:
        if code == 0:
            (members[member] / FINISHED).touch()  # before any error: a resume keeps the members that finished
        else:
            failed.append(member)
            if workers <= 1:
                break
    if failed:
        where = ", ".join(f"{member} in {members[member]}" for member in failed)
        raise RuntimeError(f"training committee member {where} failed (see the error above)")
    return members


def _fit_member(argv: list[str]) -> int:
    """``gnnpot fit`` with ``argv`` in this process; its exit code."""
    from gnnpot.cli import main

    return main(argv)


def _worker_pool(workers: int) -> tuple[Any, int]:
    """Spawned worker processes and the torch threads each gets: an equal share of this process's."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    threads = max(1, torch.get_num_threads() // workers)  # never more threads in all than before
    # spawn, not fork: a forked child of a process that has run OpenMP work can hang in it.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads, initargs=(threads,))
    return pool, threads


def _held_out(config: ActiveLearningConfig, members: list[Path]) -> dict[str, Any]:
    """The members' mean held-out force and energy MAE (meV/Å, meV/atom) on ``test_file``."""
    if not config.test_file:
        return {}
    from gnnpot.models import load_model
    from gnnpot.training.evaluate import evaluate_file

    metrics = [evaluate_file(load_model(member), config.test_file)[0]["metrics"] for member in members]
    result = {}
    for name in ("forces_mae", "energy_per_atom_mae"):
        values = [m[name] for m in metrics if name in m and math.isfinite(m[name])]
        if values:
            result[f"test_{name}"] = float(np.mean(values))
    return result


def _explore(
    config: ActiveLearningConfig, members: list[Path], starts: list, iteration: int, folder: Path
) -> list[dict[str, Any]]:
    """The MD runs of one iteration: how long each held, why it stopped, the structures it selected."""
    jobs = []
    for trajectory in range(config.trajectories):
        index = (iteration * config.trajectories + trajectory) % len(starts)
        atoms = starts[index].copy()
        atoms.calc = None
        jobs.append((atoms, trajectory, index))
    paths = [str(member) for member in members]
    workers = min(config.md_workers, len(jobs))
    if workers == 1:
        from gnnpot.calculators import GNNPotCalculator

        calc = GNNPotCalculator(paths)
        return [_trajectory(config, calc, atoms, iteration, *job, folder) for atoms, *job in jobs]
    pool, _ = _worker_pool(workers)
    with pool:
        futures = [pool.submit(_trajectory, config, paths, atoms, iteration, *job, folder) for atoms, *job in jobs]
        return [future.result() for future in futures]


def _trajectory(
    config: ActiveLearningConfig, calc: Any, atoms: Any, iteration: int, trajectory: int, index: int, folder: Path
) -> dict[str, Any]:
    """One MD run from ``atoms`` (start structure ``index``); its log is ``md_<trajectory>.log``.

    ``calc`` is the committee calculator, or the member paths to build one from (in a worker process).
    """
    if isinstance(calc, list):
        from gnnpot.calculators import GNNPotCalculator

        calc = GNNPotCalculator(calc)
    steps = int(round(config.md_time_ps * 1000 / config.timestep))
    with (folder / f"md_{trajectory}.log").open("w") as log:
        seed = config.seed + 1000 * iteration + trajectory
        segment = _segment(config, calc, atoms, steps, config.threshold, log, seed, fresh=True)
        selected = []
        if segment.stopped:
            selected.append(_pick(atoms, iteration, index))
            selected += _go_on(config, calc, atoms, steps - segment.steps, log, seed, (iteration, index))
    return {"stable_ps": round(segment.time_ps, 4), "stopped": segment.stopped, "atoms": selected}


def _go_on(
    config: ActiveLearningConfig, calc: Any, atoms: Any, left: int, log: Any, seed: int, origin: tuple[int, int]
) -> list:
    """Continue a run past its first uncertain structure; the further structures it selects (trust window)."""
    spacing = max(1, int(round(config.spacing_fs / config.timestep)))
    if calc.min_distance < config.min_distance:
        return []  # a broken structure ends the run
    selected: list = []
    elapsed = 0.0
    while len(selected) < config.labels_per_trajectory - 1 and left > spacing:
        seed += 100_000  # a new Langevin noise stream for each stretch
        away = _segment(config, calc, atoms, spacing, config.abort_threshold, log, seed)
        seek = None
        if not away.stopped:
            seek = _segment(config, calc, atoms, left - spacing, config.threshold, log, seed + 50_000)
        elapsed += away.time_ps + (seek.time_ps if seek else 0.0)
        left -= away.steps + (seek.steps if seek else 0)
        worst = float(np.max(calc.results["forces_std"]))
        if seek is None or not seek.stopped or calc.min_distance < config.min_distance:
            break
        if config.abort_threshold is not None and worst > config.abort_threshold:
            break
        selected.append(_pick(atoms, *origin, after_first_ps=elapsed))
    return selected


def _segment(
    config: ActiveLearningConfig,
    calc: Any,
    atoms: Any,
    steps: int,
    threshold: float | None,
    log: Any,
    seed: int,
    fresh: bool = False,
) -> Any:
    """One stretch of a run: a ``fresh`` one draws the velocities, the others go on from the current state."""
    from gnnpot.calculators.dynamics import run_md

    return run_md(
        atoms,
        calc,
        ensemble=config.ensemble,
        temperature=config.temperature,
        timestep=config.timestep,
        steps=steps,
        max_force_std=threshold,
        min_distance=config.min_distance,
        seed=seed,
        init_velocities=fresh,
        interval=max(1, steps // 100),
        logfile=log,
    )


def _pick(atoms: Any, iteration: int, index: int, after_first_ps: float | None = None) -> Any:
    """A copy of the structure a run stopped at, without results, with where it came from."""
    picked = atoms.copy()
    picked.calc = None
    picked.info = {"active_iteration": iteration, "md_start": index}
    if after_first_ps is not None:  # MD time since the run's first uncertain structure
        picked.info["md_after_first_ps"] = round(after_first_ps, 4)
    return picked


def _summary(row: dict[str, Any]) -> str:
    """One line per iteration for the terminal."""
    error = f"test F MAE {row['test_forces_mae']:.1f} meV/Å, " if "test_forces_mae" in row else ""
    held = ", ".join(f"{t:g}" for t in row["md_stable_ps"])
    end = f"; stop: {row['stop']}" if row["stop"] else f"; +{row.get('labelled', 0)} labels"
    return (
        f"iteration {row['iteration']}: {row['train_frames']} training frames ({row['labels']} labels so far), "
        f"{error}MD held {held} ps{end} ({row['seconds']:.0f} s)"
    )


def log_table(log: list[dict[str, Any]]) -> str:
    """The log as a Markdown table: one row per iteration."""
    lines = [
        "| iteration | training frames | labels so far | held-out F MAE (meV/Å) | held-out E MAE (meV/atom) "
        "| MD held (ps, per run) | new labels | stop |",
        "|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in log:
        forces = f"{row['test_forces_mae']:.1f}" if "test_forces_mae" in row else ""
        energy = f"{row['test_energy_per_atom_mae']:.2f}" if "test_energy_per_atom_mae" in row else ""
        held = ", ".join(f"{t:g}" for t in row["md_stable_ps"])
        lines.append(
            f"| {row['iteration']} | {row['train_frames']} | {row['labels']} | {forces} | {energy} | {held} "
            f"| {row.get('labelled', '')} | {row['stop'] or ''} |"
        )
    return "\n".join(lines)
