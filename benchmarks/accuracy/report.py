"""The page of the time-to-accuracy benchmark (``docs/accuracy.md``) and its plot, from the JSON lines.

One table per molecule (rows: models; columns: each budget mark's force MAE, energy MAE per
molecule and per atom), the ratio of gnnpot's best family to the best peer in force MAE at each
mark (the issue's target: at most 0.8), how the rows were measured, and a plot of the held-out
errors against training time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.8  # gnnpot's best family / the best peer, force MAE (issue 12)
MOLECULE_ORDER = ("ethanol", "aspirin")  # first on the page; others follow alphabetically
PEER_ORDER = ("gnnpot", "mace", "nequip")


def row_key(row: dict[str, Any]) -> tuple[str, str, float, int, int]:
    """What makes a row the same measurement: model, molecule, mark (s), test and training frames."""
    return (
        str(row.get("model")),
        str(row.get("molecule")),
        round(float(row.get("mark_s", 0.0)), 1),
        int(row.get("test_frames") or 0),
        int(row.get("train_frames") or 0),
    )


def is_done(row: dict[str, Any]) -> bool:
    """A finished measurement: it has a force MAE and no error."""
    return row.get("force_mae") is not None and not row.get("error")


def latest(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per measurement (:func:`row_key`): the last finished one, else the last failed one."""
    chosen: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = row_key(row)
        if is_done(row) or key not in chosen or not is_done(chosen[key]):
            chosen[key] = row
    return list(chosen.values())


def best_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each model, molecule and mark, the row measured on the most test frames (then the latest)."""
    best: dict[tuple[str, str, float], dict[str, Any]] = {}
    for row in latest(rows):
        key = row_key(row)[:3]
        old = best.get(key)
        better = old is None or (is_done(row), row_key(row)[3:]) >= (is_done(old), row_key(old)[3:])
        if better:
            best[key] = row
    return list(best.values())


def _molecules(rows: Sequence[dict[str, Any]]) -> list[str]:
    names = {str(r["molecule"]) for r in rows}
    return [m for m in MOLECULE_ORDER if m in names] + sorted(names - set(MOLECULE_ORDER))


def _models(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(model, label)`` in page order: gnnpot's families by name, then MACE, then NequIP."""
    seen = {str(r["model"]): (str(r.get("peer", "gnnpot")), str(r.get("label", r["model"]))) for r in rows}
    rank = {peer: k for k, peer in enumerate(PEER_ORDER)}
    order = sorted(seen, key=lambda m: (rank.get(seen[m][0], len(rank)), m))
    return [(m, seen[m][1]) for m in order]


