"""Model and data specs on files made here (no network): image folders of digits PNGs, a .pt
data set, a torch.save'd model, a module:factory, a timm model with a local weights file."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from torch import nn

from signgd_lab.zoo.datasets import calibration_loader, check_model_fits, load_data
from signgd_lab.zoo.errors import SpecError
from signgd_lab.zoo.model_spec import load_model


def write_digits_folder(root, x: torch.Tensor, y: torch.Tensor, per_class: int) -> dict:
    """PNG files root/<digit>/<i>.png (8-bit grayscale) of the first ``per_class`` images of
    every digit; returns {path name: original image}."""
    from PIL import Image

    written = {}
    for digit in range(10):
        folder = root / str(digit)
        folder.mkdir(parents=True)
        for i in (y == digit).nonzero().flatten()[:per_class].tolist():
            pixels = (x[i, 0].numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
            written[f"{digit}/{i}.png"] = x[i]
    return written


@pytest.fixture(scope="module")
def digits_cnn():
    return load_model("digits_cnn")


def test_image_folder_tree_matches_the_digits_it_was_written_from(tmp_path, digits_cnn, zoo_cache):
    _, _, (x_te, y_te) = zoo_cache("digits_cnn")
    written = write_digits_folder(tmp_path / "tree", x_te, y_te, per_class=4)
    data = load_data(str(tmp_path / "tree"), digits_cnn)
    assert data.num_classes == 10 and len(data.evaluation) == 40
    assert data.calibration is data.evaluation  # one tree: calibrate on a sample of it
    for (path, label), i in zip(data.evaluation.samples, range(len(data.evaluation))):
        x, y = data.evaluation[i]
        assert y == label == int(path.split("/")[-2])
        original = written["/".join(path.split("/")[-2:])]
        assert x.shape == (1, 8, 8)
        assert (x - original).abs().max() <= 0.5 / 255 + 1e-6  # only 8-bit rounding
    assert check_model_fits(digits_cnn.model, data) == 10
    loader = calibration_loader(data, 16, batch_size=8, seed=3)
    again = calibration_loader(data, 16, batch_size=8, seed=3)
    assert torch.equal(torch.cat([b[0] for b in loader]), torch.cat([b[0] for b in again]))
    assert sum(len(b[1]) for b in loader) == 16


def test_imagenet_layout_calibrates_on_train_and_evaluates_on_val(tmp_path, digits_cnn, zoo_cache):
    _, (x_tr, y_tr), (x_te, y_te) = zoo_cache("digits_cnn")
    write_digits_folder(tmp_path / "inet" / "train", x_tr, y_tr, per_class=3)
    write_digits_folder(tmp_path / "inet" / "val", x_te, y_te, per_class=2)
    data = load_data(str(tmp_path / "inet"), digits_cnn)
    assert (len(data.calibration), len(data.evaluation), data.num_classes) == (30, 20, 10)
    assert "train" in data.calibration.root and "val" in data.evaluation.root


def test_folder_without_images_and_class_count_mismatch(tmp_path, digits_cnn, zoo_cache):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "notes.txt").write_text("no image")
    with pytest.raises(SpecError, match="has no images"):
        load_data(str(tmp_path / "empty"), digits_cnn)
    _, _, (x_te, y_te) = zoo_cache("digits_cnn")
    write_digits_folder(tmp_path / "ten", x_te, y_te, per_class=1)
    for digit in range(3, 10):  # keep 3 class folders
        for f in (tmp_path / "ten" / str(digit)).iterdir():
            f.unlink()
        (tmp_path / "ten" / str(digit)).rmdir()
    data = load_data(str(tmp_path / "ten"), digits_cnn)
    with pytest.raises(SpecError, match="3 classes but the model's head has 10 outputs"):
        check_model_fits(digits_cnn.model, data)
    with pytest.raises(SpecError, match="does not exist"):
        load_data(str(tmp_path / "missing"), digits_cnn)


def test_folder_for_an_unknown_model_needs_size_mean_std(tmp_path, zoo_cache):
    _, _, (x_te, y_te) = zoo_cache("digits_cnn")
    write_digits_folder(tmp_path / "tree", x_te, y_te, per_class=1)
    model = load_model(str(_save_model(tmp_path)), trust_model_file=True)
    with pytest.raises(SpecError, match="--image-size, --mean, --std"):
        load_data(str(tmp_path / "tree"), model)
    data = load_data(str(tmp_path / "tree"), model, image_size=8, mean=[0.5], std=[0.25])
    x, _ = data.evaluation[0]
    assert x.shape == (1, 8, 8) and x.min() >= -2.0 - 1e-6 and x.max() <= 2.0 + 1e-6


def test_pt_data_set(tmp_path, digits_cnn, zoo_cache):
    _, _, (x_te, y_te) = zoo_cache("digits_cnn")
    torch.save((x_te[:51], y_te[:51]), tmp_path / "d.pt")
    data = load_data(str(tmp_path / "d.pt"), digits_cnn)
    assert len(data.evaluation) == 51 and data.num_classes is None
    assert torch.equal(data.evaluation[7][0], x_te[7])
    assert check_model_fits(digits_cnn.model, data) == 10
    torch.save((x_te[:5], y_te[:5] + 10), tmp_path / "big_labels.pt")
    with pytest.raises(SpecError, match="labels up to"):
        check_model_fits(digits_cnn.model, load_data(str(tmp_path / "big_labels.pt"), digits_cnn))
    torch.save((x_te[:5].long(), y_te[:5]), tmp_path / "int.pt")
    with pytest.raises(SpecError, match="inputs must be float"):
        load_data(str(tmp_path / "int.pt"), digits_cnn)
    torch.save(x_te[:5], tmp_path / "x_only.pt")
    with pytest.raises(SpecError, match=r"pair \(x, y\)"):
        load_data(str(tmp_path / "x_only.pt"), digits_cnn)
    torch.save((torch.rand(3, 1, 5, 5), torch.zeros(3, dtype=torch.long)), tmp_path / "shape.pt")
    with pytest.raises(SpecError, match=r"does not accept inputs of shape \(1, 5, 5\)"):
        check_model_fits(digits_cnn.model, load_data(str(tmp_path / "shape.pt"), digits_cnn))


class SmallNet(nn.Module):
    """A model class importable by pickle (module-level)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _save_model(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "whole_model.pt"
    torch.save(SmallNet(), path)
    return path


def test_pickled_model_file_needs_trust(tmp_path):
    path = _save_model(tmp_path)
    with pytest.raises(SpecError, match="runs code stored in the file.*--trust-model-file"):
        load_model(str(path))
    loaded = load_model(str(path), trust_model_file=True)
    assert isinstance(loaded.model, SmallNet) and not loaded.model.training
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(loaded.model(x), torch.load(path, weights_only=False)(x))
    torch.save(SmallNet().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(SpecError, match="weights only.*--weights"):
        load_model(str(tmp_path / "sd.pt"))
    with pytest.raises(SpecError, match="does not exist"):
        load_model(str(tmp_path / "nope.pt"))


def test_module_factory_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "user_models_spec.py").write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(1)\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n"
        "def not_a_model():\n"
        "    return 42\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    loaded = load_model("user_models_spec:build")
    assert loaded.kind == "factory" and isinstance(loaded.model, nn.Sequential)
    torch.manual_seed(1)
    assert torch.equal(loaded.model[1].weight, nn.Linear(64, 10).weight)
    with pytest.raises(SpecError, match="returned a int, not a torch.nn.Module"):
        load_model("user_models_spec:not_a_model")
    with pytest.raises(SpecError, match="has no attribute 'missing'"):
        load_model("user_models_spec:missing")
    with pytest.raises(SpecError, match="cannot import module 'no_such_module_xyz'"):
        load_model("no_such_module_xyz:build")
    torch.save(loaded.model.state_dict(), tmp_path / "w.pt")
    again = load_model("user_models_spec:build", weights=str(tmp_path / "w.pt"), seed=5)
    assert torch.equal(again.model[1].weight, loaded.model[1].weight)
    sys.modules.pop("user_models_spec", None)


def test_timm_model_with_a_local_weights_file(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(123)
    import timm

    reference = timm.create_model("test_vit", pretrained=False)
    state = reference.state_dict()
    torch.save(state, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pt")
    for name in ("w.pth", "w.safetensors", "ckpt.pt"):
        loaded = load_model("timm:test_vit", weights=str(tmp_path / name), seed=0)
        assert loaded.kind == "timm" and loaded.data_config["input_size"] == (3, 160, 160)
        for key, value in loaded.model.state_dict().items():
            assert torch.equal(value, state[key]), key
    other = timm.create_model("test_resnet", pretrained=False).state_dict()
    torch.save(other, tmp_path / "other.pth")
    with pytest.raises(SpecError, match="do not fit VisionTransformer: .* missing from the file"):
        load_model("timm:test_vit", weights=str(tmp_path / "other.pth"))
    with pytest.raises(SpecError, match="either pretrained"):
        load_model("timm:test_vit", pretrained=True, weights=str(tmp_path / "w.pth"))
    with pytest.raises(SpecError, match="timm has no architecture 'no_such_net'"):
        load_model("timm:no_such_net")
    with pytest.raises(SpecError, match="unknown model 'no_such_net'"):
        load_model("no_such_net")


def test_timm_transforms_and_digits_for_a_timm_model(tmp_path, zoo_cache):
    _, _, (x_te, y_te) = zoo_cache("digits_cnn")
    write_digits_folder(tmp_path / "tree", x_te, y_te, per_class=1)
    model = load_model("timm:test_vit")
    data = load_data(str(tmp_path / "tree"), model)
    x, _ = data.evaluation[0]
    assert x.shape == (3, 160, 160)  # timm's eval transform: RGB, resized and cropped
    with pytest.raises(SpecError, match="10 classes but the model's head has 1000 outputs"):
        check_model_fits(model.model, data)
    digits = load_data("digits", model)
    assert digits.evaluation[0][0].shape == (3, 160, 160) and digits.num_classes == 10


FACTORY = ("import torch\n"
           "def build():\n"
           "    torch.manual_seed(0)\n"
           "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32),\n"
           "                               torch.nn.ReLU(), torch.nn.Linear(32, 10))\n")


@pytest.fixture
def user_files(tmp_path, monkeypatch, zoo_cache):
    """A module:factory and a .pt data set of 51 digits in a temporary working directory."""
    _, _, (x_te, y_te) = zoo_cache("digits_cnn")
    (tmp_path / "user_factory_mod.py").write_text(FACTORY)
    torch.save((x_te[:51], y_te[:51]), tmp_path / "d.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    yield tmp_path, x_te, y_te
    sys.modules.pop("user_factory_mod", None)


def test_debugger_bundle_from_user_model_and_data(user_files):
    from signgd_lab.zoo import resolve_model

    _, x_te, y_te = user_files
    bundle = resolve_model("user_factory_mod:build", samples=20, calibration_samples=30, data="d.pt")
    assert bundle.calibration.shape == (30, 1, 8, 8) and bundle.x_test.shape == (20, 1, 8, 8)
    index = [i for i in range(51) if any(torch.equal(x_te[i], x) for x in bundle.x_test)]
    assert len(index) == 20 and torch.equal(bundle.y_test, y_te[index])  # a seeded sample
    again = resolve_model("user_factory_mod:build", samples=20, calibration_samples=30, data="d.pt")
    assert torch.equal(again.x_test, bundle.x_test) and torch.equal(again.calibration,
                                                                    bundle.calibration)


def test_report_passes_model_and_data_to_the_debugger(user_files, monkeypatch):
    import signgd_lab.report as report
    from signgd_lab.cli import main

    tmp_path, _, _ = user_files
    seen = {}
    monkeypatch.setattr(report, "run_report", lambda config, out, log: seen.update(config.check()))
    assert main(["report", "--notebooks", "03", "--model", "user_factory_mod:build",
                 "--data", "d.pt"]) == 0
    params = seen["03_conversion_debugger"]
    assert params["MODEL"] == "user_factory_mod:build"
    assert params["DATA"] == str(tmp_path / "d.pt")  # absolute: the notebook runs elsewhere
    assert str(tmp_path) in os.environ["PYTHONPATH"].split(os.pathsep)


@pytest.mark.slow
@pytest.mark.notebook
def test_report_renders_the_debugger_on_user_model_and_data(user_files):
    """The whole notebook 03 on a user's factory model and .pt data (about a minute)."""
    import json

    from signgd_lab.cli import main

    tmp_path, _, _ = user_files
    assert main(["report", "--notebooks", "03", "--quick", "--model", "user_factory_mod:build",
                 "--data", "d.pt", "--out", str(tmp_path / "rep")]) == 0
    metrics = json.loads((tmp_path / "rep" / "03_conversion_debugger.metrics.json").read_text())
    assert metrics["model"] == "user_factory_mod:build" and metrics["neuron_layers"] == 1
    assert (tmp_path / "rep" / "03_conversion_debugger.html").exists()
