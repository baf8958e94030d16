"""Model files: config + state_dict + metadata, never a pickled module.

A model file is a plain dict saved with :func:`torch.save` and read back with
``torch.load(weights_only=True)``, which unpickles only tensors and plain containers, so loading a
file from a stranger cannot run code. The model is rebuilt from its config and its weights are
loaded strictly::

    {"format": "gnnpot-model", "format_version": 1,
     "config": {...},            # ForceField.config: family, cutoff, elements, e0, scale, hparams
     "state_dict": {...},        # tensors
     "metadata": {...}}          # gnnpot version, units, elements, cutoff, E0, scale, data hash,
                                 # test metrics, training recipe, ... (see model_metadata)

:func:`load_model` also reads a Lightning checkpoint of a gnnpot run (``*.ckpt``; the EMA
weights when it has them), a run folder (its ``checkpoints/best.ckpt``) and the name of a
pretrained model (:func:`gnnpot.models.pretrained.list_pretrained`).
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from ase.data import chemical_symbols

from gnnpot import keys
from gnnpot.models.build import clone_model, load_weights, model_from_config
from gnnpot.models.forces import ForceField

FORMAT = "gnnpot-model"
FORMAT_VERSION = 1
_EMA_PREFIX = "ema.module."
_MODEL_PREFIX = "model."


def save_model(model: ForceField, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` as config + float state_dict + metadata.

    Args:
        model: a :class:`ForceField` with a config (every model from :func:`gnnpot.build_model`).
        path: the file to write (``.pt`` by convention).
        metadata: extra plain data (test metrics, recipe, training-data hash, ...); its entries
            that are not ``None`` are merged over the metadata derived from the model.
    """
    if not model.config:
        raise ValueError("the model has no config to rebuild it from; build it with gnnpot.build_model")
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": plain_data(model.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in clone_model(model).state_dict().items()},
        "metadata": {
            **model_metadata(model),
            **{k: v for k, v in plain_data(dict(metadata or {})).items() if v is not None},
        },
    }
    return atomic_save(record, path)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a partial file at ``path``, whenever the process dies (:func:`atomic_write`)."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_save_text(text: str, path: str | Path) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(handle)`` on a temporary file, then put it in place of ``path`` in one rename.

    The bytes go to a temporary file in the same folder (so the final ``os.replace`` is a rename
    on one filesystem, never a copy across filesystems as a temporary file in ``TMPDIR`` would
    be), are flushed to disk (``fsync``), then renamed over ``path``; the folder is synced too.
    A kill leaves either the old file or the new one, and at most a ``.<name>.tmp-<pid>`` file,
    which the next save of ``path`` removes once its process is gone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


def _remove_orphans(path: Path) -> None:
    """Delete temporary files of ``path`` left by writers that were killed."""
    for orphan in path.parent.glob(f".{path.name}.tmp-*"):
        pid = orphan.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            orphan.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            pass


def model_metadata(model: ForceField) -> dict[str, Any]:
    """What a model file says about its model: versions, units, elements, cutoff, E0 and scale."""
    from gnnpot import __version__

    config = model.config
    e0 = config.get("e0", {})
    if config.get("train_e0"):  # the trained E0s, not the starting ones of the config
        e0 = dict(zip(config["elements"], model.potential.scale_shift.e0().tolist()))
    return {
        "format_version": FORMAT_VERSION,
        "gnnpot_version": __version__,
        "representation": config["representation"],
        "elements": [chemical_symbols[int(z)] for z in config["elements"]],
        "cutoff": float(config["cutoff"]),
        "units": dict(keys.UNITS),
        "e0": {chemical_symbols[int(z)]: float(value) for z, value in e0.items()},
        "scale": float(config.get("scale", 1.0)),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }


