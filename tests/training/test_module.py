"""PotentialModule: statistics from the training split, EMA evaluation, checkpoints, resuming, options."""

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch_geometric.data import Batch

from gnnpot import keys
from gnnpot.data import AtomsDataModule, fit_e0, force_rms, mean_num_neighbors
from gnnpot.testing import tiny_hparams
from gnnpot.training import PotentialModule

CUTOFF = 4.0


def datamodule(emt_file, **kwargs):
    options = dict(val_fraction=0.2, test_fraction=0.2, cutoff=CUTOFF, batch_size=4, seed=3)
    options.update(kwargs)
    return AtomsDataModule(emt_file, **options)


def tiny(name="painn", **kwargs):
    return PotentialModule(name, tiny_hparams(name), cutoff=CUTOFF, **kwargs)


def test_statistics_come_from_the_training_split_only(tmp_path, emt_file, make_trainer):
    dm = datamodule(emt_file)
    module = tiny()
    assert module.model is None and not module.statistics_resolved
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, dm)
    hp = module.hparams
    train = dm.train_data
    expected = fit_e0(train, [29, 79])
    assert hp.elements == ["Cu", "Au"] and module.statistics_resolved
    assert hp.e0 == pytest.approx({"Cu": expected[29], "Au": expected[79]})
    assert hp.scale == pytest.approx(force_rms(train))
    everything = fit_e0(train + dm.val_data + dm.test_data, [29, 79])
    assert hp.e0["Cu"] != pytest.approx(everything[29], abs=1e-9)
    # The model carries the statistics: ScaleShift buffers and its config.
    shift = module.model.potential.scale_shift
    assert shift.shift.tolist() == pytest.approx([expected[29], expected[79]])
    assert float(shift.scale) == pytest.approx(hp.scale)
    assert module.model.config["e0"] == pytest.approx({29: expected[29], 79: expected[79]})
    metrics = trainer.callback_metrics
    for stage in ("train", "val"):
        for name in ("loss", "energy_per_atom_mae", "energy_mae", "forces_mae", "forces_rmse", "stress_mae"):
            assert torch.isfinite(metrics[f"{stage}/{name}"]), f"{stage}/{name}"


def test_validation_uses_the_ema_and_needs_autograd(tmp_path, emt_file, make_trainer):
    dm = datamodule(emt_file)
    module = tiny(ema_decay=0.5)
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, dm)
    assert module.inference_model is module.ema.module
    assert int(module.ema.num_updates) == trainer.global_step > 0
    batch = Batch.from_data_list(dm.val_data)
    module.eval()
    ema_out, raw_out = module.ema.module(batch), module.model(batch)
    assert not torch.allclose(ema_out[keys.ENERGY], raw_out[keys.ENERGY])
    (val,) = trainer.validate(module, dm, verbose=False)
    err = (ema_out[keys.FORCES] - batch[keys.FORCES]).abs().mean() * 1000
    assert val["val/forces_mae"] == pytest.approx(float(err), rel=1e-4)
    with pytest.raises(RuntimeError, match="inference_mode=False"):
        make_trainer(tmp_path, inference_mode=True).validate(module, dm, verbose=False)


def test_train_e0_trains_the_correction_and_only_then(tmp_path, emt_file, make_trainer):
    dm = datamodule(emt_file)
    module = tiny(train_e0=True, e0={"Cu": -3.0, "Au": -2.0}, energy_weight=1.0, forces_weight=1.0, lr=0.01)
    make_trainer(tmp_path, max_epochs=1).fit(module, dm)
    assert module.model.config["train_e0"] is True
    # The E0s were far off the data's (EMT energies are near 0): the correction moved towards them.
    delta = module.model.potential.scale_shift.delta.detach()
    assert (delta > 0.05).all(), delta  # 20 steps at 0.01
    assert module.inference_model.potential.scale_shift.delta is not None  # the EMA carries it
    fixed = tiny(e0={"Cu": -3.0, "Au": -2.0})
    make_trainer(tmp_path / "fixed", max_epochs=1).fit(fixed, dm)
    assert fixed.model.potential.scale_shift.delta is None and "train_e0" not in fixed.model.config


