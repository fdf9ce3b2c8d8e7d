"""The command line: LightningCLI with this project's defaults, resume handling and error reporting.

    python -m project fit                                   # train on MNIST: configs/base.yaml + mnist.yaml
    python -m project fit --config classic.yaml             # stack a preset on top of the defaults
    python -m project fit --ckpt_path last                  # resume the newest run of the recipe
    python -m project test --ckpt_path logs/mnist/version_0/checkpoints/last.ckpt

Every subcommand starts from ``project/configs/base.yaml`` (no dataset) and, unless it chooses data of its own,
``mnist.yaml`` (:func:`~project.cli.presets.default_configs`); ``--config`` files stack on top in order and other
options override them. A ``--config`` name that is not a file is looked up in ``project/configs/`` (recipes:
what to train) and ``project/configs/modifiers/`` (how: ``debug``). A run is named after its last recipe.

Everything that can be checked before work starts is checked before the Trainer runs (``before_<subcommand>``): the
options, the checkpoint and what may change on resume, the pretrained backbone, and every split of the data. Bad
input ends with one ``error:`` line and exit status 2, and leaves no log folder or checkpoint behind. ``fit`` trains
into a run folder that it holds locked (:mod:`project.training.run_lock`); ``validate`` and ``test`` write no run
folder.
The command's other subcommands (``evaluate``, ``export``, ``predict``, ``sweep``): :mod:`project.cli.commands`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, Checkpoint, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from project.cli.arguments import WholeOptionsParser, add_project_options, prepared_arguments, preset_defaults
from project.cli.preflight import (
    adopt_backbone_normalisation,
    check_averaging,
    check_fits_network,
    check_monitors,
    check_sharding_has_gpus,
    set_up_data,
)
from project.cli.presets import DEFAULT_CONFIG, checked_folder_name, run_name
from project.cli.refusals import SUBCOMMANDS, exit_on_refusal, explain_cli_error, refuse_replaced_callbacks
from project.data import ImageDataModule
from project.errors import UserInputError
from project.files.atomic import written_whole
from project.networks.base import check_input
from project.reports import trackers
from project.reports.tensorboard import RunLogger, TensorBoardReports
from project.training.checkpoints import AtomicCheckpointIO, remove_stale_temporaries, stopped_by_ctrl_c
from project.training.finetuning import check_pretrained_tokenizer, check_same_tokenizer
from project.training.progress import ProgressLog, console_callbacks, quiet_lightning_lines, say
from project.training.resume import ExactResume, check_resume_settings, check_saved_states
from project.training.run_lock import RunLock, first_process
from project.training.runs import Chosen, choose_checkpoint, claim_new_run, next_free_name
from project.training.specs import check_recorded
from project.training.task_module import TaskModule
from project.trusted import refuse_untrusted_code

_EVALUATION = ("validate", "test")
_CHOSEN_CHECKPOINT_ENV = "PROJECT_CHOSEN_CHECKPOINT"
"""``<pid>:<path>``: the checkpoint the first process chose (no path: none), for the processes Lightning's launcher
starts from it later (their parent is that pid): they take it as it is, rather than choosing again when another run
may have written a newer one meanwhile."""
_FIT_ONLY_CALLBACKS = (Checkpoint, LearningRateMonitor, ExactResume, TensorBoardReports, ProgressLog)
_DESCRIPTION = (
    "Train (fit), validate or test a model of this project; every subcommand starts from project/configs/base.yaml "
    "(and mnist.yaml unless it chooses its own data), "
    "--config stacks presets (python -m project fit --help lists every option); --trust MODULE lets configs name "
    "classes of a module of your own (found from the current folder). The command's other subcommands: "
    "python -m project --help."
)
_PRINT_CONFIG = "--print_config"


class ProjectCLI(LightningCLI):
    """LightningCLI that links the data to the model, checks everything before running, resumes into the same run
    folder, and tests after fitting."""

    def __init__(self, *args: Any, extra_callbacks: list[Callback] | None = None, **kwargs: Any) -> None:
        self.extra_callbacks = list(extra_callbacks or [])
        """Callbacks built in Python and added to the configured ones (a sweep's pruning callback): not in the run's
        config, since a config holds plain values only."""
        self.run_name = DEFAULT_CONFIG.stem
        """The run's name: ``--run``'s, else its last recipe preset's (``project.cli.presets.run_name``)."""
        self.named_run: str | None = None
        """The name ``--run`` gives, if any: it names the run folder whatever the logger's name says."""
        self.requested_ckpt_path: str | None = None
        """What ``--ckpt_path`` says (``last``, ``best``, ``hpc``, ``auto`` or a path)."""
        self.chosen: Chosen | None = None
        """The checkpoint ``--ckpt_path`` chose (``project.training.runs.choose_checkpoint``), if any."""
        self.checkpoint: dict[str, Any] | None = None
        """Its content, until the checks before running have used it (Lightning then reads the file itself)."""
        self.run_lock: RunLock | None = None
        """The lock on the run folder this process trains into, released when the command ends, however it ends."""
        self.tracker_configs: list[Namespace] = []
        """The loggers beside the run folder's (``--config mlflow``, ...), built once that folder is taken
        (:meth:`start_trackers`)."""
        self.trackers: list[Logger] = []
        """Those loggers, built; their runs are ended when the command ends."""
        self.trainer: Trainer | None = None
        """The Trainer, once LightningCLI has built it (``--help`` and a refusal end before)."""
        try:
            super().__init__(*args, **kwargs)
        except SystemExit:  # after Ctrl-C (saved as SIGTERM does, or Lightning's exit on a second one): status 130
            if self.trainer is not None and stopped_by_ctrl_c(self.trainer.callbacks):
                raise KeyboardInterrupt from None
            raise
        finally:
            trackers.close(self.trackers)
            if self.run_lock is not None:
                self.run_lock.release()

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # `--weights_only false` would let a checkpoint unpickle arbitrary objects: it is not an option here. The
        # project's own --ckpt_path replaces Lightning's (see add_arguments_to_parser).
        subcommands = LightningCLI.subcommands()
        return {name: subcommands[name] | {"weights_only", "ckpt_path"} for name in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data decides the size of the network's output, so it is never typed twice (the task: TaskModule.setup).
        parser.link_arguments("data.num_outputs", "model.network.init_args.num_outputs", apply_on="instantiate")
        add_project_options(parser)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        replaced = refuse_replaced_callbacks(list(args or []))
        if replaced:
            raise UserInputError(replaced)
        printing = [arg for arg in args or [] if arg.partition("=")[0] == _PRINT_CONFIG]
        if printing:  # jsonargparse prints the config and exits while it parses: check the code it names first
            with contextlib.suppress(argparse.ArgumentError):  # (what it prints need not be complete)
                self.parse_checked(parser, [arg for arg in args if arg not in printing])
        try:
            self.parse_checked(parser, args)
        except argparse.ArgumentError as error:
            raise UserInputError(explain_cli_error(error, parser, args)) from None
        subcommand = self.config.get("subcommand")
        self.named_run = checked_folder_name("run", self.config[subcommand].get("run")) if subcommand else None
        self.run_name = self.named_run or run_name(args)
        # --ckpt_path is the project's: LightningCLI would read the file before any check and let the hyperparameters
        # stored in it override the command line (Lightning #20310, #20801). It is taken out of the config here,
        # resolved and checked before the classes are built, and handed to the Trainer (trainer.ckpt_path) once
        # everything else is checked.
        if subcommand:
            self.requested_ckpt_path = self.config[subcommand].get("ckpt_path")
            self.config[subcommand].ckpt_path = None

    def parse_checked(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args`` into ``self.config``, then refuse code it names that may not be built
        (:func:`project.trusted.refuse_untrusted_code`): nothing has been built yet."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        refuse_untrusted_code(self.config[subcommand] if subcommand else self.config)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        self.tracker_configs = trackers.take_trackers_out(config.trainer)  # (validate and test use no logger)
        if self.subcommand == "fit":
            trackers.check_trackers([str(tracker.class_path) for tracker in self.tracker_configs])
        logger = _tensorboard_logger_args(config.trainer.logger)
        if logger is not None and (self.named_run or not logger.name):  # --run, else the logger's own name
            logger.name = self.run_name
        run_root = Path(logger.save_dir) / logger.name if logger else Path(config.trainer.default_root_dir or ".")
        if self.subcommand in _EVALUATION:  # no run folder (`evaluate` writes reports), no fit-only callbacks
            config.trainer.logger = False
            # Lightning's advice to give again the callbacks that wrote the checkpoint: these are left out on purpose.
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`, callbacks used to create")
        check_sharding_has_gpus(config.trainer.strategy, config.trainer.accelerator)
        if config.trainer.logger is False:  # no run folder to keep the config in (and nothing in the cwd to clobber)
            self.save_config_callback = None
        requested = self.requested_ckpt_path
        parent, _, chosen_there = os.environ.get(_CHOSEN_CHECKPOINT_ENV, "").partition(":")
        if not first_process() and parent == str(os.getppid()):  # started by the first process (Lightning's launcher)
            requested = chosen_there or None
        if requested:
            self.choose(requested, config, logger, run_root)
        if first_process():
            os.environ[_CHOSEN_CHECKPOINT_ENV] = f"{os.getpid()}:{self.chosen.path if self.chosen else ''}"

    def choose(self, requested: str, config: Any, logger: Any, run_root: Path) -> None:
        """Resolve ``--ckpt_path`` (:func:`project.training.runs.choose_checkpoint`); a resumed run writes into its
        folder, which it locks now, before any work (:mod:`project.training.run_lock`)."""
        root_dir = Path(config.trainer.default_root_dir or ".")
        found = choose_checkpoint(requested, self.subcommand, run_root, root_dir)
        if found is None:
            say(f"--ckpt_path auto: no checkpoint under {run_root} or in {root_dir}: starting a new run")
            return
        chosen, content = found
        for note in chosen.notes:
            say(note)
        if self.subcommand == "fit":
            chosen.refuse_nothing_to_train(config.trainer.max_epochs, config.trainer.max_steps)
        self.chosen, self.checkpoint = chosen, content
        if self.subcommand != "fit" or logger is None or chosen.version is None:
            say(f"--ckpt_path {requested}: {chosen.summary()}")
            # A run resumed into a new folder: its best checkpoint's records stay with the old one (said above).
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
            return
        if first_process():  # a second start on a live run stops here, naming the process that trains into it
            self.run_lock = RunLock(run_root / chosen.version)
            self.run_lock.acquire()
        logger.version = chosen.version  # a resumed run keeps writing into the folder its checkpoint came from
        if "log_graph" in logger:
            logger.log_graph = False  # drawn when the run started
        if "purge_step" in logger:  # TensorBoard hides what was logged after the checkpoint: no step twice
            logger.purge_step = chosen.global_step
        # Keep the config of every earlier start of this run: config.yaml, config-resume1.yaml, ...
        self.save_config_kwargs["config_filename"] = next_free_name(run_root / chosen.version, "config", ".yaml")
        # ModelCheckpoint's warning about a folder that holds checkpoints: a resumed run writes on in its own folder.
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        say(f"Resuming {chosen.summary()} into {run_root / chosen.version}")

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        # Every checkpoint is written atomically and read with the checks, whatever the preset's plugins are.
        trainer = self.config_init[self.subcommand]["trainer"]
        plugins = _as_list(trainer.get("plugins"))
        others = [p for p in plugins if isinstance(p, CheckpointIO) and not isinstance(p, AtomicCheckpointIO)]
        if others:
            raise UserInputError(
                f"trainer.plugins: {type(others[0]).__name__} would replace the project's checkpoint IO, which writes "
                f"atomically and reads with weights_only=True; leave CheckpointIO plugins out"
            )
        if not any(isinstance(p, AtomicCheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        callbacks = _as_list(trainer.get("callbacks"))
        if self.subcommand in _EVALUATION:  # the preset's callbacks act in fit only (checkpoints, resume, reports)
            callbacks = [c for c in callbacks if not isinstance(c, _FIT_ONLY_CALLBACKS)]
        callbacks.extend(self.extra_callbacks)
        callbacks += console_callbacks(callbacks, trainer)  # the progress bar and the model's summary line
        return super().instantiate_trainer(plugins=plugins, callbacks=callbacks, **kwargs)

    # -- checks before any work -----------------------------------------------------------------------------------
    def before_fit(self) -> None:
        self.check_before_running("fit")

    def before_validate(self) -> None:
        self.check_before_running("validate")

    def before_test(self) -> None:
        self.check_before_running("test")

    def check_before_running(self, stage: str) -> None:
        """Everything that can fail before the Trainer writes its first file, in the order of cost."""
        model, data, trainer = self.model, self.datamodule, self.trainer
        model.use_data(data)  # the task: the config's, or the project's for the data's targets
        check_input(model.network, data.vocab_size, data.max_length, data.image_shape)
        if stage == "fit":
            check_monitors(trainer.callbacks, model)
            check_averaging(trainer.callbacks, self.checkpoint, str(self.chosen.path) if self.chosen else "")
        if self.checkpoint is not None:
            check_recorded(self.checkpoint, str(self.chosen.path))
            if data.vocab_size:  # a tokenizer trained again is another: the run's ids would change meaning
                recorded, fix = self.checkpoint.get("preprocessing"), "give it: --data.tokenizer <that checkpoint>"
                check_same_tokenizer(recorded, data.preprocessing()["tokenizer"], str(self.chosen.path), fix)
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
                check_saved_states(self.checkpoint, str(self.chosen.path), type(data))
                for stale in remove_stale_temporaries(self.chosen.path.parent):  # (the run is locked: none is live)
                    rank_zero_info(f"Removed {stale}, left by a save that was killed part-way")
            check_fits_network(self.checkpoint, model, str(self.chosen.path))
            self.checkpoint = None  # checked: Lightning reads the file again itself
        elif stage == "fit" and model.tuning.pretrained:
            if data.vocab_size:  # text: the token ids must mean what they meant in pretraining
                check_pretrained_tokenizer(model.tuning.pretrained, data.preprocessing()["tokenizer"])
            rank_zero_info(model.load_pretrained())
        adopt_backbone_normalisation(model.network, data)
        set_up_data(data, trainer, stage, model)  # every split checked, and what depends on the run's length
        if stage == "fit" and self.run_lock is None and first_process():
            self.take_new_run_folder(trainer.logger)
        if stage == "fit" and self.run_lock is not None and self.tracker_configs:
            self.start_trackers(trainer)
        trainer.ckpt_path = str(self.chosen.path) if self.chosen else None  # all checked: Lightning may read it

    def take_new_run_folder(self, logger: Any) -> None:
        """Make and lock a new run's folder, the last step before the Trainer writes (``mkdir``: two runs starting at
        once never share one). Only loggers with a folder of their own per run have one to lock (not fast_dev_run's
        stand-in, nor a tracker's shared ``save_dir``)."""
        if not isinstance(logger, TensorBoardLogger | CSVLogger):
            return
        if isinstance(logger, RunLogger):
            logger.claimed_version = claim_new_run(Path(logger.root_dir))
        self.run_lock = RunLock(Path(logger.log_dir))
        self.run_lock.acquire()

    def start_trackers(self, trainer: Any) -> None:
        """Build the trackers for the run folder just taken or resumed into (:mod:`project.reports.trackers`):
        named after it, their runs of an earlier start continued (their ids in its ``trackers.json``); and put them
        back in the config, so that the run's ``config.yaml`` says what ran."""
        resumed = self.chosen is not None and self.chosen.version is not None
        folder = trackers.RunFolder.of(trainer.logger, self.chosen.global_step if resumed else None)
        record = folder.path / trackers.RECORD
        run_ids = trackers.recorded_run_ids(record)
        self.trackers = trackers.build(self.tracker_configs, folder, run_ids)
        trainer.loggers = [trainer.logger, *self.trackers]
        config = self.config[self.subcommand]
        config.trainer.logger = [config.trainer.logger, *self.tracker_configs]
        recorded = trackers.run_ids(self.trackers, record, run_ids)
        if recorded and recorded != run_ids:
            with written_whole(record, "w") as file:
                json.dump({**run_ids, **recorded}, file, indent=2)

    def after_fit(self) -> None:
        trainer = self.trainer
        trainer.ckpt_path = None  # the test below names its own checkpoint
        if not self.config.fit.test_after_fit or trainer.interrupted:
            return
        keepers = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        best = next((c.best_model_path for c in keepers if c.best_model_path), "")
        if best:
            say(f"Testing the best checkpoint: {best}")
        elif trainer.fast_dev_run:
            say("fast_dev_run saves no checkpoint: testing the weights in memory")
        else:
            why = "no validation ran, so no best checkpoint was chosen" if keepers else "no callback keeps a best one"
            say(f"No best checkpoint ({why}): testing the weights in memory, the state of the last step")
        trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def _as_list(value: Any) -> list[Any]:
    """A Trainer option that takes one object or a list of them (``plugins``, ``callbacks``), as a new list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _tensorboard_logger_args(logger_config: object) -> Any:
    """The ``init_args`` of the configured run-folder logger (``project.reports.trackers.RUN_FOLDER_LOGGERS``), or
    ``None`` when another logger or none is configured (``logger_config`` is then a bool, another class or ``None``;
    trackers listed beside it were taken out: ``take_trackers_out``)."""
    return logger_config.init_args if trackers.owns_run_folder(logger_config) else None


def run_cli(
    args: list[str] | None = None,
    prog: str = "python -m project",
    fit_only: bool = False,
    callbacks: list[Callback] | None = None,
) -> ProjectCLI:
    """Parse ``args`` (default: the command line), run the subcommand and return the CLI with its trainer; ``prog``
    is the command's name in its usage line; ``callbacks`` are added to the configured ones (built in Python: a
    sweep's pruning callback)."""
    args = prepared_arguments(sys.argv[1:] if args is None else args)
    # We pass the (resolved) command line as `args` on purpose; Lightning warns when sys.argv is also set.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
    # Lightning 2.6 calls a torch.utils._pytree API that torch 2.14 deprecates; nothing for users to act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # TensorBoard's graph is traced with torch.jit.trace, which torch 2.14 deprecates; nothing for users to act on.
    warnings.filterwarnings("ignore", message=r"`torch.jit.trace(_method)?` is deprecated", category=FutureWarning)
    quiet_lightning_lines()  # Lightning's tips for its cloud services, lines about accelerators that are not there
    # Errors come back to be said in one line; options are never abbreviated (--data.split.val is not val_size).
    common: dict[str, Any] = {"exit_on_error": False, "allow_abbrev": False}
    parser_kwargs: dict[str, Any] = {**common, "prog": prog, "description": _DESCRIPTION}
    args, defaults = preset_defaults(args)  # base.yaml, and mnist.yaml unless args choose data
    parser_kwargs.update({name: {**common, "default_config_files": defaults} for name in SUBCOMMANDS})
    if fit_only:  # scripts/train.py, project-train: their users type no subcommand
        parser_kwargs["fit"]["usage"] = f"{prog} [--config PRESET ...] [--OPTION VALUE ...]"
    return ProjectCLI(
        TaskModule,
        ImageDataModule,
        subclass_mode_data=True,
        parser_class=WholeOptionsParser,
        auto_configure_optimizers=False,  # the optimizer is configured by model.optimizer and friends
        parser_kwargs=parser_kwargs,
        args=args,
        extra_callbacks=callbacks,
    )


def main(args: list[str] | None = None, prog: str = "python -m project", fit_only: bool = False) -> None:
    """Run the command line; bad input ends with one ``error:`` line and exit status 2, not a traceback.

    A run stopped by SIGTERM (a preempted job) or Ctrl-C writes ``last.ckpt`` at the step boundary (and says so:
    :class:`~project.training.checkpoints.LastCheckpoint`) and exits with 143 (SIGTERM) or 130 (Ctrl-C).
    """
    exit_on_refusal(lambda: run_cli(args, prog, fit_only), "stopped by {signal} (exit status {status})")


def train_main() -> None:
    """``project-train`` and ``scripts/train.py``: fit, then test the best checkpoint."""
    command = Path(sys.argv[0])
    main(["fit", *sys.argv[1:]], prog=str(command) if command.suffix == ".py" else command.name, fit_only=True)
