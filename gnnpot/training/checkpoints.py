"""Checkpoints that survive a kill, and one rule for which checkpoint a run folder means.

* :class:`AtomicCheckpointIO` writes every Lightning checkpoint with
  :func:`gnnpot.models.io.atomic_save`: a temporary file beside the target, ``fsync``, then
  ``os.replace``. Lightning's own writer stages the file through ``TMPDIR``, which on another
  filesystem turns the final rename into an in-place copy that a kill can cut short.
* :class:`RunCheckpoint` is the CLI's ``ModelCheckpoint``. The rule: ``checkpoints/best.ckpt`` is
  the best of the checkpoints written into this folder, ``checkpoints/last.ckpt`` the newest. When
  a run resumes from a checkpoint whose records name another folder (a copied or moved run), the
  records follow the folder when it holds the files they name, so the next best overwrites
  ``best.ckpt`` (Lightning would write ``best-v1.ckpt`` beside a stale ``best.ckpt``); otherwise
  the folder starts its own records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gnnpot.models.io import atomic_save, load_error

_RECORD_PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes local checkpoints atomically (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path``; remote URLs go through Lightning's writer."""
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: _PATH, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Lightning's loader; a file it cannot read or refuses becomes a ``ValueError`` naming the file."""
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except Exception as err:
            raise load_error(path, err) from err


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose records follow a run folder that was copied or moved."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the records, rewritten to this folder when they name another one."""
        old, new = state_dict.get("dirpath"), self.dirpath
        if old is None or new is None or old == new:
            super().load_state_dict(state_dict)
            return
        moved = dict(state_dict, dirpath=new)
        for key in _RECORD_PATHS:
            moved[key] = _rebase(state_dict.get(key) or "", old, new)
        moved["best_k_models"] = {_rebase(p, old, new): v for p, v in (state_dict.get("best_k_models") or {}).items()}
        named = [p for p in (*moved["best_k_models"], moved["best_model_path"]) if p]
        if all(Path(p).is_file() for p in named):
            super().load_state_dict(moved)
            return
        # Records of files this folder does not hold: the folder keeps its own (fresh) records.
        super().load_state_dict(
            {
                "dirpath": new,
                "best_model_score": None,
                "best_model_path": "",
                "best_k_models": {},
                "kth_best_model_path": "",
                "last_model_path": moved["last_model_path"] if Path(moved["last_model_path"]).is_file() else "",
            }
        )


def _rebase(path: str, old: str, new: str) -> str:
    """``path`` under folder ``new`` when it was under ``old``; otherwise unchanged."""
    if not path:
        return path
    try:
        return str(Path(new) / Path(path).relative_to(old))
    except ValueError:
        return path
