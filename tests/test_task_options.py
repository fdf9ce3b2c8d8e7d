"""A task's options as configuration (``--model.task Multiclass --model.task.label_smoothing 0.1``): label smoothing,
class weights, pos_weight, the decision threshold and extra metrics; refused in one line when wrong; recorded in
checkpoints and exports, fixed on resume."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import cli_error, scalar_steps
from test_cli import print_config

from project.cli import run_cli
from project.data import MNISTDataModule, Split
from project.errors import UserInputError
from project.inference.evaluation import compute_report, predict
from project.inference.export import export_checkpoint
from project.inference.prediction import Predictor
from project.tasks import TASKS, Task
from project.training.specs import metric_class
from project.training.task_module import TaskModule

REPO_ROOT = Path(__file__).resolve().parents[1]
TOP3 = REPO_ROOT / "examples" / "top3_accuracy" / "config.yaml"


def bound(name: str, outputs: int, options: dict | None = None) -> Task:
    """The project's task ``name`` with ``options``, bound to a network of ``outputs`` outputs."""
    return TASKS[name](**(options or {})).bind(outputs, metric_class)


def test_label_smoothing_changes_the_loss_exactly_as_torchs_cross_entropy_does():
    outputs, targets = torch.randn(16, 5), torch.randint(0, 5, (16,))
    task = bound("multiclass", 5, {"label_smoothing": 0.2})
    expected = F.cross_entropy(outputs, targets, label_smoothing=0.2)
    torch.testing.assert_close(task.loss(outputs, targets), expected)
    torch.testing.assert_close(task.example_losses(outputs, targets).mean(), expected)
    assert not torch.allclose(expected, F.cross_entropy(outputs, targets))


def test_class_weights_weigh_each_example_by_its_class_and_the_loss_is_their_weighted_mean():
    outputs, targets = torch.randn(16, 3), torch.randint(0, 3, (16,))
    weights = [1.0, 2.0, 0.5]
    task = bound("multiclass", 3, {"class_weights": weights, "label_smoothing": 0.1})
    weight = torch.tensor(weights)
    torch.testing.assert_close(
        task.loss(outputs, targets), F.cross_entropy(outputs, targets, weight=weight, label_smoothing=0.1)
    )
    per_example = task.example_losses(outputs, targets)  # what the worst examples are ranked by
    torch.testing.assert_close(per_example.sum() / weight[targets].sum(), task.loss(outputs, targets))
    plain = bound("multiclass", 3, {"class_weights": weights})
    torch.testing.assert_close(
        plain.example_losses(outputs, targets), weight[targets] * F.cross_entropy(outputs, targets, reduction="none")
    )


def test_pos_weight_goes_into_binary_cross_entropy_for_binary_and_multilabel_tasks():
    logits, targets = torch.randn(12, 1), torch.randint(0, 2, (12,))
    binary = bound("binary", 1, {"pos_weight": 3})
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], targets.float(), pos_weight=torch.tensor(3.0))
    torch.testing.assert_close(binary.loss(logits, targets), expected)
    logits, targets = torch.randn(12, 2), torch.randint(0, 2, (12, 2))
    for given, weight in ((2.5, torch.tensor(2.5)), ([1.0, 4.0], torch.tensor([1.0, 4.0]))):
        multilabel = bound("multilabel", 2, {"pos_weight": given})
        expected = F.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=weight)
        torch.testing.assert_close(multilabel.loss(logits, targets), expected)


def test_the_threshold_changes_decisions_metrics_and_prediction_rows():
    names = ["other", "positive"]
    outputs = torch.tensor([[math.log(p / (1 - p))] for p in (0.7, 0.9, 0.2)])  # the probabilities 0.7, 0.9, 0.2
    default, strict = bound("binary", 1), bound("binary", 1, {"threshold": 0.8})
    assert default.decisions(outputs).tolist() == [1, 1, 0] and strict.decisions(outputs).tolist() == [0, 1, 0]
    assert [row["predicted"] for row in strict.prediction_rows(outputs, names)] == ["other", "positive", "other"]
    targets = torch.tensor([1, 1, 0])
    assert strict.metric_collection()(strict.scores(outputs), targets)["recall"].item() == pytest.approx(0.5)
    assert strict.report(strict.scores(outputs), targets, names)["overall"]["recall"] == pytest.approx(0.5)
    multilabel = bound("multilabel", 2, {"threshold": 0.8})
    assert multilabel.decisions(torch.tensor([[0.9, 2.0]])).tolist() == [[0, 1]]  # sigmoid: 0.71, 0.88


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--model.task.label_smoothing=1.5", "model.task.label_smoothing must be a float in [0, 1), got 1.5"),
        ("--model.task.threshold=0.5", "model.task.threshold is not an option"),
        ("--model.task.class_weights=[1, 2]", "class_weights must be a list of 10 positive floats (one per "
         "class), got [1.0, 2.0]"),
        ("--model.task.metrics={top3: {class_path: os.system}}", "model.task.init_args.metrics.top3: "
         "os.system is not a class a config may name"),
    ],
)  # fmt: skip
def test_a_bad_task_option_is_one_error_line_through_the_command_line(option, message, quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, "--model.task=Multiclass", option], capsys, root=run_dir)
    assert message in error


