"""Fine-tuning: a pretrained backbone with a new head, freeze then unfreeze, exact resume, DDP, real tasks."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import BackboneSnapshots, Interrupted, quiet_trainer
from safetensors.torch import save_file

from project.cli import run_cli
from project.data import Labels, Loading, MNISTDataModule, RotationDataModule, Split
from project.errors import UserInputError
from project.files.weights import read_weights
from project.networks import ConvNet
from project.training.finetuning import FineTuning, load_pretrained_backbone
from project.training.task_module import TaskModule

REPO_ROOT = Path(__file__).resolve().parents[1]


def checkpoint_backbone(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)["state_dict"]
    return {k.removeprefix("network.backbone."): v for k, v in state.items() if k.startswith("network.backbone.")}


# -- loading -------------------------------------------------------------------------------------------------------


def test_every_backbone_tensor_equals_the_checkpoints_and_the_head_is_new(pretrained_checkpoint):
    network = ConvNet(num_outputs=26)
    summary = load_pretrained_backbone(network, pretrained_checkpoint)
    expected = checkpoint_backbone(pretrained_checkpoint)
    loaded = network.backbone.state_dict()
    assert loaded.keys() == expected.keys() and len(expected) == 6
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name
    assert network.head.out_features == 26  # the checkpoint's head had 10 outputs
    assert "Loaded 6 backbone tensors" in summary and "head.weight" in summary and "128 -> 26" in summary


@pytest.mark.parametrize("form", ["state_dict", "safetensors", "compiled"])
def test_plain_state_dicts_safetensors_and_compiled_prefixes_load(form, pretrained_checkpoint, tmp_path):
    source = ConvNet()
    load_pretrained_backbone(source, pretrained_checkpoint)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if form == "state_dict":
        path = tmp_path / "weights.pt"
        torch.save(state, path)
    elif form == "safetensors":
        path = tmp_path / "weights.safetensors"
        save_file(state, str(path))
    else:  # torch.compile wraps the module: keys start with _orig_mod.
        path = tmp_path / "compiled.pt"
        torch.save({"state_dict": {f"_orig_mod.network.{k}": v for k, v in state.items()}}, path)
    network = ConvNet(num_outputs=3)
    load_pretrained_backbone(network, path)
    for name, tensor in source.backbone.state_dict().items():
        assert torch.equal(network.backbone.state_dict()[name], tensor)


def test_a_backbone_of_another_architecture_is_refused_with_the_keys(pretrained_checkpoint):
    with pytest.raises(UserInputError) as caught:
        load_pretrained_backbone(ConvNet(width=16), pretrained_checkpoint)
    message = str(caught.value)
    assert "does not match this network's" in message
    assert "different shapes: backbone.0.bias: checkpoint (32,), network (16,)" in message
    assert "backbone.0.weight: checkpoint (32, 1, 3, 3), network (16, 1, 3, 3)" in message
    with pytest.raises(
        UserInputError, match=r"missing from the checkpoint: backbone\.13\.bias.*\n  not in the network: backbone\.7"
    ):
        load_pretrained_backbone(ConvNet(depth=2), pretrained_checkpoint)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
def test_backbone_tensors_of_integers_or_booleans_are_refused_naming_the_dtype(dtype, pretrained_checkpoint, tmp_path):
    """Right names and shapes, wrong kind of values: loaded, float weights would become whole numbers (zeros)."""
    weights = read_weights(pretrained_checkpoint)
    state = {name: tensor.to(dtype) for name, tensor in weights.items() if name.startswith("network.")}
    path = tmp_path / "integers.safetensors"
    save_file(state, str(path))
    dtype_name = str(dtype)
    with pytest.raises(UserInputError, match=rf"backbone\.0\.weight: {dtype_name} in the file, torch\.float32 in"):
        load_pretrained_backbone(ConvNet(), path)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint")
    expected = r"model.finetuning.pretrained .*notes.ckpt: not a checkpoint or state dict"
    with pytest.raises(UserInputError, match=expected):
        read_weights(path)


class Payload:
    """An arbitrary object: unpickling it would run code of the file's choosing."""


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    with path.open("wb") as file:
        pickle.dump({"state_dict": {"backbone.0.weight": torch.zeros(1)}, "extra": Payload()}, file)
    with pytest.raises(UserInputError, match=r"loads with torch.load\(weights_only=True\)"):
        read_weights(path)


