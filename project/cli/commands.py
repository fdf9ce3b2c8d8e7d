"""``python -m project evaluate|export|predict|sweep|crossval|serve``: the subcommands beside LightningCLI's ``fit``,
``validate`` and ``test`` (:mod:`project.cli.app`), and the command's own ``--help``.

    python -m project evaluate logs/mnist/version_0/checkpoints/last.ckpt --split val --data.data_dir ../shared/data
    python -m project export CKPT --out exported/mnist --push_to_hub your-name/mnist-convnet
    python -m project predict exported/mnist my_digits/ "scans/**/*.png" --out predictions.csv
    python -m project sweep mnist --trials 20 --workers 2 --data.data_dir ../shared/data
    python -m project crossval --folds 5 --config mnist --data.data_dir ../shared/data
    python -m project serve exported/mnist --port 8000

Each is parsed by jsonargparse, the library LightningCLI parses ``fit`` with, in the same style: an option is spelled
as ``fit`` spells the same thing (``--data.data_dir``; words joined by ``_``), ``--trust MODULE`` and ``--help`` work
on each, and every refusal is one ``error:`` line with exit status 2 (:func:`project.cli.refusals.exit_on_refusal`).
Their options are fixed, so what can be checked before the parser runs is: an unknown option (named with the closest
one), a missing checkpoint, model or spec. The sweep's and the cross-validation's runners are :mod:`project.sweeps`'s:
they pass every option that is not their own on to their trials' ``fit`` (:func:`sweep_arguments`,
:func:`crossval_arguments`).

Importing this module loads neither torch nor Lightning: ``--help`` and a refusal of the arguments come at once; a
subcommand imports what it runs once its arguments are checked.
"""

from __future__ import annotations

from argparse import ArgumentError
from collections.abc import Callable

from jsonargparse import ArgumentParser, Namespace

from project.cli.options import CROSSVAL_OWN, PARSERS, POSITIONALS, SWEEP_OWN, new_parser
from project.cli.presets import checked_folder_name
from project.cli.refusals import exit_on_refusal, explain_parse_error, unknown_option
from project.errors import UserInputError
from project.trusted import trust

COMMANDS = {
    "fit": "train a model, then test its best checkpoint (python -m project fit --help lists every option)",
    "validate": "a checkpoint's metrics on the validation split (--ckpt_path; data as for fit)",
    "test": "a checkpoint's metrics on the test split (--ckpt_path; data as for fit)",
    "evaluate": "a checkpoint's report on a split: metrics.json, report.md, confusion_matrix.png",
    "export": "a checkpoint's model folder: safetensors, ONNX, config.json and a model card (README.md)",
    "predict": "new images (or texts) through a model folder, a checkpoint or a model.onnx: a CSV row per input",
    "sweep": "search hyperparameters with Optuna; each trial is a fit run",
    "serve": "an HTTP server that predicts images with an exported model: POST /predict, GET /health",
    "crossval": "K-fold cross-validation: each fold a fit run, the mean and spread of every metric",
}
"""Every subcommand of ``python -m project``, and what it does."""


def refuse_unknown_subcommand(name: str, here: tuple[str, ...] = tuple(COMMANDS)) -> None:
    """Refuse a first argument that is neither an option nor one of the subcommands ``here``."""
    if name in here or name.startswith("-"):
        return
    if name in COMMANDS:  # a subcommand of the whole command, given to a part of it (run_cli)
        raise UserInputError(f"{name} is not a subcommand here ({', '.join(here)}): run python -m project {name}")
    given = f"{name} is not a subcommand" if name else "no subcommand given"
    raise UserInputError(f"{given}: use one of {', '.join(COMMANDS)} (python -m project --help)")


