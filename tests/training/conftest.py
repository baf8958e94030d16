"""Fixtures of the training tests: a small EMT dataset and a quiet Trainer factory."""

import os
import warnings

import lightning as L
import pytest
import torch

from gnnpot.data import write_frames
from gnnpot.data.generate import generate_emt_dataset

# Tiny models gain nothing from intra-op threads, and spinning OpenMP threads slow the tests down
# many times over when other runs share the cores.
torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def emt_file(tmp_path_factory):
    """40 EMT Cu-Au frames (energy, forces, stress on the periodic ones)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        frames = generate_emt_dataset(num_frames=40, seed=1)
    path = tmp_path_factory.mktemp("emt") / "emt40.xyz"
    write_frames(path, frames)
    return str(path)


@pytest.fixture
def make_trainer():
    """``make_trainer(root, **overrides)``: a quiet CPU Trainer with autograd in validation."""
    return _make_trainer


def _make_trainer(root, **kwargs) -> L.Trainer:
    options = dict(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        inference_mode=False,
        default_root_dir=str(root),
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    options.update(kwargs)
    return L.Trainer(**options)
