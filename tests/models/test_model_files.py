"""Model files: round trip, checkpoints, format versions, refusing pickles, pretrained models."""

import hashlib
import pickle

import numpy as np
import pytest
import torch
from ase.build import bulk

import gnnpot
from gnnpot import REGISTRY, GNNPotCalculator, build_model, load_model, read_metadata, save_model, testing
from gnnpot.data import AtomicData
from gnnpot.models import pretrained
from gnnpot.models.io import FORMAT_VERSION


def cuau_graph(cutoff: float = 4.0) -> AtomicData:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.numbers[[1, 2]] = 79
    atoms.rattle(0.05, seed=3)
    return AtomicData.from_atoms(atoms, cutoff)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_round_trip_gives_identical_outputs(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, cutoff=4.0, elements=["Cu", "Au"], e0={"Cu": -3.5, "Au": -4.1}, scale=0.7,
                        **testing.tiny_hparams(name))  # fmt: skip
    with torch.no_grad():  # move every weight off its initial value
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    path = save_model(model, tmp_path / "model.pt", metadata={"test_metrics": {"forces_mae": 1.5}})
    loaded = load_model(path)
    graph = cuau_graph()
    before, after = model.eval()(graph), loaded(graph)
    for key in ("energy", "forces", "stress", "atomic_energy"):
        assert torch.equal(before[key], after[key]), key
    meta = loaded.metadata
    assert meta["elements"] == ["Cu", "Au"] and meta["cutoff"] == 4.0 and meta["representation"] == name
    assert meta["e0"] == {"Cu": -3.5, "Au": -4.1} and meta["scale"] == pytest.approx(0.7)
    assert meta["units"]["energy"] == "eV" and meta["gnnpot_version"] == gnnpot.__version__
    assert meta["format_version"] == FORMAT_VERSION and meta["test_metrics"] == {"forces_mae": 1.5}
    assert read_metadata(path)["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert not loaded.training


def test_file_holds_plain_data_only(tmp_path):
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **testing.tiny_hparams("schnet"))
    path = save_model(model, tmp_path / "m.pt")
    record = torch.load(path, weights_only=True)  # would raise on any pickled object
    assert set(record) == {"format", "format_version", "config", "state_dict", "metadata"}
    assert all(isinstance(v, torch.Tensor) for v in record["state_dict"].values())


def test_dtype_and_device_options(tmp_path):
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **testing.tiny_hparams("schnet"))
    path = save_model(model, tmp_path / "m.pt")
    loaded = load_model(path, map_location="cpu", dtype=torch.float64)
    assert next(loaded.parameters()).dtype == torch.float64


def test_newer_format_version_is_a_clear_error(tmp_path):
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **testing.tiny_hparams("schnet"))
    path = save_model(model, tmp_path / "m.pt")
    record = torch.load(path, weights_only=True)
    record["format_version"] = FORMAT_VERSION + 1
    torch.save(record, path)
    with pytest.raises(ValueError, match=r"format version 2 is not supported.*upgrade gnnpot"):
        load_model(path)
    torch.save({"something": "else"}, path)
    with pytest.raises(ValueError, match="neither a gnnpot model file nor a Lightning checkpoint"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="no such model file, run folder or pretrained name"):
        load_model(tmp_path / "missing.pt")


class _RunsCode:
    """Unpickling this calls ``Path.touch`` on the marker: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("suffix", [".pt", ".ckpt"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path, suffix):
    marker = tmp_path / "code-ran"
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **testing.tiny_hparams("schnet"))
    path = save_model(model, tmp_path / f"evil{suffix}")
    record = torch.load(path, weights_only=True)
    record["metadata"]["payload"] = _RunsCode(marker)
    torch.save(record, path)  # a valid-looking file with one hostile object inside
    with pytest.raises(ValueError, match="refused to load"):
        load_model(path)
    assert not marker.exists()
    with open(path, "wb") as handle:  # a bare pickle, not even a torch zip file
        pickle.dump(_RunsCode(marker), handle)
    with pytest.raises(ValueError):
        load_model(path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_RunsCode(marker)))  # the payload does run when unpickled blindly
    assert marker.exists()


def test_every_shipped_model_loads_offline_and_predicts():
    names = gnnpot.list_pretrained()
    assert {"schnet-rmd17-ethanol", "schnet-rmd17-aspirin", "painn-emt-cuau"} <= set(names)
    for name in names:
        path = pretrained.pretrained_path(name)
        assert path.stat().st_size < 2 * 2**20, name
        model = load_model(name)
        meta = model.metadata
        assert meta["test_metrics"]["forces_mae"] > 0 and "recipe" in meta and meta["training_data_sha256"], name
        numbers = [gnnpot.models.to_atomic_numbers([e])[0] for e in meta["elements"]]
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True) if 29 in numbers else None
        if atoms is not None:
            out = model(AtomicData.from_atoms(atoms, model.cutoff))
            assert torch.isfinite(out["energy"]).all() and torch.isfinite(out["forces"]).all()


def test_hosted_model_is_downloaded_checked_and_cached(tmp_path, monkeypatch):
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **testing.tiny_hparams("schnet"))
    hosted = save_model(model, tmp_path / "hosted" / "model.pt")
    digest = hashlib.sha256(hosted.read_bytes()).hexdigest()
    monkeypatch.setenv("GNNPOT_CACHE", str(tmp_path / "cache"))
    registry = {"tiny-hosted": {"url": hosted.as_uri(), "sha256": digest, "description": "test"}}
    monkeypatch.setattr(pretrained, "PRETRAINED", registry)
    path = pretrained.pretrained_path("tiny-hosted")
    assert path == tmp_path / "cache" / "tiny-hosted.pt" and path.read_bytes() == hosted.read_bytes()
    hosted.unlink()  # the cached copy is used from now on
    loaded = load_model("tiny-hosted")
    graph = cuau_graph()
    graph.z[:] = 29
    assert torch.equal(loaded(graph)["energy"], model.eval()(graph)["energy"])
    bad = {"tiny-bad": {"url": (tmp_path / "cache" / "tiny-hosted.pt").as_uri(), "sha256": "0" * 64}}
    monkeypatch.setattr(pretrained, "PRETRAINED", bad)
    with pytest.raises(OSError, match="does not match"):
        pretrained.pretrained_path("tiny-bad")
    assert not (tmp_path / "cache" / "tiny-bad.pt").exists()
    with pytest.raises(KeyError, match="no pretrained model 'nope'"):
        pretrained.pretrained_path("nope")


def test_deep_copied_e3nn_model_still_saves(tmp_path):
    import copy

    model = build_model("nequip", cutoff=4.0, elements=["Cu"], **testing.tiny_hparams("nequip"))
    path = save_model(copy.deepcopy(model), tmp_path / "m.pt")
    graph = cuau_graph()
    graph.z[:] = 29
    np.testing.assert_array_equal(load_model(path)(graph)["energy"].detach(), model(graph)["energy"].detach())


def test_float64_weights_survive_saving_loading_and_the_calculator_copy(tmp_path):
    """A float64 model's weights are not rounded through a float32 rebuild (file round trip, calculator copy)."""
    model = build_model("schnet", cutoff=4.0, elements=["Cu"], **testing.tiny_hparams("schnet")).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-12)  # not representable in float32
    save_model(model, tmp_path / "m64.pt")
    loaded = load_model(tmp_path / "m64.pt")
    copied = GNNPotCalculator(model).model
    for other in (loaded, copied):
        assert next(other.parameters()).dtype == torch.float64
        for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
            assert torch.equal(a, b), name
