"""A model folder (what ``python -m project export`` writes), read back without unpickling anything.

The folder holds ``model.safetensors`` (the network's weights), ``tokenizer.json`` (a text model's tokenizer),
``config.json`` (the network's class path and init arguments, the preprocessing and class names, the task and its
options, what the outputs mean, the metrics the run measured, the largest differences of the exports from the
checkpoint), ``model.onnx`` (optional) and ``README.md`` (a model card: :mod:`project.inference.model_card`).
:func:`load_network` builds the network from ``config.json`` (its class from the allow-list:
:func:`project.training.checkpoints.allowed_class`) and fills it with the weights of ``model.safetensors`` (strictly:
every name and shape); :func:`push_folder` uploads a folder to the Hugging Face Hub.

Importing this module imports no torch: :func:`read_config` is what ``predict`` from an ONNX file reads
(:mod:`project.inference.numpy_predictor`); :func:`load_network` imports torch and the training code when called.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from project.errors import UserInputError, first_line, install_command

if TYPE_CHECKING:
    from torch import nn

CONFIG = "config.json"
"""The folder's one metadata file: what the files expect and hold."""
WEIGHTS = "model.safetensors"
"""The network's weights (its ``state_dict``), read by :func:`load_network`."""
ONNX = "model.onnx"
"""The network as an ONNX file (optional), run by onnxruntime."""
CARD = "README.md"
"""The model card, as the Hugging Face Hub shows it."""
TOKENIZER = "tokenizer.json"
"""A text model's tokenizer (a ``tokenizers`` JSON file, which ``config.json``'s preprocessing names)."""
_REQUIRED = ("network", "preprocessing", "task_class", "task_options", "num_outputs")
"""What every ``config.json`` holds (its other entries are information for people: the card says them)."""


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's ``config.json`` as data, with the entries prediction reads; one line naming the file otherwise."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise UserInputError(f"{folder}: no {CONFIG} in it (python -m project export writes a model folder)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise TypeError(f"it holds a {type(config).__name__}, not an object")
        missing = [key for key in _REQUIRED if key not in config]
    except (ValueError, TypeError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserInputError(
            f"{path} is not the {CONFIG} python -m project export writes (truncated or edited?): {first_line(error)}"
        ) from None
    if missing:
        raise UserInputError(f"{path} is not the {CONFIG} python -m project export writes: no {', '.join(missing)}")
    return config


def load_network(folder: Path, config: dict[str, Any] | None = None) -> nn.Module:
    """The network of a model folder, in eval mode: its class (from the allow-list) built with the init arguments
    ``config.json`` records, its weights loaded strictly from ``model.safetensors`` (no pickle anywhere)."""
    from project.files.weights import read_weights  # (torch and the training code: only for the network)
    from project.networks import Network
    from project.training.checkpoints import allowed_class
    from project.training.specs import from_spec

    folder = Path(folder)
    config = read_config(folder) if config is None else config
    weights_path = folder / WEIGHTS
    if not weights_path.is_file():
        raise UserInputError(
            f"{folder}: no {WEIGHTS} in it (export with --formats safetensors to load the network in PyTorch)"
        )
    spec = config["network"]
    if not isinstance(spec, dict) or not isinstance(spec.get("init_args", {}), dict):
        raise UserInputError(f"{folder / CONFIG}: its network is {spec!r}, not a class_path and its init_args")
    allowed_class(spec.get("class_path"), Network, "network", holder=str(folder / CONFIG))  # said as config.json's
    weights = read_weights(weights_path, option="the model folder's weights")  # before building: fail fast
    try:
        network = from_spec(spec, Network, "network", folder / CONFIG)
    except (TypeError, ValueError) as error:  # an argument the class does not take, or a value it refuses
        raise UserInputError(
            f"{folder / CONFIG}: its network arguments do not build {spec['class_path']}: {first_line(error)}"
        ) from None
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        class_path = spec["class_path"]
        raise UserInputError(
            f"{weights_path} does not fit the network {CONFIG} names ({class_path}): {first_line(error)}"
        ) from None
    return network.eval()


def check_hub_installed() -> None:
    """Refuse, in one line with the command that installs it, a push without huggingface_hub."""
    import importlib.util

    if importlib.util.find_spec("huggingface_hub") is None:
        needed = install_command("huggingface_hub")
        raise UserInputError(f"--push_to_hub uploads through huggingface_hub, which is not installed: {needed}")


def push_folder(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload a model folder to the Hugging Face Hub repository ``repo_id`` (created when missing), with the token
    huggingface_hub finds (``HF_TOKEN``, or ``hf auth login``; never printed); returns the repository's URL."""
    check_hub_installed()
    from huggingface_hub import HfApi

    api = HfApi()  # its token: HF_TOKEN, or the one `hf auth login` saved
    try:
        url = api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
        api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model", commit_message="Upload a model folder"
        )
    except Exception as error:  # no network, no token, no right to the repository: HTTP errors, ValueError, OSError
        raise UserInputError(
            f"--push_to_hub {repo_id}: the upload failed ({first_line(error)}); {folder} is written and kept: log in "
            f"(hf auth login, or set HF_TOKEN) and upload it with: hf upload {repo_id} {folder}"
        ) from None
    return str(url)
