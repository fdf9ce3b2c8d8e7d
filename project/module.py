"""The LightningModule: how a network is trained and measured for a task (the "system" around the network).

The network itself is a plain ``nn.Module`` passed in as ``network`` (see :mod:`project.models`); this module adds
the loss for the task, the metrics, the optimizer and learning-rate plan, and (for fine-tuning) the pretrained
backbone and its freeze/unfreeze schedule (see :mod:`project.finetuning`).

=============  ===============================  ========================================================
task           loss                             metrics
=============  ===============================  ========================================================
multiclass     cross-entropy on the logits       accuracy; macro precision, recall, F1
binary         BCE with logits (one output)      accuracy, precision, recall, F1
regression     mean squared error (one output)   MSE, MAE
=============  ===============================  ========================================================
"""

from __future__ import annotations

import inspect
import math
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from project.checkpointing import allowed_class, read_checkpoint
from project.data import Task
from project.errors import TrainingDivergedError, UserInputError
from project.finetuning import LRFactor, load_pretrained_backbone, replan_on_resume
from project.models import Network

Batch = tuple[Tensor, Tensor]


def build_metrics(task: Task, num_classes: int) -> MetricCollection:
    """The metrics of a task, unprefixed; :meth:`MetricCollection.clone` adds ``train/``, ``val/`` or ``test/``."""
    if task == "multiclass":
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "precision": MulticlassPrecision(num_classes, average="macro"),
                "recall": MulticlassRecall(num_classes, average="macro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
    if task == "binary":
        return MetricCollection(
            {
                "acc": BinaryAccuracy(),
                "precision": BinaryPrecision(),
                "recall": BinaryRecall(),
                "f1": BinaryF1Score(),
            }
        )
    return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})


MONITORED_METRIC: dict[str, tuple[str, Literal["min", "max"]]] = {
    "multiclass": ("val/acc", "max"),
    "binary": ("val/acc", "max"),
    "regression": ("val/loss", "min"),
}
"""The validation metric that decides which checkpoint is best, and its direction, per task."""


def describe_network(network: nn.Module) -> dict[str, Any]:
    """A network as plain values (class path and constructor arguments), the form LightningCLI saves."""
    cls = type(network)
    return {
        "class_path": f"{cls.__module__}.{cls.__qualname__}",
        "init_args": dict(getattr(network, "config", {})),
    }