def test_regression_takes_no_option_but_metrics(quick_args, run_dir, capsys):
    error = cli_error(["fit", *quick_args, "--model.task=Regression", "--model.task.label_smoothing=0.1"], capsys)
    assert "model.task.label_smoothing is not an option" in error


@pytest.fixture(scope="module")
def top3_run(tmp_path_factory, fake_data_dir) -> tuple[Path, dict]:
    """The top-3 example trained (with label smoothing added on the command line): its folder and test metrics."""
    folder = tmp_path_factory.mktemp("top3")
    previous = Path.cwd()
    os.chdir(folder)
    try:
        args = ["--config=debug", f"--data.data_dir={fake_data_dir}", "--data.split.val_size=100", f"--config={TOP3}"]
        cli = run_cli(["fit", *args, "--model.task.label_smoothing=0.1", "--trainer.max_epochs=1"])
    finally:
        os.chdir(previous)
    return folder / "logs" / "top3_accuracy" / "version_0", dict(cli.trainer.callback_metrics)


def test_the_top3_example_trains_and_logs_its_metric_to_tensorboard(top3_run):
    folder, tested = top3_run
    assert {"train/acc_top3", "val/acc_top3"} <= set(scalar_steps(folder))
    assert tested["test/acc_top3"].item() >= tested["test/acc"].item()  # fit tests the best checkpoint afterwards


def test_the_options_survive_a_checkpoint_and_the_extra_metric_is_in_the_report(top3_run, fake_data_dir):
    last = top3_run[0] / "checkpoints" / "last.ckpt"
    task = torch.load(last, weights_only=True)["hyper_parameters"]["task"]  # plain values
    stored = task["init_args"]
    assert task["class_path"] == "project.tasks.Multiclass"
    assert stored["label_smoothing"] == 0.1 and stored["class_weights"] is None
    assert stored["metrics"]["acc_top3"]["init_args"]["top_k"] == 3
    model = TaskModule.load_from_checkpoint(last, map_location="cpu")
    assert model.task.options == stored and model.task.label_smoothing == 0.1
    data = MNISTDataModule(data_dir=str(fake_data_dir), split=Split(val_size=100))
    data.setup("fit")
    predictions = predict(model, data.normalised_batches("val"), model.task)
    overall = compute_report(predictions, model.task, data.class_names)["overall"]
    assert overall["accuracy"] <= overall["acc_top3"] <= 1.0


def test_an_onnx_export_carries_the_options_to_prediction(top3_run, tmp_path):
    about = export_checkpoint(top3_run[0] / "checkpoints" / "last.ckpt", tmp_path / "model", ("onnx",))
    assert about["task_options"]["label_smoothing"] == 0.1
    assert about["outputs"] == "logits, one per class: softmax for probabilities"
    task = Predictor.load(tmp_path / "model" / "model.onnx").task
    assert task.label_smoothing == 0.1 and task.extra == {}  # prediction computes no metric


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("--model.task.label_smoothing=0.2", "model.task.init_args.label_smoothing 0.2 (the run has 0.1)"),
        ("--model.task.metrics={}", "model.task.init_args.metrics [] (the run has {'acc_top3'"),
    ],
)
def test_task_options_are_fixed_on_resume(option, named, top3_run, fake_data_dir, capsys, monkeypatch):
    monkeypatch.chdir(top3_run[0].parents[2])
    args = [
        "fit",
        "--config=debug",
        f"--data.data_dir={fake_data_dir}",
        "--data.split.val_size=100",
        f"--config={TOP3}",
    ]
    kept = "--model.task.label_smoothing=0.1"
    error = cli_error([*args, kept, option, "--trainer.max_epochs=2", "--ckpt_path=last"], capsys)
    assert "cannot change on resume" in error and named in error


def test_an_extra_metric_gets_the_number_of_classes_or_labels_filled_in():
    spec = {"class_path": "torchmetrics.classification.MultilabelAccuracy", "init_args": {"average": "micro"}}
    task = bound("multilabel", 3, {"metrics": {"acc_micro": spec}})
    assert task.metric_collection()["acc_micro"].num_labels == 3


