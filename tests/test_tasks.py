"""Tasks: one definition per task that training, TensorBoard, evaluation and prediction share; the multilabel task
from the README, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import bound_task
from PIL import Image

from project.cli import run_cli
from project.data import CSVMultilabelDataModule, Labels, MNISTDataModule, Split
from project.errors import UserInputError
from project.tasks import TASKS, Task

EVALUATE = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"
LABEL_SETS = {"even": [0, 2, 4, 6, 8], "at_least_5": [5, 6, 7, 8, 9]}


def test_the_project_has_a_task_for_each_kind_of_targets_named_as_the_data_names_them():
    assert sorted(TASKS) == ["binary", "masked_tokens", "multiclass", "multilabel", "regression"]
    assert all(issubclass(task, Task) and task.name == name for name, task in TASKS.items())


def test_a_task_refuses_a_network_with_the_wrong_number_of_outputs():
    with pytest.raises(UserInputError, match="a regression task needs a network with exactly 1 output, got 3"):
        bound_task("regression", 3)


def test_multilabel_loss_is_binary_cross_entropy_over_every_label():
    task = bound_task("multilabel", 3)
    outputs, targets = torch.randn(8, 3), torch.randint(0, 2, (8, 3))
    torch.testing.assert_close(
        task.loss(outputs, targets), F.binary_cross_entropy_with_logits(outputs, targets.float())
    )
    torch.testing.assert_close(task.example_losses(outputs, targets).mean(), task.loss(outputs, targets))
    assert torch.equal(task.decisions(outputs), (outputs > 0).long())


def test_multilabel_metrics_are_per_label_means_and_mean_average_precision():
    task = bound_task("multilabel", 2)
    targets = torch.tensor([[1, 0], [1, 1], [0, 1], [0, 0]])
    scores = torch.tensor([[0.9, 0.2], [0.8, 0.4], [0.1, 0.7], [0.3, 0.6]])  # label 2: one miss, one false alarm
    metrics = task.metric_collection()(scores, targets)
    assert set(metrics) == {"acc", "precision", "recall", "f1", "map"}
    assert metrics["acc"].item() == pytest.approx((1.0 + 0.5) / 2)
    report = task.report(scores, targets, ["even", "big"])
    assert [row["class"] for row in report["per_class"]] == ["even", "big"]
    assert [row["support"] for row in report["per_class"]] == [2, 2]
    assert report["per_class"][0]["f1"] == pytest.approx(1.0) and report["overall"]["map"] <= 1.0


def test_label_sets_turn_digits_into_several_yes_no_labels(fake_data_dir):
    data = MNISTDataModule(data_dir=str(fake_data_dir), split=Split(val_size=100), labels=Labels(label_sets=LABEL_SETS))
    assert (data.task, data.num_outputs, data.class_names) == ("multilabel", 2, ["even", "at_least_5"])
    data.setup("fit")
    plain = MNISTDataModule(data_dir=str(fake_data_dir), split=Split(val_size=100))
    plain.setup("fit")
    for index in range(20):
        digit = plain.val_set[index][1]
        assert data.val_set[index][1].tolist() == [int(digit % 2 == 0), int(digit >= 5)]


def test_label_rules_outside_the_classes_or_together_are_refused(fake_data_dir):
    with pytest.raises(UserInputError, match=r"data.labels.label_sets.big \[12\] are not classes of this data"):
        MNISTDataModule(data_dir=str(fake_data_dir), labels=Labels(label_sets={"big": [12]})).setup("fit")
    with pytest.raises(UserInputError, match=r"data\.labels\.positive_classes \(binary\), label_sets \(multilabel\)"):
        MNISTDataModule(labels=Labels(positive_classes=[1], label_sets=LABEL_SETS))


def write_label_csv(root: Path, rows: list[list[int]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["image,cat,dog"]
    for index, flags in enumerate(rows):
        Image.new("L", (12, 12), color=index * 9 % 256).save(root / f"{index}.png")
        lines.append(f"{index}.png," + ",".join(map(str, flags)))
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def test_a_csv_of_label_columns_is_a_multilabel_task(tmp_path):
    data_dir = write_label_csv(tmp_path, [[i % 2, int(i % 3 == 0)] for i in range(30)])
    data = CSVMultilabelDataModule(data_dir=str(data_dir), split=Split(val_size=3, test_size=6))
    assert (data.task, data.num_outputs, data.class_names) == ("multilabel", 2, ["cat", "dog"])
    data.setup("fit")
    image, target = data.train_set[0]
    assert image.shape == (1, 28, 28) and target.dtype == torch.int64 and target.shape == (2,)


def test_a_label_that_is_not_zero_or_one_is_refused_with_its_line(tmp_path):
    data_dir = write_label_csv(tmp_path, [[0, 1], [1, 2], [1, 0]])
    with pytest.raises(UserInputError, match=r"train.csv line 3: every label column \(cat, dog\) must be 0 or 1"):
        CSVMultilabelDataModule(data_dir=str(data_dir), split=Split(val_size=1, test_size=1)).setup("fit")


@pytest.mark.slow
def test_the_multilabel_preset_trains_evaluates_and_reports_to_tensorboard(quick_args, run_dir):
    from helpers import directory_image_steps, directory_scalars

    cli = run_cli(["fit", "--config=multilabel", *quick_args])
    assert cli.trainer.checkpoint_callback.monitor == "val/map"
    assert {"test/map", "test/f1"} <= cli.trainer.callback_metrics.keys()
    run = run_dir / "logs" / "multilabel" / "version_0"
    assert {"val/map", "val/f1", "train/map"} <= directory_scalars(run).keys()
    assert set(directory_image_steps(run)) == {"val/samples", "val/worst"}  # no confusion matrix for labels
    result = subprocess.run(
        [sys.executable, str(EVALUATE), str(run / "checkpoints" / "last.ckpt")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((run / "evaluation" / "test-last" / "metrics.json").read_text())
    assert report["task"] == "multilabel" and [row["class"] for row in report["per_class"]] == ["even", "at_least_5"]
    assert "average_precision" in report["per_class"][0]


@pytest.mark.slow
def test_multilabel_on_real_mnist_learns_both_labels(real_data_dir, run_dir):
    args = ["fit", "--config=multilabel", "--config=debug", f"--data.data_dir={real_data_dir}"]
    args += ["--trainer.limit_train_batches=150", "--trainer.max_epochs=1", "--trainer.limit_val_batches=10"]
    cli = run_cli([*args, "--data.batch_size=64", "--data.loading.eval_batch_size=500", "--test_after_fit=false"])
    val_map, val_f1 = cli.trainer.callback_metrics["val/map"].item(), cli.trainer.callback_metrics["val/f1"].item()
    print(f"\nmultilabel (even, >= 5) after 150 steps: val mAP {val_map:.3f}, macro F1 {val_f1:.3f}")
    assert val_map > 0.95 and val_f1 > 0.85