def load_model(
    source: str | Path,
    map_location: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> ForceField:
    """A :class:`ForceField` in eval mode from a model file, a checkpoint, a run folder or a pretrained name.

    Args:
        source: a model file (:func:`save_model`), a Lightning checkpoint of a gnnpot run, a run
            folder (``RUN/checkpoints/best.ckpt`` is read) or a name from ``list_pretrained()``.
        map_location: device to load onto.
        dtype: cast the model to this float dtype; default: as saved.

    The file's metadata is attached as ``model.metadata``.

    Raises:
        ValueError: not a gnnpot model, a newer or unknown format version, or a file that holds
            more than plain data and tensors (it is refused, not unpickled).
        FileNotFoundError: no such file, run folder or pretrained name.
    """
    from gnnpot.models.pretrained import PRETRAINED, pretrained_path

    path = Path(source)
    if not path.exists() and str(source) in PRETRAINED:
        path = pretrained_path(str(source))
    if path.is_dir():
        path = path / "checkpoints" / "best.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{source}: no such model file, run folder or pretrained name (pretrained: {sorted(PRETRAINED)})"
        )
    record = _safe_load(path, map_location)
    config, state_dict, metadata = _unpack(record, path)
    try:
        model = model_from_config(config)
    except (ValueError, KeyError, TypeError) as err:
        detail = f"it has no {err.args[0]!r} entry" if isinstance(err, KeyError) and err.args else str(err)
        raise ValueError(f"{path}: cannot build the model its config describes ({detail})") from err
    try:
        model = load_weights(model, state_dict)
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not fit the model described by its config: {err}") from err
    model = model.to(map_location)
    if dtype is not None:
        model = model.to(dtype)
    model.metadata = {**model_metadata(model), **{k: v for k, v in metadata.items() if v is not None}}
    return model.eval()


def read_metadata(source: str | Path) -> dict[str, Any]:
    """The metadata of a model file (or checkpoint) without building the model."""
    path = Path(source)
    return _unpack(_safe_load(path, "cpu"), path)[2]


def _safe_load(path: Path, map_location: Any) -> Any:
    try:
        with warnings.catch_warnings():  # torch's note on a foreign pickle protocol, before its refusal
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch.load raises many types for a file that is not a torch file
        raise load_error(path, err) from err


def load_error(path: str | Path, err: Exception) -> ValueError:
    """The one-line error for a torch file (model file or checkpoint) that ``torch.load`` refused or could not read.

    Args:
        path: the file.
        err: what ``torch.load(..., weights_only=True)`` raised.
    """
    if isinstance(err, FileNotFoundError | IsADirectoryError | PermissionError):
        return ValueError(f"{path}: cannot open ({err.strerror or err})")
    text = str(err)
    # torch's weights-only refusal is a page of advice; what follows "WeightsUnpickler error:" is the reason.
    refused = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", text, re.DOTALL)
    reason = refused.group(1) if refused else (text.strip().splitlines() or [type(err).__name__])[0]
    reason = " ".join(reason.split())
    if isinstance(err, pickle.UnpicklingError):
        return ValueError(f"{path}: refused to load, it holds more than plain data and tensors ({reason})")
    return ValueError(f"{path}: not a readable torch file ({type(err).__name__}: {reason})")


def _unpack(record: Any, path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """``(config, state_dict, metadata)`` of a model file or of a Lightning checkpoint of a gnnpot run."""
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a gnnpot model file (a {type(record).__name__}, expected a dict)")
    if record.get("format") == FORMAT:
        version = record.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise ValueError(
                f"{path}: model file format version {version!r} is not supported by this gnnpot "
                f"(reads versions 1..{FORMAT_VERSION}); upgrade gnnpot to read it"
            )
        return dict(record["config"]), dict(record["state_dict"]), dict(record.get("metadata", {}))
    if "state_dict" in record and isinstance(record.get("gnnpot"), dict):
        return _from_checkpoint(record, path)
    raise ValueError(f"{path}: neither a gnnpot model file nor a Lightning checkpoint of a gnnpot run")


def _from_checkpoint(record: dict[str, Any], path: Path) -> tuple[dict, dict, dict]:
    """Config, weights (EMA when present) and metadata of a Lightning checkpoint of a gnnpot run."""
    info = record["gnnpot"]
    config = dict(info["model_config"])
    weights = record["state_dict"]
    prefix = _EMA_PREFIX if info.get("ema") and any(k.startswith(_EMA_PREFIX) for k in weights) else _MODEL_PREFIX
    state_dict = {name[len(prefix) :]: tensor for name, tensor in weights.items() if name.startswith(prefix)}
    if not state_dict:
        raise ValueError(f"{path}: the checkpoint holds no weights under {prefix!r}")
    metadata = {  # what the model itself tells (family, elements, E0, ...) is added by load_model
        "gnnpot_version": info.get("gnnpot_version"),
        "units": dict(info.get("units", keys.UNITS)),
        "weights": "ema" if prefix == _EMA_PREFIX else "raw",
        "training_data_sha256": info.get("training_data_sha256"),
        "checkpoint": str(path),
        "epoch": record.get("epoch"),
        "global_step": record.get("global_step"),
    }
    return config, state_dict, metadata


def plain_data(value: Any) -> Any:
    """Dicts/lists/numbers/strings only, with string-or-int keys, safe for ``weights_only`` loading."""
    if isinstance(value, Mapping):
        return {k if isinstance(k, int | str) else str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
