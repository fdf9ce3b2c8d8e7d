"""What a newcomer reads on the console: one epoch numbering (from 1) in the bar and the lines, no ``v_num``, the model
in one line, no lines about accelerators that are not there, a first line at once, progress of the commands outside
a Trainer, sweep workers' lines labelled with their trial, and a word when early stopping, SWA or Ctrl-C ends a run
(Ctrl-C saving ``last.ckpt`` as SIGTERM does)."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from test_reliability import SUBPROCESS_ENV

from project.cli import run_cli

LAST = Path("logs/mnist/version_0/checkpoints/last.ckpt")


class RecordBarDescription(L.Callback):
    """The progress bar's description at the end of each training epoch."""

    def __init__(self) -> None:
        self.descriptions: list[str] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.descriptions.append(trainer.progress_bar_callback.train_progress_bar.description.strip())


def fit_with_bar(quick_args: list[str], *extra: str) -> list[str]:
    record = RecordBarDescription()
    args = ["fit", *quick_args, "--trainer.enable_progress_bar=true", "--test_after_fit=false", *extra]
    run_cli(args, callbacks=[record])
    return record.descriptions


def test_the_bar_counts_epochs_from_one_as_the_lines_do_and_shows_no_v_num(quick_args, run_dir, capfd):
    lines = ["--trainer.callbacks+=ProgressLog", "--trainer.callbacks.always=true"]
    assert fit_with_bar(quick_args, *lines, "--config=early_stopping") == ["Epoch 1/2", "Epoch 2/2"]
    out = capfd.readouterr().out
    assert "Early stopping" not in out  # (patience 8 over 2 validations: no stop, no word)
    assert "epoch 1/2 · step 10/20" in out and "epoch 2/2 · step 20/20" in out  # the lines count as the bar does
    assert "Epoch 2/2" in out and "train/loss" in out and "val/acc" in out
    assert "v_num" not in out and "Epoch 1/1" not in out and "val/precision" not in out


def test_without_max_epochs_the_bar_and_the_lines_say_the_epoch_alone(quick_args, run_dir, capfd):
    unlimited = ["--trainer.max_epochs=-1", "--trainer.max_steps=15", "--trainer.callbacks+=ProgressLog"]
    assert fit_with_bar(quick_args, *unlimited, "--trainer.callbacks.always=true") == ["Epoch 1", "Epoch 2"]
    out = capfd.readouterr().out
    assert "epoch 1 · step 10/15" in out and "/-" not in out


@pytest.mark.slow
def test_lightnings_own_bar_counts_from_zero_the_negative_control(quick_args, run_dir):
    own = ["--trainer.callbacks+=RichProgressBar", "--trainer.max_epochs=1"]
    assert fit_with_bar(quick_args, *own) == ["Epoch 0/0"]


def test_the_model_is_summarised_in_one_line_once(quick_args, run_dir, capsys, caplog):
    caplog.set_level(logging.INFO)
    summary = ["--trainer.enable_model_summary=true", "--trainer.max_epochs=1", "--test_after_fit=false"]
    run_cli(["fit", *quick_args, *summary])
    out = capsys.readouterr().out
    logged = "\n".join(caplog.messages)
    lines = [line for line in out.splitlines() if "parameters" in line]
    assert len(lines) == 1 and lines[0].startswith("Model: ConvNet · ") and "trainable)" in lines[0]
    assert "┏" not in out and "Total params" not in out + logged  # not Lightning's table
    assert "GPU available: False" not in logged and "TPU available" not in logged
    assert "model summary callbacks" not in logged and "Seed set to 42" in logged  # (Lightning's other lines stay)


def test_a_gpu_that_is_there_is_still_said_and_absent_ones_are_not(caplog):
    from lightning.pytorch.utilities import rank_zero_info

    from project.training.progress import quiet_lightning_lines

    caplog.set_level(logging.INFO)
    quiet_lightning_lines()
    for line in ("GPU available: False, used: False", "TPU available: False, using: 0 TPU cores"):
        rank_zero_info(line)
    rank_zero_info("GPU available: True (cuda), used: False")
    assert caplog.messages == ["GPU available: True (cuda), used: False"]


