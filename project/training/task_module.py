"""The LightningModule: how a network is trained and measured for a task (the "system" around the network).

It is given its pieces, each chosen by class path in a config and checked by itself: the network (a plain
``nn.Module``, :mod:`project.networks`), the task (what the outputs mean: loss, scores, metrics; :mod:`project.tasks`),
the optimizer and the learning-rate schedule (:mod:`~project.training.schedules`), fine-tuning and LoRA. This module
holds the textbook part: the steps, the logging, and what a checkpoint must hold.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric, MetricCollection

from project.data import ImageDataModule
from project.errors import UserInputError
from project.networks import Network, check_input  # the package imports every network: the allow-list
from project.networks.lora import LoRA, add_adapters, leave_out_base, restore_base
from project.tasks import TASKS, Task
from project.training.checkpoints import MonitoredModule, read_checkpoint
from project.training.divergence import DivergenceWatch
from project.training.finetuning import FineTuning, build_optimizer, check_optimization, load_pretrained_backbone
from project.training.resume import gather_to_every_rank, load_metric_state, metric_state
from project.training.schedules import (
    Constant,
    PlannedRun,
    PlannedSchedule,
    RunSteps,
    replan_on_resume,
    steps_per_epoch,
)
from project.training.specs import PROJECT_VERSION, check_recorded, from_spec, metric_class, plain_spec
from project.training.speed import Speed
from project.training.torch_schedulers import momentum_of, torch_scheduler_config

_Batch = tuple[Tensor, Tensor]
_STAGES = ("train", "val", "test")


def _check_arguments(network: Network, lr_batch_size: int | None, speed: Speed | None) -> None:
    """Refuse a network outside the contract, a learning-rate batch size that cannot work and an image layout for
    token ids, naming what is allowed."""
    if not isinstance(network, Network):
        raise UserInputError(
            f"model.network must be a project.networks.Network, got a {type(network).__name__}: wrap a module "
            "whose last layer is an nn.Linear in project.networks.AdaptedNetwork"
        )
    missing = sorted({"backbone", "head"} - dict(network.named_children()).keys())
    if not isinstance(vars(network).get("config"), dict):
        missing.append("config (a dict of its arguments)")
    if missing:
        raise UserInputError(
            f"{type(network).__name__} does not keep the Network contract: its constructor sets no "
            f"{', '.join(missing)} (see project.networks.base.Network)"
        )
    if lr_batch_size is not None and lr_batch_size < 1:
        raise UserInputError(f"model.lr_batch_size must be a positive integer, got {lr_batch_size}")
    if network.vocab_size and speed is not None and speed.channels_last:
        raise UserInputError(
            "model.speed.channels_last lays out images, and a text network takes token ids: leave it false"
        )


class TaskModule(MonitoredModule):
    """Trains ``network`` for ``task`` with an injected optimizer, learning-rate schedule and fine-tuning.

    Args:
        network: the network (a :class:`~project.networks.Network`); the command line sizes its output for the data.
        task: what the outputs mean (:mod:`project.tasks`): ``--model.task Multiclass --model.task.label_smoothing
            0.1``, or a class of your own. Default: the project's task for the data's targets. It is taken when the
            model meets its data (:meth:`use_data`, at ``setup``), or by :meth:`use_task`.
        optimizer: called with the parameter groups: ``--model.optimizer SGD --model.optimizer.lr 0.01`` (any
            ``torch.optim`` class and its arguments); default ``torch.optim.AdamW``.
        lr_scheduler: the learning rate over the run: one of the project's schedules (``--model.lr_scheduler
            OneCycle``, ``Cosine``, ``Linear``, ``Steps``, ``Constant``: :mod:`~project.training.schedules`, exact
            and rescaled on resume) or any ``torch.optim.lr_scheduler`` class; default :class:`Constant`.
        finetuning: a pretrained backbone, frozen epochs, its learning rate (:class:`FineTuning`).
        lora: train low-rank adapters on the backbone instead of its weights (:mod:`project.networks.lora`).
        lr_batch_size: the batch size the learning rates are meant for; with another ``data.batch_size`` they are
            scaled linearly (``lr * batch_size / lr_batch_size``). Default: no scaling.
        speed: channels-last memory layout, ``torch.compile`` (:class:`~project.training.speed.Speed`).
    """

    def __init__(
        self,
        network: Network,
        task: Task | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        finetuning: FineTuning | None = None,
        lora: LoRA | None = None,
        lr_batch_size: int | None = None,
        speed: Speed | None = None,
    ) -> None:
        super().__init__()
        _check_arguments(network, lr_batch_size, speed)
        self.network = network
        self.task = task
        self.make_optimizer = optimizer or torch.optim.AdamW
        self.make_scheduler = lr_scheduler or Constant
        self.tuning = finetuning or FineTuning()
        self.speed = speed or Speed()
        self.record_hyperparameters(lora)
        check_optimization(self.make_optimizer, self.make_scheduler, self.tuning)
        self.pretrained_summary: str | None = None
        if lora is not None:  # the base takes its pretrained weights before the adapters go on
            self.load_pretrained()
            add_adapters(network, lora)
        if not self.speed.compile:  # what TensorBoard's graph is traced with (torch.jit cannot trace a compiled one)
            self.example_input_array = network.example_input()
        self.train_loss = MeanMetric()  # the epoch's mean training loss, its state in checkpoints with the metrics'
        self.divergence = DivergenceWatch()
        self.planned = PlannedRun()  # what a resumed run re-plans its learning rate to
        self.epoch_state_to_restore: dict[str, Any] | None = None

    def record_hyperparameters(self, lora: LoRA | None) -> None:
        """Record the arguments (Lightning's ``hparams``), the pieces built in Python as plain values."""
        with warnings.catch_warnings():
            # A network built in Python (not by the CLI) is stored as plain values by on_save_checkpoint.
            warnings.filterwarnings("ignore", message="Attribute 'network' is an instance of `nn.Module`")
            self.save_hyperparameters(frame=inspect.currentframe().f_back)  # __init__'s arguments
        adapters = asdict(lora) if lora else None
        self.hparams.update(finetuning=asdict(self.tuning), speed=asdict(self.speed), lora=adapters)

    def use_task(self, task: Task) -> None:
        """Take ``task``, bound to the network's outputs, and its metrics for each stage."""
        self.task = task.bind(self.network.num_outputs, metric_class)
        self.hparams["task"] = plain_spec(task)
        metrics = task.metric_collection()
        self.train_metrics, self.val_metrics, self.test_metrics = (metrics.clone(prefix=f"{s}/") for s in _STAGES)

    def use_data(self, data: ImageDataModule) -> None:
        """Take the task given, or the project's task for the data's targets, unless it is taken already; refuse a
        task that takes other targets than the data's."""
        task = self.task if self.task is not None else TASKS[data.task]()
        if task.name != data.task:
            raise UserInputError(
                f"model.task {type(task).__name__} takes {task.name} targets, and the data gives {data.task} "
                f"targets: name a task for them (the project's is {TASKS[data.task].__name__})"
            )
        if not task.num_outputs:  # not bound yet
            self.use_task(task)

    def check_run(self, run: RunSteps) -> None:
        """Refuse a schedule that does not fit a run of ``run``'s steps (a warm-up longer than the run)."""
        check_optimization(self.make_optimizer, self.make_scheduler, self.tuning, run)

    @property
    def monitored_metric(self) -> tuple[str, Literal["min", "max"]]:
        """The validation metric that picks the best checkpoint for this task, and whether higher or lower is better."""
        return self.task.monitor

    def logged_metric_names(self) -> set[str]:
        """Every metric this module logs, as a callback's ``monitor`` would name it."""
        names = {"train/loss_step", "train/loss_epoch", "val/loss", "test/loss"}
        for metrics in (self.train_metrics, self.val_metrics, self.test_metrics):
            names |= set(metrics.keys())
        return names

    def load_pretrained(self) -> str | None:
        """Load the backbone of the fine-tuning's ``pretrained`` file into the network (once); a summary of what was
        loaded, ``None`` without one."""
        if self.tuning.pretrained and self.pretrained_summary is None:
            self.pretrained_summary = load_pretrained_backbone(self.network, self.tuning.pretrained)
        return self.pretrained_summary

    # -- steps -------------------------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        return self.network(self.speed.images(images))

    def training_step(self, batch: _Batch, batch_idx: int) -> Tensor:
        images, targets = batch
        outputs = self(images)
        loss = self.task.loss(outputs, targets)
        self.divergence.record(loss, images, targets, self.trainer.global_step, self.current_epoch, batch_idx)
        self.train_metrics.update(self.task.scores(outputs.detach()), self.task.metric_targets(targets))
        self.train_loss.update(loss.detach(), weight=len(targets))
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def evaluation_step(self, batch: _Batch, stage: str, metrics: MetricCollection) -> tuple[Tensor, Tensor]:
        images, targets = batch
        outputs = self(images)
        loss = self.task.loss(outputs, targets)
        metrics.update(self.task.scores(outputs), targets)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss, outputs

    def validation_step(self, batch: _Batch, batch_idx: int) -> dict[str, Tensor]:
        loss, outputs = self.evaluation_step(batch, "val", self.val_metrics)
        return {"loss": loss, "outputs": outputs.detach()}  # for project.reports.tensorboard.TensorBoardReports

    def test_step(self, batch: _Batch, batch_idx: int) -> None:
        self.evaluation_step(batch, "test", self.test_metrics)

    def predict_step(self, batch: _Batch, batch_idx: int) -> Tensor:
        """The task's decisions: class indices, 0/1, 0/1 vectors of labels, or values."""
        return self.task.decisions(self(batch[0]))

    def on_train_batch_end(self, outputs: Any, batch: _Batch, batch_idx: int) -> None:
        if self.trainer.global_step % self.trainer.log_every_n_steps == 0:  # the host syncs here anyway
            self.divergence.check()

    def on_train_epoch_end(self) -> None:
        self.divergence.check()

    # -- optimization ------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        self.speed.apply(self.network)

    def configure_optimizers(self) -> Any:
        data = self.trainer.datamodule
        batch_size = data.batch_size if isinstance(data, ImageDataModule) else None
        if self.hparams.lr_batch_size and not batch_size:
            raise UserInputError("model.lr_batch_size scales the learning rate by data.batch_size, which is unknown")
        scale = batch_size / self.hparams.lr_batch_size if self.hparams.lr_batch_size else 1.0
        optimizer = build_optimizer(self.network, self.make_optimizer, self.tuning.backbone_lr, scale)
        self.planned.steps = int(self.trainer.estimated_stepping_batches)
        momentum = momentum_of(optimizer)  # before a scheduler that cycles it takes it over
        scheduler = self.make_scheduler(optimizer)
        if isinstance(scheduler, PlannedSchedule):
            by_epochs = scheduler.counts_epochs() or self.tuning.freeze_backbone_epochs
            per_epoch = steps_per_epoch(self.trainer) if by_epochs else 0
            frozen = {"backbone": self.tuning.freeze_backbone_epochs * per_epoch}
            scheduler.plan(RunSteps(self.planned.steps, per_epoch, frozen))
            config = {"scheduler": scheduler, "interval": "step"}
        else:
            config, note = torch_scheduler_config(scheduler, self.make_scheduler, self.monitored_metric, momentum)
            if note is not None:
                rank_zero_info(note)
        self.planned.lrs = [group["initial_lr"] for group in optimizer.param_groups]  # before a checkpoint restores
        return {"optimizer": optimizer, "lr_scheduler": config}

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        if isinstance(data, ImageDataModule):
            self.use_data(data)
        elif self.task is None:
            raise UserInputError(
                "model.task: without a data module of the project, name the task (TaskModule(network, task=...))"
            )
        elif not self.task.num_outputs:
            self.use_task(self.task)
        if isinstance(data, ImageDataModule):
            check_input(self.network, data.vocab_size, data.max_length, data.image_shape)
        # Before Lightning restores a checkpoint: a resumed run overwrites these weights with its own.
        if stage == "fit" and not self.trainer.ckpt_path and self.tuning.pretrained and self.pretrained_summary is None:
            rank_zero_info(self.load_pretrained())

    def on_train_start(self) -> None:
        # After a checkpoint was restored (Lightning calls no on_train_epoch_start for an epoch resumed part-way).
        saved, self.epoch_state_to_restore = self.epoch_state_to_restore, None
        if saved is not None and saved["epoch"] == self.current_epoch:  # resumed in the middle of this epoch
            load_metric_state(self.train_metrics, saved["metrics"])
            load_metric_state(self.train_loss, saved["loss"])
        # The options given to a resumed run win over the checkpoint's learning-rate plan.
        optimizer, scheduler = self.trainer.optimizers[0], self.trainer.lr_scheduler_configs[0].scheduler
        for note in replan_on_resume(optimizer, scheduler, self.planned):
            rank_zero_info(f"Resumed with new settings: {note}")

    # -- checkpoints -------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.divergence.check()  # never a checkpoint of a run whose loss stopped being finite
        # Objects built in Python (not by the command line) are stored as plain values, so that the checkpoint loads
        # with torch.load(weights_only=True).
        hparams = checkpoint.get("hyper_parameters", {})
        for name in ("network", "optimizer", "lr_scheduler", "task"):
            if hparams.get(name) is not None and not isinstance(hparams[name], dict):
                hparams[name] = plain_spec(hparams[name])
        checkpoint["project_version"] = PROJECT_VERSION
        overrides = self.network.checkpoint_overrides  # a library network: rebuilt without a download
        if self.hparams.lora:  # only what trains; the base is rebuilt from its weights
            leave_out_base(checkpoint, self)
        elif overrides and isinstance(hparams.get("network"), dict):
            spec = hparams["network"]
            hparams["network"] = {**spec, "init_args": {**(spec.get("init_args") or {}), **overrides}}
        trainer = self.trainer
        # What a resumed run must keep the same for its steps to line up (checked by the command line).
        checkpoint["run_layout"] = {
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "world_size": trainer.world_size,
        }
        # The training metrics of the epoch so far, per process: a run resumed mid-epoch reports the whole epoch.
        local = {
            "epoch": self.current_epoch,
            "metrics": metric_state(self.train_metrics),
            "loss": metric_state(self.train_loss),
        }
        checkpoint["epoch_metrics"] = {"ranks": gather_to_every_rank(trainer, local)}
        checkpoint["lr_plan"] = {"total_steps": self.planned.steps}  # a resumed run of another length says so
        # How to prepare a new image and name the outputs (prediction and export read it).
        if isinstance(trainer.datamodule, ImageDataModule):
            checkpoint["preprocessing"] = trainer.datamodule.preprocessing()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_base(checkpoint, self, "the checkpoint")  # before Lightning loads its state dict
        self.planned.checkpoint_steps = checkpoint.get("lr_plan", {}).get("total_steps")
        ranks = checkpoint.get("epoch_metrics", {}).get("ranks", [])
        same_layout = len(ranks) == self.trainer.world_size
        self.epoch_state_to_restore = ranks[self.trainer.global_rank] if same_layout else None

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
        classes it names must be on allow-lists (an already imported :class:`~project.networks.Network` subclass, a
        ``torch.optim`` optimizer); their arguments are plain values. Lightning's own version lets the file choose
        what to import and instantiate. ``overrides`` replace stored hyperparameters (``network=`` a built one)."""
        if weights_only is False or hparams_file is not None:
            raise UserInputError("checkpoints are read with weights_only=True and their own hyperparameters only")
        model = cls.from_checkpoint(read_checkpoint(Path(checkpoint_path)), checkpoint_path, strict, **overrides)
        return model.to(map_location) if map_location is not None else model

    @classmethod
    def from_checkpoint(
        cls, checkpoint: dict[str, Any], source: str | Path, strict: bool | None = None, **overrides: Any
    ) -> TaskModule:
        """:meth:`load_from_checkpoint` of a checkpoint already read (``read_checkpoint``), named ``source``."""
        check_recorded(checkpoint, source)
        hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
        hparams.update(overrides)
        network, task = hparams.pop("network", None), hparams.pop("task", None)
        if not isinstance(network, nn.Module):
            network = from_spec(network, Network, "network", source)
        if isinstance(task, dict):
            task = from_spec(task, Task, "task", source)
        pieces = {"optimizer": torch.optim.Optimizer, "lr_scheduler": LRScheduler}
        for name, base in pieces.items():
            if isinstance(hparams.get(name), dict):
                hparams[name] = from_spec(hparams[name], base, name, source, build=False)
        for name, piece in (("finetuning", FineTuning), ("lora", LoRA), ("speed", Speed)):
            if isinstance(hparams.get(name), dict):
                hparams[name] = piece(**hparams[name])
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "network", "task"}
        model = cls(network, task, **{k: v for k, v in hparams.items() if k in accepted})
        model.use_task(task)
        restore_base(checkpoint, model, source)
        model.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
        model.pretrained_summary = f"the weights of {source}"  # not the pretrained backbone: the checkpoint's
        return model