def _parse_command(name: str, args: list[str], prog: str) -> Namespace:
    """The arguments of subcommand ``name``, checked: an unknown option, a value its option does not take, a missing
    positional argument are each one refusal (``UserInputError``)."""
    parser = PARSERS[name](prog)
    known = sorted(set(vars(parser.get_defaults().as_flat())) - set(POSITIONALS[name]))
    for arg in args:
        option = arg.partition("=")[0].removeprefix("--")
        if arg.startswith("--") and option not in (*known, "help"):
            raise UserInputError(unknown_option(option, known))
    try:
        options = parser.parse_args(args)
    except ArgumentError as error:
        raise UserInputError(explain_parse_error(error, args, lambda: known)) from None
    missing = next((positional for positional in POSITIONALS[name] if not options[positional]), None)
    if missing:
        raise UserInputError(f"{name}: give the {missing} ({parser.format_usage().strip().removeprefix('usage: ')})")
    return options


def _own_and_fit(args: list[str], own_names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``args`` parted into a command's own options (``own_names``, with their values) and the rest, its ``fit``
    options."""
    own: list[str] = []
    fit_args: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        name, equals, _ = arg.partition("=")
        is_own = arg in ("-h", "--help") or (name.startswith("--") and name[2:] in own_names)
        takes_value = is_own and not equals and arg not in ("-h", "--help") and index + 1 < len(args)
        taken = args[index : index + 2] if takes_value else [arg]
        (own if is_own else fit_args).extend(taken)
        index += len(taken)
    return own, fit_args


def _checked_counts_and_name(options: Namespace, counts: tuple[str, ...], least: int = 1) -> None:
    for key in counts:
        if options[key] is not None and options[key] < least:
            raise UserInputError(f"{key}: expected {least} or more, got {options[key]}")
    checked_folder_name("name", options.name)


def sweep_arguments(args: list[str], prog: str = "python -m project sweep") -> tuple[Namespace, list[str]]:
    """The sweep's own options, checked, and the rest: ``fit`` options for every trial. The spec comes first."""
    spec, rest = (args[:1], args[1:]) if args and not args[0].startswith("-") else ([], args)
    own, fit_args = _own_and_fit(rest, SWEEP_OWN)
    options = _parse_command("sweep", spec + own, prog)
    _checked_counts_and_name(options, ("trials", "workers"))
    return options, fit_args


def crossval_arguments(args: list[str], prog: str = "python -m project crossval") -> tuple[Namespace, list[str]]:
    """The cross-validation's own options, checked, and the rest: ``fit`` options for every fold."""
    own, fit_args = _own_and_fit(args, CROSSVAL_OWN)
    options = _parse_command("crossval", own, prog)
    _checked_counts_and_name(options, ("workers",))
    _checked_counts_and_name(options, ("folds",), least=2)
    return options, fit_args


def _evaluate(options: Namespace) -> None:
    """The report of ``evaluate``'s checkpoint, on stdout and in its files."""
    from project.inference.evaluation import evaluate_checkpoint

    markdown, written = evaluate_checkpoint(options.checkpoint, options.split, options.data.data_dir, options.out)
    print(markdown)
    print("wrote " + ", ".join(str(path) for path in written))


def _export(options: Namespace) -> None:
    """``export``'s model folder, how far each file is from the checkpoint's network, and its upload if asked."""
    from project.inference.export import default_folder, export_checkpoint

    repo = options.push_to_hub
    if repo is not None and (repo.count("/") != 1 or not all(repo.split("/"))):
        raise UserInputError(f"push_to_hub: {repo!r} is not a Hub repository id (user-or-organisation/name)")
    if repo is not None:
        from project.inference.model_folder import check_hub_installed

        check_hub_installed()  # before the export's work
    out = options.out or default_folder(options.checkpoint)
    about = export_checkpoint(options.checkpoint, out, tuple(options.formats), progress=_saying("export"))
    differences = ", ".join(
        f"{name} {value:.1e}" for name, value in about["largest_difference_from_the_checkpoint"].items()
    )
    print(f"wrote {', '.join(about['files'])}, config.json and README.md (the model card) to {out}")
    if differences:
        print(f"largest difference from the checkpoint's network (relative to the outputs' scale): {differences}")
    if repo is not None:
        from project.inference.model_folder import push_folder

        print(f"pushed {out} to {push_folder(out, repo)}")


def _saying(name: str) -> Callable[[str], None]:
    """Print each step of subcommand ``name`` as it is done (``export: wrote model.onnx (2.1 s)``)."""
    return lambda step: print(f"{name}: {step}", flush=True)


def _predict(options: Namespace) -> None:
    """``predict``'s CSV (a file that cannot be decoded, an empty line of a text file, is named on stderr and
    skipped). An image model's ONNX file runs without torch (:mod:`project.inference.prediction_files`)."""
    from project.inference.prediction_files import EMPTY_LINE, predict_files

    count, skipped = predict_files(options.model, options.inputs, options.out, options.batch_size, options.mnist_style)
    what = "empty lines" if all(line.endswith(EMPTY_LINE) for line in skipped) else "files"
    print(f"wrote {count} predictions to {options.out}" + (f" ({len(skipped)} {what} skipped)" if skipped else ""))


def _serve(options: Namespace) -> None:
    """``serve``'s server, until Ctrl-C or SIGTERM (FastAPI and uvicorn are the ``serve`` extra: a missing one is named
    with its install command)."""
    from project.inference.serving import ServeSettings, serve

    settings = {key: options[key] for key in ("host", "port", "max_batch_size", "batch_timeout_ms", "max_bytes")}
    serve(options.folder, ServeSettings(**settings))


_LOADING = {"predict": "loading the model"}
"""What a subcommand says it does first, while it imports (torch, for all but ``predict`` from an ONNX file)."""
_RUNNERS: dict[str, Callable[[Namespace], None]] = {
    "evaluate": _evaluate,
    "export": _export,
    "predict": _predict,
    "serve": _serve,
}


def run(name: str, args: list[str], prog: str) -> None:
    """Subcommand ``name`` with ``args``: parsed, its ``--trust`` modules trusted, then run. ``sweep`` and ``crossval``
    are only parsed here (their ``--help``, their refusals), before the sweep's own imports, which take seconds:
    :mod:`project.sweeps` runs them."""
    refuse_unknown_subcommand(name, (*_RUNNERS, "sweep", "crossval"))
    if name == "sweep":
        sweep_arguments(args, prog)
        return
    if name == "crossval":
        crossval_arguments(args, prog)
        return
    options = _parse_command(name, args, prog)
    print(f"{name}: {_LOADING.get(name, 'loading torch and the model')} ...", flush=True)  # (imports take seconds)
    trust(*options.trust)
    _RUNNERS[name](options)


def _print_help(prog: str) -> None:
    """``python -m project --help``: every subcommand and what it does; exits as ``--help`` does."""
    parser = new_parser(prog, "SUBCOMMAND [--help] ...", "Train, evaluate and use models of this project.")
    subcommands = parser.add_subcommands(required=True)
    for name, summary in COMMANDS.items():
        subcommands.add_subcommand(name, ArgumentParser(), help=summary)
    parser.parse_args(["--help"])


def main(args: list[str], prog: str = "python -m project") -> None:
    """``evaluate``, ``export``, ``predict``, ``serve``, the command's ``--help``, the refusal of a subcommand that does
    not exist, and the check of a sweep's own options (``fit``, ``validate``, ``test``: :func:`project.cli.app.main`;
    the sweep: :func:`project.sweeps.main`)."""
    name, rest = (args[0], args[1:]) if args else ("", [])
    if name in ("-h", "--help"):
        _print_help(prog)
    exit_on_refusal(
        lambda: run(name, rest, f"{prog} {name}"), f"{name}: stopped by {{signal}} (exit status {{status}})"
    )
