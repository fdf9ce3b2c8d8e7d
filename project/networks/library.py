"""Backbones from model libraries (torchvision, timm, Hugging Face) with a new head: the networks people fine-tune.

:class:`LibraryNetwork` builds a classification model by its library name, optionally with pretrained weights (the
library's own download, or a local file of the library model's state dict), removes its classifier and puts a new
``nn.Linear`` head sized for the data in its place. It keeps the :class:`~project.networks.Network` contract, so
freezing, per-group learning rates, ``--model.finetuning.pretrained``, exact resume, checkpoints and export work
unchanged. A name is looked up in the library's own registry of models: a checkpoint or a config names a model, never
code.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from project.errors import UserInputError, first_line, install_command
from project.files.weights import hub_file, read_weights, state_dict_differences, weights_only_loads
from project.networks import Network

_LIBRARIES = {"torchvision": "torchvision", "timm": "timm", "huggingface": "transformers"}
"""The allow-list: library name -> the module imported for it. torchvision is a dependency; ``pip install -e
".[timm]"``, ``".[hf]"`` for the others (``project.errors.EXTRAS``)."""


@contextmanager
def hub_offline() -> Iterator[None]:
    """While it lasts, nothing is fetched from the Hugging Face Hub (Transformers' models and image processors, timm's
    weights): only the local cache and local folders are read. A network rebuilt from a checkpoint (evaluate, export,
    predict, ``TaskModule.load_from_checkpoint``) holds its weights, so a received checkpoint that names a hub id
    reaches no server. Sets huggingface_hub's documented offline mode, ``constants.HF_HUB_OFFLINE`` (read at each
    request), and puts it back after."""
    try:
        from huggingface_hub import constants
    except ImportError:  # no Hugging Face library installed: nothing can reach the Hub
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _import_library(library: str) -> Any:
    if library not in _LIBRARIES:
        raise UserInputError(f"model.network.init_args.library must be one of {', '.join(_LIBRARIES)}, got {library!r}")
    module = _LIBRARIES[library]  # only modules named on the allow-list are imported
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserInputError(f"the {library} library is not installed: {install_command(module)}") from None


def _build_library_model(library: str, name: str, download: bool) -> nn.Module:
    """The library's classification model ``name``, with the library's pretrained weights when ``download``.

    Whatever file the library reads its weights from is read as plain data (:func:`weights_only_loads`); torchvision's
    file in the hub cache is also checked against the hash in its name first (:func:`hub_file`).
    """
    module = _import_library(library)
    if library == "torchvision":
        known = module.models.list_models(module=module.models)
        if name not in known:
            examples = ", ".join(known[:8])
            raise UserInputError(f"torchvision has no classification model {name!r}; some it has: {examples}, ...")
        weights = module.models.get_model_weights(name).DEFAULT if download else None
        if weights is not None:
            hub_file(weights.url)  # downloaded or checked here: torchvision then finds it in the cache
        with weights_only_loads():
            return module.models.get_model(name, weights=weights)
    if library == "huggingface":
        return _HuggingFaceFeatures(name, download)
    if not module.is_model(name):
        raise UserInputError(f"timm has no model {name!r} (timm.list_models() lists them)")
    try:
        with weights_only_loads():
            return module.create_model(name, pretrained=download)
    except OSError as error:  # timm downloads from the Hugging Face hub: offline, its cache has no such file
        raise UserInputError(
            f"timm's weights for {name!r} could not be read or downloaded ({first_line(error)}); without a network, "
            f"give a local state dict as model.network.init_args.weights, or null for a random initialisation"
        ) from None


def hugging_face_model(name: str, pretrained: bool, option: str, pooler: bool = True) -> nn.Module:
    """A Hugging Face model without a head (``AutoModel``), from a local folder written by ``save_pretrained`` or a hub
    id: with its pretrained weights (``pretrained``), or built from its config alone with random weights.

    What it reads is data: only model types that Transformers itself defines are built (``trust_remote_code=False``:
    a folder or repository with code of its own is refused, never asked about; Transformers asks on the terminal when
    it is left unset, and runs the code on "y"), weights only from safetensors files (a folder with pickle weights
    alone, ``pytorch_model.bin``, is refused), and any ``torch.load`` made meanwhile reads plain data
    (:func:`weights_only_loads`). The model is in training mode, as a new module is. ``pooler=False`` leaves out the
    pooling layer of a model that has one (BERT's dense + tanh on the first token, trained for next-sentence
    prediction). ``option`` names the option in errors.
    """
    transformers = _import_library("huggingface")
    folder = Path(name)
    if folder.is_dir() and pretrained and not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin")):
        raise UserInputError(
            f"{option} {name}: the folder holds pickle weights only ({', '.join(p.name for p in folder.glob('*.bin'))}"
            f"), which this project never reads: save the model with save_pretrained (safetensors), or give "
            f"weights null for a random initialisation"
        )
    try:
        with weights_only_loads():
            config = transformers.AutoConfig.from_pretrained(name, trust_remote_code=False)
            options = {} if pooler or not _has_pooler(transformers, config) else {"add_pooling_layer": False}
            if not pretrained:
                return transformers.AutoModel.from_config(config, trust_remote_code=False, **options)
            model = transformers.AutoModel.from_pretrained(
                name, config=config, trust_remote_code=False, use_safetensors=True, **options
            )
            # from_pretrained returns the model in evaluation mode, and Lightning keeps the mode it finds: without
            # this, dropout would stay off in training.
            return model.train()
    except (OSError, ValueError) as error:
        if "trust_remote_code" in str(error):
            raise UserInputError(
                f"Hugging Face model {name!r} needs code of its own (custom modelling files), which this project "
                f"never runs: use a model type that Transformers itself defines"
            ) from None
        raise UserInputError(
            f"Hugging Face model {name!r} ({option}): {first_line(error)} (a hub id needs the network, and a network "
            f"rebuilt from a checkpoint reads only the local cache; a local folder needs config.json, and "
            f"model.safetensors for pretrained weights)"
        ) from None


def _has_pooler(transformers: Any, config: Any) -> bool:
    """Whether the model class Transformers builds for ``config`` takes ``add_pooling_layer`` (BERT's family)."""
    try:
        model_class = transformers.MODEL_MAPPING[type(config)]
    except KeyError:  # no AutoModel for it: AutoModel says so next, in its own words
        return False
    return "add_pooling_layer" in inspect.signature(model_class).parameters


class _HuggingFaceFeatures(nn.Module):
    """A Hugging Face vision model without a head (:func:`hugging_face_model`): images in, one feature vector per
    image out (the pooled output, else the first token's)."""

    def __init__(self, name: str, download: bool) -> None:
        super().__init__()
        self.model = hugging_face_model(name, download, "model.network.init_args.name")

    def forward(self, images: Tensor) -> Tensor:
        output = self.model(pixel_values=images)
        pooled = getattr(output, "pooler_output", None)
        return pooled.flatten(1) if pooled is not None else output.last_hidden_state[:, 0]


def _stated_normalisation(library: str, name: str, model: nn.Module) -> dict[str, Any] | None:
    """The mean, std and image size the library states for the model's weights (torchvision: its default weights'
    transforms; timm: its data config; Hugging Face: the image processor saved with the model), or ``None``."""
    module = _import_library(library)
    try:
        if library == "torchvision":
            preset = module.models.get_model_weights(name).DEFAULT.transforms()
            mean, std, size, source = preset.mean, preset.std, preset.crop_size[0], "torchvision's weights transforms"
        elif library == "timm":
            config = module.data.resolve_model_data_config(model)
            mean, std, size, source = config["mean"], config["std"], config["input_size"][-1], "timm's data config"
        else:
            processor = module.AutoImageProcessor.from_pretrained(name, trust_remote_code=False)
            size = processor.size.get("height", processor.size.get("shortest_edge"))
            mean, std, source = processor.image_mean, processor.image_std, "the Hugging Face image processor"
    except (OSError, ValueError, KeyError, AttributeError):  # no weights, or no image processor saved with the model
        return None
    return {
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "image_size": int(size),
        "source": f"{source} of {name}",
    }


def _split_off_classifier(library: str, model: nn.Module) -> int:
    """Remove the model's classifier in place (its output becomes the features); return the feature size."""
    if library == "timm":
        model.reset_classifier(0)
        return int(model.num_features)
    if library == "huggingface":  # no classifier to remove: the feature size, from one image of the model's size
        config = model.model.config
        size = getattr(config, "image_size", 224)
        with torch.no_grad():
            features = model.eval()(torch.zeros(1, getattr(config, "num_channels", 3), size, size)).shape[1]
        model.train()  # as a new module is: Lightning keeps the mode it finds (dropout would stay off in training)
        return features
    linear = [(path, layer) for path, layer in model.named_modules() if isinstance(layer, nn.Linear)]
    if not linear:
        raise UserInputError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    path, last = linear[-1]
    parent, _, attribute = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, nn.Identity())
    return last.in_features