def test_stacked_configs_merge_the_options_of_their_task_later_keys_winning(run_dir):
    """``--config label_smoothing --config metrics.yaml`` keeps the smoothing: the task's arguments from each config
    are merged (jsonargparse merges a class's ``init_args``); a key set by both takes the later config's value, and
    the command line adds to the merge."""
    (run_dir / "metrics.yaml").write_text(
        "model:\n  task:\n    class_path: Multiclass\n    init_args:\n      label_smoothing: 0.2\n      metrics:\n"
        "        acc_top3:\n          class_path: torchmetrics.classification.MulticlassAccuracy\n"
        "          init_args: {top_k: 3}\n"
    )
    weights = "model: {task: {init_args: {class_weights: [1, 1, 1, 1, 1, 1, 1, 1, 1, 2]}}}\n"
    (run_dir / "weights.yaml").write_text(weights)
    options = print_config("--config=label_smoothing", "--config=weights.yaml")["model"]["task"]["init_args"]
    assert options["label_smoothing"] == 0.1 and options["class_weights"] == [1, 1, 1, 1, 1, 1, 1, 1, 1, 2]
    stacked = ["--config=label_smoothing", "--config=weights.yaml", "--config=metrics.yaml"]
    options = print_config(*stacked, "--model.task.class_weights=null")["model"]["task"]["init_args"]
    assert options["label_smoothing"] == 0.2 and options["class_weights"] is None  # later values win
    assert options["metrics"]["acc_top3"]["init_args"]["top_k"] == 3


def extra(class_path: str, **init_args) -> dict:
    """A task's options with one extra metric, ``extra``."""
    return {"metrics": {"extra": {"class_path": class_path, "init_args": init_args}}}


def test_an_extra_metric_with_top_k_below_1_is_refused_by_name_before_it_runs():
    with pytest.raises(UserInputError, match=r"metrics.extra.init_args.top_k .*: 1 or more, got 0"):
        bound("multiclass", 10, extra("torchmetrics.classification.MulticlassAccuracy", top_k=0))
    task = bound("multiclass", 10, extra("torchmetrics.classification.MulticlassAccuracy", top_k=1))
    assert task.metric_collection()["extra"].top_k == 1  # the control: 1 is a top-k


@pytest.mark.parametrize(
    ("task", "outputs", "class_path"),
    [
        ("multiclass", 10, "torchmetrics.classification.BinaryAccuracy"),
        ("binary", 1, "torchmetrics.classification.MultilabelAccuracy"),
        ("regression", 1, "torchmetrics.classification.BinaryAccuracy"),
    ],
)
def test_an_extra_metric_that_fails_on_the_tasks_batches_is_refused_when_the_task_is_built(task, outputs, class_path):
    arguments = {"num_labels": 3} if class_path.endswith("MultilabelAccuracy") else {}
    with pytest.raises(UserInputError, match=rf"metrics.extra: {class_path} with .* fails on a batch of this {task}"):
        bound(task, outputs, extra(class_path, **arguments))


@pytest.mark.parametrize(
    ("task", "outputs", "class_path", "arguments"),
    [
        ("multiclass", 10, "torchmetrics.classification.MulticlassAccuracy", {"top_k": 3}),
        ("multiclass", 2, "torchmetrics.classification.MulticlassAUROC", {}),
        ("binary", 1, "torchmetrics.classification.BinaryAUROC", {}),
        ("binary", 1, "torchmetrics.classification.BinaryMatthewsCorrCoef", {}),
        ("multilabel", 2, "torchmetrics.classification.MultilabelAveragePrecision", {}),
        ("multilabel", 4, "torchmetrics.classification.MultilabelHammingDistance", {}),
        ("regression", 1, "torchmetrics.regression.R2Score", {}),
        ("regression", 1, "torchmetrics.regression.PearsonCorrCoef", {}),
    ],
)
def test_an_extra_metric_that_works_on_the_tasks_batches_is_taken(task, outputs, class_path, arguments):
    built = bound(task, outputs, extra(class_path, **arguments)).metric_collection()["extra"]
    assert type(built).__name__ == class_path.rpartition(".")[2]


def test_a_top_k_of_0_is_one_error_line_through_the_command_line_and_writes_nothing(quick_args, run_dir, capsys):
    metrics = "{top0: {class_path: torchmetrics.classification.MulticlassAccuracy, init_args: {top_k: 0}}}"
    task = ["--model.task=Multiclass", f"--model.task.metrics={metrics}"]
    error = cli_error(["fit", *quick_args, *task], capsys, root=run_dir)
    assert "model.task.metrics.top0.init_args.top_k" in error and "got 0" in error