class TaskModule(L.LightningModule):
    """Trains ``network`` for ``task`` with SGD or AdamW, an optional one-cycle schedule, and optional fine-tuning.

    Args:
        network: the network; it returns logits (classification) or values (regression) and has an attribute
            ``num_outputs``: the number of classes for ``multiclass``, 1 for ``binary`` and ``regression``.
        task: ``multiclass``, ``binary`` or ``regression``; the command line takes it from the data module.
        optimizer: ``sgd`` or ``adamw``.
        lr: learning rate; with ``lr_schedule: onecycle`` the peak learning rate.
        momentum: SGD momentum (SGD only).
        nesterov: Nesterov momentum (SGD with momentum > 0 only).
        weight_decay: L2 penalty (SGD) or decoupled weight decay (AdamW).
        lr_schedule: ``none`` (constant) or ``onecycle`` (warm up to ``lr``, then anneal, stepped every batch).
        warmup_fraction: with ``onecycle``, the fraction of all steps spent warming up.
        pretrained: a checkpoint, state dict or safetensors file whose backbone is loaded into the network before
            training starts (the head stays new). Not the same as ``--ckpt_path``, which resumes a run.
        freeze_backbone_epochs: keep the backbone's weights fixed for this many epochs, training only the head.
        backbone_lr: the backbone's learning rate once it trains (default: ``lr``); the head always uses ``lr``.
    """

    def __init__(
        self,
        network: nn.Module,
        task: Task = "multiclass",
        optimizer: Literal["sgd", "adamw"] = "adamw",
        lr: float = 1e-3,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        lr_schedule: Literal["none", "onecycle"] = "none",
        warmup_fraction: float = 0.25,
        pretrained: str | None = None,
        freeze_backbone_epochs: int = 0,
        backbone_lr: float | None = None,
    ) -> None:
        super().__init__()
        check_task_and_optimizer(network, task, optimizer, lr, momentum, nesterov, weight_decay, warmup_fraction)
        check_finetuning(network, freeze_backbone_epochs, backbone_lr)
        with warnings.catch_warnings():
            # A network built in Python (not by the CLI) is stored as plain values by on_save_checkpoint.
            warnings.filterwarnings("ignore", message="Attribute 'network' is an instance of `nn.Module`")
            self.save_hyperparameters()
        self.network = network
        if hasattr(network, "in_channels") and hasattr(network, "image_size"):  # lets TensorBoard draw the graph
            self.example_input_array = torch.zeros(1, network.in_channels, network.image_size, network.image_size)
        num_classes = network.num_outputs if task == "multiclass" else 2
        metrics = build_metrics(task, num_classes)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # The epoch's mean training loss as a metric, so that its state goes into checkpoints with the others'.
        self.train_loss = MeanMetric()
        self.pretrained_loaded = False
        self.epoch_state_to_restore: dict[str, Any] | None = None

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images)

    @property
    def monitored_metric(self) -> tuple[str, Literal["min", "max"]]:
        """The validation metric that picks the best checkpoint for this task, and whether higher or lower is better."""
        return MONITORED_METRIC[self.hparams.task]

    def logged_metric_names(self) -> set[str]:
        """Every metric this module logs, as a callback's ``monitor`` would name it."""
        names = {"train/loss_step", "train/loss_epoch", "val/loss", "test/loss"}
        for metrics in (self.train_metrics, self.val_metrics, self.test_metrics):
            names |= set(metrics.keys())
        return names

    def load_pretrained(self) -> str:
        """Load the backbone of ``pretrained`` into the network (once); a summary of what was loaded."""
        summary = load_pretrained_backbone(self.network, self.hparams.pretrained)
        self.pretrained_loaded = True
        return summary

    def setup(self, stage: str) -> None:
        check_image_shape(self.network, getattr(self.trainer, "datamodule", None))
        # Before Lightning restores a checkpoint: a resumed run overwrites these weights with its own.
        if stage == "fit" and self.hparams.pretrained and not self.trainer.ckpt_path and not self.pretrained_loaded:
            rank_zero_info(self.load_pretrained())

    def on_train_start(self) -> None:
        # After a checkpoint was restored (Lightning calls no on_train_epoch_start for an epoch resumed part-way).
        saved, self.epoch_state_to_restore = self.epoch_state_to_restore, None
        if saved is not None and saved["epoch"] == self.current_epoch:  # resumed in the middle of this epoch
            self.set_epoch_metric_state(saved["state"])
        # The options given to a resumed run win over the checkpoint's learning-rate plan.
        scheduler = self.lr_schedulers()
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            base_lrs = [group["lr"] for group in self.parameter_groups()]
            total = int(self.trainer.estimated_stepping_batches)
            for note in replan_on_resume(self.trainer.optimizers[0], scheduler, base_lrs, total):
                rank_zero_info(f"Resumed with new settings: {note}")

    @property
    def frozen_steps(self) -> int:
        """Optimizer steps during which the backbone is frozen (known once training has started)."""
        if not self.hparams.freeze_backbone_epochs:
            return 0
        steps_per_epoch = math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches)
        return self.hparams.freeze_backbone_epochs * steps_per_epoch

    @property
    def finetune_stage(self) -> str:
        """``frozen`` while the backbone's learning rate is held at 0, then ``unfrozen``; ``full`` without freezing."""
        if not self.hparams.freeze_backbone_epochs:
            return "full"
        return "frozen" if self.trainer.global_step < self.frozen_steps else "unfrozen"

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if self.hparams.task == "multiclass":
            return F.cross_entropy(outputs, targets)
        if self.hparams.task == "binary":
            return F.binary_cross_entropy_with_logits(outputs.squeeze(1), targets.float())
        return F.mse_loss(outputs.squeeze(1), targets.float())

    def predictions(self, outputs: Tensor) -> Tensor:
        """What the metrics compare with the targets: logits (multiclass), probabilities (binary) or values."""
        if self.hparams.task == "multiclass":
            return outputs
        if self.hparams.task == "binary":
            return outputs.squeeze(1).sigmoid()
        return outputs.squeeze(1)

    def _evaluation_step(self, batch: Batch, stage: str, metrics: MetricCollection) -> tuple[Tensor, Tensor]:
        images, targets = batch
        outputs = self(images)
        loss = self.loss(outputs, targets)
        metrics.update(self.predictions(outputs.detach()), targets)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss, outputs

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images, targets = batch
        outputs = self(images)
        loss = self.loss(outputs, targets)
        if not torch.isfinite(loss):  # before backward: the weights stay as they were
            raise diverged(loss, batch, self.trainer.global_step, self.current_epoch, batch_idx)
        self.train_metrics.update(self.predictions(outputs.detach()), targets)
        self.train_loss.update(loss.detach(), weight=len(targets))
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        loss, outputs = self._evaluation_step(batch, "val", self.val_metrics)
        return {"loss": loss, "outputs": outputs.detach()}  # for callbacks (project.callbacks.TensorBoardReports)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, "test", self.test_metrics)

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Predicted classes (multiclass), probabilities of the positive class (binary) or values (regression)."""
        predictions = self.predictions(self(batch[0]))
        return predictions.argmax(dim=1) if self.hparams.task == "multiclass" else predictions

    def parameter_groups(self) -> list[dict[str, Any]]:
        """``backbone`` and ``head`` groups with their own learning rates (one group for other networks)."""
        hp = self.hparams
        if not (hasattr(self.network, "backbone") and hasattr(self.network, "head")):
            return [{"name": "all", "params": list(self.network.parameters()), "lr": hp.lr}]
        return [
            {"name": "backbone", "params": list(self.network.backbone.parameters()), "lr": hp.backbone_lr or hp.lr},
            {"name": "head", "params": list(self.network.head.parameters()), "lr": hp.lr},
        ]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        groups = self.parameter_groups()
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay
            )
        else:
            optimizer = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        total_steps = int(self.trainer.estimated_stepping_batches)
        factors = [
            LRFactor(
                total_steps,
                hp.lr_schedule,
                hp.warmup_fraction,
                frozen_steps=self.frozen_steps if group["name"] == "backbone" else 0,
            )
            for group in groups
        ]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factors)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A network built in Python (not by the command line) sits in hparams as an object; store it as plain
        # values so that the checkpoint loads with torch.load(weights_only=True).
        hparams = checkpoint.get("hyper_parameters", {})
        if isinstance(hparams.get("network"), nn.Module):
            hparams["network"] = describe_network(hparams["network"])
        trainer = self.trainer
        # What a resumed run must keep the same for its steps to line up (checked by the command line).
        checkpoint["run_layout"] = {
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "world_size": trainer.world_size,
        }
        # The training metrics of the epoch so far, per process: a run resumed mid-epoch reports the whole epoch.
        local = {"epoch": self.current_epoch, "state": self.epoch_metric_state()}
        checkpoint["epoch_metrics"] = {"ranks": gather_to_every_rank(trainer, local)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        ranks = checkpoint.get("epoch_metrics", {}).get("ranks", [])
        same_layout = len(ranks) == self.trainer.world_size
        self.epoch_state_to_restore = ranks[self.trainer.global_rank] if same_layout else None

    def epoch_metric_state(self) -> dict[str, Tensor]:
        """The accumulated state of the training metrics (and loss) of the current epoch, as plain tensors."""
        state = {}
        for name, metric in (("metrics", self.train_metrics), ("loss", self.train_loss)):
            metric.persistent(True)
            state.update({f"{name}.{key}": value.detach().cpu() for key, value in metric.state_dict().items()})
            metric.persistent(False)
        return state

    def set_epoch_metric_state(self, state: dict[str, Tensor]) -> None:
        for name, metric in (("metrics", self.train_metrics), ("loss", self.train_loss)):
            prefix = f"{name}."
            metric.persistent(True)
            metric.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
            metric.persistent(False)

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **overrides: Any,
    ) -> TaskModule:
        """The model a checkpoint holds, rebuilt the checked way: the file is read with ``weights_only=True``, and the
        network class it names must be a :class:`~project.models.Network` subclass that is already imported (an
        allow-list); its constructor gets plain values. Lightning's own version lets the file choose what to import
        and instantiate. ``overrides`` replace stored hyperparameters."""
        if weights_only is False or hparams_file is not None:
            raise UserInputError("checkpoints are read with weights_only=True and their own hyperparameters only")
        checkpoint = read_checkpoint(Path(checkpoint_path))
        hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
        spec = overrides.pop("network", None) or hparams.pop("network", None)
        if isinstance(spec, nn.Module):
            network = spec
        elif isinstance(spec, dict) and "class_path" in spec:
            network_class = allowed_class(spec["class_path"], Network, "network")
            network = network_class(**dict(spec.get("init_args") or {}))
        else:
            raise UserInputError(f"{checkpoint_path} does not record its network (hyper_parameters.network)")
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "network"}
        arguments = {k: v for k, v in {**hparams, **overrides}.items() if k in accepted}
        model = cls(network, **arguments)
        model.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
        model.pretrained_loaded = True  # the checkpoint's weights are the ones wanted, not the pretrained backbone
        if map_location is not None:
            model.to(map_location)
        return model


def gather_to_every_rank(trainer: L.Trainer, value: Any) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]``: rank 0 writes the checkpoint, so it needs every rank's value."""
    if trainer.world_size == 1:
        return [value]
    gathered: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def diverged(loss: Tensor, batch: Batch, step: int, epoch: int, batch_index: int) -> TrainingDivergedError:
    """The error for a non-finite training loss, naming its cause when the batch itself holds non-finite numbers."""
    where = f"at step {step} (epoch {epoch}, batch {batch_index})"
    images, targets = batch
    for name, tensor in (("images", images), ("targets", targets)):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return TrainingDivergedError(
                f"the training loss is {loss.item()} {where} because the batch's {name} hold inf or nan: the data is "
                f"broken, not the learning rate; stopping before it reaches the weights",
                data_problem=True,
            )
    return TrainingDivergedError(f"the training loss is {loss.item()} {where}; stopping before it reaches the weights")