# -- the freeze -> unfreeze schedule -------------------------------------------------------------------------------


def finetune(
    fake_data_dir: Path, pretrained: Path, max_epochs: int, callbacks: list, backbone_lr: float | None = None
) -> TaskModule:
    module = TaskModule(
        ConvNet(num_outputs=10),
        optimizer=partial(torch.optim.AdamW, lr=0.01),
        finetuning=FineTuning(str(pretrained), freeze_backbone_epochs=1, backbone_lr=backbone_lr),
    )
    trainer = quiet_trainer(max_epochs=max_epochs, limit_val_batches=0, callbacks=callbacks)
    trainer.fit(module, MNISTDataModule(data_dir=str(fake_data_dir), batch_size=50, split=Split(val_size=100)))
    return module


def test_frozen_backbone_does_not_change_and_the_head_does_then_both_do(fake_data_dir, pretrained_checkpoint, run_dir):
    snapshots = BackboneSnapshots()
    module = finetune(fake_data_dir, pretrained_checkpoint, 2, [snapshots], backbone_lr=0.001)
    pretrained = checkpoint_backbone(pretrained_checkpoint)
    after_frozen_epoch, after_unfrozen_epoch = snapshots.backbone
    assert all(torch.equal(after_frozen_epoch[name], pretrained[name]) for name in pretrained)
    assert not torch.equal(snapshots.head[0]["weight"], snapshots.head[1]["weight"])
    assert any(not torch.equal(after_unfrozen_epoch[name], pretrained[name]) for name in pretrained)
    groups = {group["name"]: group["lr"] for group in module.trainer.optimizers[0].param_groups}
    assert groups == {"backbone": pytest.approx(0.001), "head": pytest.approx(0.01)}  # unfrozen, at its own rate


FINETUNE_ARGS = [
    "--model.finetuning.freeze_backbone_epochs=1",
    "--model.finetuning.backbone_lr=0.001",
    "--model.optimizer.lr=0.005",
    "--model.lr_scheduler=OneCycle",
    "--trainer.max_epochs=3",
]


@pytest.mark.slow
def test_resume_after_the_unfreeze_milestone_matches_an_uninterrupted_run(quick_args, pretrained_checkpoint, run_dir):
    pretrained = [f"--model.finetuning.pretrained={pretrained_checkpoint}", *FINETUNE_ARGS, "--test_after_fit=false"]
    with pytest.raises(Interrupted):  # crashes when epoch 3 starts: after the milestone (end of epoch 1)
        run_cli(
            [
                "fit",
                *quick_args,
                *pretrained,
                "--trainer.callbacks+=helpers.InterruptAtEpoch",
                "--trainer.callbacks.epoch=2",
            ]
        )
    resumed = run_cli(["fit", *quick_args, *pretrained, "--ckpt_path=last"])
    straight = run_cli(["fit", *quick_args, *pretrained, "--trainer.logger.init_args.name=straight"])

    for run in (resumed, straight):
        assert (run.trainer.current_epoch, run.trainer.global_step) == (3, 30)
    resumed_groups = resumed.trainer.optimizers[0].param_groups
    straight_groups = straight.trainer.optimizers[0].param_groups
    assert [g["name"] for g in resumed_groups] == [g["name"] for g in straight_groups] == ["backbone", "head"]
    assert [g["lr"] for g in resumed_groups] == [g["lr"] for g in straight_groups]
    assert resumed.trainer.lr_scheduler_configs[0].scheduler.state_dict() == (
        straight.trainer.lr_scheduler_configs[0].scheduler.state_dict()
    )


def test_cli_arguments_win_over_the_pretrained_checkpoints_hyperparameters(quick_args, pretrained_checkpoint, tmp_path):
    from idx import write_torchvision_dataset

    letters = write_torchvision_dataset(tmp_path / "letters", "emnist_letters")
    args = [arg for arg in quick_args if not arg.startswith("--data.data_dir")]
    cli = run_cli(
        [
            "fit",
            *args,
            "--data.dataset=emnist_letters",
            f"--data.data_dir={letters}",
            "--data.split.val_size=50",
            f"--model.finetuning.pretrained={pretrained_checkpoint}",
            "--model.optimizer=SGD",
            "--model.optimizer.lr=0.002",
            "--trainer.max_epochs=1",
            "--test_after_fit=false",
        ]
    )
    stored = torch.load(pretrained_checkpoint, weights_only=True)["hyper_parameters"]["optimizer"]
    assert (stored["class_path"], stored["init_args"]["lr"]) == ("torch.optim.AdamW", 0.01)
    assert cli.model.network.head.out_features == 26  # from the data, not the checkpoint's 10
    assert isinstance(cli.trainer.optimizers[0], torch.optim.SGD) and cli.trainer.optimizers[0].defaults["lr"] == 0.002