def test_checkpoint_is_plain_data_and_resumes(tmp_path, emt_file, make_trainer):
    """Fit 1 epoch, resume from last.ckpt to 2 epochs: the global step continues.

    The checkpoint loads with weights_only=True and rebuilds the same model.
    """
    dm = datamodule(emt_file)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", save_last=True, filename="best")
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[ckpt], enable_checkpointing=True)
    module = tiny()
    trainer.fit(module, dm)
    steps = trainer.global_step
    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.exists() and (tmp_path / "ckpt" / "best.ckpt").exists()

    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    assert hparams["elements"] == ["Cu", "Au"] and isinstance(hparams["scale"], float)
    assert checkpoint["gnnpot"]["units"] == keys.UNITS
    rebuilt = PotentialModule(**hparams)
    assert rebuilt.model is not None  # every statistic is a number now: no data needed
    rebuilt.load_state_dict(checkpoint["state_dict"], strict=True)
    batch = Batch.from_data_list(dm.test_data)
    module.eval(), rebuilt.eval()
    assert torch.allclose(rebuilt(batch)[keys.ENERGY], module(batch)[keys.ENERGY], atol=1e-5)

    resumed = make_trainer(tmp_path, max_epochs=2)
    again = tiny()
    resumed.fit(again, datamodule(emt_file), ckpt_path=str(last))
    assert resumed.current_epoch == 2 and resumed.global_step == 2 * steps
    assert int(again.ema.num_updates) == 2 * steps


class Killed(Exception):
    pass


class Kill(L.Callback):
    """Kills the run (an exception out of the training loop) after ``after`` optimizer steps."""

    def __init__(self, after: int) -> None:
        self.after = after

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.after:
            raise Killed


