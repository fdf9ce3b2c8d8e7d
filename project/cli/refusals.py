"""One line for each way the command line's parser can refuse an option.

jsonargparse explains a refused value over many lines (every type of a union, every class it tried); this module
keeps what a user needs: the option, what it takes, what was given, and for an unknown option the closest name or
the list of names allowed there.
"""

from __future__ import annotations

import difflib
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException

from project.errors import ReportedError, causes, disk_full, first_line, install_command
from project.trusted import HOW_TO_TRUST

SUBCOMMANDS = ("fit", "validate", "test")
"""The command line's subcommands. Lightning's ``predict`` is left out: predictions for new images are
``scripts/predict.py``'s, written to a CSV."""
RENAMED_OPTIONS = {
    "model.lr": "model.optimizer.lr",
    "model.weight_decay": "model.optimizer.weight_decay",
    "model.momentum": "model.optimizer.momentum",
    "model.nesterov": "model.optimizer.nesterov",
}
"""Options that now live elsewhere: the optimizer's own arguments are under ``model.optimizer``."""
MODEL_SECTION_OPTIONS = ("optimizer", "lr_scheduler")
"""LightningCLI's own top-level ``--optimizer`` and ``--lr_scheduler``, off here (``auto_configure_optimizers=False``:
the model configures its optimizer and schedule): they are ``--model.optimizer`` and ``--model.lr_scheduler``."""
NON_FINITE = {"nan", "inf", "-inf", "+inf", ".nan", ".inf", "-.inf", "infinity", "-infinity"}
PREDICT_HINT = (
    " (predictions for new images: python scripts/predict.py CHECKPOINT IMAGES... --out predictions.csv, which "
    "writes a CSV with the preprocessing of training)"
)
TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}


def explain_parse_error(message: str, parser: Any, args: list[str] | None = None) -> str:
    """The parser's error ``message`` as one line; ``parser`` and ``args`` let it list the options that exist."""
    unknown = (
        re.search(r"does not accept option '([^']+)'", message)
        or re.search(r"[Uu]nrecognized arguments: --?([^\s=]+)", message)
        or re.search(r"Option '([^']+)' is not accepted", message)
    )
    if unknown:
        name = unknown.group(1)
        keys = parser_keys(message)
        if keys and ("is not accepted" in unknown.group(0) or "nrecognized" in unknown.group(0)):
            name = f"{keys[0]}.{name}"  # an option of a class's piece: data.split.nope
        return unknown_option(name, known_options(parser, args))
    choice = re.search(r"argument subcommand: invalid choice: '([^']*)' \(choose from ([^)]*)\)", message)
    if choice:
        named = ", ".join(re.findall(r"'([^']+)'", choice.group(2)))
        hint = PREDICT_HINT if choice.group(1) == "predict" else ""
        return f"{choice.group(1)} is not a subcommand: use one of {named}{hint}"
    missing = re.search(r"File does not exist: '([^']+)'", message)
    if missing:
        return f"--config {missing.group(1)}: no such file"
    key = ".".join(parser_keys(message)) or "an option"
    class_problem = class_argument_problem(message, key)
    if class_problem:
        return class_problem
    value = given_value(message)
    expected = expected_type(message, value)
    if expected and expected.startswith("dot import path"):
        return (
            f"{key}: {value!r} is not a class that can be imported here; give its name or its full import path"
            + known_classes(key)
        )
    if expected:
        return f"{key}: expected {expected}, got {value!r}"
    subclass = re.search(r"(Import path does not correspond to a subclass of \w+)", message)
    if subclass:
        return f"{key}: {value} cannot be used here ({subclass.group(1)})"
    problem = re.search(r"Problem with given class_path '([^']+)':\s*\n\s*(.+)", message)
    if problem:
        own = f"; {HOW_TO_TRUST}" if "No module named" in problem.group(2) else ""
        return f"{key}: {problem.group(1)} cannot be used here ({problem.group(2).strip()}){own}"
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return f"{key}: {lines[-1]}" if lines else message