def _mark_label(minutes: float) -> str:
    return f"{minutes:g} min"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    value = float(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def _cell(row: dict[str, Any] | None, field: str) -> str:
    if row is None:
        return ""
    if not is_done(row):
        return "failed"
    return _num(row.get(field))


def ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ratio gnnpot's best family / the best peer in force MAE, for each molecule and mark with both.

    Returns:
        One dict per (molecule, mark): ``molecule``, ``mark_min``, ``gnnpot`` and ``peer`` (the best
        rows) and ``ratio``.
    """
    rows = [r for r in best_rows(rows) if is_done(r)]
    out = []
    for molecule in _molecules(rows):
        marks = sorted({float(r["mark_min"]) for r in rows if r["molecule"] == molecule})
        for mark in marks:
            here = [r for r in rows if r["molecule"] == molecule and float(r["mark_min"]) == mark]
            ours = [r for r in here if r.get("peer") == "gnnpot"]
            theirs = [r for r in here if r.get("peer") in ("mace", "nequip")]
            if not ours or not theirs:
                continue
            best_ours = min(ours, key=lambda r: r["force_mae"])
            best_theirs = min(theirs, key=lambda r: r["force_mae"])
            ratio = best_ours["force_mae"] / best_theirs["force_mae"]
            out.append(
                {"molecule": molecule, "mark_min": mark, "gnnpot": best_ours, "peer": best_theirs, "ratio": ratio}
            )
    return out


def _table(rows: Sequence[dict[str, Any]], molecule: str) -> list[str]:
    here = [r for r in rows if r["molecule"] == molecule]
    marks = sorted({float(r["mark_min"]) for r in here})
    header = ["model", "parameters"]
    for mark in marks:
        label = _mark_label(mark)
        header += [f"{label}: F (meV/Å)", f"{label}: E (meV)", f"{label}: E (meV/atom)"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for model, label in _models(here):
        mine = {float(r["mark_min"]): r for r in here if r["model"] == model}
        params = next((r.get("n_params") for r in mine.values() if r.get("n_params")), None)
        cells = [label, f"{params:,}" if params else "–"]
        for mark in marks:
            row = mine.get(mark)
            cells += [_cell(row, "force_mae"), _cell(row, "energy_mae"), _cell(row, "energy_mae_per_atom")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _span(values: Iterable[Any]) -> str:
    numbers = sorted(float(v) for v in values if v is not None)
    if not numbers:
        return "–"
    return f"{numbers[0]:g}" if numbers[0] == numbers[-1] else f"{numbers[0]:g}-{numbers[-1]:g}"


def _how(rows: Sequence[dict[str, Any]]) -> list[str]:
    """How the rows were measured: frames, budgets, threads, load, snapshot lag, machines, models."""
    done = [r for r in rows if is_done(r)]
    lines = ["## How it was measured", ""]
    lines.append(
        f"- Frames: rMD17 split 01, {_span(r.get('num_train') for r in done)} training and "
        f"{_span(r.get('num_val') for r in done)} validation frames of `rmd17_<molecule>_train_01.npz` "
        "(gnnpot's seeded 5 % validation split, the same indices for every model; extxyz copies in eV/Å for "
        f"the peers); errors on the first {_span(r.get('test_frames') for r in done)} frames of "
        "`rmd17_<molecule>_test_01.npz`. Force MAE over all components (meV/Å), energy MAE per molecule "
        "(meV) and per atom (meV/atom), computed by the same code for every model from the energies and "
        "forces each model's own evaluator wrote."
    )
    lines.append(
        f"- Budget: one run per model and molecule of {_span(r.get('budget_s', 0) / 60 for r in done)} minutes "
        "of wall-clock time from launch (start-up included); the newest checkpoint is "
        "copied at each mark (EMA weights for every model). A checkpoint lags its mark by "
        f"{_span(round(r['mark_s'] - r['written_s']) for r in done if r.get('written_s') is not None)} s "
        "(gnnpot and NequIP write one every few seconds of training, MACE after every epoch); the plot puts "
        "each snapshot at the time it was written."
    )
    lines.append(
        f"- Threads: {_span(r.get('threads') for r in done)} (`OMP_NUM_THREADS` for every training process). "
        f"Load average (1 min) before the runs {_span((r.get('load_before') or [None])[0] for r in done)}, after "
        f"{_span((r.get('load_after') or [None])[0] for r in done)}; CPU busy share just before launch "
        f"{_span(r.get('cpu_busy_before') for r in done)}. A load above the thread count means other work "
        "shared the machine during that run."
    )
    cached = [r.get("inductor_cache_mb") for r in done if r.get("peer") == "gnnpot"]
    if any(mb is not None for mb in cached):
        lines.append(
            f"- Compilation: TorchInductor's disk cache held {_span(cached)} MB at the launch of each gnnpot run "
            "that recorded it. The compiled families (`compile: true`) spend their first minutes compiling "
            "unless the cache holds their graphs from an earlier run, so the 5-minute mark depends on it."
        )
    machines: dict[str, dict[str, list[str]]] = {}  # machine -> gnnpot commit -> the runs made at it
    for row in done:
        machine = row.get("machine") or {}
        cores, usable = machine.get("logical_cores"), machine.get("usable_cores")
        pinned = f" (the run pinned to {usable})" if usable is not None and cores is not None and usable < cores else ""
        text = f"{machine.get('cpu')}, {cores} cores{pinned}, torch {machine.get('torch')}, "
        text += f"gnnpot {machine.get('gnnpot')}"
        runs = machines.setdefault(text, {}).setdefault(str(machine.get("git")), [])
        run = f"{row['label']} {row['molecule']}"
        if run not in runs:
            runs.append(run)
    for text, commits in machines.items():
        at = "; ".join(f"{commit}: {', '.join(runs)}" for commit, runs in commits.items())
        lines.append(f"- Machine: {text} (commit {at})")
    lines += ["", "Models:", ""]
    for model, label in _models(done):
        row = next(r for r in done if r["model"] == model)
        version = f" {row['peer_version']}" if row.get("peer_version") else ""
        source = (row.get("settings") or {}).get("source", "")
        lines.append(f"- **{label}**{version}: {source}; `{row.get('command', '')}`")
    return lines


def render_markdown(rows: Sequence[dict[str, Any]], command: str, plot: str | None) -> str:
    """The page.

    Args:
        rows: the JSON lines (all of them; :func:`best_rows` picks one per model, molecule and mark).
        command: the command line that rendered it.
        plot: the plot's file name beside the page, or None without one.
    """
    rows = best_rows(rows)
    lines = [
        "# Time to accuracy on rMD17: gnnpot and its peers (CPU)",
        "",
        "Each model trains for a fixed wall-clock budget on the same frames and threads; its "
        "weights at each mark are tested on the same held-out frames. Written by `python -m benchmarks.accuracy` "
        "(`benchmarks/accuracy/`); rows kept in the JSON lines beside this page.",
        "",
    ]
    if not rows:
        return "\n".join([*lines, "No rows yet.", ""])
    found = ratios(rows)
    if found:
        lines += [
            f"## gnnpot's best family / the best peer (force MAE; target ≤ {TARGET_RATIO})",
            "",
            "| molecule | budget | best gnnpot | F (meV/Å) | best peer | F (meV/Å) | ratio | target met |",
            "|---|---:|---|---:|---|---:|---:|---|",
        ]
        for item in found:
            ours, theirs = item["gnnpot"], item["peer"]
            lines.append(
                f"| {item['molecule']} | {_mark_label(item['mark_min'])} | {ours['label']} | "
                f"{_num(ours['force_mae'])} | {theirs['label']} | {_num(theirs['force_mae'])} | "
                f"{item['ratio']:.2f} | {'yes' if item['ratio'] <= TARGET_RATIO else 'no'} |"
            )
        lines.append("")
    for molecule in _molecules(rows):
        lines += [f"## {molecule}", "", *_table(rows, molecule), ""]
    if plot:
        lines += [f"![held-out errors against training time]({plot})", ""]
    lines += [*_how(rows), "", f"Page rendered with `{command}`.", ""]
    return "\n".join(lines)


def plot_errors(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Held-out force and energy MAE (log scale) against training time: a panel per molecule and quantity.

    Each snapshot sits at the time its checkpoint was written (its mark when that is unknown).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in best_rows(rows) if is_done(r)]
    molecules = _molecules(rows)
    quantities = (("force_mae", "force MAE (meV/Å)"), ("energy_mae", "energy MAE (meV)"))
    figure, axes = plt.subplots(
        len(quantities), max(1, len(molecules)), figsize=(5 * max(1, len(molecules)), 7), squeeze=False
    )
    for column, molecule in enumerate(molecules):
        here = [r for r in rows if r["molecule"] == molecule]
        for line, (quantity, title) in enumerate(quantities):
            ax = axes[line][column]
            for model, label in _models(here):
                points = sorted(
                    ((r["written_s"] if r.get("written_s") is not None else r["mark_s"]) / 60.0, r[quantity])
                    for r in here
                    if r["model"] == model
                )
                ours = any(r.get("peer") == "gnnpot" for r in here if r["model"] == model)
                style = "-o" if ours else "--s"
                ax.plot(*zip(*points, strict=True), style, label=label)
            ax.set_yscale("log")
            ax.set_xlabel("training time (min, from launch)")
            ax.set_ylabel(title)
            ax.set_title(f"{molecule}: {title}")
            ax.grid(True, which="both", alpha=0.3)
    if molecules:
        axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