def test_run_killed_mid_epoch_resumes_and_finishes(tmp_path, emt_file, make_trainer):
    dm = datamodule(emt_file)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=2)
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=[ckpt, Kill(3)], enable_checkpointing=True)
    with pytest.raises(Killed):
        trainer.fit(tiny(), dm)
    assert trainer.current_epoch == 0 and trainer.global_step == 3
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"]
    assert saved == 2
    resumed = make_trainer(tmp_path, max_epochs=2)
    resumed.fit(tiny(), datamodule(emt_file), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    per_epoch = len(resumed.train_dataloader)
    assert resumed.current_epoch == 2 and resumed.global_step == 2 * per_epoch


class KillAtEpoch(L.Callback):
    """Kills the run as epoch ``epoch`` starts, after the previous epoch's checkpoint was written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, *args) -> None:
        if trainer.current_epoch == self.epoch:
            raise Killed


def _final_state(trainer, module) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v for k, v in module.model.state_dict().items()}
    state.update({f"ema.{k}": v for k, v in module.ema.module.state_dict().items()})
    for i, moments in enumerate(trainer.optimizers[0].state_dict()["state"].values()):
        state.update({f"adam.{i}.{k}": v for k, v in moments.items()})
    state.update({f"metric.{k}": v for k, v in trainer.callback_metrics.items()})
    return state


@pytest.mark.parametrize("scheduler", ["plateau", "cosine"])
def test_resume_after_a_kill_is_exact(tmp_path, emt_file, make_trainer, scheduler):
    """Killed after epoch 1 and resumed: weights, EMA, Adam moments and metrics equal an unbroken run."""
    runs = {}
    for name in ("unbroken", "killed"):
        L.seed_everything(0)
        folder = tmp_path / name
        ckpt = ModelCheckpoint(dirpath=folder, monitor="val/loss", save_last=True, filename="best")
        kill = [KillAtEpoch(2)] if name == "killed" else []
        trainer = make_trainer(folder, max_epochs=4, callbacks=[ckpt, *kill], enable_checkpointing=True)
        module = tiny(scheduler=scheduler, warmup_steps=3)
        if kill:
            with pytest.raises(Killed):
                trainer.fit(module, datamodule(emt_file))
            L.seed_everything(123)  # a new process: nothing may depend on the global RNG state
            ckpt = ModelCheckpoint(dirpath=folder, monitor="val/loss", save_last=True, filename="best")
            trainer = make_trainer(folder, max_epochs=4, callbacks=[ckpt], enable_checkpointing=True)
            module = tiny(scheduler=scheduler, warmup_steps=3)
            trainer.fit(module, datamodule(emt_file), ckpt_path=str(folder / "last.ckpt"))
        else:
            trainer.fit(module, datamodule(emt_file))
        runs[name] = _final_state(trainer, module)
    assert runs["unbroken"].keys() == runs["killed"].keys()
    for key, value in runs["unbroken"].items():
        assert torch.equal(value, runs["killed"][key]), key


@pytest.mark.parametrize(
    "options",
    [
        dict(loss="huber", optimizer="adamw", amsgrad=True, scheduler="cosine", warmup_steps=3, ema_decay=None),
        dict(scheduler="plateau", warmup_steps=4, scale="energy_std", e0="lstsq", elements=["Au", "Cu", "Ag"]),
    ],
    ids=["huber-adamw-cosine", "plateau-warmup-energy_std"],
)
def test_options_train(tmp_path, emt_file, options, make_trainer):
    module = tiny(**options)
    trainer = make_trainer(tmp_path, max_epochs=2)
    trainer.fit(module, datamodule(emt_file))
    assert np.isfinite(float(trainer.callback_metrics["val/loss"]))
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert 0 < lr <= 1e-3
    if "elements" in options:
        assert module.hparams.elements == ["Cu", "Ag", "Au"] and module.hparams.e0["Ag"] == 0.0


def test_nequip_gets_avg_num_neighbors_from_training_data(tmp_path, emt_file, make_trainer):
    dm = datamodule(emt_file)
    module = tiny("nequip")
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, dm)
    expected = mean_num_neighbors(dm.train_data)
    assert module.hparams.representation_hparams["avg_num_neighbors"] == pytest.approx(expected)
    assert float(module.model.potential.representation.avg_num_neighbors) == pytest.approx(expected)


def test_partly_labelled_data_trains(tmp_path, emt_file, make_trainer):
    """Frames without energy (NaN label, weight 0) drop out of the energy term and metrics."""
    dm = datamodule(emt_file)
    dm.setup("fit")
    for data in dm.train_data[::2] + dm.val_data[::2]:
        data[keys.ENERGY] = torch.full_like(data[keys.ENERGY], float("nan"))
        data[keys.ENERGY_WEIGHT] = torch.zeros_like(data[keys.ENERGY_WEIGHT])
    module = tiny()
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, dm)
    assert all(np.isfinite(float(v)) for v in trainer.callback_metrics.values())


class _RecordLoss(L.Callback):
    """Records the loss weights each training epoch used."""

    def __init__(self) -> None:
        self.weights = []

    def on_train_epoch_end(self, trainer, module) -> None:
        self.weights.append(dict(module.active_loss.weights))


def test_stage_two_switches_the_loss_and_restarts_best_checkpoint(tmp_path, emt_file, make_trainer):
    record = _RecordLoss()
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="best", monitor="val/loss", mode="min")
    stopper = L.pytorch.callbacks.EarlyStopping(monitor="val/loss", patience=1)
    module = tiny(energy_weight=1.0, forces_weight=10.0, stage_two_start=2, stage_two_energy_weight=500.0)
    trainer = make_trainer(tmp_path, max_epochs=3, enable_checkpointing=True, callbacks=[record, best, stopper])
    trainer.fit(module, datamodule(emt_file))
    energy, forces = keys.ENERGY, keys.FORCES
    assert [(w[energy], w[forces]) for w in record.weights] == [(1.0, 10.0), (1.0, 10.0), (500.0, 100.0)]
    # The stage-two loss is on another scale: the last epoch is judged against stage two only, and
    # overwrites best.ckpt instead of writing best-v1.ckpt.
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["best.ckpt"]
    saved = torch.load(best.best_model_path, weights_only=True)
    assert saved["epoch"] == 2
    assert float(best.best_model_score) == pytest.approx(float(trainer.callback_metrics["val/loss"]))
    with pytest.raises(ValueError, match="stage_two_start"):
        tiny(stage_two_start=0)


class _StepClock(L.pytorch.callbacks.Timer):
    """A ``max_time`` timer whose clock reads one second per optimizer step (a deterministic wall clock)."""

    def __init__(self, seconds: int) -> None:
        super().__init__(duration={"seconds": seconds}, interval="step")
        self.fit_trainer = None

    def on_train_start(self, trainer, module) -> None:
        super().on_train_start(trainer, module)
        self.fit_trainer = trainer

    def time_elapsed(self, stage="train") -> float:
        return 0.0 if self.fit_trainer is None else float(self.fit_trainer.global_step)


class _RecordRate(_RecordLoss):
    def __init__(self) -> None:
        super().__init__()
        self.rates = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_a_time_budget_sets_the_cosine_schedule_and_stage_two(tmp_path, emt_file, make_trainer):
    """Bounded by ``max_time`` alone, the cosine anneals over the clock and stage two starts at its fraction."""
    record = _RecordRate()
    lr, min_lr, seconds = 1e-3, 1e-5, 15  # 6 steps per epoch: the clock ends the run in epoch 2
    module = tiny(scheduler="cosine", lr=lr, min_lr=min_lr, stage_two_fraction=0.5, forces_weight=10.0)
    trainer = make_trainer(tmp_path, max_epochs=-1, callbacks=[record, _StepClock(seconds)])
    trainer.fit(module, datamodule(emt_file))
    assert trainer.global_step == seconds and module.run_progress == 1.0
    floor = min_lr / lr
    expected = [lr * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * k / seconds))) for k in range(seconds)]
    assert record.rates == pytest.approx(expected, rel=1e-6)
    # epochs start at 0, 6/15 = 0.4 and 12/15 = 0.8 of the run: stage two from the third
    weights = [(w[keys.ENERGY], w[keys.FORCES]) for w in record.weights]
    assert weights == [(1.0, 10.0), (1.0, 10.0), (1000.0, 100.0)]
    with pytest.raises(ValueError, match="not both"):
        tiny(stage_two_start=2, stage_two_fraction=0.5)
    with pytest.raises(ValueError, match="stage_two_fraction"):
        tiny(stage_two_fraction=1.0)
    with pytest.raises(ValueError, match="max_time"):
        make_trainer(tmp_path, max_epochs=-1).fit(tiny(scheduler="cosine"), datamodule(emt_file))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown representation"):
        PotentialModule("nosuchfamily")
    with pytest.raises(ValueError, match="e0 must be"):
        PotentialModule("painn", e0="mean")
    with pytest.raises(ValueError, match="scale must be"):
        PotentialModule("painn", scale="rms")


def test_e0_from_an_isolated_atoms_file(tmp_path, emt_file):
    """The acetylacetone recipe: E0 from a file of isolated atoms (energy only), scale from the training split."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from gnnpot.data import write_frames

    atoms = []
    for symbol, energy in (("Cu", -1.5), ("Au", -2.5)):
        single = Atoms(symbol, positions=[[0.0, 0.0, 0.0]], pbc=False)
        single.calc = SinglePointCalculator(single, energy=energy)
        atoms.append(single)
    path = tmp_path / "isolated_atoms.xyz"
    write_frames(path, atoms)
    dm = datamodule(emt_file)
    dm.setup("fit")
    module = tiny(e0="isolated", isolated_atoms_file=str(path))
    resolved = module.resolve_statistics(dm.train_data)
    assert resolved["e0"] == {"Cu": -1.5, "Au": -2.5} and resolved["scale"] == pytest.approx(force_rms(dm.train_data))
    module.build()
    assert module.model.potential.scale_shift.shift.tolist() == [-1.5, -2.5]


@pytest.mark.slow
def test_compiled_training_follows_eager(tmp_path, emt_file, make_trainer):
    """Two epochs with ``compile=True`` predict what eager training predicts, up to float32 round-off.

    Predictions, not weights, are compared: the readout's last bias cancels against the isolated-atom
    baseline, so its gradient is round-off noise that Adam scales up to full steps either way.
    """
    predictions = []
    for compile in (False, True):
        L.seed_everything(0)
        module = tiny("schnet", compile=compile, ema_decay=0.9)
        dm = datamodule(emt_file)
        make_trainer(tmp_path / str(compile), max_epochs=2).fit(module, dm)
        assert module.model.compiled is compile and module.ema.module.compiled is compile
        assert not module.ema.module._compiled_fns  # validation ran eagerly
        model = module.inference_model.eval()
        out = model(Batch.from_data_list(dm.val_data))
        predictions.append({k: out[k].detach() for k in (keys.ENERGY, keys.FORCES, keys.STRESS)})
    for key, value in predictions[0].items():
        torch.testing.assert_close(predictions[1][key], value, rtol=1e-4, atol=1e-4, msg=key)


def test_float64_training_sees_float64_data_and_eval_matches_the_calculator(tmp_path, emt_file, make_trainer):
    """Under 64-true the model, positions and labels are float64 from reader to loss.

    ``gnnpot eval`` of a float64 model gives the calculator's float64 energies.
    """
    from ase.io import read

    from gnnpot import GNNPotCalculator
    from gnnpot.training.evaluate import evaluate_file

    seen = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append({k: batch[k].dtype for k in (keys.POSITIONS, keys.CELL, keys.ENERGY, keys.FORCES)})
            seen[-1]["model"] = next(pl_module.model.parameters()).dtype

    module = tiny("schnet")
    trainer = make_trainer(tmp_path, max_steps=2, precision="64-true", callbacks=[Spy()])
    trainer.fit(module, datamodule(emt_file))
    assert seen and all(set(entry.values()) == {torch.float64} for entry in seen)

    model = module.inference_model.double().eval()
    _, predictions = evaluate_file(model, emt_file, index="0:3", batch_size=2)
    frames = read(emt_file, index="0:3")
    calc = GNNPotCalculator(model, dtype="float64")
    expected = [calc.get_potential_energy(atoms) / len(atoms) for atoms in frames]
    np.testing.assert_allclose(predictions["energy_pred"], expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(predictions["energy_ref"], [a.get_potential_energy() / len(a) for a in frames])
