"""The benchmarked variants of every family: ``paper``, ``small`` and ``tiny``.

Every family in :data:`gnnpot.REGISTRY` gets a ``tiny`` variant, its own ``tiny_hparams``. A family
with ``configs/<family>_rmd17.yaml`` also gets:

* ``paper``: the config's ``model.representation_hparams`` at its ``data.cutoff``, read from the
  file (a family may list several paper variants in :data:`PAPER`, as overrides of the config);
* ``small``: the protocol's matched size, written as overrides on top of the config: 64 features,
  3 interactions, cutoff 5 Å and ``l_max`` 1 where the family has it, everything else as paper.

So a family added to the registry gets benchmark rows without any edit here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from benchmarks import REPO
from gnnpot.representations import get_family

CONFIGS = REPO / "configs"
PROTOCOL_CUTOFF = 5.0  # Å, the cutoff of the protocol's sizes
SIZES = ("paper", "small", "tiny")


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


@dataclass(frozen=True)
class Override:
    """A variant written as changes to the family's paper config.

    Attributes:
        hparams: hyperparameters replaced or added.
        cutoff: neighbour radius, Å; ``None`` keeps the config's.
        source: where the variant comes from; ``{config}`` stands for the config's path.
    """

    hparams: Mapping[str, Any] = field(default_factory=dict)
    cutoff: float | None = None
    source: str = "{config}"


# The paper variants of a family: the config as it is, named "paper", unless listed here.
PAPER: dict[str, dict[str, Override]] = {
    "nequip": {
        "paper_r4": Override(source="{config} (published cutoff 4 Å)"),
        "paper_r5": Override(cutoff=PROTOCOL_CUTOFF, source="{config} at the protocol cutoff 5 Å"),
    },
}
# "small" for every family, on top of paper (and l_max 1 where the family has one) ...
SMALL_HPARAMS = {"num_features": 64, "num_interactions": 3}
# ... with these family extras and descriptions.
SMALL: dict[str, Override] = {
    "schnet": Override(source="protocol 'small': 64 features, 3 interactions, cutoff 5; num_rbf as paper (no l_max)"),
    # Inner widths halved with num_features (int_emb 64 -> 32, out_emb 256 -> 128), as PyG's "small".
    "dimenet": Override(
        {"int_emb_size": 32, "out_emb_size": 128},
        source="protocol 'small': 64 features, 3 blocks, cutoff 5; int_emb_size 32 and out_emb_size 128 "
        "(halved with num_features, as PyG's small), bases as paper (no l_max: angles enter as a basis)",
    ),
    "painn": Override(
        source="protocol 'small': 64 features, 3 interactions, cutoff 5; num_rbf as paper "
        "(scalar + vector, i.e. l = 0 and 1, features by construction)"
    ),
    "nequip": Override(source="protocol 'small': 64 features, 3 interactions, l_max 1, cutoff 5; rest as paper"),
    "mace": Override(
        source="protocol 'small' = the MACE harness's: 64x0e + 64x1o (l_max 1), correlation 3, 3 interactions, "
        "cutoff 5; rest as paper"
    ),
}
SMALL_DEFAULT = Override(
    source="protocol 'small': 64 features, 3 interactions, cutoff 5, l_max 1 where the family has it; rest as paper"
)


@functools.cache
def paper_config(family: str) -> tuple[str, float, Mapping[str, Any]] | None:
    """``configs/<family>_rmd17.yaml`` as (path in the repo, cutoff in Å, representation hparams).

    Returns:
        None when the family has no such config.

    Raises:
        FileNotFoundError: there is no ``configs/`` folder beside ``benchmarks/``.
        ValueError: the config lacks ``model.representation_hparams`` or ``data.cutoff``.
    """
    if not CONFIGS.is_dir():
        raise FileNotFoundError(
            f"no configs folder at {CONFIGS}: the benchmark reads the paper sizes from configs/<family>_rmd17.yaml "
            "and runs from a gnnpot source checkout (benchmarks/ beside configs/)"
        )
    path = CONFIGS / f"{family}_rmd17.yaml"
    if not path.is_file():
        return None
    config = yaml.safe_load(path.read_text())
    try:
        hparams, cutoff = config["model"]["representation_hparams"], float(config["data"]["cutoff"])
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: expected model.representation_hparams and data.cutoff ({error!r})") from error
    return f"configs/{path.name}", cutoff, dict(hparams)


def variants(family: str) -> dict[str, Variant]:
    """The variants of ``family`` by name, in benchmark order: paper variants, small, tiny.

    Raises:
        ValueError: ``family`` is not in :data:`gnnpot.REGISTRY`.
    """
    family_class = get_family(family)
    out = []
    paper = paper_config(family)
    if paper is not None:
        config, cutoff, hparams = paper
        for name, override in PAPER.get(family, {"paper": Override()}).items():
            radius = cutoff if override.cutoff is None else override.cutoff
            source = override.source.format(config=config)
            out.append(Variant(family, name, "paper", radius, {**hparams, **override.hparams}, source))
        small = SMALL.get(family, SMALL_DEFAULT)
        l_max = {"l_max": 1} if "l_max" in family_class.hparam_names() else {}
        small_hparams = {**hparams, **SMALL_HPARAMS, **l_max, **small.hparams}
        out.append(Variant(family, "small", "small", PROTOCOL_CUTOFF, small_hparams, small.source))
    tiny = dict(family_class.tiny_hparams)
    out.append(
        Variant(
            family, "tiny", "tiny", PROTOCOL_CUTOFF, tiny, f"{family_class.__name__}.tiny_hparams (smoke tests only)"
        )
    )
    return {v.name: v for v in out}


def select_variants(family: str, sizes: Iterable[str]) -> list[Variant]:
    """Variants of ``family`` named by ``sizes``: a protocol size (``paper`` = every paper variant) or a name.

    A protocol size the family lacks (``paper`` and ``small`` without a paper config) selects nothing.

    Raises:
        ValueError: a name is neither a protocol size nor a variant of ``family``.
    """
    table = variants(family)
    chosen: list[Variant] = []
    for size in sizes:
        found = [v for v in table.values() if size in (v.name, v.size)]
        if not found and size not in SIZES:
            raise ValueError(f"unknown size {size!r} for {family}; choose from {sorted(table)} or 'paper'")
        chosen += [v for v in found if v not in chosen]
    return chosen
