"""The command line as a finished tool: its own name and help, callbacks that add rather than replace (early
stopping as a modifier), plain progress lines when there is no progress bar, a bar that ends where the run does, no
advertisements, evaluation that writes no run folder, and one message per run rather than one per process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from helpers import cli_error, quiet_trainer
from test_reliability import SUBPROCESS_ENV

from project.cli import run_cli
from project.data import Split

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=SUBPROCESS_ENV, cwd=cwd, timeout=timeout)


def printed_help(call, capsys) -> str:
    """What ``call`` (an entry point given ``--help``) prints, run in this process."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        call()
    assert caught.value.code in (0, None)
    return capsys.readouterr().out


def test_help_names_the_command_and_says_what_ckpt_path_accepts(capsys, monkeypatch):
    from project.cli import main, train_main

    usage = printed_help(lambda: main(["--help"]), capsys)
    assert usage.startswith("usage: python -m project ")
    assert "{fit,validate,test}" in usage and "python -m project --help." in " ".join(usage.split())  # the others
    fit = printed_help(lambda: main(["fit", "--help"]), capsys)
    ckpt_help = " ".join(fit.split("--ckpt_path CKPT_PATH\n", 1)[1].split("--test_after_fit")[0].split())
    assert "'auto'" in ckpt_help and "'last'" in ckpt_help and "'hpc'" in ckpt_help and "registry" not in ckpt_help
    monkeypatch.setattr(sys, "argv", ["scripts/train.py", "--help"])
    assert printed_help(train_main, capsys).startswith("usage: scripts/train.py [--config PRESET ...]")


def test_a_callback_given_plainly_is_refused_with_the_form_that_adds_it(quick_args, run_dir, capsys):
    message = cli_error(["fit", *quick_args, "--trainer.callbacks=EarlyStopping"], capsys, root=run_dir)
    assert "--trainer.callbacks EarlyStopping would replace the preset's callbacks" in message
    assert "add it with --trainer.callbacks+=EarlyStopping" in message
    cli = run_cli(["fit", *quick_args, "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/loss",
                   "--trainer.max_epochs=1", "--test_after_fit=false"])  # fmt: skip
    names = {type(callback).__name__ for callback in cli.trainer.callbacks}
    assert {"EarlyStopping", "BestCheckpoint", "LastCheckpoint", "ExactResume", "TensorBoardReports"} <= names


def test_without_a_progress_bar_each_validation_prints_one_plain_line(quick_args, run_dir, capsys):
    run_cli(["fit", *quick_args, "--test_after_fit=false"])  # the debug preset: no progress bar
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2  # one per validation: 2 epochs
    assert lines[0].startswith("epoch 1/2 · step 10/20 · val/acc ")
    for part in (" · val/loss ", " · train/loss ", " · lr ", " images/s · ", " left"):
        assert part in lines[0]
    assert lines[1].startswith("epoch 2/2 · step 20/20 · ") and lines[1].endswith("0:00:00 left")


class RecordBarTotal(L.Callback):
    def __init__(self) -> None:
        self.totals: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.totals.append(trainer.progress_bar_callback.total_train_batches)


def test_the_progress_bar_counts_the_batches_left_when_max_steps_ends_the_run(fake_data_dir):
    from project.data import MNISTDataModule
    from project.networks import ConvNet
    from project.training.progress import RunProgressBar
    from project.training.task_module import TaskModule

    record = RecordBarTotal()
    trainer = quiet_trainer(max_steps=13, limit_val_batches=0, enable_progress_bar=True,
                            callbacks=[RunProgressBar(), record])  # fmt: skip
    data = MNISTDataModule(data_dir=str(fake_data_dir), batch_size=50, split=Split(val_size=100))  # 10 batches an epoch
    trainer.fit(TaskModule(ConvNet(width=8, hidden_size=16)), datamodule=data)
    assert record.totals == [10, 3]  # the second epoch ends after 3 of its 10 batches: 13 steps in all


