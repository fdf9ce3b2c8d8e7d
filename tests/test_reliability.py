"""Reliability: exact resume after a crash, checkpoints that are never lost, preemption, divergence, bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch

from project.cli import run_cli
from project.data import Augmentation, Labels, Split

REPO_ROOT = Path(__file__).resolve().parents[1]
EXACT_CONFIG = REPO_ROOT / "tests" / "configs_exact.yaml"
EXACT_RUN = Path("logs") / "configs_exact" / "version_0"
"""Where a run of ``configs_exact.yaml`` writes: a run is named after its recipe preset."""
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests"), str(REPO_ROOT)])}


def fit_in_subprocess(folder: Path, args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "project", "fit", "--test_after_fit=false", *args]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=600)


def assert_same_training_state(expected_path: Path, actual_path: Path) -> None:
    """Weights, optimizer state, scheduler state, epoch and global step are bit-identical (torch.equal)."""
    expected = torch.load(expected_path, weights_only=True)
    actual = torch.load(actual_path, weights_only=True)
    assert (actual["epoch"], actual["global_step"]) == (expected["epoch"], expected["global_step"])
    assert actual["state_dict"].keys() == expected["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], tensor), f"weights differ: {name}"
    expected_optimizer, actual_optimizer = expected["optimizer_states"][0], actual["optimizer_states"][0]
    assert actual_optimizer["param_groups"] == expected_optimizer["param_groups"]
    for index, state in expected_optimizer["state"].items():
        for key, value in state.items():
            assert torch.equal(actual_optimizer["state"][index][key], value), f"optimizer state differs: {index}.{key}"
    assert actual["lr_schedulers"] == expected["lr_schedulers"]


class Runs:
    """An uninterrupted run and a run SIGKILLed mid-epoch, both from ``configs_exact.yaml``."""

    def __init__(self, root: Path, data_dir: Path, extra: list[str], kill_at_step: int) -> None:
        self.args = [f"--config={EXACT_CONFIG}", f"--data.data_dir={data_dir}", *extra]
        self.straight_dir, self.killed_dir = root / "straight", root / "killed"
        for folder in (self.straight_dir, self.killed_dir):
            folder.mkdir()
        result = fit_in_subprocess(self.straight_dir, self.args)
        assert result.returncode == 0, result.stderr[-3000:]
        kill = ["--trust=helpers", "--trainer.callbacks+=helpers.KillAtStep"]
        kill.append(f"--trainer.callbacks.step={kill_at_step}")
        result = fit_in_subprocess(self.killed_dir, [*self.args, *kill])
        assert result.returncode == -9, result.stderr[-3000:]  # SIGKILL: no handler ran

    def last_checkpoint(self, folder: Path) -> Path:
        return folder / EXACT_RUN / "checkpoints" / "last.ckpt"

    def resume_copy(self, into: Path, extra: list[str] = (), edit: Callable[[dict], None] | None = None) -> Path:
        """Resume a copy of the killed run (in this process) to the end, its last.ckpt changed by ``edit`` first;
        return its final last.ckpt."""
        shutil.copytree(self.killed_dir, into)
        if edit is not None:
            checkpoint = torch.load(self.last_checkpoint(into), weights_only=True)
            edit(checkpoint)
            torch.save(checkpoint, self.last_checkpoint(into))
        previous = Path.cwd()
        os.chdir(into)
        try:
            run_cli(["fit", "--test_after_fit=false", *self.args, "--ckpt_path=last", *extra])
        finally:
            os.chdir(previous)
        return self.last_checkpoint(into)


@pytest.fixture(scope="module")
def killed_mid_epoch(tmp_path_factory, fake_data_dir) -> Runs:
    """Killed at step 17 of 30 (epoch 2 of 3, batch 8 of 10); last.ckpt was written at step 16."""
    return Runs(tmp_path_factory.mktemp("exact"), fake_data_dir, [], kill_at_step=17)


def test_the_killed_run_left_a_mid_epoch_checkpoint(killed_mid_epoch):
    checkpoint = torch.load(killed_mid_epoch.last_checkpoint(killed_mid_epoch.killed_dir), weights_only=True)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (1, 16)


def test_resume_after_sigkill_is_bit_identical_to_an_uninterrupted_run(killed_mid_epoch, tmp_path):
    resumed = killed_mid_epoch.resume_copy(tmp_path / "resumed")
    assert_same_training_state(killed_mid_epoch.last_checkpoint(killed_mid_epoch.straight_dir), resumed)


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical_on_the_per_image_data_path_too(tmp_path, fake_data_dir):
    runs = Runs(tmp_path, fake_data_dir, ["--data.loading.in_memory=false"], kill_at_step=17)
    resumed = runs.resume_copy(tmp_path / "resumed")
    assert_same_training_state(runs.last_checkpoint(runs.straight_dir), resumed)


def test_the_interrupted_epochs_training_metrics_equal_the_uninterrupted_runs(killed_mid_epoch, tmp_path):
    from helpers import directory_scalars

    killed_mid_epoch.resume_copy(tmp_path / "resumed")
    resumed = directory_scalars(tmp_path / "resumed" / EXACT_RUN)
    straight = directory_scalars(killed_mid_epoch.straight_dir / EXACT_RUN)
    for tag in ("train/acc", "train/f1", "train/loss_epoch"):
        assert [step for step, _ in resumed[tag]] == [step for step, _ in straight[tag]], tag
        for (_, got), (_, expected) in zip(resumed[tag], straight[tag], strict=True):
            assert got == pytest.approx(expected, abs=1e-6), tag  # epoch 2 was cut at step 17 in the resumed run


def test_tensorboard_of_a_killed_and_resumed_run_has_one_curve_per_tag(killed_mid_epoch, tmp_path):
    from test_resume import assert_strictly_increasing_steps

    killed_mid_epoch.resume_copy(tmp_path / "resumed")
    assert_strictly_increasing_steps(tmp_path / "resumed" / EXACT_RUN)


def test_negative_control_without_restoring_the_random_state_differs(killed_mid_epoch, tmp_path):
    resumed = killed_mid_epoch.resume_copy(tmp_path / "resumed", ["--trainer.callbacks.restore_random_state=false"])
    with pytest.raises(AssertionError, match="weights differ"):
        assert_same_training_state(killed_mid_epoch.last_checkpoint(killed_mid_epoch.straight_dir), resumed)


def test_the_data_module_records_where_the_training_order_stands(killed_mid_epoch):
    checkpoint = torch.load(killed_mid_epoch.last_checkpoint(killed_mid_epoch.killed_dir), weights_only=True)
    assert checkpoint["MNISTDataModule"]["position"] == {"epoch": 1, "batches": 6, "epoch_complete": False}
    assert set(checkpoint["callbacks"]["ExactResume"]) == {"ranks"}  # the callback keeps the random states only


def forget_position(checkpoint: dict) -> None:
    checkpoint["MNISTDataModule"]["position"] = None


def test_negative_control_without_the_sampler_position_differs(killed_mid_epoch, tmp_path):
    resumed = killed_mid_epoch.resume_copy(tmp_path / "resumed", edit=forget_position)  # the epoch from its start
    with pytest.raises(AssertionError, match="weights differ"):
        assert_same_training_state(killed_mid_epoch.last_checkpoint(killed_mid_epoch.straight_dir), resumed)


@pytest.mark.slow
def test_exact_resume_of_a_finetune_killed_after_its_unfreeze_milestone(tmp_path, fake_data_dir, pretrained_checkpoint):
    finetune = [f"--model.finetuning.pretrained={pretrained_checkpoint}", "--model.finetuning.freeze_backbone_epochs=1",
                "--model.finetuning.backbone_lr=0.001"]  # fmt: skip
    runs = Runs(tmp_path, fake_data_dir, finetune, kill_at_step=13)  # milestone at step 10, last.ckpt at step 12
    assert torch.load(runs.last_checkpoint(runs.killed_dir), weights_only=True)["global_step"] == 12
    resumed = runs.resume_copy(tmp_path / "resumed")
    assert_same_training_state(runs.last_checkpoint(runs.straight_dir), resumed)


@pytest.mark.slow
def test_no_optimizer_step_is_lost_or_repeated_inside_gradient_accumulation(tmp_path, fake_data_dir):
    # 10 batches per epoch, 3 per optimizer step: 4 steps per epoch (3 + 3 + 3 + 1), 12 in all.
    runs = Runs(tmp_path, fake_data_dir, ["--trainer.accumulate_grad_batches=3"], kill_at_step=6)
    killed = torch.load(runs.last_checkpoint(runs.killed_dir), weights_only=True)
    assert killed["global_step"] == 4  # written at the window boundary, then 2 more steps and 2 batches were lost
    resumed = runs.resume_copy(tmp_path / "resumed")
    assert torch.load(resumed, weights_only=True)["global_step"] == 12
    assert_same_training_state(runs.last_checkpoint(runs.straight_dir), resumed)


# -- preemption and divergence -------------------------------------------------------------------------------------


def assert_resumes_to_the_uninterrupted_state(folder: Path, args: list[str], last: Path, runs: Runs) -> None:
    """Resume the stopped run in ``folder`` (``--ckpt_path last``) to its end: its ``last`` checkpoint is then the
    run never stopped's, bit for bit."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        run_cli(["fit", "--test_after_fit=false", *args, "--ckpt_path=last"])
    finally:
        os.chdir(previous)
    assert_same_training_state(runs.last_checkpoint(runs.straight_dir), last)


