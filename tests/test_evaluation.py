"""Evaluation: the report files, their numbers checked independently, per-epoch metrics equal to whole-split ones."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import bound_task
from PIL import Image
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import multiclass_f1_score

from project.cli import run_cli
from project.data import Loading, MNISTDataModule, Split
from project.inference.evaluation import compute_report, predict
from project.networks import ConvNet
from project.training.task_module import TaskModule

EVALUATE = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"


@pytest.fixture
def trained_checkpoint(quick_args, run_dir) -> Path:
    run_cli(["fit", *quick_args, "--test_after_fit=false"])
    return run_dir / "logs" / "mnist" / "version_0" / "checkpoints" / "last.ckpt"


def test_evaluate_writes_json_markdown_and_png_into_the_run_folder(trained_checkpoint):
    result = subprocess.run([sys.executable, str(EVALUATE), str(trained_checkpoint)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = trained_checkpoint.parent.parent / "evaluation" / "test-last"
    assert sorted(path.name for path in folder.iterdir()) == ["confusion_matrix.png", "metrics.json", "report.md"]
    assert "| class | precision | recall | f1 | support |" in result.stdout  # the report, on stdout too
    report = json.loads((folder / "metrics.json").read_text())
    assert report["count"] == 200 and sum(row["support"] for row in report["per_class"]) == 200
    assert (folder / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(folder / "confusion_matrix.png").size[0] >= 900  # readable as it opens
    title = (folder / "report.md").read_text().splitlines()[0]
    assert title == "# MNIST: last.ckpt on the test split"  # the dataset's name, not the data module class's


@pytest.mark.slow
def test_the_reports_accuracy_equals_an_independent_count_from_saved_predictions(trained_checkpoint, fake_data_dir):
    subprocess.run([sys.executable, str(EVALUATE), str(trained_checkpoint), "--split", "val"], check=True)
    report = json.loads((trained_checkpoint.parent.parent / "evaluation" / "val-last" / "metrics.json").read_text())
    # Independently: the saved weights, the validation images in order, and a plain count of right answers.
    model = TaskModule.load_from_checkpoint(trained_checkpoint, map_location="cpu").eval()
    data = MNISTDataModule(data_dir=str(fake_data_dir), split=Split(val_size=100))
    data.setup("fit")
    right = total = 0
    (mean,), (std,) = data.normalisation()
    with torch.no_grad():
        for pixels, labels in DataLoader(data.val_set, batch_size=7):  # uint8, as the loaders carry them
            right += (model((pixels.float() / 255 - mean) / std).argmax(dim=1) == labels).sum().item()
            total += len(labels)
    assert report["overall"]["accuracy"] == pytest.approx(right / total, abs=1e-7)
    matrix = torch.tensor(report["confusion_matrix"])
    assert matrix.trace().item() == right and matrix.sum().item() == total


def test_binary_reports_auroc_and_regression_reports_r2():
    torch.manual_seed(0)
    targets = torch.randint(0, 2, (50,))
    probabilities = (targets + torch.rand(50)) / 2
    from project.inference.evaluation import Predictions

    binary = compute_report(Predictions(probabilities, targets), bound_task("binary", 1), ["other", "positive"])
    assert binary["overall"]["auroc"] == pytest.approx(1.0) and len(binary["per_class"]) == 2
    values = torch.linspace(-1, 1, 50)
    regression = compute_report(Predictions(values + 0.1, values), bound_task("regression", 1), [])
    assert regression["overall"]["r2"] == pytest.approx(1 - 0.01 / values.var(unbiased=False).item(), rel=1e-4)
    assert regression["overall"]["mae"] == pytest.approx(0.1, rel=1e-4)


@pytest.mark.slow
def test_per_epoch_metrics_equal_the_whole_split_computed_at_once(real_data_dir, run_dir):
    """Macro F1 is not an average over batches: the epoch value must be computed from all the predictions."""
    torch.manual_seed(0)
    data = MNISTDataModule(
        data_dir=str(real_data_dir), loading=Loading(eval_batch_size=300)
    )  # 17 uneven batches of 5,000
    module = TaskModule(ConvNet(), optimizer=partial(torch.optim.AdamW, lr=0.003))
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=30, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, data)
    logged = {name: value.item() for name, value in trainer.callback_metrics.items()}
    whole = predict(module, normalised(data, DataLoader(data.val_set, batch_size=5000)), module.task)
    report = compute_report(whole, module.task, data.class_names)
    print(f"\nval after 30 steps: per-epoch acc {logged['val/acc']:.6f} / F1 {logged['val/f1']:.6f}; "
          f"whole split acc {report['overall']['accuracy']:.6f} / F1 {report['overall']['f1']:.6f}")  # fmt: skip
    assert logged["val/acc"] == pytest.approx(report["overall"]["accuracy"], abs=1e-6)
    assert logged["val/f1"] == pytest.approx(report["overall"]["f1"], abs=1e-6)
    batch_mean = torch.stack([
        multiclass_f1_score(module(images).argmax(1), labels, 10, average="macro")
        for images, labels in normalised(data, DataLoader(data.val_set, batch_size=300))
    ]).mean().item()  # fmt: skip
    assert batch_mean != pytest.approx(report["overall"]["f1"], abs=1e-6)  # the naive average would be wrong


def normalised(data: MNISTDataModule, loader: DataLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A loader's batches of pixels, normalised as the network takes them."""
    return [data.network_batch(batch, augment=False) for batch in loader]
