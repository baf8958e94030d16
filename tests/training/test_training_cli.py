"""``gnnpot fit|validate|test`` (LightningCLI) and ``gnnpot eval``: run folder, resume, metrics, loading."""

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gnnpot.cli import main
from gnnpot.cli.training import GNNPotCLI
from gnnpot.representations import REGISTRY, check_hparams

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = "{num_features: 8, num_interactions: 1, num_rbf: 6}"


def fit_args(emt_file, run_dir, *extra):
    return [
        "fit",
        "--config",
        "configs/painn_demo.yaml",
        f"--data.train_file={emt_file}",
        "--data.cutoff=4.0",
        "--data.batch_size=4",
        f"--model.representation_hparams={TINY}",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--run.dir={run_dir}",
        "--run.name=tiny",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(emt_file, tmp_path_factory, monkeypatch_module):
    """One tiny run of `gnnpot fit`, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("runs")
    assert main(fit_args(emt_file, run_dir)) == 0
    return run_dir / "tiny" / "version_0"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO_ROOT)  # the configs are read by their path in the repository
        yield mp


def test_fit_writes_the_run_folder(trained):
    for name in ("config.yaml", "split.json", "metrics.csv", "hparams.yaml", "parity_val.png", "learning_curves.png"):
        assert (trained / name).is_file(), name
    assert (trained / "checkpoints" / "best.ckpt").is_file() and (trained / "checkpoints" / "last.ckpt").is_file()
    config = yaml.safe_load((trained / "config.yaml").read_text())
    assert config["data"]["cutoff"] == 4.0 and "cutoff" not in config["model"]  # linked: given once
    assert config["trainer"]["inference_mode"] is False
    header = (trained / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in ("val/forces_mae", "val/energy_per_atom_mae", "train/loss", "val/stress_mae", "val/energy_rmse"):
        assert name in header
    hparams = torch.load(trained / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["elements"] == ["Cu", "Au"] and hparams["cutoff"] == 4.0
    logged = yaml.safe_load((trained / "hparams.yaml").read_text())  # the resolved statistics, not "auto"
    assert logged["e0"] == pytest.approx(hparams["e0"]) and logged["scale"] == pytest.approx(hparams["scale"])


def test_resume_continues_the_global_step(trained, emt_file, monkeypatch_module):
    last = trained / "checkpoints" / "last.ckpt"
    steps = torch.load(last, weights_only=True)["global_step"]
    run_dir = trained.parent.parent
    args = fit_args(emt_file, run_dir, "--trainer.max_epochs=2", f"--ckpt_path={last}", "--run.version=resumed")
    assert main(args) == 0
    resumed = torch.load(run_dir / "tiny" / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 2 * steps and resumed["epoch"] == 1


def test_test_and_eval_agree(trained, emt_file, capsys, tmp_path):
    best = trained / "checkpoints" / "best.ckpt"
    run_dir = trained.parent.parent
    args = fit_args(emt_file, run_dir, f"--ckpt_path={best}", "--run.version=test")
    args[0] = "test"
    args.remove("--trainer.max_epochs=1")
    assert main(args) == 0
    assert (run_dir / "tiny" / "test" / "parity_test.png").is_file()
    capsys.readouterr()
    plot = tmp_path / "parity.png"
    assert (
        main(["eval", "--model", str(best), "--split", str(trained / "split.json"), "--json", "--plot", str(plot)]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    split = json.loads((trained / "split.json").read_text())
    assert result["subset"] == "test" and result["num_frames"] == len(split["test"]["indices"]) > 0
    assert plot.is_file() and result["model_info"]["representation"] == "painn"
    with open(run_dir / "tiny" / "test" / "metrics.csv") as handle:
        (logged,) = list(csv.DictReader(handle))
    metrics = result["metrics"]
    for name in ("energy_per_atom_mae", "energy_mae", "energy_rmse", "forces_mae", "forces_rmse", "stress_mae"):
        assert metrics[name] == pytest.approx(float(logged[f"test/{name}"]), rel=1e-4), name
    assert main(["eval", "--model", str(best), "--split", str(trained / "split.json")]) == 0
    text = capsys.readouterr().out
    assert "energy per atom" in text and "meV/Å" in text and "EMA weights" in text


def test_eval_data_file_and_errors(trained, emt_file, capsys, tmp_path):
    best = trained / "checkpoints" / "best.ckpt"
    assert main(["eval", "--model", str(best), "--data", emt_file, "--index", ":6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_frames"] == 6
    assert main(["eval", "--model", str(best)]) == 1
    assert "exactly one of --data" in capsys.readouterr().err
    # A checkpoint with an arbitrary pickled object is refused, never executed.
    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as handle:
        pickle.dump({"hyper_parameters": {}, "state_dict": {}, "x": _Evil()}, handle)
    assert main(["eval", "--model", str(evil), "--data", emt_file]) == 1
    assert "gnnpot eval: error" in capsys.readouterr().err


class _Evil:
    def __reduce__(self):
        return (print, ("pickle executed",))


def test_eval_on_rmd17_npz(shared_data, tmp_path, capsys, monkeypatch_module):
    source = np.load(shared_data / "rmd17" / "rmd17_ethanol_train_01.npz")
    small = tmp_path / "ethanol_small.npz"
    np.savez(small, **{k: source[k][:24] if source[k].ndim > 1 or k == "energies" else source[k] for k in source.files})
    run_dir = tmp_path / "runs"
    args = fit_args(str(small), run_dir, "--data.val_fraction=0.25", "--data.test_fraction=0", "--run.plots=false")
    assert main(args) == 0
    best = run_dir / "tiny" / "version_0" / "checkpoints" / "best.ckpt"
    test_file = shared_data / "rmd17" / "rmd17_ethanol_test_01.npz"
    capsys.readouterr()
    assert main(["eval", "--model", str(best), "--data", str(test_file), "--index", ":10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_frames"] == 10 and result["model_info"]["elements"] == ["H", "C", "O"]
    assert "stress_mae" not in result["metrics"] and result["metrics"]["forces_mae"] > 0


def test_help_and_bad_arguments(capsys):
    assert main(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--model.representation" in out and "--run.logger" in out and "--checkpoint.monitor" in out
    assert "--ensemble N" in out
    text = " ".join(out.split())  # the help is wrapped
    for name, family in REGISTRY.items():  # each family's hyperparameters, from the registry
        assert f"{name}: {', '.join(family.hparam_names())}" in text, name
    assert main(["fit", "--config", "configs/painn_demo.yaml", "--model.optimizer", "sgd"]) != 0


def test_fit_sets_its_threads(emt_file, tmp_path, capsys, monkeypatch_module):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main([*fit_args(emt_file, tmp_path), "--threads", "1", "--run.plots=false"]) == 0
        assert torch.get_num_threads() == 1
        assert yaml.safe_load((tmp_path / "tiny" / "version_0" / "config.yaml").read_text())["threads"] == "1"
        assert main([*fit_args(emt_file, tmp_path), "--threads", "many"]) == 2
        assert "gnnpot fit: error: threads must be 'auto' or a positive integer, got 'many'" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_hyperparameter_typo_is_one_error_line(emt_file, tmp_path, capsys, monkeypatch_module):
    args = fit_args(emt_file, tmp_path, "--model.representation_hparams={num_feature: 8}")
    assert main(args) == 2
    with pytest.raises(ValueError) as expected:
        check_hparams("painn", {"num_feature": 8})
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"gnnpot fit: error: {expected.value}"
    assert not (tmp_path / "tiny").exists()


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_default_root_dir_is_the_run_folder_unless_run_dir_differs(emt_file, tmp_path, capsys, monkeypatch_module):
    args = [arg for arg in fit_args(emt_file, tmp_path)[1:] if not arg.startswith("--run.dir")]
    cli = GNNPotCLI([*args, f"--trainer.default_root_dir={tmp_path / 'root'}"], run=False)
    assert Path(cli.trainer.log_dir) == tmp_path / "root" / "tiny" / "version_0"
    cli = GNNPotCLI(args, run=False)  # neither given: runs/
    assert Path(cli.trainer.log_dir).parent == Path("runs") / "tiny"
    same = [*fit_args(emt_file, tmp_path), f"--trainer.default_root_dir={tmp_path}"]
    assert Path(GNNPotCLI(same[1:], run=False).trainer.log_dir).parent == tmp_path / "tiny"
    assert main([*fit_args(emt_file, tmp_path), f"--trainer.default_root_dir={tmp_path / 'other'}"]) == 2
    assert "give the folder of the runs once, as --run.dir" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists() and not (tmp_path / "other").exists()


def test_export_writes_a_model_file_with_recipe_and_test_metrics(trained, capsys, tmp_path):
    from gnnpot import load_model, read_metadata

    out = tmp_path / "model.pt"
    assert main(["export", str(trained), str(out)]) == 0
    assert "test metrics on" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["weights"] == "ema" and "seed_everything" in meta["recipe"]
    assert len(meta["training_data_sha256"]) == 64 and meta["test_data"]["num_frames"] > 0
    assert main(["eval", "--model", str(out), "--split", str(trained / "split.json"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["forces_mae"] == pytest.approx(meta["test_metrics"]["forces_mae"], rel=1e-6)
    checkpoint = torch.load(trained / "checkpoints" / "best.ckpt", weights_only=True)
    ema = {k.removeprefix("ema.module."): v for k, v in checkpoint["state_dict"].items() if k.startswith("ema.module.")}
    for name, tensor in load_model(out).state_dict().items():
        assert torch.equal(tensor, ema[name]), name
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x.pt")]) == 1
    assert "gnnpot export: error" in capsys.readouterr().err


def test_fit_ensemble_trains_members_with_different_seeds(emt_file, tmp_path, capsys, monkeypatch_module):
    from gnnpot import GNNPotCalculator
    from gnnpot.data import read_frames

    run_dir = tmp_path / "runs"
    assert main(fit_args(emt_file, run_dir, "--ensemble", "2", "--run.plots=false")) == 0
    members = [run_dir / "tiny" / f"ensemble_{k}" for k in range(2)]
    seeds = [yaml.safe_load((m / "config.yaml").read_text())["seed_everything"] for m in members]
    assert seeds == [0, 1]
    atoms = read_frames(emt_file, index="0:1")[0]
    atoms.calc = GNNPotCalculator([str(m) for m in members])
    atoms.get_potential_energy()
    assert atoms.calc.results["energy_std"] > 0 and atoms.calc.results["forces_std"].max() > 0
    member = yaml.safe_load((members[1] / "config.yaml").read_text())
    assert member["ensemble"] == 1 and member["run"]["version"] == "ensemble_1"  # the member's own recipe
    validate = fit_args(emt_file, run_dir, "--ensemble", "2")
    validate[0] = "validate"
    assert main(validate) == 2
    assert "works with fit only" in capsys.readouterr().err
    assert main(fit_args(emt_file, run_dir, "--ensemble", "0")) == 2


def test_eval_dtype_and_what_each_metric_left_out(trained, emt_file, capsys, tmp_path):
    """--dtype float64 casts the model; frames without a label are counted, with the reason and the frame."""
    from gnnpot.data import read_frames, write_frames

    frames = list(read_frames(emt_file, index=":4"))
    frames[1].calc.results.pop("forces")
    frames[3].calc.results.pop("energy")
    partial = tmp_path / "partial.xyz"
    write_frames(partial, frames)
    best = str(trained / "checkpoints" / "best.ckpt")
    assert main(["eval", "--model", best, "--data", str(partial), "--json", "--dtype", "float64"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dtype"] == "float64" and result["num_frames"] == 4
    left = result["left_out"]
    assert left["forces"]["frames"] == 1 and left["forces"]["atoms"] == len(frames[1])
    assert left["forces"]["examples"] == [f"{partial}, frame 1"]
    assert left["energy"]["frames"] == 1 and "no energy label" in left["energy"]["why"]
    unstressed = sum(1 for atoms in frames if atoms.pbc.all() and "stress" not in atoms.calc.results)
    assert left.get("stress", {}).get("frames", 0) == unstressed  # molecules are not counted
    assert main(["eval", "--model", best, "--data", str(partial)]) == 0
    text = capsys.readouterr().out
    assert f"left out of forces: 1 frames ({len(frames[1])} atoms), no forces label: {partial}, frame 1" in text
