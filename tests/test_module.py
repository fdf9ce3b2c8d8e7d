"""The LightningModule: loss and metrics by task, optimizer settings, learning, and plain-value checkpoints."""

from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import module_with_task
from torch.utils.data import DataLoader, TensorDataset

from project.data import Split
from project.errors import UserInputError
from project.networks import ConvNet
from project.tasks import Multiclass
from project.training.schedules import OneCycle
from project.training.speed import Speed
from project.training.task_module import TaskModule


def test_multiclass_loss_is_cross_entropy_on_logits():
    module = module_with_task(ConvNet(num_outputs=10), "multiclass")
    logits, targets = torch.randn(8, 10), torch.randint(0, 10, (8,))
    torch.testing.assert_close(module.task.loss(logits, targets), F.cross_entropy(logits, targets))


def test_binary_loss_is_bce_with_logits_on_one_output():
    module = module_with_task(ConvNet(num_outputs=1), "binary")
    logits, targets = torch.randn(8, 1), torch.randint(0, 2, (8,))
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], targets.float())
    torch.testing.assert_close(module.task.loss(logits, targets), expected)


def test_regression_loss_is_mse_on_one_output():
    module = module_with_task(ConvNet(num_outputs=1), "regression")
    outputs, targets = torch.randn(8, 1), torch.randn(8)
    torch.testing.assert_close(module.task.loss(outputs, targets), F.mse_loss(outputs[:, 0], targets))


@pytest.mark.parametrize(
    ("task", "outputs", "expected"),
    [
        ("multiclass", 10, {"acc", "precision", "recall", "f1"}),
        ("binary", 1, {"acc", "precision", "recall", "f1"}),
        ("regression", 1, {"mse", "mae"}),
    ],
)
def test_each_stage_has_the_metrics_of_its_task(task, outputs, expected):
    module = module_with_task(ConvNet(num_outputs=outputs), task)
    for stage, metrics in (
        ("train", module.train_metrics),
        ("val", module.val_metrics),
        ("test", module.test_metrics),
    ):
        assert set(metrics.keys()) == {f"{stage}/{name}" for name in expected}


