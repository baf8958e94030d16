"""Fine-tuning (``init_from``): weights carried over, new elements added, E0 refit, frozen representation."""

import numpy as np
import pytest
import torch
from ase.build import bulk

from gnnpot import REGISTRY, build_model, testing
from gnnpot.data import AtomsDataModule, fit_e0, write_frames
from gnnpot.data.generate import generate_emt_dataset
from gnnpot.models import load_model, save_model
from gnnpot.models.build import transfer_weights
from gnnpot.training import PotentialModule

CUTOFF = 4.0


def copper_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=2)
    return atoms


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_new_elements_get_new_rows_and_old_ones_predict_as_before(name):
    """A Cu model copied into a Cu+Au+O model gives the same Cu energy, forces and stress (float64)."""
    torch.manual_seed(0)
    source = build_model(name, cutoff=CUTOFF, elements=["Cu"], e0={"Cu": -1.5}, scale=0.7, **testing.tiny_hparams(name))
    torch.manual_seed(1)
    target = build_model(
        name, cutoff=CUTOFF, elements=["O", "Cu", "Au"], e0={"Cu": -1.5}, scale=0.7, **testing.tiny_hparams(name)
    )
    source, target = source.double(), target.double()
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    mapped = transfer_weights(source, target)
    assert mapped, "some tensor should have one row per element"
    (want,), (got,) = testing.evaluate(source, [copper_cell()]), testing.evaluate(target, [copper_cell()])
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12, err_msg=key)
    # The new elements (O: row 0, Au: row 2) keep their fresh rows where a tensor has an element axis.
    for tensor_name in mapped:
        before, after = fresh[tensor_name], target.state_dict()[tensor_name]
        for axis in [a for a in range(after.dim()) if after.shape[a] == 3 != source.state_dict()[tensor_name].shape[a]]:
            for row in (0, 2):
                assert torch.equal(after.select(axis, row), before.select(axis, row)), tensor_name


def test_transfer_refuses_other_sizes_and_missing_elements():
    small = build_model("schnet", cutoff=CUTOFF, elements=["Cu", "Au"], **testing.tiny_hparams("schnet"))
    other = build_model("schnet", cutoff=CUTOFF, elements=["Cu", "Au"], num_features=12, num_interactions=1)
    with pytest.raises(ValueError, match="different hparams"):
        transfer_weights(small, other)
    copper = build_model("schnet", cutoff=CUTOFF, elements=["Cu"], **testing.tiny_hparams("schnet"))
    with pytest.raises(ValueError, match=r"lacks elements \[79\]"):
        transfer_weights(small, copper)


@pytest.fixture(scope="module")
def copper_model(tmp_path_factory):
    """A Cu-only PaiNN model file with E0(Cu) = -0.25 eV and scale 0.3."""
    torch.manual_seed(0)
    hparams = testing.tiny_hparams("painn")
    model = build_model("painn", cutoff=CUTOFF, elements=["Cu"], e0={"Cu": -0.25}, scale=0.3, **hparams)
    return str(save_model(model, tmp_path_factory.mktemp("source") / "copper.pt"))


@pytest.fixture(scope="module")
def cuau_file(tmp_path_factory):
    frames = generate_emt_dataset(num_frames=12, seed=4)
    path = tmp_path_factory.mktemp("cuau") / "cuau.xyz"
    write_frames(path, frames)
    return str(path)


def test_init_from_starts_at_the_source_with_e0_refit(tmp_path, copper_model, cuau_file, make_trainer):
    """Before any step the fine-tuned model is the source plus the E0 change; Au is added, scale kept."""
    dm = AtomsDataModule(cuau_file, val_fraction=0.25, test_fraction=0.0, cutoff=CUTOFF, batch_size=4, seed=0)
    module = PotentialModule(init_from=copper_model, cutoff=CUTOFF, e0="lstsq", ema_decay=0.9)
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=0)  # builds and validates, no step
    trainer.fit(module, dm)
    hp, source = module.hparams, load_model(copper_model)
    assert hp.representation == "painn" and hp.elements == ["Cu", "Au"] and hp.scale == pytest.approx(0.3)
    expected = fit_e0(dm.train_data, [29, 79], method="lstsq")
    assert hp.e0 == pytest.approx({"Cu": expected[29], "Au": expected[79]})
    frame = copper_cell()
    (want,), (got,) = testing.evaluate(source, [frame]), testing.evaluate(module.inference_model, [frame])
    shift = len(frame) * (expected[29] - (-0.25))
    assert got["energy"] - want["energy"] == pytest.approx(shift, abs=1e-4)
    np.testing.assert_allclose(got["forces"], want["forces"], atol=1e-5)


def test_frozen_representation_trains_the_readout_only(tmp_path, copper_model, cuau_file, make_trainer):
    dm = AtomsDataModule(cuau_file, val_fraction=0.25, test_fraction=0.0, cutoff=CUTOFF, batch_size=4, seed=0)
    module = PotentialModule(init_from=copper_model, cutoff=CUTOFF, freeze_representation=True, lr=0.01)
    make_trainer(tmp_path, max_epochs=1).fit(module, dm)
    source = load_model(copper_model).state_dict()
    trained = module.model.state_dict()
    representation = [k for k in trained if k.startswith("potential.representation.")]
    readout = [k for k in trained if k.startswith("potential.readout.")]
    copied = [k for k in representation if trained[k].shape == source[k].shape]
    assert copied and all(torch.equal(trained[k], source[k]) for k in copied)
    assert any(not torch.equal(trained[k], source[k]) for k in readout)


def test_init_from_checks_the_config_against_the_model(copper_model):
    with pytest.raises(ValueError, match="is a 'painn' model, but the config asks for 'schnet'"):
        PotentialModule("schnet", init_from=copper_model, cutoff=CUTOFF)
    with pytest.raises(ValueError, match="hyperparameters differ from the config's"):
        PotentialModule("painn", {"num_features": 999}, init_from=copper_model, cutoff=CUTOFF)
    with pytest.raises(ValueError, match="set --data.cutoff 4.0"):
        PotentialModule(init_from=copper_model, cutoff=5.0)
    with pytest.raises(ValueError, match="freeze_representation needs init_from"):
        PotentialModule(freeze_representation=True)
    with pytest.raises(FileNotFoundError, match="no such model file"):
        PotentialModule(init_from="no-such-model.pt")
