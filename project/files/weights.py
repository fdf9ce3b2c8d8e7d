"""Weight files: every tensor read from a file is read as plain data, including what a model library reads for us.

- :func:`read_weights`: a Lightning checkpoint, a state dict (``torch.save``) or a safetensors file, with
  ``torch.load(weights_only=True)``; :func:`state_dict_differences` says how it fails to fit a module (names, shapes,
  and values of another kind: integer or boolean tensors for float weights).
- :func:`weights_only_loads`: while a library builds a model with its pretrained weights, every ``torch.load`` it
  makes reads plain data only, whatever it asks for. ``torch.hub.load_state_dict_from_url``, which torchvision uses,
  defaults to ``weights_only=False``, so a pickle planted in the hub cache would otherwise run.
- :func:`hub_file`: a library's weight file in torch's hub cache, downloaded by us when absent (with torch.hub's
  hash check) and checked against the SHA-256 prefix its name carries when present (torch.hub checks only
  downloads, never a file already in the cache).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor

from project.errors import UserInputError, first_line

_FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_FORCE_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
"""torch's documented switches ("Miscellaneous Environment Variables"), read by every ``torch.load`` call."""
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")
"""``mobilenet_v3_small-047dcff4.pth``: the first hex digits of the file's SHA-256 (torch.hub's naming rule)."""


@contextmanager
def weights_only_loads() -> Iterator[None]:
    """Within this block, ``torch.load`` reads plain data only (``weights_only=True``) even where a library passes
    ``weights_only=False``: a pickle in a file it loads for us is refused instead of run."""
    saved = {name: os.environ.get(name) for name in (_FORCE_WEIGHTS_ONLY, _FORCE_NO_WEIGHTS_ONLY)}
    os.environ[_FORCE_WEIGHTS_ONLY] = "1"
    os.environ.pop(_FORCE_NO_WEIGHTS_ONLY, None)  # torch refuses to load when both are set
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_file(url: str) -> Path:
    """The library weight file ``url`` in torch's hub cache (``$TORCH_HOME/hub/checkpoints``): downloaded when it is
    not there (torch.hub checks the hash its name carries), checked against that hash when it is."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    named = _HASH_IN_NAME.search(path.name)
    expected = named.group(1) if named else None
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=expected, progress=True)
        except (OSError, RuntimeError) as error:  # URLError is an OSError; a wrong hash is a RuntimeError
            raise UserInputError(
                f"the library's weights {url} could not be downloaded ({first_line(error)}); without a network, put "
                f"the file at {path}"
            ) from None
    if expected and not _sha256_of(path).startswith(expected):
        raise UserInputError(
            f"{path} is not the library's weight file: its SHA-256 does not start with {expected}, as its name says "
            f"(a corrupt or planted file); delete it, and it is downloaded again"
        )
    return path


def read_weights(path: str | Path, option: str = "model.finetuning.pretrained") -> dict[str, Tensor]:
    """The tensors in a Lightning checkpoint, a plain state dict (``torch.save``) or a safetensors file.

    Checkpoints are read with ``weights_only=True``: a file that needs arbitrary unpickling is refused.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(f"{option} {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as error:
            raise UserInputError(f"{option} {path}: not a readable safetensors file ({error})") from None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for pickled objects, RuntimeError/EOFError for other files
        raise UserInputError(
            f"{option} {path}: not a checkpoint or state dict that loads with torch.load(weights_only=True) "
            f"({first_line(error)})"
        ) from None
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict) or not all(isinstance(value, Tensor) for value in content.values()):
        raise UserInputError(f"{option} {path}: holds no state dict (a mapping of names to tensors)")
    return content


def kind(tensor: Tensor) -> str:
    """What a tensor's values are: ``floating`` (any float type), ``complex``, ``bool`` or ``integer``."""
    if tensor.is_floating_point():
        return "floating"
    if tensor.is_complex():
        return "complex"
    return "bool" if tensor.dtype == torch.bool else "integer"


@dataclass
class _Differences:
    """How a state dict fails to fit a module: the names it lacks, the names the module lacks, the shared names whose
    shapes differ, and those whose values are of another kind (``int64`` tensors for ``float32`` weights would load
    as whole numbers: zeros for small weights). Each entry names the tensor; false when it fits exactly."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[str]
    kinds: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes or self.kinds)


def state_dict_differences(target: dict[str, Tensor], source: dict[str, Tensor]) -> _Differences:
    """How ``source`` fails to fit a module whose state dict is ``target`` (see :class:`_Differences`)."""
    shared = sorted(set(source) & set(target))
    return _Differences(
        missing=sorted(set(target) - set(source)),
        unexpected=sorted(set(source) - set(target)),
        shapes=[
            f"{name}: checkpoint {tuple(source[name].shape)}, network {tuple(target[name].shape)}"
            for name in shared
            if source[name].shape != target[name].shape
        ],
        kinds=[
            f"{name}: {source[name].dtype} in the file, {target[name].dtype} in the network"
            for name in shared
            if source[name].shape == target[name].shape and kind(source[name]) != kind(target[name])
        ],
    )
