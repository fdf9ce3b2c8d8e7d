"""Export (python -m project export): ONNX, a torch.export program and safetensors, each as good as the
checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

from project.data import Loading
from project.errors import UserInputError
from project.inference.export import export_checkpoint, run_export
from project.training.task_module import TaskModule


def test_every_checkpoint_stores_the_preprocessing_of_its_images(pretrained_checkpoint):
    stored = torch.load(pretrained_checkpoint, weights_only=True)["preprocessing"]
    assert set(stored) == {"channels", "image_size", "mean", "std", "class_names"}


def test_export_writes_every_format_and_what_they_expect(exported_folder):
    assert sorted(path.name for path in exported_folder.iterdir()) == [
        "README.md", "config.json", "model.onnx", "model.pt2", "model.safetensors"
    ]  # fmt: skip
    about = json.loads((exported_folder / "config.json").read_text())
    assert about["task"] == "multiclass" and about["num_outputs"] == 10
    preprocessing = about["preprocessing"]
    assert preprocessing["channels"] == 1 and preprocessing["image_size"] == 28
    assert preprocessing["class_names"] == [str(digit) for digit in range(10)]
    # The training images' own statistics (the generated images are not MNIST's 0.1307 and 0.3081).
    assert len(preprocessing["mean"]) == len(preprocessing["std"]) == 1 and 0.1 < preprocessing["std"][0] < 0.5
    assert about["network"]["class_path"] == "project.networks.ConvNet"


@pytest.mark.parametrize("name", ["model.onnx", "model.pt2"])
@pytest.mark.parametrize("batch", [1, 5, 64])
def test_an_export_agrees_with_the_checkpoint_on_real_images_of_any_batch_size(
    name, batch, exported_folder, pretrained_checkpoint, real_data_dir
):
    from project.data import MNISTDataModule

    data = MNISTDataModule(data_dir=str(real_data_dir), download=False, loading=Loading(eval_batch_size=batch))
    data.setup("test")
    images, _ = next(data.normalised_batches("test"))
    network = TaskModule.load_from_checkpoint(pretrained_checkpoint, map_location="cpu").network.eval()
    with torch.no_grad():
        expected = network(images)
    assert images.shape[0] == batch
    # Within 1e-5 of the outputs' scale (the logits here reach ~100: float32 rounding alone is ~1e-5 there).
    torch.testing.assert_close(run_export(exported_folder / name, images), expected, atol=1e-5, rtol=1e-5)


def test_the_safetensors_export_is_a_pretrained_backbone_to_fine_tune_from(exported_folder, quick_args, run_dir):
    from project.cli import run_cli

    weights = exported_folder / "model.safetensors"
    args = [f"--model.finetuning.pretrained={weights}", "--trainer.max_epochs=1", "--test_after_fit=false"]
    cli = run_cli(["fit", *quick_args, *args])
    assert cli.model.pretrained_summary.startswith("Loaded")


def test_the_default_formats_are_onnx_and_safetensors():
    from project.cli.options import PARSERS
    from project.inference.export import DEFAULT_FORMATS

    assert PARSERS["export"]("export").get_defaults().formats == list(DEFAULT_FORMATS) == ["onnx", "safetensors"]


def test_an_export_never_overwrites_an_existing_folder(pretrained_checkpoint, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserInputError, match="already exists"):
        export_checkpoint(pretrained_checkpoint, out)
    assert [path.name for path in out.iterdir()] == ["keep.txt"]
    assert [path.name for path in tmp_path.iterdir()] == ["model"]  # no staging folder left behind


@pytest.mark.slow
def test_the_export_script_reports_the_largest_difference(pretrained_checkpoint, tmp_path):
    out = tmp_path / "exported"
    command = [sys.executable, str(REPO_ROOT / "scripts" / "export.py"), str(pretrained_checkpoint), "--out", str(out),
               "--formats", "safetensors", "pt2"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote model.safetensors, model.pt2, config.json and README.md (the model card)" in result.stdout
    assert "network (relative to the outputs' scale): model.pt2 0.0e+00" in result.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: {out} already exists: give another --out, or remove it (nothing is overwritten)"
    ]
    torchscript = [*command[:4], str(tmp_path / "other"), "--formats", "torchscript"]
    bad = subprocess.run(torchscript, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: formats: expected one of onnx, pt2, safetensors, got 'torchscript'"
    ]
