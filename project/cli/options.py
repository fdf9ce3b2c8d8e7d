"""The options of ``python -m project``'s own subcommands (:mod:`project.cli.commands`): a jsonargparse parser per
subcommand, in LightningCLI's style (options spelled as ``fit`` spells them, ``--trust`` and ``--help`` on each), and
which arguments are positional (each one required)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser

Split = Literal["train", "val", "test"]
"""The splits ``evaluate`` reports on (:data:`project.inference.evaluation.SPLITS`)."""
ExportFormat = Literal["onnx", "pt2", "safetensors"]
"""The files ``export`` writes (:data:`project.inference.export.FORMATS`)."""
SWEEP_OWN = ("trials", "workers", "storage", "name", "interrupted", "help")
"""The sweep's own options; every other option is a ``fit`` option for its trials."""
CROSSVAL_OWN = ("folds", "workers", "name", "help")
"""The cross-validation's own options; every other option is a ``fit`` option for its folds."""
_TRUST_HELP = (
    "import this module of your own (a class the checkpoint or config names; found from the current folder) and "
    "trust it; repeat it for several: a file alone never names code to run"
)


def new_parser(prog: str, usage: str, description: str) -> ArgumentParser:
    """A parser as LightningCLI's: errors come back to be said in one line, options are never abbreviated."""
    return ArgumentParser(
        prog=prog, usage=f"{prog} {usage}", description=description, exit_on_error=False, allow_abbrev=False
    )


def _add_common(parser: ArgumentParser, out_help: str, out_default: Path | None = None) -> None:
    parser.add_argument("--out", type=Path | None, default=out_default, help=out_help)
    parser.add_argument("--trust", type=str, action="append", default=[], metavar="MODULE", help=_TRUST_HELP)


def _evaluate_parser(prog: str) -> ArgumentParser:
    parser = new_parser(
        prog,
        "CHECKPOINT [--split SPLIT] [--data.data_dir DIR] [--out FOLDER] [--trust MODULE]",
        "Evaluate a checkpoint on a split of the data module it was trained with (its class and arguments are stored "
        "in it): metrics.json, report.md (per-class precision, recall, F1, the confusion matrix) and "
        "confusion_matrix.png, and the report on stdout.",
    )
    parser.add_argument("checkpoint", type=Path | None, nargs="?", help="the checkpoint (.ckpt)")
    parser.add_argument("--split", type=Split, default="test", help="the split to evaluate")
    parser.add_argument(
        "--data.data_dir", type=str | None, default=None, help="where the data is, if not where the run found it"
    )
    _add_common(parser, "the folder for the files (default: <run folder>/evaluation/<split>-<checkpoint name>/)")
    return parser


def _export_parser(prog: str) -> ArgumentParser:
    parser = new_parser(
        prog,
        "CHECKPOINT [--out FOLDER] [--formats FORMAT ...] [--push_to_hub REPO] [--trust MODULE]",
        "Export a checkpoint's model folder: safetensors weights (what project.load and "
        "--model.finetuning.pretrained take), ONNX (and, asked for, a torch.export program, .pt2), config.json (the "
        "network's class and arguments, the preprocessing, the class names, what the outputs mean, the metrics the "
        "run measured) and README.md, a model card. Each executable file takes a batch of any size of normalised "
        "images (a text model's: token ids of any length, with its tokenizer.json beside it), and is checked against "
        "the checkpoint's network. See docs/inference.md.",
    )
    parser.add_argument("checkpoint", type=Path | None, nargs="?", help="the checkpoint (.ckpt)")
    parser.add_argument(
        "--formats",
        type=ExportFormat,
        nargs="+",
        default=["onnx", "safetensors"],
        help="the files beside config.json and README.md (pt2, a torch.export program: when asked for)",
    )
    parser.add_argument(
        "--push_to_hub",
        type=str | None,
        default=None,
        metavar="REPO",
        help="then upload the folder to this Hugging Face Hub repository (user/name; created if missing; the token "
        "of HF_TOKEN or hf auth login)",
    )
    _add_common(parser, "a new folder for the files (default: <run folder>/export/<checkpoint name>/)")
    return parser


def _predict_parser(prog: str) -> ArgumentParser:
    parser = new_parser(
        prog,
        "MODEL INPUTS... [--out CSV] [--batch_size N] [--mnist_style] [--trust MODULE]",
        "Predict new images, or texts, with a model folder (python -m project export's), a checkpoint or a "
        "model.onnx, each through the preprocessing of training; write a CSV row per image (path) or per text (text): "
        "predicted (the class, the labels present, or the value) and, for classification, p_<name> per class or "
        "label. An image model takes image files, folders and glob patterns (a file that cannot be decoded is named "
        "on stderr and skipped); a text model takes text files, one text a line, and - for stdin (an empty line is "
        "named on stderr and skipped).",
    )
    parser.add_argument(
        "model", type=Path | None, nargs="?", help="a model folder, a checkpoint (.ckpt) or an exported model.onnx"
    )
    parser.add_argument(
        "inputs",
        type=str,
        nargs="*",
        help="images: image files, folders or glob patterns (quoted); texts: text files (one text a line) or - (stdin)",
    )
    parser.add_argument("--batch_size", type=int, default=256, help="images (or texts) per batch")
    parser.add_argument(
        "--mnist_style",
        type=bool,
        nargs="?",
        const=True,
        default=False,
        help="make each image's digit look like MNIST's first (light ink on black, in 20x20, centred in 28x28)",
    )
    _add_common(parser, "the CSV file to write", Path("predictions.csv"))
    return parser


