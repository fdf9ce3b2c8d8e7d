"""LoRA (project.networks.lora): adapters trained on a frozen pretrained backbone, checkpoints that hold only what
trains and refuse another base, exact resume, and export of the merged, plain network."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch
from helpers import Interrupted, cli_error
from test_reliability import assert_same_training_state

from project.cli import run_cli
from project.errors import UserInputError
from project.networks import ConvNet
from project.networks.lora import LoRA, add_adapters


@pytest.fixture
def lora_args(quick_args, pretrained_checkpoint, tmp_path) -> list[str]:
    """The debug run, fine-tuned with LoRA from a copy of the pretrained checkpoint (the tests may change it)."""
    base = tmp_path / "base.ckpt"
    shutil.copy(pretrained_checkpoint, base)
    return [*quick_args, f"--model.finetuning.pretrained={base}", "--config=lora", "--test_after_fit=false"]


def test_only_the_adapters_and_the_head_train_and_are_saved(lora_args, pretrained_checkpoint, run_dir):
    cli = run_cli(["fit", *lora_args])
    trained = {name for name, p in cli.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name or name.startswith("network.head.") for name in trained)
    checkpoint = torch.load(run_dir / "logs/mnist/version_0/checkpoints/last.ckpt", weights_only=True)
    assert set(checkpoint["state_dict"]) == trained  # ConvNet has no buffers: nothing else changes
    assert checkpoint["hyper_parameters"]["lora"] == {"rank": 8, "alpha": None, "targets": None, "dropout": 0.0}
    base = torch.load(pretrained_checkpoint, weights_only=True)["state_dict"]
    frozen = cli.model.network.backbone.model[0].base_layer.weight
    assert torch.equal(frozen, base["network.backbone.0.weight"])  # the pretrained weights, untouched
    assert cli.model.network.backbone.model[0].lora_B["default"].weight.abs().sum() > 0  # the adapters learned


@pytest.mark.slow
def test_a_run_interrupted_and_resumed_ends_as_an_uninterrupted_one(lora_args, run_dir):
    with pytest.raises(Interrupted):
        run_cli(["fit", *lora_args, "--trainer.callbacks+=helpers.InterruptAtEpoch", "--trainer.callbacks.epoch=1"])
    run_cli(["fit", *lora_args, "--ckpt_path=last"])
    run_cli(["fit", *lora_args, "--trainer.logger.init_args.name=straight"])
    assert_same_training_state(
        run_dir / "logs/straight/version_0/checkpoints/last.ckpt",
        run_dir / "logs/mnist/version_0/checkpoints/last.ckpt",
    )


@pytest.mark.slow
def test_adapters_on_another_base_are_refused_before_any_step(lora_args, run_dir, capsys):
    run_cli(["fit", *lora_args])
    base = next(arg for arg in lora_args if arg.startswith("--model.finetuning.pretrained=")).split("=", 1)[1]
    weights = torch.load(base, weights_only=True)
    weights["state_dict"]["network.backbone.0.weight"] += 0.01
    torch.save(weights, base)
    message = cli_error(["fit", *lora_args, "--ckpt_path=last", "--trainer.max_epochs=3"], capsys)
    assert "LoRA adapters trained on other base weights" in message and "model.finetuning.pretrained" in message


@pytest.mark.slow
def test_a_resumed_run_keeps_its_lora_settings(lora_args, run_dir, capsys):
    run_cli(["fit", *lora_args])
    resume = ["--ckpt_path=last", "--trainer.max_epochs=3"]  # (a run that has reached max_epochs is refused first)
    message = cli_error(["fit", *lora_args, *resume, "--model.lora.rank=4"], capsys)
    assert "these options cannot change on resume: model.lora.rank 4 (the run has 8)" in message


@pytest.mark.slow
def test_the_export_is_the_merged_plain_network_that_fine_tuning_takes(lora_args, quick_args, run_dir):
    from safetensors.torch import load_file

    from project.inference.export import export_checkpoint

    run_cli(["fit", *lora_args])
    about = export_checkpoint(run_dir / "logs/mnist/version_0/checkpoints/last.ckpt", run_dir / "out", ("onnx",
                              "safetensors"))  # fmt: skip
    assert about["largest_difference_from_the_checkpoint"]["merged adapters"] <= 1e-5
    assert about["largest_difference_from_the_checkpoint"]["model.onnx"] <= 1e-5
    assert about["lora_merged"]["rank"] == 8
    weights = load_file(run_dir / "out/model.safetensors")
    assert "backbone.0.weight" in weights and not any("lora" in name for name in weights)
    import project  # the model folder loads as the plain network its config.json names, as ONNX computes it
    from project.inference.prediction import onnx_runner

    images = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = project.load(run_dir / "out").network(images)
    torch.testing.assert_close(outputs, onnx_runner(run_dir / "out/model.onnx")(images), atol=1e-4, rtol=1e-4)
    weights = f"--model.finetuning.pretrained={run_dir / 'out/model.safetensors'}"
    run_cli(["fit", *quick_args, weights, "--trainer.max_epochs=1", "--test_after_fit=false"])


def test_targets_name_the_layers_that_get_adapters():
    network = ConvNet()
    add_adapters(network, LoRA(rank=2, targets=["7"]))  # the backbone's 9216 -> 128 linear layer
    adapted = {name.split(".lora_")[0] for name, _ in network.named_parameters() if ".lora_" in name}
    assert adapted == {"backbone.model.7"}
    assert sum(p.numel() for p in network.parameters() if p.requires_grad) == 2 * (9216 + 128) + 1290


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("--model.lora.rank=0", "model.lora.rank must be a positive integer, got 0"),
        ("--model.lora.dropout=1.0", "model.lora.dropout must lie in [0, 1), got 1.0"),
        ("--model.lora.targets=[conv9]", "model.lora.targets: no adaptable layer (nn.Linear, nn.Conv2d) is named"),
    ],
)
def test_settings_outside_what_is_allowed_are_one_error_line(lora_args, run_dir, capsys, option, expected):
    assert expected in cli_error(["fit", *lora_args, option], capsys, root=run_dir)


def test_without_peft_the_error_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft raises ImportError
    with pytest.raises(UserInputError, match=r'pip install -e "\.\[peft\]"'):
        add_adapters(ConvNet(), LoRA())
