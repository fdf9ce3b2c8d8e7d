"""Trackers beside TensorBoard (``--config csv``, ``mlflow``, ``wandb``): the same run, metrics, hyper-parameters and
report images in each, read back through the trackers' own readers; resumed into the same run; a missing package is
one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import Interrupted, cli_error, directory_scalars

from project.cli import run_cli

TINY = ["--model.network.init_args.width=4", "--model.network.init_args.hidden_size=16"]
IMAGES = {"val/confusion_matrix", "val/samples", "val/worst"}
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, fake_data_dir) -> tuple[Path, object]:
    """A 2-epoch run with MLflow and CSV beside TensorBoard, interrupted after its first epoch and resumed with
    another learning rate: the working folder and the resumed run's CLI."""
    folder = tmp_path_factory.mktemp("tracked_run")
    args = ["fit", "--config=debug", "--config=mlflow", "--config=csv", *TINY]
    args += [f"--data.data_dir={fake_data_dir}", "--data.split.val_size=100"]
    previous = Path.cwd()
    os.chdir(folder)
    try:
        with pytest.raises(Interrupted):
            run_cli([*args, "--trainer.callbacks+=helpers.InterruptAtEpoch", "--trainer.callbacks.epoch=1"])
        cli = run_cli([*args, "--ckpt_path=last", "--model.optimizer.lr=0.002"])
    finally:
        os.chdir(previous)
    return folder, cli


def mlflow_run(folder: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'logs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [run.info.run_name for run in runs]  # the resumed start continued the same run
    return client, runs[0]


def test_mlflow_reads_back_the_runs_metrics_params_and_images(tracked_run):
    folder, cli = tracked_run
    run_folder = folder / "logs" / "mnist" / "version_0"
    client, run = mlflow_run(folder)
    assert run.info.run_name == "mnist/version_0" and run.data.tags["run_folder"] == "logs/mnist/version_0"
    assert run.info.status == "FINISHED"
    assert json.loads((run_folder / "trackers.json").read_text()) == {"RunMLFlowLogger": run.info.run_id}
    tensorboard = directory_scalars(run_folder)
    for metric in ("val/acc", "val/loss", "train/loss_epoch"):
        history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric)]
        assert [step for step, _ in history] == [9, 19]  # one value per epoch, none twice across the resume
        assert history == [(step, pytest.approx(value)) for step, value in tensorboard[metric]]
    best = next(c.best_model_score for c in cli.trainer.checkpoint_callbacks if c.monitor == "val/acc")
    assert max(m.value for m in client.get_metric_history(run.info.run_id, "val/acc")) == pytest.approx(best.item())
    assert {"test/acc", "lr-AdamW/head"} <= set(run.data.metrics)
    params = run.data.params
    assert params["network/init_args/width"] == "4" and params["batch_size"] == "50"
    # MLflow keeps a parameter fixed: the first start's learning rate, the resumed start's as a tag.
    assert params["optimizer/init_args/lr"] == "0.003" and run.data.tags["resumed/optimizer/init_args/lr"] == "0.002"
    images = [artifact.path for artifact in client.list_artifacts(run.info.run_id, "images")]
    for tag in IMAGES:
        for step in (9, 19):
            assert any(path.startswith(f"images/{tag.replace('/', '~')}+step+{step}+") for path in images), images