def check_task_and_optimizer(
    network: nn.Module,
    task: str,
    optimizer: str,
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    warmup_fraction: float,
) -> None:
    """Refuse settings that cannot train, before any work starts, naming the value and what is allowed."""
    if task not in ("multiclass", "binary", "regression"):
        raise UserInputError(f"model.task must be multiclass, binary or regression, got {task!r}")
    if optimizer not in ("sgd", "adamw"):
        raise UserInputError(f"model.optimizer must be sgd or adamw, got {optimizer!r}")
    num_outputs = getattr(network, "num_outputs", None)
    if num_outputs is None:
        raise UserInputError(f"the network ({type(network).__name__}) must have a num_outputs attribute")
    if task == "multiclass" and num_outputs < 2:
        raise UserInputError(f"a multiclass task needs a network with 2 or more outputs, got {num_outputs}")
    if task != "multiclass" and num_outputs != 1:
        raise UserInputError(f"a {task} task needs a network with exactly 1 output, got {num_outputs}")
    if not (math.isfinite(lr) and lr > 0):
        raise UserInputError(f"model.lr must be a positive finite number, got {lr}")
    if not 0 <= momentum < 1:
        raise UserInputError(f"model.momentum must lie in [0, 1), got {momentum}")
    if momentum and optimizer != "sgd":
        raise UserInputError(f"model.momentum applies to optimizer sgd only, got momentum={momentum} with {optimizer}")
    if nesterov and (optimizer != "sgd" or momentum == 0):
        raise UserInputError("model.nesterov needs optimizer sgd with momentum > 0")
    if weight_decay < 0:
        raise UserInputError(f"model.weight_decay must be 0 or more, got {weight_decay}")
    if not 0 < warmup_fraction < 1:
        raise UserInputError(f"model.warmup_fraction must lie in (0, 1), got {warmup_fraction}")