def test_sigterm_saves_at_the_step_boundary_exits_nonzero_and_resumes_exactly(
    killed_mid_epoch, tmp_path, fake_data_dir
):
    folder = tmp_path / "preempted"
    folder.mkdir()
    args = [f"--config={EXACT_CONFIG}", f"--data.data_dir={fake_data_dir}"]
    result = fit_in_subprocess(
        folder, [*args, "--trust=helpers", "--trainer.callbacks+=helpers.SignalAtStep", "--trainer.callbacks.step=13"]
    )
    assert result.returncode == 143, result.stderr[-3000:]
    assert "stopped by SIGTERM" in result.stdout
    last = folder / EXACT_RUN / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 13  # saved at the boundary, not at step 12
    assert_resumes_to_the_uninterrupted_state(folder, args, last, killed_mid_epoch)


@pytest.mark.slow
def test_sigterm_during_a_mid_epoch_validation_saves_and_the_resumed_run_ends_as_if_never_stopped(
    killed_mid_epoch, tmp_path, fake_data_dir
):
    folder = tmp_path / "in_validation"
    folder.mkdir()
    args = [f"--config={EXACT_CONFIG}", f"--data.data_dir={fake_data_dir}"]  # a validation every 2 steps
    signal_at = ["--trust=helpers", "--trainer.callbacks+=helpers.SignalInValidation", "--trainer.callbacks.step=12"]
    result = fit_in_subprocess(folder, [*args, *signal_at])
    assert result.returncode == 143, result.stderr[-3000:]
    last = folder / EXACT_RUN / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 12  # saved in the validation after step 12
    assert_resumes_to_the_uninterrupted_state(folder, args, last, killed_mid_epoch)


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_finite_weights(quick_args, run_dir, capsys):
    from project.cli import main

    args = [*quick_args, "--trainer.callbacks+=helpers.PoisonAtStep", "--trainer.callbacks.step=13"]
    with pytest.raises(SystemExit) as caught:
        main(["fit", *args])
    assert caught.value.code == 1
    error = capsys.readouterr().err
    assert "error: the training loss is nan at step 13 (epoch 1, batch 3)" in error
    assert str(Path("logs") / "mnist" / "version_0" / "checkpoints" / "last.ckpt") in error  # what to resume from
    last = torch.load(run_dir / "logs" / "mnist" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 10
    assert all(torch.isfinite(tensor).all() for tensor in last["state_dict"].values())


def test_a_divergence_before_any_checkpoint_does_not_claim_one(quick_args, run_dir, capsys):
    from project.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["fit", *quick_args, "--trainer.callbacks+=helpers.PoisonAtStep", "--trainer.callbacks.step=3"])
    assert caught.value.code == 1
    error = capsys.readouterr().err
    assert "error: the training loss is nan at step 3" in error
    assert "last.ckpt" not in error and "No checkpoint was written yet" in error