@pytest.mark.slow
def test_no_litlogger_or_litmodels_advertisement_is_printed(fake_data_dir, run_dir):
    command = [sys.executable, "-m", "project", "fit", "--config=debug", f"--data.data_dir={fake_data_dir}",
               "--data.split.val_size=100", "--trainer.max_epochs=1"]  # fmt: skip
    result = run(command, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Tip" not in result.stdout + result.stderr and "litlogger" not in result.stdout + result.stderr


def test_validate_and_test_of_a_checkpoint_write_no_run_folder(quick_args, run_dir, capsys):
    run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    before = sorted(str(path) for path in (run_dir / "logs").rglob("*"))
    for subcommand in ("validate", "test"):
        cli = run_cli([subcommand, *quick_args, "--ckpt_path=last"])
        assert cli.trainer.callback_metrics  # it measured
        names = {type(callback).__name__ for callback in cli.trainer.callbacks}
        assert not names & {"BestCheckpoint", "LastCheckpoint", "ExactResume", "TensorBoardReports", "ProgressLog"}
    assert sorted(str(path) for path in (run_dir / "logs").rglob("*")) == before
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "lightning_logs").exists()


@pytest.mark.slow
def test_under_two_processes_the_run_says_each_thing_once_and_resumes_into_its_locked_folder(fake_data_dir, run_dir):
    import torch

    command = [sys.executable, "-m", "project", "fit", "--config=debug", "--config=ddp.yaml",
               "--trainer.accelerator=cpu", "--trainer.devices=2", f"--data.data_dir={fake_data_dir}",
               "--data.split.val_size=100", "--trainer.max_epochs=1"]  # fmt: skip
    result = run(command, run_dir, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Testing the best checkpoint") == 1
    assert [line for line in result.stdout.splitlines() if line.startswith("epoch ")] != []
    resumed = run([*command, "--ckpt_path=last", "--trainer.max_epochs=2"], run_dir, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("Resuming ") == 1  # every process took the checkpoint the first one chose
    folder = run_dir / "logs" / "mnist" / "version_0"
    assert sorted(path.name for path in folder.parent.iterdir()) == ["version_0"]
    assert not (folder / "run.lock").exists()
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10  # 2 epochs of 5


def test_a_progress_bar_of_the_users_own_is_kept(quick_args, run_dir):
    cli = run_cli(["fit", *quick_args, "--trainer.enable_progress_bar=true", "--trainer.callbacks+=TQDMProgressBar",
                   "--trainer.max_epochs=1", "--test_after_fit=false"])  # fmt: skip
    assert type(cli.trainer.progress_bar_callback).__name__ == "TQDMProgressBar"


def test_the_divergence_message_names_the_learning_rate_option_the_command_line_takes():
    from project.errors import TrainingDivergedError

    for last_checkpoint in (None, "", "logs/mnist/version_0/checkpoints/last.ckpt"):
        error = TrainingDivergedError("the training loss became nan at step 3")
        error.last_checkpoint = last_checkpoint
        assert "--model.optimizer.lr" in str(error) and "model.lr " not in str(error)


def test_a_single_callback_or_plugin_given_without_a_list_is_taken(quick_args, run_dir, tmp_path):
    config = tmp_path / "single.yaml"
    config.write_text(
        "trainer:\n  callbacks:\n    class_path: project.training.checkpoints.LastCheckpoint\n"
        "  plugins:\n    class_path: lightning.pytorch.plugins.environments.LightningEnvironment\n"
    )
    cli = run_cli(["fit", *quick_args, f"--config={config}", "--trainer.max_epochs=1", "--test_after_fit=false"])
    assert any(type(callback).__name__ == "LastCheckpoint" for callback in cli.trainer.callbacks)
    assert (run_dir / "logs" / "single" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_the_early_stopping_preset_keeps_the_preset_callbacks_and_stops_on_the_task_metric(quick_args, run_dir):
    # An improvement of 1.0 in accuracy cannot happen: the run stops after its first validations without one.
    stop_at_once = ["--trainer.callbacks.patience=1", "--trainer.callbacks.min_delta=1.0"]
    cli = run_cli(["fit", *quick_args, "--config", "early_stopping", *stop_at_once, "--trainer.max_epochs=5",
                   "--test_after_fit=false"])  # fmt: skip
    names = {type(callback).__name__ for callback in cli.trainer.callbacks}
    assert {"TaskEarlyStopping", "BestCheckpoint", "LastCheckpoint", "ExactResume", "TensorBoardReports"} <= names
    stopping = next(c for c in cli.trainer.callbacks if type(c).__name__ == "TaskEarlyStopping")
    assert (stopping.monitor, stopping.mode) == cli.model.monitored_metric == ("val/acc", "max")
    assert stopping.min_delta == 1.0  # signed for a metric to maximise
    assert cli.trainer.current_epoch == 2 < 5  # epoch 0 sets the best, epoch 1 does not improve on it by 1.0
