"""The command line: a fast_dev_run through `python -m project`, presets that stack, checkpoints, clear errors."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import cli_error

from project.cli import run_cli
from project.cli.presets import CONFIG_DIR, run_name
from project.networks import ConvNet


@pytest.mark.slow
def test_fast_dev_run_of_fit_through_python_dash_m(fake_data_dir, run_dir):
    command = [sys.executable, "-m", "project", "fit", "--trainer.fast_dev_run=true", "--data.split.val_size=100"]
    environment = {**os.environ, "PROJECT_DATA_DIR": str(fake_data_dir), "PYTHONPATH": str(Path.cwd())}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Running in `fast_dev_run` mode" in output
    assert "test/acc" in output  # fit is followed by a test


def print_config(*args: str) -> dict:
    """``python -m project fit ARGS --print_config``, in this process (the command line parses as it does there)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as caught:
        run_cli(["fit", *args, "--print_config"])
    assert caught.value.code in (0, None), printed.getvalue()[-3000:]
    return yaml.safe_load(printed.getvalue())


def test_the_one_epoch_recipe_stacks_on_the_default_data_with_its_schedule_width_dropout_and_label_smoothing():
    config = print_config("--config", "one_epoch")
    model = config["model"]
    assert config["trainer"]["max_epochs"] == 1 and model["optimizer"]["init_args"]["lr"] == 0.008
    assert (model["network"]["init_args"]["conv_dropout"], model["network"]["init_args"]["fc_dropout"]) == (0.0, 0.0)
    assert model["network"]["init_args"]["hidden_size"] == 256 and config["trainer"]["val_check_interval"] == 1.0
    assert model["task"] == {"class_path": "project.tasks.Multiclass", "init_args": model["task"]["init_args"]}
    assert model["task"]["init_args"]["label_smoothing"] == 0.1
    assert model["lr_scheduler"]["class_path"] == "project.training.schedules.OneCycle"  # over its one epoch
    assert config["data"]["class_path"] == "project.data.MNISTDataModule"  # mnist.yaml's, below it
    assert run_name(["fit", "--config", "one_epoch"]) == "one_epoch"
    default = print_config()  # negative control: the default recipe keeps its 2 epochs and no named task
    assert default["trainer"]["max_epochs"] == 2 and default["model"]["task"] is None
    assert default["model"]["network"]["init_args"]["hidden_size"] == 128


def test_classic_preset_stacks_on_the_defaults_and_reproduces_the_tutorial():
    config = print_config("--config", "classic.yaml")
    model, data = config["model"], config["data"]["init_args"]
    optimizer = model["optimizer"]
    assert optimizer["class_path"] == "torch.optim.SGD"
    assert {key: optimizer["init_args"][key] for key in ("lr", "momentum", "weight_decay")} == {
        "lr": 0.01,
        "momentum": 0.0,
        "weight_decay": 0.0,
    }
    assert model["lr_scheduler"]["class_path"] == "project.training.schedules.Constant"
    assert (data["batch_size"], config["trainer"]["max_epochs"]) == (64, 10)
    best = config["trainer"]["callbacks"][0]  # kept from mnist.yaml: the task decides what it monitors
    assert (best["class_path"], best["init_args"]["monitor"]) == ("project.training.checkpoints.BestCheckpoint", None)


def test_a_run_is_named_after_its_last_recipe_not_after_a_modifier():
    assert run_name(["fit", "--config", "classic.yaml"]) == "classic"
    assert run_name(
        ["fit", "--config=finetune_folder.yaml", f"--config={CONFIG_DIR / 'modifiers' / 'debug.yaml'}"]
    ) == ("finetune_folder")
    assert run_name(["fit", f"--config={CONFIG_DIR / 'modifiers' / 'debug.yaml'}"]) == "mnist"  # the default recipe


def test_a_run_that_chooses_its_data_class_on_the_command_line_is_named_after_it():
    debug = f"--config={CONFIG_DIR / 'modifiers' / 'debug.yaml'}"
    assert run_name(["fit", debug, "--data", "my_data.MyData"]) == "MyData"  # not mnist: --ckpt_path last finds it
    arrays = ["fit", "--data.class_path=project.data.ArrayDataModule", "--data.npz", "x.npz"]
    assert run_name(arrays) == "ArrayDataModule"
    assert run_name(["fit", "--config=classic.yaml", "--data", "my_data.MyData"]) == "classic"  # a recipe names it


def test_print_config_skip_default_prints_what_the_presets_and_the_command_line_set():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
        run_cli(["fit", "--trainer.max_epochs=3", "--print_config=skip_default"])
    config = yaml.safe_load(printed.getvalue())
    assert config["trainer"]["max_epochs"] == 3  # the command line's
    assert config["model"]["optimizer"]["init_args"]["lr"] == 0.003  # base.yaml's (AdamW's own default is 0.001)
    assert config["data"]["class_path"] == "project.data.MNISTDataModule"  # mnist.yaml's
    assert "strategy" not in config["trainer"]  # the Trainer's own default: skipped
    assert print_config()["trainer"]["strategy"] == "auto"  # negative control: printed in full without skip_default