def test_the_table_summary_stays_for_those_who_ask_for_it(quick_args, run_dir, capsys, caplog):
    caplog.set_level(logging.INFO)
    run_cli(["fit", *quick_args, "--trainer.enable_model_summary=true", "--trainer.max_epochs=1",
             "--trainer.callbacks+=ModelSummary", "--test_after_fit=false"])  # fmt: skip
    assert "Total params" in "\n".join(caplog.messages) and "Model: ConvNet" not in capsys.readouterr().out


def test_the_command_says_what_it_does_at_once_but_not_for_help(capsys, monkeypatch):
    from project.__main__ import starting

    starting("fit", ["--config=debug"], "loading Lightning and building the run")
    assert capsys.readouterr().out == "fit: loading Lightning and building the run ...\n"
    for quiet in (["--help"], ["--print_config=skip_default"]):
        starting("fit", quiet, "loading")
    monkeypatch.setenv("LOCAL_RANK", "1")  # another process of a multi-process run
    starting("fit", [], "loading")
    assert capsys.readouterr().out == ""


def test_a_long_loop_says_how_far_it_is_and_a_short_one_says_nothing():
    from project.inference.counting import Counting

    said: list[str] = []
    quick = Counting("predict", "images", 2000, every=60, out=said.append)
    quick(512)
    quick.end()
    assert said == []
    slow = Counting("predict", "images", 2000, every=0, out=said.append)
    slow(512)
    slow(1488)
    slow.end()
    assert [line.split(" (")[0] for line in said] == ["predict: 512/2,000 images", "predict: 2,000/2,000 images"]
    said.clear()
    batches = [(torch.zeros(3, 1), torch.zeros(3)), (torch.zeros(2, 1), torch.zeros(2))]
    evaluating = Counting("evaluate", "test images", 5, every=0, out=said.append)
    assert list(evaluating.through(batches)) == batches
    assert [line.split(" (")[0] for line in said] == ["evaluate: 3/5 test images", "evaluate: 5/5 test images"]


