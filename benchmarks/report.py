"""The benchmark page: ratio tables gnnpot/peer per size, the scaling table and the model list.

Built from JSON lines of gnnpot and of the peers, of this run or of saved files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.peers import PEER, match_key
from benchmarks.records import machine_info
from benchmarks.sizes import variants
from benchmarks.workloads import SCALING, UNITS
from gnnpot import REGISTRY

_FAMILY_ORDER = sorted(REGISTRY)  # the order of the rows
_PEER_ORDER = ["schnetpack", "torch-geometric", "nequip", "mace"]  # the order of the peer columns


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
        "environment; gnnpot: `benchmarks/`. Ratios are **gnnpot / peer**: for throughput (W1-W4) above 1 "
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