def _sweep_parser(prog: str) -> ArgumentParser:
    parser = new_parser(
        prog,
        "SPEC [--trials N] [--workers N] [--storage URL] [--name NAME] [--interrupted MODE] [fit options...]",
        "Search hyperparameters with Optuna: each trial is a `python -m project fit` run in "
        "logs/sweeps/NAME/trials/. Every other option (--data.data_dir DIR, --config X, --trust MODULE) is a fit "
        "option, for every trial. Results in logs/sweeps/NAME/: trials.csv, history.png, intermediate.png, "
        "importance.png, best.yaml (train it with python -m project fit --config logs/sweeps/NAME/best.yaml); "
        "see docs/sweeps.md.",
    )
    parser.add_argument(
        "spec", type=str | None, nargs="?", help="a sweep spec (YAML), or one in project/configs/sweeps/ (mnist)"
    )
    parser.add_argument("--trials", type=int | None, default=None, help="finished trials (default: the spec's)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine, on one study")
    parser.add_argument(
        "--storage", type=str | None, default=None, help="the study's database (default sqlite:///.../study.db)"
    )
    parser.add_argument("--name", type=str | None, default=None, help="the sweep's folder (default: the spec's name)")
    parser.add_argument(
        "--interrupted",
        type=Literal["retry", "skip"],
        default="retry",
        help="retry: resume an interrupted trial from its last.ckpt; skip: leave it failed",
    )
    return parser


def _serve_parser(prog: str) -> ArgumentParser:
    parser = new_parser(
        prog,
        "FOLDER [--host HOST] [--port N] [--max_batch_size N] [--batch_timeout_ms MS] [--max_bytes N] [--trust MODULE]",
        "Serve an export folder's model over HTTP (FastAPI on uvicorn): POST /predict takes image files "
        "(multipart/form-data, field 'files') or pixel arrays (JSON {\"inputs\": [...]}) and answers the rows predict "
        "writes; GET /health says what the model is. Concurrent requests share network calls. Ctrl-C or SIGTERM stops "
        "it; see docs/serving.md.",
    )
    parser.add_argument(
        "folder", type=Path | None, nargs="?", help="an export folder (python -m project export), or a .onnx or .ckpt"
    )
    parser.add_argument("--host", type=str, default="127.0.0.1", help="where to listen (0.0.0.0: every network)")
    parser.add_argument("--port", type=int, default=8000, help="the port (0: any free one, said at start)")
    parser.add_argument("--max_batch_size", type=int, default=32, help="the most images in one network call")
    parser.add_argument(
        "--batch_timeout_ms",
        type=float,
        default=5.0,
        help="how long a network call waits for more images while other requests are on their way",
    )
    parser.add_argument("--max_bytes", type=int, default=10_000_000, help="the largest request body (413 above)")
    parser.add_argument("--trust", type=str, action="append", default=[], metavar="MODULE", help=_TRUST_HELP)
    return parser


def _crossval_parser(prog: str) -> ArgumentParser:
    parser = new_parser(
        prog,
        "[--folds K] [--workers N] [--name NAME] [fit options...]",
        "K-fold cross-validation: the training pool is divided into K folds (stratified by class, seeded by "
        "--data.split.split_seed) and each fold, the validation set of one `python -m project fit` run in "
        "logs/crossval/NAME/trials/, is trained after the others, or by N workers at once; each run then tests its "
        "best checkpoint. Every other option (--config X, --data.data_dir DIR, --trust MODULE) is a fit option, for "
        "every fold. Running the same command again skips finished folds and resumes an interrupted one. Results in "
        "logs/crossval/NAME/: folds.csv, summary.md (the mean, std, min and max of every metric); see "
        "docs/crossval.md.",
    )
    parser.add_argument("--folds", type=int, default=5, help="the number of folds, K (2 or more)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine, on one study")
    parser.add_argument(
        "--name", type=str | None, default=None, help="the folder (default: the first --config's name, else crossval)"
    )
    return parser


PARSERS: dict[str, Callable[[str], ArgumentParser]] = {
    "evaluate": _evaluate_parser,
    "export": _export_parser,
    "predict": _predict_parser,
    "sweep": _sweep_parser,
    "serve": _serve_parser,
    "crossval": _crossval_parser,
}
POSITIONALS = {
    "evaluate": ("checkpoint",),
    "export": ("checkpoint",),
    "predict": ("model", "inputs"),
    "sweep": ("spec",),
    "serve": ("folder",),
    "crossval": (),
}
"""Each subcommand's positional arguments, all required (each is checked, to say which one is missing)."""