@pytest.mark.slow
def test_freezing_works_under_two_process_ddp(fake_data_dir, pretrained_checkpoint, run_dir):
    digests = run_dir / "digests"
    command = [
        sys.executable,
        "-m",
        "project",
        "fit",
        f"--data.data_dir={fake_data_dir}",
        "--data.split.val_size=100",
        "--data.batch_size=25",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--model.finetuning.pretrained={pretrained_checkpoint}",
        "--model.finetuning.freeze_backbone_epochs=1",
        "--model.optimizer.lr=0.01",
        "--trust=helpers",
        "--trainer.callbacks+=helpers.RankDigest",
        f"--trainer.callbacks.folder={digests}",
        "--test_after_fit=false",
    ]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests"), str(REPO_ROOT)])}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    read = {path.stem: path.read_text() for path in digests.glob("*.txt")}
    assert sorted(read) == ["rank0-epoch0", "rank0-epoch1", "rank1-epoch0", "rank1-epoch1"]
    pretrained = checkpoint_backbone(pretrained_checkpoint)
    unchanged = ",".join(f"{n}={t.double().sum().item():.10e}" for n, t in sorted(pretrained.items()))
    assert read["rank0-epoch0"] == read["rank1-epoch0"] == unchanged  # frozen on both processes
    assert read["rank0-epoch1"] == read["rank1-epoch1"] != unchanged  # trained, and the same on both


# -- binary and regression on real images ----------------------------------------------------------------------------


def train_briefly(data, run_dir, steps: int, **network_args) -> tuple[TaskModule, L.Trainer, list[float]]:
    # Seeded here: otherwise the weights and the order come from whatever the tests before left in the global
    # generators, and the result moves with the test order (val MSE 0.17 alone, 0.21 after the other slow tests).
    L.seed_everything(0, verbose=False)
    module = TaskModule(ConvNet(num_outputs=1, **network_args), optimizer=partial(torch.optim.AdamW, lr=0.001))
    losses: list[float] = []

    class RecordLoss(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())

    trainer = quiet_trainer(
        max_epochs=1, limit_train_batches=steps, limit_val_batches=5, callbacks=[RecordLoss()], default_root_dir=run_dir
    )
    trainer.fit(module, data)
    return module, trainer, losses


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.slow
def test_binary_digit_at_least_5_on_real_mnist_reduces_its_loss(real_data_dir, run_dir):
    data = MNISTDataModule(
        data_dir=str(real_data_dir),
        labels=Labels(positive_classes=[5, 6, 7, 8, 9]),
        loading=Loading(eval_batch_size=500),
    )
    _, trainer, losses = train_briefly(data, run_dir, steps=120)
    print(
        f"\nbinary (digit >= 5): BCE first 10 steps {mean(losses[:10]):.3f}, last 10 {mean(losses[-10:]):.3f}, "
        f"val acc {trainer.callback_metrics['val/acc'].item():.3f}"
    )
    assert mean(losses[-10:]) < 0.6 * mean(losses[:10])
    assert {"val/acc", "val/precision", "val/recall", "val/f1", "val/loss"} <= trainer.callback_metrics.keys()


@pytest.mark.slow
def test_rotation_regression_on_real_mnist_reduces_its_loss(real_data_dir, run_dir):
    data = RotationDataModule(data_dir=str(real_data_dir), max_angle=45.0, loading=Loading(eval_batch_size=500))
    _, trainer, losses = train_briefly(data, run_dir, steps=200, fc_dropout=0.0)
    val_mse = trainer.callback_metrics["val/mse"].item()
    print(
        f"\nrotation regression: MSE first 10 steps {mean(losses[:10]):.3f}, last 10 {mean(losses[-10:]):.3f}, "
        f"val MSE {val_mse:.3f}, val MAE {trainer.callback_metrics['val/mae'].item() * 45:.1f} degrees"
    )
    assert mean(losses[-10:]) < 0.6 * mean(losses[:10])
    assert val_mse < 0.2  # predicting the mean angle (0) scores 1/3: the network reads the rotation
    assert {"val/mse", "val/mae", "val/loss"} <= trainer.callback_metrics.keys()
    assert "val/acc" not in trainer.callback_metrics


