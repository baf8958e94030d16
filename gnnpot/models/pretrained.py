"""Pretrained models: shipped inside the package, or hosted elsewhere and cached on first use.

:data:`PRETRAINED` is a literal registry. An entry with ``file`` names a model file in
``gnnpot/pretrained/`` (shipped in the wheel, so ``load_model(name)`` works offline). An entry with
``url`` and ``sha256`` is downloaded once into the cache folder (``$GNNPOT_CACHE`` or
``~/.cache/gnnpot``) and checked against its hash. Each model file carries its training recipe and
test metrics in its metadata (:func:`gnnpot.models.read_metadata`).
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import Any

from gnnpot.data.download import fetch

# name -> {"file": shipped file name} or {"url": ..., "sha256": ...}, plus a one-line description.
PRETRAINED: dict[str, dict[str, Any]] = {
    "schnet-emt-cuau": {
        "file": "schnet-emt-cuau.pt",
        "description": "SchNet, configs/schnet_demo.yaml on the embedded EMT Cu-Au data",
    },
    "painn-emt-cuau": {
        "file": "painn-emt-cuau.pt",
        "description": "PaiNN, configs/painn_demo.yaml on the embedded EMT Cu-Au data",
    },
    "nequip-emt-cuau": {
        "file": "nequip-emt-cuau.pt",
        "description": "NequIP-like, configs/nequip_demo.yaml on the embedded EMT Cu-Au data",
    },
    "dimenet-emt-cuau": {
        "file": "dimenet-emt-cuau.pt",
        "description": "DimeNet++, configs/dimenet_demo.yaml on the embedded EMT Cu-Au data",
    },
    "mace-emt-cuau": {
        "file": "mace-emt-cuau.pt",
        "description": "MACE (16 channels, correlation 2), configs/mace_demo.yaml (30 epochs, stage two) on the "
        "embedded EMT Cu-Au data",
    },
    "mace-rmd17-ethanol": {
        "file": "mace-rmd17-ethanol.pt",
        "description": "MACE small on rMD17 ethanol split 01: configs/mace_rmd17_cpu.yaml (~2 h, 1 CPU thread), "
        "then two warm restarts with configs/mace_rmd17_cpu_restart.yaml (~1 h and ~2 h)",
    },
    "mace-rmd17-aspirin": {
        "file": "mace-rmd17-aspirin.pt",
        "description": "MACE small on rMD17 aspirin split 01: configs/mace_rmd17_cpu.yaml (~2 h, 1 CPU thread), "
        "then three warm restarts with configs/mace_rmd17_cpu_restart.yaml (~2 h, ~75 min and ~30 min)",
    },
    "schnet-rmd17-ethanol": {
        "file": "schnet-rmd17-ethanol.pt",
        "description": "SchNet, configs/schnet_rmd17.yaml on rMD17 ethanol split 01 (950 train frames)",
    },
    "schnet-rmd17-aspirin": {
        "file": "schnet-rmd17-aspirin.pt",
        "description": "SchNet, configs/schnet_rmd17.yaml on rMD17 aspirin split 01 (950 train frames)",
    },
}


def list_pretrained() -> list[str]:
    """Names accepted by ``gnnpot.load_model(name)`` and ``GNNPotCalculator(name)``."""
    return sorted(PRETRAINED)


def cache_dir() -> Path:
    """Where hosted models are kept: ``$GNNPOT_CACHE`` or ``~/.cache/gnnpot``."""
    return Path(os.environ.get("GNNPOT_CACHE", Path.home() / ".cache" / "gnnpot"))


def pretrained_path(name: str, registry: dict[str, dict[str, Any]] | None = None) -> Path:
    """The local file of pretrained model ``name``, downloading a hosted one into :func:`cache_dir` once.

    Raises:
        KeyError: unknown name.
        OSError: a hosted file whose sha256 does not match (the download is discarded).
    """
    registry = PRETRAINED if registry is None else registry
    if name not in registry:
        raise KeyError(f"no pretrained model {name!r}; available: {sorted(registry)}")
    entry = registry[name]
    if "file" in entry:
        path = Path(str(resources.files("gnnpot") / "pretrained" / entry["file"]))
        if not path.is_file():
            raise FileNotFoundError(f"pretrained model {name!r}: {path} is missing from the installation")
        return path
    target = cache_dir() / f"{name}.pt"
    if target.is_file() and _sha256(target) == entry["sha256"]:
        return target
    return fetch(entry["url"], target, sha256=entry["sha256"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