def test_a_run_named_with_run_trains_into_its_own_folder_and_resumes_only_from_there(quick_args, run_dir, capsys):
    run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false", "--run", "baseline"])
    run_cli(["fit", *quick_args, "--trainer.max_epochs=1", "--test_after_fit=false", "--run", "wider"])
    assert sorted(path.name for path in (run_dir / "logs").iterdir()) == ["baseline", "wider"]
    assert yaml.safe_load((run_dir / "logs/baseline/version_0/config.yaml").read_text())["run"] == "baseline"
    capsys.readouterr()
    resume = ["--trainer.max_epochs=2", "--test_after_fit=false", "--run=baseline", "--ckpt_path=last"]
    run_cli(["fit", *quick_args, *resume])
    assert f"into {Path('logs') / 'baseline' / 'version_0'}" in capsys.readouterr().out
    assert sorted(path.name for path in (run_dir / "logs" / "baseline").iterdir()) == ["version_0"]
    assert "not a folder name" in cli_error(["fit", *quick_args, "--run", "../elsewhere"], capsys)
    assert not (run_dir / "elsewhere").exists()


def test_command_line_options_override_the_presets():
    config = print_config("--config", "classic", "--model.optimizer.lr=0.05", "--data.batch_size=128")
    lr = config["model"]["optimizer"]["init_args"]["lr"]
    assert (lr, config["data"]["init_args"]["batch_size"]) == (0.05, 128)


def test_every_preset_in_the_package_parses():
    sweeps = CONFIG_DIR / "sweeps"  # sweep specs, not fit configs: tests/test_sweeps.py checks each
    for preset in sorted(path for path in CONFIG_DIR.rglob("*.yaml") if sweeps not in path.parents):
        print_config("--config", str(preset))


def test_every_checkpoint_written_loads_with_weights_only(quick_args, run_dir):
    run_cli(["fit", *quick_args, "--test_after_fit=false"])
    checkpoints = sorted((run_dir / "logs" / "mnist" / "version_0" / "checkpoints").glob("*.ckpt"))
    names = sorted(path.name for path in checkpoints)
    assert len(names) == 2 and names[0].startswith("epoch=") and names[1] == "last.ckpt"  # the best and the last
    for path in checkpoints:
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["hyper_parameters"]["network"]["init_args"]["num_outputs"] == 10
        assert checkpoint["hyper_parameters"]["task"]["class_path"] == "project.tasks.Multiclass"


def test_fit_tests_the_best_checkpoint_afterwards(quick_args, run_dir, capsys):
    cli = run_cli(["fit", *quick_args])
    best = cli.trainer.checkpoint_callback.best_model_path
    assert f"Testing the best checkpoint: {best}" in capsys.readouterr().out
    assert "test/acc" in cli.trainer.callback_metrics


def test_test_subcommand_evaluates_a_saved_checkpoint(quick_args, run_dir):
    run_cli(["fit", *quick_args, "--test_after_fit=false"])
    last = run_dir / "logs" / "mnist" / "version_0" / "checkpoints" / "last.ckpt"
    cli = run_cli(["test", *quick_args, f"--ckpt_path={last}"])
    assert 0.0 <= cli.trainer.callback_metrics["test/acc"].item() <= 1.0


def error_of(args: list[str], capsys) -> str:
    return cli_error(args, capsys)


def test_bad_learning_rate_is_one_error_line(quick_args, capsys):
    error = error_of(["fit", *quick_args, "--model.optimizer.lr=-0.1"], capsys)
    assert "error: model.optimizer: Invalid learning rate: -0.1" in error


def test_regression_data_through_the_command_line_keeps_the_lowest_validation_loss(tmp_path, run_dir):
    from test_bad_input import write_regression_csv

    data = write_regression_csv(tmp_path / "data", "train.csv", [str(i / 30) for i in range(30)])
    cli = run_cli(
        [
            "fit", "--data=project.data.CSVRegressionDataModule", f"--data.data_dir={data}", "--data.split.val_size=4",
            "--data.batch_size=8", "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false",
        ]
    )  # fmt: skip
    best = cli.trainer.checkpoint_callback
    assert (best.monitor, best.mode) == ("val/loss", "min")
    assert best.best_model_path and "test/mse" in cli.trainer.callback_metrics


@pytest.mark.slow
def test_a_compiled_run_saves_the_network_under_its_own_names_and_resumes(quick_args, run_dir):
    # bf16-mixed, channels-last and compilation (the gpu modifier's options) on the CPU.
    fast = ["--model.speed.compile=true", "--model.speed.channels_last=true", "--trainer.precision=bf16-mixed"]
    run_cli(["fit", *quick_args, *fast, "--trainer.max_epochs=1", "--test_after_fit=false"])
    last = run_dir / "logs" / "mnist" / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["state_dict"]
    assert set(state) >= {f"network.{name}" for name in ConvNet().state_dict()}
    assert not any("_orig_mod" in name for name in state)
    cli = run_cli(["fit", *quick_args, *fast, "--ckpt_path=last", "--test_after_fit=false"])
    assert cli.trainer.global_step == 20