def test_finetune_folder_preset_trains_on_an_image_folder(image_folder, pretrained_checkpoint, run_dir):
    cli = run_cli(
        [
            "fit",
            "--config=finetune_folder.yaml",
            f"--data.data_dir={image_folder}",
            f"--model.finetuning.pretrained={pretrained_checkpoint}",
            "--trainer.max_epochs=3",
            "--model.finetuning.freeze_backbone_epochs=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
    )
    assert cli.model.network.head.out_features == 3 and cli.model.task.name == "multiclass"
    assert {"test/acc", "test/f1"} <= cli.trainer.callback_metrics.keys()
    assert (run_dir / "logs" / "finetune_folder" / "version_0" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_finetune_fashion_mnist_preset_parses_with_its_dataset(pretrained_checkpoint):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "project",
            "fit",
            "--config",
            "finetune_fashion_mnist.yaml",
            f"--model.finetuning.pretrained={pretrained_checkpoint}",
            "--print_config",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dataset: fashion_mnist" in result.stdout and "backbone_lr: 0.001" in result.stdout


@pytest.mark.slow
def test_the_few_shot_script_runs_the_shipped_recipe_through_the_command_line(tmp_path, run_dir):
    from idx import write_mnist_folder

    # 5,600 training images: the recipe holds 5,000 out for validation, as on the real data.
    data = write_mnist_folder(write_mnist_folder(tmp_path / "data", train_count=5600), "FashionMNIST", 5600)
    command = [sys.executable, str(REPO_ROOT / "scripts" / "few_shot.py"), "--data-dir", str(data), "--out",
               str(tmp_path / "out"), "--sizes", "10", "--seeds", "0", "--steps", "5"]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (tmp_path / "out" / "few_shot.csv").read_text().splitlines()
    assert len(rows) == 3 and "fine-tuned" in rows[2] and ",5," in rows[1]  # 5 optimizer steps each
    assert (tmp_path / "out" / "few_shot.png").is_file() and not (run_dir / "logs").exists()


@pytest.mark.slow
def test_the_digits_study_compares_scratch_a_linear_probe_lora_and_fine_tuning(tmp_path, run_dir):
    from idx import write_mnist_folder

    data = write_mnist_folder(tmp_path / "data", train_count=12000)  # half each side; 5,000 for validation
    command = [sys.executable, str(REPO_ROOT / "scripts" / "few_shot.py"), "--data-dir", str(data), "--out",
               str(tmp_path / "out"), "--study", "digits", "--sizes", "5", "--seeds", "0", "--steps", "4"]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (tmp_path / "out" / "transfer_digits.csv").read_text().splitlines()
    assert [row.split(",")[2] for row in rows[1:]] == ["from scratch", "linear probe", "LoRA", "fine-tuned"]
    assert "| 5 | " in result.stdout and (tmp_path / "out" / "transfer_digits.png").is_file()
    pretrained = tmp_path / "out" / "pretrained_transfer_digits.safetensors"
    command = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_finetuning.py"), "--data-dir", str(data), "--out",
               str(tmp_path / "bench"), "--pretrained", str(pretrained), "--labels", "5", "--seeds", "0", "--steps",
               "12"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| LoRA | 78,541 of 1,277,133 |" in result.stdout  # rank-8 adapters on its 3 layers, and the head
    assert "| linear probe | 645 of 1,199,237 |" in result.stdout  # the head: 128 x 5 + 5


def test_a_linear_probe_by_max_steps_keeps_the_pretrained_backbone_throughout(quick_args, pretrained_checkpoint):
    args = ["--trainer.max_steps=6", "--trainer.max_epochs=-1", "--model.finetuning.freeze_backbone_epochs=100",
            f"--model.finetuning.pretrained={pretrained_checkpoint}", "--test_after_fit=false"]  # fmt: skip
    cli = run_cli(["fit", *quick_args, *args])
    saved = torch.load(pretrained_checkpoint, weights_only=True)["state_dict"]
    assert cli.trainer.global_step == 6
    for name, tensor in cli.model.network.backbone.state_dict().items():
        assert torch.equal(tensor, saved[f"network.backbone.{name}"]), name
