"""``python -m project SUBCOMMAND ...``, the ``project`` command and ``scripts/*.py``: one command, each subcommand
handed to its home.

    fit, validate, test          LightningCLI: train, and a checkpoint's metrics (project.cli.app)
    evaluate, export, predict    reports, exports, predictions of new images (project.cli.commands)
    serve                        an HTTP server of an exported model (project.cli.commands, project.inference.serving)
    sweep                        hyperparameter sweeps (project.sweeps)
    crossval                     K-fold cross-validation, its folds run as a sweep's trials (project.sweeps.crossval)

``python -m project --help`` lists them; ``python -m project SUBCOMMAND --help`` says each one's options. A
subcommand imports what it runs only when it runs.
"""

import sys

from project.cli import starting
from project.cli.refusals import SUBCOMMANDS as TRAINING

_HELP = ("-h", "--help")


def main(args: list[str] | None = None, prog: str = "python -m project") -> None:
    """Run the subcommand that ``args`` (default: the command line) start with."""
    args = sys.argv[1:] if args is None else list(args)
    name = args[0] if args else ""
    if name in TRAINING or (name.startswith("-") and name not in _HELP):  # (LightningCLI's -c CONFIG before fit)
        starting(name if name in TRAINING else "fit", args, "loading Lightning and building the run")
        from project.cli import main as lightning_cli

        lightning_cli(args, prog)
    elif name == "sweep":
        from project.cli.commands import main as command

        command(args, prog)  # its own options checked (and --help) before the sweep's imports, which take seconds
        starting("sweep", args, "loading Optuna and Lightning")
        from project.sweeps import main as sweep

        sweep(args[1:])
    elif name == "crossval":
        from project.cli.commands import main as command

        command(args, prog)  # its own options checked (and --help) before the sweep's imports
        from project.sweeps.crossval import main as crossval

        crossval(args[1:])
    else:  # evaluate, export, predict, serve; the command's --help, or a subcommand that does not exist
        from project.cli.commands import main as command

        command(args, prog)


def script(subcommand: str) -> None:
    """``scripts/<subcommand>.py ARGS``: ``python -m project <subcommand> ARGS``."""
    main([subcommand, *sys.argv[1:]])


if __name__ == "__main__":
    main()