def test_csv_goes_on_in_the_same_file_across_the_resume(tracked_run):
    folder, _ = tracked_run
    run_folder = folder / "logs" / "mnist" / "version_0"
    with (run_folder / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    val = [(int(row["step"]), float(row["val/acc"])) for row in rows if row["val/acc"]]
    assert val == [(step, pytest.approx(value)) for step, value in directory_scalars(run_folder)["val/acc"]]
    assert [step for step, _ in val] == [9, 19]
    assert any(row["test/acc"] for row in rows)


def test_a_run_with_trackers_resumes_into_its_folder_and_records_them(tracked_run):
    folder, cli = tracked_run
    assert [path.name for path in (folder / "logs" / "mnist").iterdir()] == ["version_0"]
    run_folder = folder / "logs" / "mnist" / "version_0"
    assert [type(logger).__name__ for logger in cli.trainer.loggers] == ["RunLogger", "RunMLFlowLogger", "RunCSVLogger"]
    for name in ("config.yaml", "config-resume1.yaml"):  # each start's config names the trackers that ran
        text = (run_folder / name).read_text()
        assert "project.reports.trackers.RunMLFlowLogger" in text and "project.reports.trackers.RunCSVLogger" in text
    checkpoints = sorted(path.name for path in (run_folder / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints
    assert torch.load(run_folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20
    assert sorted(path.name for path in (folder / "logs").iterdir()) == ["mlflow-artifacts", "mlflow.db", "mnist"]


@pytest.mark.parametrize(("preset", "package"), [("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_tracker_whose_package_is_missing_is_one_line_naming_its_extra(
    preset, package, quick_args, run_dir, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed
    message = cli_error(["fit", *quick_args, f"--config={preset}"], capsys, root=run_dir)
    assert message == (
        f'error: the {package} package is not installed, and this run needs it: pip install -e ".[{package}]"'
    )


def test_a_tracker_stacked_twice_is_refused_before_any_work(quick_args, run_dir, capsys):
    message = cli_error(["fit", *quick_args, "--config=csv", "--config=csv"], capsys, root=run_dir)
    assert "RunCSVLogger is given twice" in message


@pytest.mark.slow
def test_wandb_offline_writes_its_run_files_under_logs_without_network(fake_data_dir, tmp_path):
    """In a process of its own: wandb starts a service process and sets WANDB_MODE for the rest of the process."""
    settings = tmp_path / "wandb_settings"
    env = {**os.environ, "WANDB_CONFIG_DIR": str(settings), "WANDB_CACHE_DIR": str(settings)}
    env |= {"WANDB_DATA_DIR": str(settings), "WANDB_BASE_URL": "http://127.0.0.1:9", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("WANDB_MODE", None), env.pop("WANDB_API_KEY", None)
    args = ["fit", "--config=debug", "--config=wandb", *TINY, f"--data.data_dir={fake_data_dir}"]
    args += ["--data.split.val_size=100", "--trainer.max_epochs=1", "--test_after_fit=false"]
    result = subprocess.run(
        [sys.executable, "-m", "project", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = json.loads((tmp_path / "logs" / "mnist" / "version_0" / "trackers.json").read_text())["WandbLogger"]
    (offline,) = (tmp_path / "logs" / "wandb").glob(f"offline-run-*-{run_id}")
    assert (offline / f"run-{run_id}.wandb").stat().st_size > 0
    images = {path.parent.name + "/" + path.name.split("_")[0] for path in (offline / "files" / "media").rglob("*.png")}
    assert images == {"val/confusion", "val/samples", "val/worst"}


def test_a_csv_resume_killed_while_writing_its_rows_back_keeps_every_earlier_row(tmp_path):
    from project.reports.trackers import RunCSVLogger

    folder = tmp_path / "run" / "version_0"
    folder.mkdir(parents=True)
    rows = "".join(f"{step},{step / 10}\n" for step in range(6))
    (folder / "metrics-before-resume.csv").write_text("step,train/loss\n" + rows)
    (folder / "metrics.csv").write_text("step,train/loss\n0,0.0\n")  # the write-back the kill cut short
    logger = RunCSVLogger(save_dir=str(tmp_path), name="run", version="version_0", purge_step=4)
    assert logger.experiment.metrics == []  # the kept rows written back at once
    with open(folder / "metrics.csv", newline="") as file:
        assert [int(row["step"]) for row in csv.DictReader(file)] == [0, 1, 2, 3]
    assert not (folder / "metrics-before-resume.csv").exists()


def test_an_option_of_an_earlier_logger_given_after_a_tracker_says_where_it_goes(quick_args, run_dir, capsys):
    from helpers import cli_error

    message = cli_error(["fit", *quick_args, "--config", "csv", "--trainer.logger.init_args.log_graph=false"], capsys,
                        root=run_dir)  # fmt: skip
    assert "trainer.logger.log_graph is not an option of the trainer.logger entry added last" in message
    assert "right after the --config or +=CLASS that adds its entry" in message and "did you mean" not in message
