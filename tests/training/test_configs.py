"""Every config in configs/ parses and instantiates; one demo config trains for a tiny epoch."""

from pathlib import Path

import pytest

from gnnpot.cli import main
from gnnpot.cli.training import GNNPotCLI
from gnnpot.representations import REGISTRY, get_family
from gnnpot.training.checkpoints import AtomicCheckpointIO
from gnnpot.training.module import PotentialModule

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))
OVERLAY = "_restart"  # NAME_restart.yaml overrides NAME.yaml and is given after it


def config_args(path: Path) -> list[str]:
    """``--config`` arguments of a config: an overlay comes after its base."""
    if path.stem.endswith(OVERLAY):
        base = path.with_name(path.stem.removesuffix(OVERLAY) + ".yaml")
        return ["--config", str(base), "--config", str(path)]
    return ["--config", str(path)]


def test_the_shipped_families_have_a_demo_and_an_rmd17_config():
    names = {path.stem for path in CONFIGS}
    for family in ("schnet", "dimenet", "painn", "nequip"):  # a new family may come without configs
        assert f"{family}_demo" in names and f"{family}_rmd17" in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses_and_instantiates(path, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # configs name data relative to the repository
    cli = GNNPotCLI(args=[*config_args(path), f"--run.dir={tmp_path}"], run=False)
    assert isinstance(cli.model, PotentialModule) and cli.model.hparams.representation in REGISTRY
    assert cli.model.hparams.cutoff == cli.datamodule.cutoff
    assert cli.trainer.validate_loop.inference_mode is False  # forces need autograd
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    if "rmd17" in path.stem:
        assert cli.datamodule.val_fraction == 0.05 and cli.datamodule.own_file["test"]
        assert cli.datamodule.files["train"].endswith("rmd17_ethanol_train_01.npz")
    # The family's hyperparameters build a model (statistics stand in for the data's).
    hparams = {k: v for k, v in cli.model.hparams.items() if not k.startswith("_")}
    family = dict(hparams["representation_hparams"])
    for name in get_family(hparams["representation"]).data_statistics:
        if family.get(name, "auto") == "auto":  # a fine-tuning config has the model's numbers
            family[name] = 10.0
    module = PotentialModule(
        **{**hparams, "elements": ["H", "C"], "e0": {}, "scale": 1.0, "representation_hparams": family}
    )
    assert module.model is not None and sum(p.numel() for p in module.model.parameters()) > 0


def test_demo_config_trains_one_tiny_epoch(emt_file, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    args = [
        "fit",
        "--config",
        "configs/schnet_demo.yaml",
        f"--data.train_file={emt_file}",
        "--model.representation_hparams={num_features: 8, num_interactions: 1, num_rbf: 6}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.enable_progress_bar=false",
        f"--run.dir={tmp_path}",
    ]
    assert main(args) == 0
    assert (tmp_path / "schnet_demo" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_max_steps_within_an_epoch_ends_cleanly(emt_file, tmp_path, monkeypatch):
    """Stopping on max_steps before the first validation is a finished run, not an early-stopping error."""
    monkeypatch.chdir(REPO_ROOT)
    args = [
        "fit",
        "--config",
        "configs/schnet_demo.yaml",
        f"--data.train_file={emt_file}",
        "--model.representation_hparams={num_features: 8, num_interactions: 1, num_rbf: 6}",
        "--trainer.max_steps=2",
        "--trainer.enable_progress_bar=false",
        "--run.plots=false",
        f"--run.dir={tmp_path}",
    ]
    assert main(args) == 0
    assert (tmp_path / "schnet_demo" / "version_0" / "checkpoints" / "last.ckpt").is_file()
