"""The command line: LightningCLI with this project's defaults, resume handling and error reporting.

    python -m project fit                                   # train on MNIST with project/configs/mnist.yaml
    python -m project fit --config classic.yaml             # stack a preset on top of the defaults
    python -m project fit --ckpt_path last                  # resume the newest interrupted run
    python -m project test --ckpt_path logs/mnist/version_0/checkpoints/last.ckpt

Every subcommand starts from ``project/configs/mnist.yaml``; ``--config`` files stack on top of it in order and
other options override both. A ``--config`` name that is not a file is looked up in ``project/configs/`` (recipes:
what to train) and ``project/configs/modifiers/`` (how: ``debug``). A run is named after its last recipe.

Everything that can be checked before work starts is checked before the Trainer runs (``before_<subcommand>``): the
options, the checkpoint and what may change on resume, the pretrained backbone, and every split of the data. Bad
input ends with one ``error:`` line and exit status 2, and leaves no log folder or checkpoint behind.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from project.checkpoints import AtomicCheckpointIO, remove_stale_temporaries
from project.cli_errors import explain_parse_error
from project.data import ImageDataModule
from project.errors import ReportedError, UserInputError, first_line
from project.networks import check_image_shape
from project.preflight import check_fits_network, check_monitors, check_sharding_has_gpus
from project.presets import DEFAULT_CONFIG, resolve_config_args, run_name
from project.resume import check_resume_settings
from project.runs import newest_to_resume, resolve_checkpoint, run_version
from project.task_module import TaskModule

SUBCOMMANDS = ("fit", "validate", "test", "predict")
LOGGER_CLASSES = ("TensorBoardLogger", "RunLogger")


class ProjectCLI(LightningCLI):
    """LightningCLI that links the data to the model, checks everything before running, resumes into the same run
    folder, and tests after fitting."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # `--weights_only false` would let a checkpoint unpickle arbitrary objects: it is not an option here.
        return {name: skipped | {"weights_only"} for name, skipped in LightningCLI.subcommands().items()}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data decides the task and the size of the network's output, so neither is typed twice.
        parser.link_arguments("data.task", "model.task", apply_on="instantiate")
        parser.link_arguments("data.num_outputs", "model.network.init_args.num_outputs", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="fit only: after training, test the best checkpoint (by the monitored metric) on the test split",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as error:
            raise UserInputError(explain_parse_error(str(error), parser, args)) from None
        self.run_name = run_name(args)
        # Keep --ckpt_path from LightningCLI, which would read the file before any check and let the hyperparameters
        # stored in it override the command line (Lightning #20310, #20801). It is resolved and checked below.
        subcommand = self.config.get("subcommand")
        self.requested_ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if subcommand:
            self.config[subcommand].ckpt_path = None

    def before_instantiate_classes(self) -> None:
        self.checkpoint: dict[str, Any] | None = None
        config = self.config[self.subcommand]
        logger = tensorboard_logger_args(config.trainer.logger)
        if logger is not None and not logger.name:
            logger.name = self.run_name
        check_sharding_has_gpus(config.trainer.strategy, config.trainer.accelerator)
        if config.trainer.logger is False:  # no run folder to keep the config in (and nothing in the cwd to clobber)
            self.save_config_callback = None
        if not self.requested_ckpt_path:
            return
        run_root = Path(logger.save_dir) / logger.name if logger else Path(config.trainer.default_root_dir or ".")
        root_dir = Path(config.trainer.default_root_dir or ".")
        if self.requested_ckpt_path == "auto":
            newest = newest_to_resume(run_root, root_dir)
            if newest is None:
                print(f"--ckpt_path auto: no checkpoint under {run_root} or in {root_dir}: starting a new run")
                return
            checkpoint, content = newest
        else:
            checkpoint, content = resolve_checkpoint(self.requested_ckpt_path, run_root, root_dir)
        max_epochs = config.trainer.max_epochs
        if self.subcommand == "fit" and max_epochs not in (None, -1) and max_epochs <= content["epoch"]:
            raise UserInputError(
                f"--trainer.max_epochs={max_epochs} is below the checkpoint's epoch: {checkpoint} is in epoch "
                f"{content['epoch'] + 1} (step {content['global_step']}); resume with max_epochs of at least "
                f"{content['epoch'] + 1}"
            )
        config.ckpt_path = str(checkpoint)
        self.checkpoint = content
        # A resumed run keeps writing into the version folder its checkpoint came from.
        version = run_version(checkpoint, content, run_root)
        if self.subcommand == "fit" and logger is not None and version is not None:
            logger.version = version
            logger.log_graph = False  # drawn when the run started
            if "purge_step" in logger:  # TensorBoard hides what was logged after the checkpoint: no step twice
                logger.purge_step = content["global_step"]
            # Keep the config of every earlier start of this run: config.yaml, config-resume1.yaml, ...
            self.save_config_kwargs["config_filename"] = next_free_name(run_root / version, "config", ".yaml")
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            print(f"Resuming {checkpoint} into {run_root / version}")

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        # Every checkpoint is written atomically and read with the checks, whatever the preset's plugins are.
        plugins = list(self.config_init[self.subcommand]["trainer"].get("plugins") or [])
        plugins = plugins if isinstance(plugins, list) else [plugins]
        others = [p for p in plugins if isinstance(p, CheckpointIO) and not isinstance(p, AtomicCheckpointIO)]
        if others:
            raise UserInputError(
                f"trainer.plugins: {type(others[0]).__name__} would replace the project's checkpoint IO, which writes "
                f"atomically and reads with weights_only=True; leave CheckpointIO plugins out"
            )
        if not any(isinstance(p, AtomicCheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        return super().instantiate_trainer(plugins=plugins, **kwargs)

    # -- checks before any work -----------------------------------------------------------------------------------
    def before_fit(self) -> None:
        self.check_before_running("fit")

    def before_validate(self) -> None:
        self.check_before_running("validate")

    def before_test(self) -> None:
        self.check_before_running("test")

    def before_predict(self) -> None:
        self.check_before_running("predict")

    def check_before_running(self, stage: str) -> None:
        """Everything that can fail before the Trainer writes its first file, in the order of cost."""
        model, data, trainer = self.model, self.datamodule, self.trainer
        check_image_shape(model.network, data)
        if stage == "fit":
            check_monitors(trainer.callbacks, model)
        if self.checkpoint is not None:
            if stage == "fit":
                check_resume_settings(
                    self.checkpoint,
                    model.hparams,
                    data.hparams,
                    type(data),
                    data.shuffle_seed,
                    self.checkpoint.get(type(data).__qualname__, {}).get("shuffle_seed"),
                    trainer.accumulate_grad_batches,
                    trainer.world_size,
                )
                for stale in remove_stale_temporaries(Path(self.config[stage].ckpt_path).parent):
                    rank_zero_info(f"Removed {stale}, left by a save that was killed part-way")
            check_fits_network(self.checkpoint, model, self.config[stage].ckpt_path)
            self.checkpoint = None  # checked: Lightning reads the file again itself
        elif stage == "fit" and model.hparams.pretrained:
            rank_zero_info(model.load_pretrained())
        adopt_backbone_normalisation(model.network, data)
        # Every split, decoded and checked now: a broken test split stops the run before it trains.
        # (Only one process per machine downloads; the others set up once the files are there, or in Trainer.fit.)
        if trainer.local_rank == 0:
            data.prepare_data()
        if trainer.local_rank == 0 or data.files_ready():
            data.setup(stage)

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit or self.trainer.interrupted:
            return
        best = next(
            (c.best_model_path for c in self.trainer.checkpoint_callbacks if getattr(c, "best_model_path", "")), ""
        )
        if best:
            print(f"Testing the best checkpoint: {best}")
        else:
            print("No checkpoint was saved (e.g. fast_dev_run): testing the weights in memory")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def adopt_backbone_normalisation(network: Any, data: Any) -> None:
    """Data whose ``mean`` / ``std`` are null take the normalisation the backbone's library states for its weights."""
    stated = getattr(network, "normalisation", None)
    if not getattr(data, "awaiting_normalisation", False):
        return
    if stated is None:
        data.normalisation()  # refuses, saying what to set
    data.adopt_normalisation(stated["mean"], stated["std"])
    mean, std = data.normalisation()
    size = stated["image_size"]
    rank_zero_info(f"Images normalised with mean {[round(v, 4) for v in mean]} and std {[round(v, 4) for v in std]}: "
                   f"{stated['source']} (it was trained on {size}x{size} images)")  # fmt: skip


def tensorboard_logger_args(logger_config: object) -> Any:
    """The ``init_args`` of the configured TensorBoard logger, or ``None`` when another logger (or none) is used."""
    class_path = getattr(logger_config, "class_path", "") or ""
    if class_path.split(".")[-1] not in LOGGER_CLASSES:
        return None
    return logger_config.init_args


def next_free_name(folder: Path, stem: str, suffix: str) -> str:
    """``config.yaml`` if it is free in ``folder``, else the first free ``config-resume<k>.yaml``."""
    name, k = f"{stem}{suffix}", 0
    while (folder / name).exists():
        k += 1
        name = f"{stem}-resume{k}{suffix}"
    return name


def run_cli(args: list[str] | None = None) -> ProjectCLI:
    """Parse ``args`` (default: the command line), run the subcommand and return the CLI with its trainer."""
    args = resolve_config_args(sys.argv[1:] if args is None else args)
    # We pass the (resolved) command line as `args` on purpose; Lightning warns when sys.argv is also set.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
    # Lightning 2.6 calls a torch.utils._pytree API that torch 2.14 deprecates; nothing for users to act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # TensorBoard's graph is traced with torch.jit.trace, which torch 2.14 deprecates; nothing for users to act on.
    warnings.filterwarnings("ignore", message=r"`torch.jit.trace(_method)?` is deprecated", category=FutureWarning)
    # Errors come back to be said in one line; options are never abbreviated (--model.lr is not --model.lr_schedule).
    parser_kwargs: dict[str, Any] = {"exit_on_error": False, "allow_abbrev": False}
    parser_kwargs.update(
        {
            name: {"default_config_files": [str(DEFAULT_CONFIG)], "exit_on_error": False, "allow_abbrev": False}
            for name in SUBCOMMANDS
        }
    )
    return ProjectCLI(
        TaskModule,
        ImageDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # the optimizer is configured by model.optimizer and friends
        parser_kwargs=parser_kwargs,
        args=args,
    )


def reported_cause(error: BaseException | None) -> ReportedError | None:
    """The :class:`ReportedError` behind ``error``: jsonargparse wraps errors raised while it instantiates classes."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ReportedError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def explain(error: Exception) -> tuple[str, int] | None:
    """The one-line message and exit status for an error that is not a bug, or ``None`` for one that is."""
    reported = reported_cause(error)
    if reported is not None:
        return str(reported), reported.exit_code
    if isinstance(error, MisconfigurationException):  # Lightning's word for a Trainer setting it cannot use
        return f"trainer: {first_line(error)}", 2
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"No space left on device while writing {error.filename or 'a file of the run'}: free some space", 1
    return None


def main(args: list[str] | None = None) -> None:
    """Run the command line; bad input ends with one ``error:`` line and exit status 2, not a traceback.

    A run stopped by SIGTERM (a preempted job) has written ``last.ckpt`` at the step boundary and exits with 143.
    """
    try:
        run_cli(args)
    except SIGTERMException:
        print("stopped by SIGTERM: last.ckpt holds the state at the last step; resume with --ckpt_path last")
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as error:
        explained = explain(error)
        if explained is None:
            raise
        message, exit_code = explained
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(exit_code) from None


def train_main() -> None:
    """``project-train`` and ``scripts/train.py``: fit, then test the best checkpoint."""
    main(["fit", *sys.argv[1:]])