# -- checkpoints are never lost --------------------------------------------------------------------------------------


def test_a_save_that_fails_part_way_keeps_the_previous_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    import errno

    from project.errors import DiskFullError
    from project.training.checkpoints import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0, "global_step": 1}, path)
    before = path.read_bytes()

    def disk_full(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(DiskFullError, match="No space left on device"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 0, "global_step": 2}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_truncated_last_checkpoint_falls_back_to_the_newest_readable_one(quick_args, run_dir):
    run_cli(["fit", *quick_args, "--test_after_fit=false", "--trainer.max_epochs=1"])
    folder = run_dir / "logs" / "mnist" / "version_0" / "checkpoints"
    last = folder / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # what a crash mid-write leaves without atomic saves
    with pytest.warns(UserWarning, match=r"last.ckpt is not a readable checkpoint.*newest readable checkpoint instead"):
        cli = run_cli(["fit", *quick_args, "--test_after_fit=false", "--ckpt_path=last"])
    assert cli.trainer.global_step == 20  # resumed from the epoch-1 best checkpoint (step 10) to the end


def test_a_new_run_never_touches_an_earlier_runs_files(quick_args, run_dir):
    run_cli(["fit", *quick_args, "--test_after_fit=false", "--trainer.max_epochs=1"])
    first = run_dir / "logs" / "mnist" / "version_0"
    before = {path: path.read_bytes() for path in first.rglob("*") if path.is_file()}
    run_cli(["fit", *quick_args, "--test_after_fit=false", "--trainer.max_epochs=1"])
    assert {path: path.read_bytes() for path in first.rglob("*") if path.is_file()} == before
    assert (run_dir / "logs" / "mnist" / "version_1" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_sigusr1_from_slurm_is_a_preemption_notice_too(tmp_path, fake_data_dir):
    args = [f"--config={EXACT_CONFIG}", f"--data.data_dir={fake_data_dir}"]
    signal_args = ["--trust=helpers", "--trainer.callbacks+=helpers.SignalAtStep", "--trainer.callbacks.step=7",
                   "--trainer.callbacks.signal_name=SIGUSR1"]  # fmt: skip
    result = fit_in_subprocess(tmp_path, [*args, *signal_args])
    assert result.returncode == 143, result.stderr[-3000:]
    last = tmp_path / EXACT_RUN / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 7


def each_option_with_a_bad_value():
    from project.data import MNISTDataModule, RotationDataModule
    from project.data.decoding import ImageConversion
    from project.networks import ConvNet
    from project.training.finetuning import FineTuning
    from project.training.schedules import Cosine
    from project.training.task_module import TaskModule

    return {
        "augment_shift": (
            lambda: MNISTDataModule(augment=Augmentation(shift=-1)),
            "data.augment.shift must be 0 or more pixels, got -1",
        ),
        "val_size": (
            lambda: MNISTDataModule(split=Split(val_size=1.5)),
            r"data.split.val_size must be a count of 1 or more, or a fraction",
        ),
        "train_fraction": (
            lambda: MNISTDataModule(split=Split(train_fraction=0.0)),
            r"data.split.train_fraction must lie in \(0, 1\]",
        ),
        "few-shot twice": (
            lambda: MNISTDataModule(split=Split(samples_per_class=5, train_fraction=0.5)),
            "exclude each other",
        ),
        "image_size": (lambda: MNISTDataModule(image_size=0), "data.image_size must be a positive integer, got 0"),
        "max_angle": (lambda: RotationDataModule(max_angle=0), r"data.max_angle must lie in \(0, 180\] degrees, got 0"),
        "binary regression": (
            lambda: RotationDataModule(labels=Labels(positive_classes=[1])),
            "RotationDataModule has no classes",
        ),
        "freeze epochs": (lambda: FineTuning(freeze_backbone_epochs=-1), "freeze_backbone_epochs must be 0"),
        "backbone_lr": (lambda: FineTuning(backbone_lr=0.0), "model.finetuning.backbone_lr must be positive and fin"),
        "warmup": (
            lambda: TaskModule(ConvNet(), lr_scheduler=partial(Cosine, warmup_fraction=1.0)),
            r"model.lr_scheduler.warmup_fraction must lie in \(0, 1\)",
        ),
        "channels": (lambda: ImageConversion(2, 28, 0.0, 1.0), r"data.channels must be 1 \(greyscale\) or 3 \(RGB\)"),
        "test_size": (
            lambda: Split(test_size=10).test_split(10),
            "data.split.test_size=10 leaves no images on one side: the split has 10 images",
        ),
    }


@pytest.mark.parametrize("option", sorted(each_option_with_a_bad_value()))
def test_each_option_refuses_a_value_it_cannot_use_by_name(option):
    from project.errors import UserInputError

    build, message = each_option_with_a_bad_value()[option]
    with pytest.raises(UserInputError, match=message):
        build()
