"""The LightningModule: how a network is trained and measured for a task (the "system" around the network).

The network is a plain ``nn.Module`` passed in as ``network`` (see :mod:`project.networks`); what its outputs mean
(the loss, the scores the metrics take, the metrics) is the task's (see :mod:`project.tasks`); the optimizer is
injected, and the parameter groups come from :mod:`~project.training.finetuning`, the learning-rate plan from
:mod:`~project.training.schedules`. What is left here is the textbook part: the steps, the logging, and what a
checkpoint must hold.
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
from project.networks import Network, check_image_shape  # the package imports every network: the allow-list
from project.networks.lora import LoRA, add_adapters, leave_out_base, restore_base, settings_from
from project.plain import PlainData
from project.tasks import make_task
from project.training.checkpoints import MonitoredModule, read_checkpoint
from project.training.divergence import DivergenceWatch
from project.training.finetuning import build_optimization, check_optimization, load_pretrained_backbone
from project.training.resume import gather_to_every_rank, load_metric_state, metric_state
from project.training.schedules import LRPlan, PlannedRun, Schedule, replan_on_resume, warmup_option
from project.training.specs import check_recorded, from_spec, metric_class, plain_spec

Batch = tuple[Tensor, Tensor]
STAGES = ("train", "val", "test")


def check_arguments(network: Network, lr_batch_size: int | None) -> None:
    """Refuse a network outside the contract and a learning-rate batch size that cannot work, naming what is allowed
    (the other learning-rate options: :func:`~project.training.schedules.check_plan`)."""
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


class TaskModule(MonitoredModule):
    """Trains ``network`` for ``task`` with an injected optimizer, a learning-rate schedule and fine-tuning.

    Args:
        network: the network (a :class:`~project.networks.Network`); the command line sizes its output for the data.
        task: ``multiclass``, ``binary``, ``multilabel`` or ``regression`` (:mod:`project.tasks`); the command line
            takes it from the data module.
        task_options: the task's options (each task's ``options`` says which it takes; an unknown one or a bad value
            is refused): multiclass ``label_smoothing`` (in [0, 1)) and ``class_weights`` (one per class); binary and
            multilabel ``pos_weight`` and ``threshold`` (in (0, 1), default 0.5: decisions, prediction rows and the
            thresholded metrics); every task ``metrics``, extra metrics by name (``{acc_top3: {class_path:
            torchmetrics.classification.MulticlassAccuracy, init_args: {top_k: 3}}}``: a torchmetrics ``Metric``
            class already imported; ``num_classes`` or ``num_labels`` filled in; each tried on a stand-in batch of the
            task, so that one that would fail mid-run is refused now). Recorded in checkpoints with every
            option's value; fixed on resume. ``--model.task_options.label_smoothing 0.1`` adds to a preset's options;
            the ``task_options`` of stacked ``--config`` files are merged (later keys win).
        optimizer: called with the parameter groups; the command line builds it from ``--model.optimizer`` (a
            ``torch.optim`` class and its arguments, e.g. ``--model.optimizer SGD --model.optimizer.lr 0.01``);
            default ``torch.optim.AdamW`` with its own defaults.
        lr_schedule: the learning rate over the run, as a function of the optimizer step (docs/schedules.md):
            ``none`` (constant), ``onecycle`` (warm up to the optimizer's lr, then anneal), ``cosine`` or ``linear``
            (linear warm-up, then a cosine or straight decay to ``min_lr_fraction`` of it), ``step`` (times
            ``lr_gamma`` every ``lr_step_epochs`` epochs, or at each of a list of epochs). Resumed exactly; a
            resumed run of another length stretches what is left of onecycle, cosine and linear.
        warmup_fraction: with ``onecycle``, ``cosine`` and ``linear``, the fraction of all steps spent warming up
            (default 0.2, when the warm-up is given no other way).
        warmup_epochs: the warm-up in epochs instead, exact in optimizer steps (an epoch of N batches accumulated
            A at a time is ceil(N / A) steps); it keeps its steps when a resumed run changes its length.
        warmup_steps: the warm-up in optimizer steps instead. One of ``warmup_fraction``, ``warmup_epochs`` and
            ``warmup_steps`` at a time; a warm-up that would not end before the run does is refused.
        min_lr_fraction: with ``cosine`` and ``linear``, the fraction of the learning rate they end at (default 0).
        lr_gamma: with ``step``, the multiplier at each drop (default 0.1).
        lr_step_epochs: with ``step``, when it drops: every N epochs (``3``), or at each of these epochs (``[30, 60]``).
        lr_scheduler: a ``torch.optim.lr_scheduler`` class and its arguments instead of ``lr_schedule`` (which must
            then be ``none``; not with ``freeze_backbone_epochs``): ``--model.lr_scheduler StepLR
            --model.lr_scheduler.step_size 2``. ReduceLROnPlateau follows the task's monitored metric. Resumed
            exactly (its own state); not rescaled when a resumed run has another length.
        lr_scheduler_interval: step ``lr_scheduler`` every ``epoch`` (torch's convention) or every optimizer ``step``.
        pretrained: a checkpoint, state dict or safetensors file whose backbone is loaded into the network before
            training starts (the head stays new). Not the same as ``--ckpt_path``, which resumes a run.
        freeze_backbone_epochs: keep the backbone's weights fixed for this many epochs, training only the head.
        backbone_lr: the backbone's learning rate once it trains (default: the optimizer's, as the head's).
        lr_batch_size: the batch size the learning rates are meant for; with another ``data.batch_size`` they are
            scaled linearly (``lr * batch_size / lr_batch_size``, the warm-up of the one-cycle plan softening the
            start). Default: no scaling.
        channels_last: hold weights and images in channels-last memory layout (faster convolutions on GPUs).
        compile: compile the network with ``torch.compile`` (the first steps take longer).
        lora: train low-rank adapters on the backbone instead of its weights (:mod:`project.networks.lora`;
            ``--model.lora.rank 8``); the base is the network's weights after ``pretrained``.
    """

    def __init__(
        self,
        network: Network,
        task: str = "multiclass",
        task_options: dict[str, PlainData] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_schedule: Schedule = "none",
        warmup_fraction: float | None = None,
        warmup_epochs: int | None = None,
        warmup_steps: int | None = None,
        min_lr_fraction: float = 0.0,
        lr_gamma: float | None = None,
        lr_step_epochs: int | list[int] | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "epoch",
        pretrained: str | None = None,
        freeze_backbone_epochs: int = 0,
        backbone_lr: float | None = None,
        lr_batch_size: int | None = None,
        channels_last: bool = False,
        compile: bool = False,
        lora: LoRA | None = None,
    ) -> None:
        super().__init__()
        check_arguments(network, lr_batch_size)
        self.task = make_task(task, network.num_outputs, task_options, resolve=metric_class)
        self.make_optimizer, self.make_scheduler = optimizer or torch.optim.AdamW, lr_scheduler
        adapters, warmups = settings_from(lora), (warmup_fraction, warmup_epochs, warmup_steps)
        lora = asdict(adapters) if adapters else None  # saved below as plain values
        with warnings.catch_warnings():
            # A network built in Python (not by the CLI) is stored as plain values by on_save_checkpoint.
            warnings.filterwarnings("ignore", message="Attribute 'network' is an instance of `nn.Module`")
            self.save_hyperparameters()
        # What resume compares (the command line's too), as it acts: every task option, the warm-up's fraction or None
        self.hparams.update(task_options=self.task.task_options, warmup_fraction=warmup_option(*warmups))
        check_optimization(self.make_optimizer, self.lr_plan, freeze_backbone_epochs, backbone_lr)
        self.network = network
        self.pretrained_loaded, self.pretrained_summary = False, ""
        if adapters is not None:  # the base takes its pretrained weights before the adapters go on
            if pretrained:
                self.load_pretrained()
            add_adapters(network, adapters)
        size = network.image_size
        self.example_input_array = torch.zeros(1, network.in_channels, size, size)  # lets TensorBoard draw the graph
        metrics = self.task.metrics()
        self.train_metrics, self.val_metrics, self.test_metrics = (metrics.clone(prefix=f"{s}/") for s in STAGES)
        # The epoch's mean training loss as a metric, so that its state goes into checkpoints with the others'.
        self.train_loss = MeanMetric()
        self.divergence, self.planned = DivergenceWatch(), PlannedRun()  # planned: what a resumed run re-plans to
        self.epoch_state_to_restore: dict[str, Any] | None = None

    @property
    def lr_plan(self) -> LRPlan:
        """The learning-rate options together (:mod:`~project.training.schedules`)."""
        hp = self.hparams
        return LRPlan(
            hp.lr_schedule,
            hp.warmup_fraction,
            hp.min_lr_fraction,
            hp.lr_gamma,
            hp.lr_step_epochs,
            self.make_scheduler,
            hp.lr_scheduler_interval,
            warmup_epochs=hp.warmup_epochs,
            warmup_steps=hp.warmup_steps,
        )

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

    def load_pretrained(self) -> str:
        """Load the backbone of ``pretrained`` into the network (once); a summary of what was loaded."""
        if not self.pretrained_loaded:
            self.pretrained_summary = load_pretrained_backbone(self.network, self.hparams.pretrained)
            self.pretrained_loaded = True
        return self.pretrained_summary

    # -- steps -------------------------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.network(images)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
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

    def evaluation_step(self, batch: Batch, stage: str, metrics: MetricCollection) -> tuple[Tensor, Tensor]:
        images, targets = batch
        outputs = self(images)
        loss = self.task.loss(outputs, targets)
        metrics.update(self.task.scores(outputs), targets)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss, outputs

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        loss, outputs = self.evaluation_step(batch, "val", self.val_metrics)
        return {"loss": loss, "outputs": outputs.detach()}  # for project.reports.tensorboard.TensorBoardReports

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluation_step(batch, "test", self.test_metrics)

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """The task's decisions: class indices, 0/1, 0/1 vectors of labels, or values."""
        return self.task.decisions(self(batch[0]))

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        if self.trainer.global_step % self.trainer.log_every_n_steps == 0:  # the host syncs here anyway
            self.divergence.check()

    def on_train_epoch_end(self) -> None:
        self.divergence.check()

    # -- optimization ------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.hparams.channels_last:
            self.network.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            self.network.compile()  # compiles the call, keeps the module and its parameter names as they are

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        data = self.trainer.datamodule
        batch_size = data.batch_size if isinstance(data, ImageDataModule) else None
        if hp.lr_batch_size and not batch_size:
            raise UserInputError("model.lr_batch_size scales the learning rate by data.batch_size, which is unknown")
        optimizer, scheduler = build_optimization(
            self.network,
            self.make_optimizer,
            self.trainer,
            self.lr_plan,
            hp.freeze_backbone_epochs,
            hp.backbone_lr,
            self.monitored_metric,
            lr_scale=batch_size / hp.lr_batch_size if hp.lr_batch_size else 1.0,
        )
        self.planned.lrs = [group["initial_lr"] for group in optimizer.param_groups]  # before a checkpoint restores
        self.planned.steps = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        check_image_shape(self.network, data.image_shape if isinstance(data, ImageDataModule) else None)
        # Before Lightning restores a checkpoint: a resumed run overwrites these weights with its own.
        if stage == "fit" and self.hparams.pretrained and not self.trainer.ckpt_path and not self.pretrained_loaded:
            rank_zero_info(self.load_pretrained())

    def on_train_start(self) -> None:
        # After a checkpoint was restored (Lightning calls no on_train_epoch_start for an epoch resumed part-way).
        saved, self.epoch_state_to_restore = self.epoch_state_to_restore, None
        if saved is not None and saved["epoch"] == self.current_epoch:  # resumed in the middle of this epoch
            load_metric_state(self.train_metrics, saved["metrics"])
            load_metric_state(self.train_loss, saved["loss"])
        # The options given to a resumed run win over the checkpoint's learning-rate plan.
        optimizer, scheduler = self.trainer.optimizers[0], self.trainer.lr_scheduler_configs[0].scheduler
        planned = self.planned
        for note in replan_on_resume(optimizer, scheduler, planned.lrs, planned.steps, planned.checkpoint_steps):
            rank_zero_info(f"Resumed with new settings: {note}")

    # -- checkpoints -------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.divergence.check()  # never a checkpoint of a run whose loss stopped being finite
        # Objects built in Python (not by the command line) are stored as plain values, so that the checkpoint loads
        # with torch.load(weights_only=True).
        hparams = checkpoint.get("hyper_parameters", {})
        for name in ("network", "optimizer", "lr_scheduler"):
            if hparams.get(name) is not None and not isinstance(hparams[name], dict):
                hparams[name] = plain_spec(hparams[name])
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
        network, optimizer = hparams.pop("network", None), hparams.pop("optimizer", None)
        lr_scheduler = hparams.pop("lr_scheduler", None)
        if not isinstance(network, nn.Module):
            network = from_spec(network, Network, "network", source)
        if isinstance(optimizer, dict):
            optimizer = from_spec(optimizer, torch.optim.Optimizer, "optimizer", source, build=False)
        if isinstance(lr_scheduler, dict):
            lr_scheduler = from_spec(lr_scheduler, LRScheduler, "lr_scheduler", source, build=False)
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "network", "optimizer", "lr_scheduler"}
        kept = {k: v for k, v in hparams.items() if k in accepted}
        model = cls(network, optimizer=optimizer, lr_scheduler=lr_scheduler, **kept)
        restore_base(checkpoint, model, source)
        model.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
        model.pretrained_loaded = True  # the checkpoint's weights are the ones wanted, not the pretrained backbone
        return model
