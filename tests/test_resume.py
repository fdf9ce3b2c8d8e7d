"""Resuming with --ckpt_path last: counters continue, no step is repeated or skipped, same log folder."""

from __future__ import annotations

import pytest
import torch
from helpers import Interrupted, scalar_steps

from project.cli import main, run_cli

INTERRUPT_AFTER_EPOCH_1 = ["--trainer.callbacks+=helpers.InterruptAtEpoch", "--trainer.callbacks.epoch=1"]


@pytest.fixture
def interrupted_run(quick_args, run_dir):
    """A 2-epoch run that crashes when epoch 2 starts, after epoch 1's checkpoints were written."""
    with pytest.raises(Interrupted):
        run_cli(["fit", *quick_args, *INTERRUPT_AFTER_EPOCH_1])
    return run_dir / "logs" / "mnist" / "version_0"


def test_interrupted_run_leaves_a_last_checkpoint_after_epoch_1(interrupted_run):
    checkpoint = torch.load(interrupted_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (0, 10)


def test_resume_continues_epoch_and_global_step(interrupted_run, quick_args):
    cli = run_cli(["fit", *quick_args, "--ckpt_path=last", "--test_after_fit=false"])
    assert (cli.trainer.current_epoch, cli.trainer.global_step) == (2, 20)
    checkpoint = torch.load(interrupted_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (1, 20)  # written at the end of epoch 1


def test_resume_writes_into_the_same_log_version_and_keeps_every_config(interrupted_run, quick_args, run_dir):
    run_cli(["fit", *quick_args, "--ckpt_path=last", "--test_after_fit=false"])
    assert sorted(path.name for path in (run_dir / "logs" / "mnist").iterdir()) == ["version_0"]
    assert (interrupted_run / "config.yaml").is_file() and (interrupted_run / "config-resume1.yaml").is_file()


def test_resumed_run_logs_the_same_steps_as_an_uninterrupted_one(interrupted_run, quick_args, run_dir):
    run_cli(["fit", *quick_args, "--ckpt_path=last", "--test_after_fit=false"])
    resumed = scalar_steps(interrupted_run)

    run_cli(["fit", *quick_args, "--test_after_fit=false", "--trainer.logger.init_args.name=straight"])
    uninterrupted = scalar_steps(run_dir / "logs" / "straight" / "version_0")

    assert resumed.keys() == uninterrupted.keys()
    for (
        tag,
        steps,
    ) in resumed.items():  # Lightning writes "epoch" with every batch of scalars: compare as multisets
        assert sorted(steps) == sorted(uninterrupted[tag]), f"{tag}: {steps} != {uninterrupted[tag]}"
    for tag in ("train/loss_step", "train/loss_epoch", "val/acc", "lr-AdamW/head"):
        assert len(resumed[tag]) == len(set(resumed[tag])), f"{tag}: a step was logged twice: {resumed[tag]}"
    assert resumed["train/loss_step"] == [
        1,
        3,
        5,
        7,
        9,
        11,
        13,
        15,
        17,
        19,
    ]  # every 2nd of the 20 steps, in order


def test_resume_with_no_run_to_resume_is_a_clear_error(quick_args, run_dir, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["fit", *quick_args, "--ckpt_path=last"])
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "error: --ckpt_path last: no last.ckpt under logs/mnist/version_*/checkpoints/" in error


def test_resume_from_a_missing_file_is_a_clear_error(quick_args, run_dir, capsys):
    with pytest.raises(SystemExit):
        main(["fit", *quick_args, "--ckpt_path=nowhere.ckpt"])
    assert "error: --ckpt_path nowhere.ckpt: no such checkpoint file" in capsys.readouterr().err


def test_resume_from_an_explicit_path_continues_that_run(interrupted_run, quick_args, run_dir):
    run_cli(["fit", *quick_args, "--test_after_fit=false"])  # a second, newer run: version_1
    cli = run_cli(
        [
            "fit",
            *quick_args,
            f"--ckpt_path={interrupted_run / 'checkpoints' / 'last.ckpt'}",
            "--test_after_fit=false",
        ]
    )
    assert cli.trainer.logger.version == "version_0"
    assert cli.trainer.global_step == 20
