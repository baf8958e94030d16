"""Tracking: CSV always, wandb offline unless configured (never the network), TensorBoard optional, plots."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gnnpot.cli import main
from gnnpot.cli.training import make_loggers, wandb_configured
from gnnpot.training.plots import learning_curves, parity_plot, read_metrics_csv

REPO_ROOT = Path(__file__).resolve().parents[2]
HAS_TENSORBOARD = any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX"))


def test_wandb_is_offline_unless_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert not wandb_configured()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_configured()
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_configured()


def test_unknown_logger_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="run.logger must be among"):
        make_loggers(str(tmp_path), "x", None, ["mlflow"])


@pytest.mark.skipif(HAS_TENSORBOARD, reason="tensorboard is installed")
def test_tensorboard_missing_gives_a_clear_error(tmp_path):
    with pytest.raises(ModuleNotFoundError, match="pip install tensorboard"):
        make_loggers(str(tmp_path), "x", None, ["csv", "tensorboard"])


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="needs tensorboard or tensorboardX")
def test_tensorboard_writes_into_the_run_folder(tmp_path):
    loggers = make_loggers(str(tmp_path), "x", None, ["tensorboard"])
    assert loggers[0].log_dir == loggers[1].log_dir


def test_fit_with_wandb_offline_logs_plots(emt_file, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    args = [
        "fit",
        "--config",
        "configs/schnet_demo.yaml",
        f"--data.train_file={emt_file}",
        "--model.representation_hparams={num_features: 8, num_interactions: 1, num_rbf: 6}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false",
        f"--run.dir={tmp_path}",
        "--run.logger=[csv, wandb]",
    ]
    assert main(args) == 0
    run = tmp_path / "schnet_demo" / "version_0"
    assert (run / "metrics.csv").is_file() and (run / "parity_val.png").is_file()
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline, sorted(p.name for p in run.iterdir())
    media = list(offline[0].rglob("*.png"))
    assert media, "plots were not logged to wandb"


def test_plots_from_arrays_and_csv(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=50)
    predictions = {"energy_ref": ref, "energy_pred": ref + 0.001, "forces_ref": ref, "forces_pred": ref - 0.002}
    path = parity_plot(predictions, tmp_path / "parity.png", "val")
    assert path.stat().st_size > 1000
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss,val/forces_mae\n0,9,,2.0,30\n0,9,3.0,,\n1,19,,1.0,20\n1,19,1.5,,\n"
    )
    series = read_metrics_csv(tmp_path / "metrics.csv")
    assert series["val/loss"] == [(0, 2.0), (1, 1.0)] and series["train/loss"] == [(0, 3.0), (1, 1.5)]
    assert learning_curves(tmp_path / "metrics.csv", tmp_path / "curves.png").stat().st_size > 1000