def test_export_says_each_file_as_it_is_written_and_checked(pretrained_checkpoint, tmp_path, capsys):
    from project.cli.commands import main

    main(["export", str(pretrained_checkpoint), "--out", str(tmp_path / "model"), "--formats", "onnx", "safetensors"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "export: loading torch and the model ..."
    steps = [line.split(" (")[0] for line in lines if line.startswith("export: ") and line.endswith(" s)")]
    assert steps == [
        f"export: read {pretrained_checkpoint}",
        "export: wrote model.onnx",
        "export: wrote model.safetensors",
        "export: checked model.onnx, model.safetensors against the checkpoint's network",
    ]


def test_two_workers_lines_are_labelled_with_their_trials(capsys):
    from project.sweeps.command import relay_output

    script = (
        "import sys; print('starting'); print('sweep s: trial 3 (lr=0.1)'); print('epoch 1/2 · step 10/20'); "
        "print('a warning', file=sys.stderr); print('sweep s: trial 5 (lr=0.2)'); print('epoch 1/2 · step 10/20')"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    relay_output(child, 1)
    assert child.wait() == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "[worker 1] starting",
        "[trial 3] sweep s: trial 3 (lr=0.1)",
        "[trial 3] epoch 1/2 · step 10/20",
        "[trial 5] sweep s: trial 5 (lr=0.2)",
        "[trial 5] epoch 1/2 · step 10/20",
    ]
    assert err.startswith("[") and err.endswith("] a warning\n")


def test_early_stopping_says_when_it_ends_a_run(quick_args, run_dir, capsys):
    stopping = ["--config=early_stopping", "--trainer.callbacks.patience=1", "--trainer.callbacks.min_delta=1.0"]
    cli = run_cli(["fit", *quick_args, *stopping, "--trainer.max_epochs=4", "--test_after_fit=false"])
    assert cli.trainer.current_epoch == 2  # stopped after 2 of 4 epochs
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Early stopping")]
    assert len(lines) == 1
    expected = (
        r"Early stopping after epoch 2: val/acc has not improved by more than 1 for 1 validations in a row "
        r"\(patience 1\); best [0-9.]+ at epoch 1"
    )
    assert re.fullmatch(expected, lines[0]), lines[0]


def test_swa_with_fewer_than_two_points_says_the_weights_are_the_trained_ones(quick_args, run_dir, capsys):
    from project.training import SWAWeights

    run_cli(["fit", *quick_args, "--config=swa", "--test_after_fit=false"])  # start_epoch 1 of 2: one point
    assert "SWA averaged one point (the end of epoch 2): the averaged weights equal the trained ones" in (
        capsys.readouterr().out
    )
    never = ["--config=swa", "--trainer.callbacks.start_epoch=5", "--trainer.max_epochs=1"]
    run_cli(["fit", *quick_args, *never, "--test_after_fit=false", "--trainer.logger.init_args.name=never"])
    out = capsys.readouterr().out
    assert "SWA: the run ended after epoch 1, before epoch 6, the first it averages" in out
    assert "lower --trainer.callbacks.start_epoch (now 5: from epoch 6)" in out
    averaged = SWAWeights(start_epoch=1)
    averaged.updates = 2
    assert averaged.nothing_averaged(3) is None  # the negative control: two points are an average


def test_ctrl_c_saves_last_ckpt_at_the_step_boundary_says_how_to_resume_and_exits_130(quick_args, run_dir, capsys):
    from project.cli import main

    ctrl_c = ["--trainer.callbacks+=helpers.SignalAtStep", "--trainer.callbacks.step=13"]
    with pytest.raises(SystemExit) as caught:
        main(["fit", *quick_args, *ctrl_c, "--trainer.callbacks.signal_name=SIGINT"])
    assert caught.value.code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    assert torch.load(LAST, weights_only=True)["global_step"] == 13  # the step reached, not step 10's save
    out = capsys.readouterr().out
    assert f"Stopped by Ctrl-C at step 13: {LAST} holds the state of step 13" in out
    assert "resume with the same command and --ckpt_path last" in out
    assert out.rstrip().endswith("stopped by Ctrl-C (exit status 130)")
    resumed = run_cli(["fit", *quick_args, "--ckpt_path=last", "--test_after_fit=false"])
    assert resumed.trainer.global_step == 20


@pytest.mark.slow
def test_ctrl_c_from_outside_mid_training_saves_the_step_reached(fake_data_dir, run_dir):
    ready, go = run_dir / "ready", run_dir / "go"
    command = [sys.executable, "-m", "project", "fit", "--config=debug", f"--data.data_dir={fake_data_dir}",
               "--data.split.val_size=100", "--test_after_fit=false", "--trust=helpers",
               "--trainer.callbacks+=helpers.WaitAtStep", "--trainer.callbacks.step=13",
               f"--trainer.callbacks.ready={ready}", f"--trainer.callbacks.go={go}"]  # fmt: skip
    child = subprocess.Popen(command, cwd=run_dir, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C, while step 13 is done and step 14 not begun
    go.touch()
    out, err = child.communicate(timeout=300)
    assert child.returncode == 130, err[-3000:]
    assert out.startswith("fit: loading Lightning and building the run ...\n")
    assert torch.load(run_dir / LAST, weights_only=True)["global_step"] == 13
    assert "Stopped by Ctrl-C at step 13: " in out and "resume with the same command and --ckpt_path last" in out
    assert out.rstrip().endswith("stopped by Ctrl-C (exit status 130)") and "Traceback" not in err