def test_precision_recall_and_f1_are_macro_averaged():
    module = module_with_task(ConvNet(num_outputs=3), "multiclass")
    # Class 0 always right, classes 1 and 2 always predicted as 0: accuracy 0.5, macro recall 1/3.
    targets = torch.tensor([0, 0, 0, 1, 2, 0])
    logits = F.one_hot(torch.zeros(6, dtype=torch.long), 3).float()
    results = module.val_metrics(logits, targets)
    assert results["val/acc"].item() == pytest.approx(4 / 6)
    assert results["val/recall"].item() == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"optimizer": partial(torch.optim.AdamW, lr=0.0)},
            "model.optimizer.lr must be a positive finite number, got 0.0",
        ),
        ({"optimizer": partial(torch.optim.AdamW, lr=float("inf"))}, "must be a positive finite number, got inf"),
        ({"optimizer": partial(torch.optim.AdamW, lr=-1.0)}, "model.optimizer: Invalid learning rate: -1.0"),
        ({"optimizer": partial(torch.optim.SGD, nesterov=True)}, "model.optimizer: Nesterov momentum requires"),
        ({"optimizer": partial(torch.optim.AdamW, weight_decay=-0.1)}, "model.optimizer: Invalid weight_decay value"),
    ],
)
def test_settings_that_cannot_train_are_refused_by_name(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        TaskModule(ConvNet(), **kwargs)


def test_output_size_must_fit_the_task():
    with pytest.raises(UserInputError, match="a binary task needs a network with exactly 1 output, got 10"):
        module_with_task(ConvNet(num_outputs=10), "binary")


def test_overfitting_one_batch_drives_the_training_loss_close_to_zero():
    torch.manual_seed(0)
    batch = TensorDataset(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
    module = TaskModule(ConvNet(), task=Multiclass(), optimizer=partial(torch.optim.AdamW, lr=1e-3))
    trainer = L.Trainer(
        max_steps=60,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(batch, batch_size=32))
    module.eval()
    with torch.no_grad():
        final_loss = module.task.loss(module(batch.tensors[0]), batch.tensors[1]).item()
    print(f"loss on the memorised batch after 60 steps: {final_loss:.5f}")
    assert final_loss < 0.01


def test_one_cycle_schedule_peaks_at_lr_and_ends_near_zero(fake_data_dir, run_dir):
    from project.data import MNISTDataModule

    schedule = partial(OneCycle, warmup_fraction=0.5)
    module = TaskModule(ConvNet(), optimizer=partial(torch.optim.AdamW, lr=0.01), lr_scheduler=schedule)
    data = MNISTDataModule(data_dir=str(fake_data_dir), batch_size=50, split=Split(val_size=100))
    seen: list[float] = []

    class RecordLR(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[RecordLR()],
        limit_val_batches=0,
    )
    trainer.fit(module, data)
    assert len(seen) == 20
    assert max(seen) == pytest.approx(0.01, rel=0.05) and seen.index(max(seen)) in (9, 10)
    assert seen[-1] < 0.001 and seen[0] < 0.001


def test_checkpoint_of_a_network_built_in_python_loads_with_weights_only(fake_data_dir, run_dir):
    from project.data import MNISTDataModule

    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=2,
        limit_val_batches=1,
        default_root_dir=run_dir,
    )
    trainer.fit(TaskModule(ConvNet(width=8)), MNISTDataModule(data_dir=str(fake_data_dir), split=Split(val_size=100)))
    path = run_dir / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["network"] == {
        "class_path": "project.networks.ConvNet",
        "init_args": ConvNet(width=8).config,
    }


def test_lr_batch_size_scales_the_learning_rate_linearly_with_the_batch(fake_data_dir, run_dir):
    from helpers import quiet_trainer

    from project.data import MNISTDataModule

    module = TaskModule(ConvNet(), optimizer=partial(torch.optim.SGD, lr=0.01), lr_batch_size=25)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(module, MNISTDataModule(data_dir=str(fake_data_dir), batch_size=50, split=Split(val_size=100)))
    assert [group["initial_lr"] for group in trainer.optimizers[0].param_groups] == [pytest.approx(0.02)] * 2


def test_channels_last_keeps_the_outputs_and_changes_the_layout(fake_data_dir):
    torch.manual_seed(0)
    plain = TaskModule(ConvNet()).eval()
    fast = TaskModule(ConvNet(), speed=Speed(channels_last=True)).eval()
    fast.load_state_dict(plain.state_dict())
    fast.configure_model()
    weight = fast.network.backbone[2].weight  # 32 input channels: the layouts differ
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    images = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(fast(images), plain(images))


def test_the_divergence_watch_names_the_first_step_with_a_non_finite_loss():
    from project.errors import TrainingDivergedError
    from project.training.divergence import DivergenceWatch

    watch = DivergenceWatch()
    images, targets = torch.zeros(2, 1, 4, 4), torch.zeros(2)
    for step, loss in enumerate([0.5, float("inf"), float("nan"), 0.4]):
        watch.record(torch.tensor(loss), images, targets, step, epoch=0, batch_index=step)
    with pytest.raises(TrainingDivergedError, match=r"the training loss is inf at step 1 \(epoch 0, batch 1\)"):
        watch.check()
    healthy = DivergenceWatch()
    healthy.record(torch.tensor(0.5), images, targets, 0, 0, 0)
    healthy.check()  # nothing to say


def test_a_learning_rate_batch_size_below_one_is_refused_by_name():
    with pytest.raises(UserInputError, match=r"model\.lr_batch_size must be a positive integer, got 0"):
        TaskModule(ConvNet(), lr_batch_size=0)
