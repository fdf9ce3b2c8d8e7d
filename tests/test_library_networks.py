"""Backbones from model libraries (project.networks.library): fine-tuned on an image folder offline, with every
guarantee the project's own network has (exact resume, checkpoints that rebuild without a download, export,
prediction, one-line refusals)."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import write_image_folder
from helpers import cli_error
from test_reliability import assert_same_training_state

from project.cli import run_cli
from project.errors import UserInputError
from project.networks.library import LibraryNetwork

SMALL = ["--data.image_size=32", "--model.network.init_args.image_size=32", "--data.batch_size=16"]


def library_args(folder, library: str, name: str, weights: str | None = None) -> list[str]:
    """``finetune_library.yaml`` on a generated folder, shortened by the debug modifier, without a download."""
    args = ["--config=finetune_library.yaml", "--config=debug", f"--data.data_dir={folder}", *SMALL,
            f"--model.network.init_args.library={library}", f"--model.network.init_args.name={name}",
            f"--model.network.init_args.weights={weights or 'null'}",
            "--model.finetuning.freeze_backbone_epochs=1"]  # fmt: skip
    return args


@pytest.mark.slow
def test_a_torchvision_backbone_with_local_weights_fine_tunes_resumes_exactly_and_exports(
    image_folder, run_dir, mobilenet_weights, tmp_path_factory, monkeypatch
):
    from helpers import Interrupted

    from project.inference.export import export_checkpoint
    from project.inference.prediction import Predictor
    from project.inference.prediction_files import image_paths

    args = ["fit", *library_args(image_folder, "torchvision", "mobilenet_v3_small", mobilenet_weights)]
    args.append("--test_after_fit=false")
    with pytest.raises(Interrupted):  # a crash when the second epoch starts: last.ckpt holds the first
        run_cli([*args, "--trainer.callbacks+=helpers.InterruptAtEpoch", "--trainer.callbacks.epoch=1"])
    last = run_dir / "logs" / "finetune_library" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    expected = torch.load(mobilenet_weights, weights_only=True)["features.0.0.weight"]
    # The first epoch trained the head only: the backbone is still the file's.
    assert torch.equal(checkpoint["state_dict"]["network.backbone.features.0.0.weight"], expected)
    assert checkpoint["state_dict"]["network.head.weight"].shape[0] == 3  # one output per class folder
    assert checkpoint["hyper_parameters"]["network"]["init_args"]["weights"] is None  # rebuilt without the file
    run_cli([*args, "--ckpt_path=last"])
    straight = tmp_path_factory.mktemp("straight")
    monkeypatch.chdir(straight)
    run_cli(args)
    monkeypatch.chdir(run_dir)
    assert_same_training_state(straight / last.relative_to(run_dir), last)
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # torchvision's, for its weights
    assert {key: checkpoint["preprocessing"][key] for key in imagenet} == imagenet  # the preset's data.mean/std: null
    rows, skipped = Predictor.load(last).predict(image_paths([str(image_folder / "square")]))
    assert len(rows) == 40 and skipped == []
    about = export_checkpoint(last, run_dir / "exported", ("onnx", "safetensors"))
    assert about["largest_difference_from_the_checkpoint"]["model.onnx"] <= 1e-5


@pytest.mark.slow
def test_a_timm_backbone_fine_tunes_on_greyscale_digits(quick_args, run_dir):
    pytest.importorskip("timm")
    args = ["--model.network=project.networks.library.LibraryNetwork", "--model.network.init_args.library=timm",
            "--model.network.init_args.name=test_resnet", "--model.network.init_args.in_channels=1",
            "--model.network.init_args.image_size=28"]  # fmt: skip
    cli = run_cli(["fit", *quick_args, *args, "--trainer.max_epochs=1"])
    assert cli.model.network.head.in_features == 96 and cli.trainer.callback_metrics["test/acc"] >= 0


def test_an_unknown_model_name_is_one_error_line(image_folder, run_dir, capsys):
    message = cli_error(["fit", *library_args(image_folder, "torchvision", "resnet1800")], capsys, root=run_dir)
    assert message.startswith("error: torchvision has no classification model 'resnet1800'; some it has: ")


def test_a_weights_file_of_another_model_is_refused_naming_the_keys(tmp_path, mobilenet_weights):
    with pytest.raises(UserInputError, match=r"weights .*: not a state dict of ResNet \(missing \['bn1.bias'"):
        LibraryNetwork("torchvision", "resnet18", num_outputs=2, weights=mobilenet_weights)


def test_timm_weights_that_cannot_be_downloaded_are_one_error_naming_what_to_give(monkeypatch):
    """Offline, timm's download from the Hugging Face hub ends in huggingface_hub's LocalEntryNotFoundError."""
    import timm
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(name, pretrained=False, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(UserInputError, match=r"timm's weights for 'resnet18' could not be .*init_args\.weights"):
        LibraryNetwork("timm", "resnet18", num_outputs=2, weights="library")


def test_a_library_that_is_not_installed_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if absent: importing it raises ImportError
    with pytest.raises(UserInputError, match=r'the timm library is not installed: pip install -e "\.\[timm\]"'):
        LibraryNetwork("timm", "test_resnet", num_outputs=2)


@pytest.mark.slow
def test_a_hugging_face_model_from_a_local_folder_fine_tunes_on_digits_and_exports(quick_args, run_dir):
    transformers = pytest.importorskip("transformers")
    from project.inference.export import export_checkpoint

    config = transformers.ViTConfig(image_size=28, patch_size=7, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64)  # fmt: skip
    torch.manual_seed(0)
    folder = run_dir / "tiny-vit"
    transformers.ViTModel(config).save_pretrained(folder)  # as a hub download leaves it, offline
    transformers.ViTImageProcessor(image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.2, 0.2]).save_pretrained(folder)
    saved = transformers.ViTModel.from_pretrained(folder).embeddings.patch_embeddings.projection.weight
    args = ["--model.network=project.networks.library.LibraryNetwork", "--model.network.init_args.library=huggingface",
            f"--model.network.init_args.name={folder}", "--model.network.init_args.weights=library",
            "--model.network.init_args.in_channels=1", "--model.network.init_args.image_size=28",
            "--model.finetuning.freeze_backbone_epochs=1"]  # fmt: skip
    cli = run_cli(["fit", *quick_args, *args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    assert cli.model.network.normalisation["mean"] == pytest.approx([0.4, 0.5, 0.6])  # its image processor's
    backbone = cli.model.network.backbone.model
    assert torch.equal(backbone.embeddings.patch_embeddings.projection.weight, saved)  # frozen in the first epoch
    last = run_dir / "logs" / "mnist" / "version_0" / "checkpoints" / "last.ckpt"
    about = export_checkpoint(last, run_dir / "exported", ("onnx", "pt2"))
    assert max(about["largest_difference_from_the_checkpoint"].values()) <= 1e-5


def test_a_library_or_channel_count_outside_what_is_allowed_is_refused_by_name():
    with pytest.raises(UserInputError, match=r"library must be one of torchvision, timm, huggingface, got 'keras'"):
        LibraryNetwork("keras", "resnet18", num_outputs=2)
    with pytest.raises(UserInputError, match=r"in_channels must be 1 \(repeated to 3\) or 3, got 4"):
        LibraryNetwork("torchvision", "resnet18", num_outputs=2, in_channels=4)


@pytest.mark.slow
def test_lora_on_a_library_backbone_keeps_the_reference_to_its_base_weights(image_folder, run_dir, mobilenet_weights):
    from project.inference.prediction import Predictor
    from project.inference.prediction_files import image_paths

    args = ["fit", *library_args(image_folder, "torchvision", "mobilenet_v3_small", mobilenet_weights)]
    run_cli([*args, "--config=lora", "--model.lora.rank=4", "--test_after_fit=false"])
    last = run_dir / "logs" / "finetune_library" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["hyper_parameters"]["network"]["init_args"]["weights"] == mobilenet_weights  # the base
    saved = sum(tensor.numel() for tensor in checkpoint["state_dict"].values())
    assert saved < sum(t.numel() for t in torch.load(mobilenet_weights, weights_only=True).values()) / 4
    rows, skipped = Predictor.load(last).predict(image_paths([str(image_folder / "square")]))
    assert len(rows) == 40 and skipped == []


def test_a_greyscale_folder_takes_the_averages_of_the_backbones_normalisation(tmp_path, run_dir):
    folder = write_image_folder(tmp_path / "grey", {"a": 12, "b": 12}, mode="L")
    pytest.importorskip("timm")
    args = ["--config=finetune_library.yaml", "--config=debug", f"--data.data_dir={folder}", "--data.channels=1",
            "--data.image_size=28", "--model.network.init_args.library=timm",
            "--model.network.init_args.name=test_resnet",
            "--model.network.init_args.weights=null", "--model.network.init_args.in_channels=1",
            "--model.network.init_args.image_size=28", "--trainer.max_epochs=1"]  # fmt: skip
    cli = run_cli(["fit", *args, "--test_after_fit=false"])
    assert cli.datamodule.normalisation() == ([0.5], [0.5])  # timm's data config of test_resnet: 0.5 per channel
    cli = run_cli(["fit", *args, "--test_after_fit=false", "--data.init_args.std=[0.25]"])
    assert cli.datamodule.normalisation() == ([0.5], [0.25])  # what is given wins


def test_null_normalisation_without_a_library_backbone_says_what_to_set(image_folder, run_dir, capsys):
    message = cli_error(["fit", "--config=finetune_folder.yaml", "--config=debug", f"--data.data_dir={image_folder}",
                         "--data.init_args.mean=null"], capsys, root=run_dir)  # fmt: skip
    assert "data.mean and data.std are null (the backbone's), but the network states no normalisation" in message