def parser_keys(message: str) -> list[str]:
    """The option named by each ``Parser key "..."`` level, outermost first (``data``, ``dataset``)."""
    keys: list[str] = []
    for key in re.findall(r'Parser key "([^"]+)"', message):
        if not keys or keys[-1] != key:
            keys.append(key)
    return keys


def given_value(message: str) -> str:
    """The value the user gave, as plain text (not the parser's namespace around it)."""
    found = re.findall(r"(?:Got|Given) value: (.*?)(?:\. Got value: .*)?$", message, flags=re.MULTILINE)
    found += re.findall(r"NestedArg\(key='[^']*', val='([^']*)'\)", message)
    plain = [value.strip() for value in found if not value.strip().startswith(("Namespace(", "NestedArg("))]
    return plain[0] if plain else "?"


def class_argument_problem(message: str, key: str) -> str | None:
    """A class named by a short name that more than one imported class has, or built without an argument it
    requires (``--model.lr_scheduler StepLR`` without ``step_size``), in one line; ``None`` for other messages."""
    ambiguous = re.search(
        r"Multiple subclasses with name (\w+)\. Give the full class path[^:]*: (.+?)\.?$", message, re.M
    )
    if ambiguous:
        return f"{key}: {ambiguous.group(1)} names more than one class; give the full path of one: {ambiguous.group(2)}"
    required = re.search(r"the following arguments are required: ([\w, ]+)", message)
    if required:
        named = re.search(r"class_path='([^']+)'", message)
        first = required.group(1).split(",")[0].strip()
        return f"{key}: {named.group(1) if named else 'the class'} needs {required.group(1)} (--{key}.{first} VALUE)"
    return None


def known_classes(key: str) -> str:
    """For an optimizer or learning-rate scheduler option, `` (torch.optim has ...)``: the names it takes."""
    import torch

    for suffix, module, base in (
        ("optimizer", torch.optim, torch.optim.Optimizer),
        ("lr_scheduler", torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler),
    ):
        if key.endswith(suffix):
            names = sorted(
                name
                for name, value in vars(module).items()
                if isinstance(value, type) and issubclass(value, base) and value is not base and name[0] != "_"
            )
            return f" ({module.__name__} has {', '.join(names)})"
    return ""


def expected_type(message: str, value: str) -> str | None:
    """What the option takes, in words, from the innermost ``Expected a ...`` that is not ``None``."""
    candidates = [
        found.strip().rstrip(".")
        for found in re.findall(r"Expected a (.+?)(?:\. Got value:.*)?$", message, flags=re.MULTILINE)
        if "NoneType" not in found and not found.startswith("path but")
    ]
    if len(candidates) > 1:  # a union: the dot-import-path alternative is the parser's, not the user's, concern
        candidates = [found for found in candidates if not found.startswith("dot import path")] or candidates
    if not candidates:
        return None
    text = candidates[-1]
    if text.startswith("typing.Literal["):
        return "one of " + ", ".join(re.findall(r"'([^']*)'", text))
    name = re.fullmatch(r"<class '(\w+)'>", text)
    if not name:
        return text
    if name.group(1) == "float" and value.lower() in NON_FINITE:
        return "a finite number"
    return TYPE_WORDS.get(name.group(1), name.group(1))


def known_options(parser: Any, args: list[str] | None) -> list[str]:
    """Every option of the subcommand in ``args`` as a user types it (``data.batch_size``, ``model.lr``)."""
    subcommand = next((arg for arg in args or [] if arg in SUBCOMMANDS), "fit")
    try:
        defaults = parser.parse_args([subcommand])[subcommand]
    except Exception:  # the defaults themselves do not parse: no list to offer
        return []
    return sorted({key.replace(".init_args.", ".") for key in vars(defaults.as_flat())})


