"""The peer harnesses (``../shared/peers/<peer>/bench.py``).

Which families they match, how to run them, and which gnnpot row each of their JSON lines compares
with.

The matching is data: a family without an entry in :data:`PEER_MATCH` simply has no peer rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks import REPO

PEER = "gnnpot"  # the "peer" field of gnnpot's own lines
DEFAULT_PEERS_DIR = REPO.parent / "shared" / "peers"
# Folder of each harness -> the "peer" field of its JSON lines.
PEER_NAMES = {"schnetpack": "schnetpack", "pyg": "torch-geometric", "mace": "mace", "nequip": "nequip"}
PEER_DIRS = tuple(PEER_NAMES)
# gnnpot family -> (peer folder, the peer's model name) of its matched peers. A harness of one model
# (None) names it "<class>[<size>]" in its lines.
PEER_MATCH: dict[str, list[tuple[str, str | None]]] = {
    "schnet": [("schnetpack", "schnet"), ("pyg", "schnet")],
    "painn": [("schnetpack", "painn")],
    "dimenet": [("pyg", "dimenetpp")],
    "nequip": [("nequip", None)],
    "mace": [("mace", None)],
}
# The peer size run against a gnnpot variant; a variant missing here has no match in that peer
# (MACE's "paper" is a different architecture, 256 channels and 2 layers: only "small" matches).
PEER_SIZES: dict[str, dict[str, str]] = {
    "schnetpack": {"paper": "paper", "small": "small"},
    "pyg": {"paper": "paper", "small": "small"},
    "nequip": {"paper_r4": "paper_r4", "paper_r5": "paper_r5", "small": "small"},
    "mace": {"small": "small"},
}


def default_peer_venv(peer: str) -> Path:
    """``/tmp/peer-spk`` for SchNetPack, ``/tmp/peer-<peer>`` otherwise (as ``run_all.sh``)."""
    return Path("/tmp/peer-spk" if peer == "schnetpack" else f"/tmp/peer-{peer}")


def peer_command(
    peer: str, python: str | Path, peers_dir: Path, model: str | None, size: str, args: argparse.Namespace
) -> list[str]:
    """The command line of one peer harness run, restricted to one model and size.

    Args:
        peer: the harness's folder name.
        python: the interpreter of its virtual environment.
        peers_dir: the folder of the harnesses.
        model: the peer's model name, None for a harness of one model.
        size: the peer's size name.
        args: the runner's arguments (workloads, timing, rMD17 folder).
    """
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


def match_key(record: dict[str, Any]) -> tuple[str, str] | None:
    """``(gnnpot family, gnnpot variant)`` a JSON line compares with, or None when it has no match.

    A peer line matches through :data:`PEER_MATCH` (its model) and :data:`PEER_SIZES` (its size).
    """
    peer, model, size = record.get("peer"), str(record.get("model", "")), record.get("size")
    if peer == PEER:
        return model, record.get("variant", size)
    folders = {name: folder for folder, name in PEER_NAMES.items()}
    # (peer folder, the peer's model name) -> gnnpot family
    families = {(folder, name): family for family, matched in PEER_MATCH.items() for folder, name in matched}
    folder = folders.get(str(peer))
    if (folder, model) in families:
        family = families[folder, model]
    elif (folder, None) in families and model.endswith("]") and "[" in model:
        family, size = families[folder, None], model[model.index("[") + 1 : -1]
    else:
        return None
    variants = {peer_size: variant for variant, peer_size in PEER_SIZES[folder].items()}
    return (family, variants[size]) if size in variants else None