class LibraryNetwork(Network):
    """A torchvision, timm or Hugging Face model as backbone, and a new linear head.

    Args:
        library: ``torchvision``, ``timm`` or ``huggingface``.
        name: the model's name in the library (``resnet18``, ``mobilenet_v3_small``, ``efficientnet_b0``; any
            ``timm.create_model`` name; a Hugging Face hub id such as ``google/vit-base-patch16-224-in21k``, or a
            local folder written by ``save_pretrained``).
        weights: ``null`` (random initialisation), ``library`` (the library's pretrained weights, downloaded by the
            library), or the path of a file holding the library model's state dict (``torch.save`` or
            safetensors), loaded with ``weights_only=True`` before the classifier is replaced.
        num_outputs: set from the data.
        in_channels: the images' channels; greyscale (1) is repeated to the 3 channels the models take (after
            normalisation: with the backbone's normalisation, greyscale takes the channels' average mean and std).
        image_size: the images' side length (the data's ``image_size``).
    """

    # A checkpoint holds the weights: rebuilding the network from it needs no download and no weights file.
    checkpoint_overrides: ClassVar[dict[str, Any]] = {"weights": None}

    def __init__(
        self,
        library: str,
        name: str,
        num_outputs: int,
        weights: str | None = None,
        in_channels: int = 3,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise UserInputError(f"LibraryNetwork: in_channels must be 1 (repeated to 3) or 3, got {in_channels}")
        model = _build_library_model(library, name, download=weights == "library")
        self.normalisation = _stated_normalisation(library, name, model)  # what data.mean/std null take
        if weights not in (None, "library"):
            _load_library_weights(model, Path(weights))
        self.head = nn.Linear(_split_off_classifier(library, model), num_outputs)
        self.backbone = model
        self.num_outputs, self.in_channels, self.image_size = num_outputs, in_channels, image_size
        self.config = {
            "library": library,
            "name": name,
            "num_outputs": num_outputs,
            "weights": weights,
            "in_channels": in_channels,
            "image_size": image_size,
        }

    def forward(self, images: Tensor) -> Tensor:
        if self.in_channels == 1:
            images = images.expand(-1, 3, -1, -1)  # greyscale as RGB: the stated conversion
        return self.head(self.backbone(images))


def _load_library_weights(model: nn.Module, path: Path) -> None:
    """The library model's own state dict from ``path``; refused, naming the keys, if it does not fit exactly."""
    weights = read_weights(path, "model.network.init_args.weights")
    found = state_dict_differences(model.state_dict(), weights)
    if found:
        raise UserInputError(
            f"model.network.init_args.weights {path}: not a state dict of {type(model).__name__} (missing "
            f"{found.missing[:4]}, unexpected {found.unexpected[:4]}, other shapes {found.shapes[:4]}, other kinds of "
            f"values {found.kinds[:4]})"
        )
    model.load_state_dict(weights)
