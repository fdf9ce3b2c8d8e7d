"""The command line: LightningCLI with this project's defaults, resume handling and error reporting.

    python -m project fit                                   # train on MNIST with project/configs/mnist.yaml
    python -m project fit --config classic.yaml             # stack a preset on top of the defaults
    python -m project fit --ckpt_path last                  # resume the newest interrupted run
    python -m project test --ckpt_path logs/mnist/version_0/checkpoints/last.ckpt

Every subcommand starts from ``project/configs/mnist.yaml``; ``--config`` files stack on top of it in order and
other options override both. A ``--config`` name that is not a file is looked up in ``project/configs/``.
"""

from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from project.data import ImageDataModule
from project.errors import ReportedError, UserInputError
from project.module import TaskModule
from project.runs import resolve_checkpoint, version_of

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "mnist.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")
LIGHTNING_CKPT_NAMES = ("best", "hpc", "registry")
"""``--ckpt_path`` values that Lightning resolves itself; ``last`` and file paths are resolved here."""


class ProjectCLI(LightningCLI):
    """LightningCLI that links the data to the model, resumes into the same run folder and tests after fitting."""

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

    def _parse_ckpt_path(self) -> None:
        """Keep the command line as given. LightningCLI would load ``--ckpt_path`` here, unchecked, and let the
        hyperparameters stored in it override the command line (Lightning #20310, #20801); here the options given
        win, as they do for ``--ckpt_path last``, and the file is read and checked in before_instantiate_classes."""

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or ckpt_path in LIGHTNING_CKPT_NAMES:
            return
        logger = tensorboard_logger_args(config.trainer.logger)
        run_root = Path(logger.save_dir) / logger.name if logger else Path(config.trainer.default_root_dir or ".")
        checkpoint, content = resolve_checkpoint(ckpt_path, run_root)
        max_epochs = config.trainer.max_epochs
        if self.subcommand == "fit" and max_epochs not in (None, -1) and max_epochs <= content["epoch"]:
            raise UserInputError(
                f"--trainer.max_epochs={max_epochs} is below the checkpoint's epoch: {checkpoint} is in epoch "
                f"{content['epoch'] + 1} (step {content['global_step']}); resume with max_epochs of at least "
                f"{content['epoch'] + 1}"
            )
        config.ckpt_path = str(checkpoint)
        # A resumed run keeps writing into the version folder its checkpoint came from.
        version = version_of(checkpoint, run_root)
        if self.subcommand == "fit" and logger is not None and version is not None:
            logger.version = version
            logger.log_graph = False  # drawn when the run started
            # Keep the config of every earlier start of this run: config.yaml, config-resume1.yaml, ...
            self.save_config_kwargs["config_filename"] = next_free_name(run_root / version, "config", ".yaml")
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            print(f"Resuming {checkpoint} into {run_root / version}")

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit or self.trainer.interrupted:
            return
        callback = self.trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        for logger in self.trainer.loggers:  # the graph was drawn when fitting started: once is enough
            if isinstance(logger, TensorBoardLogger):
                logger._log_graph = False
        if best:
            print(f"Testing the best checkpoint: {best}")
        else:
            print("No checkpoint was saved (e.g. fast_dev_run): testing the weights in memory")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def tensorboard_logger_args(logger_config: object):
    """The ``init_args`` of the configured TensorBoardLogger, or ``None`` when another logger (or none) is used."""
    class_path = getattr(logger_config, "class_path", "") or ""
    if class_path.split(".")[-1] != TensorBoardLogger.__name__:
        return None
    return logger_config.init_args


def next_free_name(folder: Path, stem: str, suffix: str) -> str:
    """``config.yaml`` if it is free in ``folder``, else the first free ``config-resume<k>.yaml``."""
    name, k = f"{stem}{suffix}", 0
    while (folder / name).exists():
        k += 1
        name = f"{stem}-resume{k}{suffix}"
    return name


def resolve_config_args(args: list[str]) -> list[str]:
    """Let ``--config NAME`` name a preset in ``project/configs/`` (with or without ``.yaml``)."""
    resolved = list(args)
    for i, arg in enumerate(resolved):
        if arg in ("-c", "--config") and i + 1 < len(resolved):
            resolved[i + 1] = _preset_path(resolved[i + 1])
        elif arg.startswith("--config="):
            resolved[i] = "--config=" + _preset_path(arg.removeprefix("--config="))
    return resolved


def _preset_path(name: str) -> str:
    if Path(name).exists():
        return name
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    return name  # let the parser report the missing file


def run_cli(args: list[str] | None = None) -> ProjectCLI:
    """Parse ``args`` (default: the command line), run the subcommand and return the CLI with its trainer."""
    args = resolve_config_args(sys.argv[1:] if args is None else args)
    # We pass the (resolved) command line as `args` on purpose; Lightning warns when sys.argv is also set.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
    # Lightning 2.6 calls a torch.utils._pytree API that torch 2.14 deprecates; nothing for users to act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # TensorBoard's graph is traced with torch.jit.trace, which torch 2.14 deprecates; nothing for users to act on.
    warnings.filterwarnings("ignore", message=r"`torch.jit.trace(_method)?` is deprecated", category=FutureWarning)
    return ProjectCLI(
        TaskModule,
        ImageDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # the optimizer is configured by model.optimizer and friends
        parser_kwargs={name: {"default_config_files": [str(DEFAULT_CONFIG)]} for name in SUBCOMMANDS},
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


def main(args: list[str] | None = None) -> None:
    """Run the command line; bad input ends with one ``error:`` line and exit status 2, not a traceback.

    A run stopped by SIGTERM (a preempted job) has written ``last.ckpt`` at the step boundary and exits with 143.
    """
    try:
        run_cli(args)
    except Exception as error:
        reported = reported_cause(error)
        if reported is None:
            raise
        print(f"error: {reported}", file=sys.stderr)
        raise SystemExit(reported.exit_code) from None
    except SIGTERMException:
        print("stopped by SIGTERM: last.ckpt holds the state at the last step; resume with --ckpt_path last")
        raise SystemExit(128 + signal.SIGTERM) from None


def train_main() -> None:
    """``project-train`` and ``scripts/train.py``: fit, then test the best checkpoint."""
    main(["fit", *sys.argv[1:]])