def check_finetuning(network: nn.Module, freeze_backbone_epochs: int, backbone_lr: float | None) -> None:
    """Refuse fine-tuning settings that cannot work, naming the value and what is allowed."""
    if freeze_backbone_epochs < 0:
        raise UserInputError(f"model.freeze_backbone_epochs must be 0 or more, got {freeze_backbone_epochs}")
    if backbone_lr is not None and not (math.isfinite(backbone_lr) and backbone_lr > 0):
        raise UserInputError(f"model.backbone_lr must be a positive finite number, got {backbone_lr}")
    if (freeze_backbone_epochs or backbone_lr) and not hasattr(network, "backbone"):
        raise UserInputError(
            f"model.freeze_backbone_epochs and model.backbone_lr need a network with a backbone attribute; "
            f"{type(network).__name__} has none"
        )


def check_image_shape(network: nn.Module, datamodule: object) -> None:
    """Refuse data whose images the network cannot take, naming both shapes and the options that set them."""
    data_shape = getattr(datamodule, "image_shape", None)
    network_shape = (getattr(network, "in_channels", None), getattr(network, "image_size", None))
    if data_shape is None or None in network_shape:
        return
    channels, size, _ = data_shape
    if (channels, size) != network_shape:
        raise UserInputError(
            f"the data gives {channels}x{size}x{size} images but the network takes "
            f"{network_shape[0]}x{network_shape[1]}x{network_shape[1]}: set data.channels / data.image_size, or "
            f"model.network.init_args.in_channels / image_size (a pretrained backbone fixes the network's)"
        )