def unknown_option(name: str, known: list[str]) -> str:
    if name == "weights_only":
        return "weights_only is not an option: checkpoints are always read with weights_only=True (plain data only)"
    if name.partition(".")[0] in MODEL_SECTION_OPTIONS:
        return f"{name} is not an option; it is model.{name} (the model configures its optimizer and schedule itself)"
    if name in RENAMED_OPTIONS:
        return (
            f"{name} is not an option; it is {RENAMED_OPTIONS[name]} (the optimizer's own arguments are under "
            "model.optimizer)"
        )
    section, _, leaf = name.rpartition(".")
    leaves = [
        key[len(section) + 1 :] for key in known if key.startswith(f"{section}.") and "." not in key[len(section) + 1 :]
    ]
    close = difflib.get_close_matches(leaf, leaves, n=1, cutoff=0.75)
    if close == [leaf]:  # the option exists, but on another entry of a list (several loggers, several callbacks)
        return (
            f"{name} is not an option of the {section} entry added last, which --{name} sets: with several entries, "
            f"give it right after the --config or +=CLASS that adds its entry, or in a --config file"
        )
    if close:
        return f"{name} is not an option; did you mean {section}.{close[0]}?"
    siblings = sorted(
        {f"{section}.{key[len(section) + 1 :].split('.')[0]}" for key in known if key.startswith(f"{section}.")}
    )
    if siblings:
        return f"{name} is not an option; {section} takes {', '.join(siblings)}"
    return f"{name} is not an option (--help lists them all)"


def refuse_replaced_callbacks(args: list[str]) -> str | None:
    """The refusal of ``--trainer.callbacks X`` (a whole new list) on the command line, or ``None``.

    jsonargparse replaces a list given plainly, so ``--trainer.callbacks EarlyStopping`` would silently drop the
    preset's callbacks: no ``last.ckpt``, no exact resume, no TensorBoard reports. ``+=`` appends; a list in a
    ``--config`` file still replaces it on purpose (``callbacks: []``, as the ``study`` modifier does).
    """
    for index, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name == "--trainer.callbacks":
            given = value or (args[index + 1] if index + 1 < len(args) else "")
            return (
                f"--trainer.callbacks {given} would replace the preset's callbacks (best and last checkpoints, exact "
                f"resume, TensorBoard reports, progress lines): add it with --trainer.callbacks+={given or 'X'} "
                f"(its options as --trainer.callbacks.NAME VALUE), or list every callback in a --config file"
            )
    return None


def missing_package(error: BaseException) -> str | None:
    """One line for a logger, callback or other class whose package is not installed, or ``None``.

    Lightning says ``Requirement 'wandb>=0.12.10' not met`` (a ModuleNotFoundError without a module name); Python says
    ``No module named 'x'``. Either is looked for along the chain of causes jsonargparse wraps around it. A module of
    this project that cannot be imported, or a name missing from an installed package, is a bug: not said here.
    """
    for cause in causes(error):
        if isinstance(cause, ModuleNotFoundError):
            required = re.search(r"Requirement '([A-Za-z0-9_.\-]+)([^']*)' not met", str(cause))
            package, version = required.groups() if required else ((cause.name or "").split(".")[0], "")
            if package and package != "project":
                command = install_command(package, version)
                return f"the {package} package is not installed, and this run needs it: {command}"
    return None


def explain(error: Exception) -> tuple[str, int] | None:
    """The one-line message and exit status for an error that is not a bug, or ``None`` for one that is.

    jsonargparse wraps the errors raised while it instantiates classes: the project's own is looked for behind them.
    """
    reported = next((cause for cause in causes(error) if isinstance(cause, ReportedError)), None)
    if reported is not None:
        return str(reported), reported.exit_code
    missing = missing_package(error)
    if missing is not None:
        return missing, 2
    if isinstance(error, MisconfigurationException):  # Lightning's word for a Trainer setting it cannot use
        return f"trainer: {first_line(error)}", 2
    full = disk_full(error)
    if full is not None:
        return f"No space left on device while writing {full.filename or 'a file of the run'}: free some space", 1
    return None


def exit_on_refusal(command: Callable[[], Any], stopped: str) -> None:
    """Run ``command`` as a program: bad input ends with one ``error:`` line and its exit status (2), not a
    traceback; SIGTERM (a preempted job), which Lightning raises as a ``SystemExit`` of status 0, says ``stopped`` and
    exits with 143, so that a scheduler does not take it for a finished job."""
    try:
        command()
    except SIGTERMException:
        print(stopped)
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as error:
        explained = explain(error)
        if explained is None:
            raise
        message, exit_code = explained
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(exit_code) from None
