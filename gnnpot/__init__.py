"""gnnpot: machine-learned interatomic potentials on PyTorch Geometric.

The names below load on first use (PEP 562), so that ``import gnnpot`` is cheap: the ``gnnpot``
command (:mod:`gnnpot.launch`) decides how to start its process before torch is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "REGISTRY": "gnnpot.representations",
    "ForceField": "gnnpot.models",
    "GNNPotCalculator": "gnnpot.calculators",
    "Potential": "gnnpot.models",
    "build_model": "gnnpot.models",
    "list_pretrained": "gnnpot.models",
    "load_model": "gnnpot.models",
    "predict": "gnnpot.calculators.predict",
    "read_metadata": "gnnpot.models",
    "save_model": "gnnpot.models",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """An exported name, or a subpackage (``gnnpot.models``), imported when first asked for."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":  # the submodule exists; something it imports is missing
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from err
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
