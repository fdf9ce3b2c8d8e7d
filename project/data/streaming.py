"""Image folders and CSVs past one machine: their decoded images written once as litdata chunks (a local folder or
object storage, ``s3://...``), then trained from the chunks with the same splits, labels, few-shot subsets,
augmentation and exact resume as from the files (``data.stream``: :class:`Streamed`).

The chunks of a source are ``<chunks>/train/`` (and ``<chunks>/test/`` where the source has its own test split), one
item per image, ``{"index": int, "pixels": bytes}`` in the dataset's order, and ``<chunks>/manifest/``, one item
holding the manifest as JSON bytes: what the chunks were written from (the data module, the conversion, the files'
names and sizes and their targets: :func:`_source_key`), each split's count and targets, the class names. The manifest
is written last: chunks without one are a conversion that was stopped, refused rather than overwritten.

Files are data: the chunks are read with litdata's ``int`` and ``bytes`` serializers only; every other serializer
litdata would pick from a chunk's ``index.json`` (``pickle`` among them, which would run code) is replaced by one
that refuses (:class:`_Refused`), and the manifest is parsed with :func:`json.loads`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import Dataset

from project.data.batches import ExampleBatch
from project.data.cache import resolve_cache_dir
from project.data.stream_order import HeldChunks
from project.errors import DataNotFoundError, UserInputError

if TYPE_CHECKING:
    from project.data.files import FileDataModule

_REMOTES = ("s3://", "gs://", "azure://", "r2://", "local:")
"""The object-storage prefixes ``data.stream.chunks`` takes (``local:`` reads a folder as litdata reads a remote)."""
_READ_ONLY = ("local:", "azure://")
"""Where litdata reads chunks but does not write them (0.2.76)."""
_FORMAT = 1
"""The manifest's layout; chunks of another are written again."""
CHUNK_BYTES = "64MB"
"""The size of a chunk litdata writes (a split of 28x28 images of up to about 80,000 is one chunk)."""
_MAX_MANIFEST_BYTES = 2**30
_KEPT = ("int", "bytes")
_REFUSED = (
    "pickle", "graph", "json", "file", "pil", "jpeg", "jpeg_array", "image", "video", "audio", "nifti", "mesh", "pdf",
    "tifffile", "tensor", "no_header_tensor", "numpy", "no_header_numpy", "str", "text", "bool", "float",
)  # fmt: skip
"""litdata's serializers other than :data:`_KEPT` (0.2.76): none of them may read these chunks."""


@dataclass(frozen=True)
class Streamed:
    """Train from litdata chunks of the images (``--data.stream.chunks s3://bucket/photos``): a piece of the arguments
    of the modules that read image files, checked when it is built. Where the chunks hold none yet, the first run
    writes them from ``data.data_dir`` (decoded as ``data.decoded`` says); later runs, on any machine, read them.

    Args:
        chunks: where the chunks are: a folder, or object storage (``s3://``, ``gs://``, ``azure://``, ``r2://``;
            ``local:/path`` reads a folder as a remote); ``null``: read the files (the default).
        cache_dir: where chunks read from object storage are kept while training; default
            ``<data.decoded's cache folder>/streamed``; never the chunks' own folder.
        max_cache_gb: the most that folder may hold (GB); default: litdata's (75% of the free disk).
    """

    chunks: str | None = None
    cache_dir: str | None = None
    max_cache_gb: float | None = None

    def __post_init__(self) -> None:
        if self.max_cache_gb is not None and not self.max_cache_gb > 0:
            raise UserInputError(f"data.stream.max_cache_gb must be more than 0, got {self.max_cache_gb}")
        if self.chunks is not None:
            if not self.chunks.strip():
                raise UserInputError("data.stream.chunks is blank: name a folder or s3://bucket/prefix")
            _litdata()

    def url(self, split: str) -> str:
        """Where the chunks of ``split`` (``train``, ``test``, ``manifest``) are, as litdata takes it."""
        base = self.chunks.rstrip("/")
        if base.startswith(_REMOTES):
            return f"{base}/{split}"
        return str(Path(base).expanduser().resolve() / split)

    @property
    def remote(self) -> bool:
        return self.chunks is not None and self.chunks.startswith(_REMOTES)


def _litdata() -> Any:
    """The litdata package, or one line saying how to install it. Its check of PyPI for a newer release (on by
    default before 0.2.60: a request at the first dataset of every process) is turned off unless asked for."""
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
    try:
        import litdata
    except ImportError:
        raise UserInputError(
            "data.stream.chunks needs litdata, which is not installed: pip install 'project[stream]' "
            "(or pip install 'litdata>=0.2.50')"
        ) from None
    return litdata


def check_data_dir(data_dir: str | None, stream: Streamed) -> None:
    """Refuse object storage given as ``data.data_dir``: image files are read from a folder; the chunks backend reads
    object storage."""
    if data_dir and data_dir.startswith(_REMOTES):
        raise UserInputError(
            f"data.data_dir {data_dir} is object storage, which image files are not read from: write the folder's "
            f"chunks there once (--data.data_dir <the folder> --data.stream.chunks {data_dir}), then train with "
            f"--data.stream.chunks {data_dir}"
        )


def _source_key(names: list[str], sizes: list[int], targets: Tensor, module: str, conversion: str) -> str:
    """What chunks were written from, the same on every machine: the data module's kind, the conversion, each file's
    name (relative to the source) and size, and the targets."""
    digest = hashlib.sha256(f"{module}\0{conversion}\n".encode())
    for name, size in zip(names, sizes, strict=True):
        digest.update(f"{name}\0{size}\n".encode())
    digest.update(json.dumps(targets.tolist()).encode())
    return digest.hexdigest()


class _Refused:
    """A litdata serializer that refuses: a chunk whose ``index.json`` names it was not written by this project."""

    def __init__(self, name: str) -> None:
        self.name = name

    def setup(self, data_format: Any) -> None:
        pass

    def can_serialize(self, item: Any) -> bool:
        return False

    def serialize(self, item: Any) -> Any:
        raise UserInputError(f"the chunks are written with the int and bytes serializers only, not {self.name}")

    def deserialize(self, data: bytes) -> Any:
        raise UserInputError(
            f"these chunks hold items serialized as {self.name!r}: this project reads only int and bytes items from "
            f"chunks (it never unpickles): they were not written by it"
        )


def _serializers() -> dict[str, Any]:
    return {name: _Refused(name) for name in _REFUSED}


def _check_formats(url: str) -> None:
    """Refuse a local folder of chunks whose ``index.json`` names a serializer other than ``int`` and ``bytes``, before
    litdata opens it (chunks in object storage are guarded by :class:`_Refused` alone: litdata fetches their index)."""
    index = Path(url, "index.json")
    if not index.is_file():
        raise UserInputError(f"{url} holds no chunks (no index.json): those chunks are incomplete; write them again")
    if index.stat().st_size > _MAX_MANIFEST_BYTES:
        raise UserInputError(f"{index} is not the index of chunks this project wrote (too large)")
    config = json.loads(index.read_bytes()).get("config") or {}
    formats = config.get("data_format") if isinstance(config, dict) else None
    if not isinstance(formats, list) or not set(formats) <= set(_KEPT):
        raise UserInputError(
            f"{index} names items serialized as {formats}: this project reads only int and bytes items from chunks "
            f"(it never unpickles): they were not written by it"
        )


def _chunk_sizes(index: Path) -> list[int]:
    """The count of items of each chunk an ``index.json`` lists, in order, its serializers checked."""
    _check_formats(str(index.parent))
    chunks = json.loads(index.read_bytes()).get("chunks")
    sizes = [chunk.get("chunk_size") for chunk in chunks] if isinstance(chunks, list) else None
    if not sizes or not all(isinstance(size, int) and size > 0 for size in sizes):
        raise UserInputError(f"{index} does not list the chunks as this project writes them")
    return sizes


def _streaming_dataset(url: str, stream: Streamed) -> Any:
    """litdata's dataset of the chunks at ``url``, its downloads kept in the cache folder, read as data."""
    if not stream.remote:
        _check_formats(url)
    cache = Path(stream.cache_dir).expanduser() if stream.cache_dir else resolve_cache_dir(None) / "streamed"
    cache.mkdir(parents=True, exist_ok=True)
    size = f"{stream.max_cache_gb}GB" if stream.max_cache_gb is not None else None
    streaming = _litdata().StreamingDataset
    return streaming(url, cache_dir=str(cache.resolve()), serializers=_serializers(), max_cache_size=size)


def read_manifest(stream: Streamed) -> dict[str, Any] | None:
    """The manifest of the chunks at ``data.stream.chunks``, or ``None`` where none has been written."""
    if not stream.remote and not Path(stream.url("manifest"), "index.json").is_file():
        return None
    try:
        dataset = _streaming_dataset(stream.url("manifest"), stream)
        (item,) = dataset[0:1]
    except (FileNotFoundError, ValueError) as error:
        if stream.remote and "index.json" in str(error):
            return None
        raise UserInputError(f"data.stream.chunks {stream.chunks}: its manifest cannot be read ({error})") from None
    text = item.get("manifest") if isinstance(item, dict) else None
    if not isinstance(text, bytes) or len(text) > _MAX_MANIFEST_BYTES:
        raise UserInputError(f"data.stream.chunks {stream.chunks}: its manifest is not this project's")
    manifest = json.loads(text)
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise UserInputError(
            f"data.stream.chunks {stream.chunks}: the chunks there were written in another layout; write them again "
            f"(delete the folder, or name another)"
        )
    return manifest


def _check_manifest(manifest: dict[str, Any], stream: Streamed, expected: dict[str, Any]) -> None:
    """Refuse chunks written from another data module, conversion or folder than the options give: ``expected``
    holds ``module``, ``conversion`` and, where the files are here too, ``key``."""
    for name, what in (("module", "data module"), ("conversion", "conversion (channels, image_size, mnist_style)")):
        if manifest.get(name) != expected[name]:
            raise UserInputError(
                f"data.stream.chunks {stream.chunks} holds chunks written by another {what} ({manifest.get(name)}, "
                f"not {expected[name]}): write them elsewhere (another data.stream.chunks), or use those options"
            )
    if "key" in expected and manifest.get("key") != expected["key"]:
        raise UserInputError(
            f"data.stream.chunks {stream.chunks} holds chunks written from another folder than "
            f"{manifest.get('source')} as it is now (its files or their targets differ): write them elsewhere "
            f"(another data.stream.chunks)"
        )


def _item(images: Any, index: int) -> dict[str, Any]:
    return {"index": index, "pixels": images.pixels_of([index])[0].numpy().tobytes()}


def _manifest_item(text: bytes, index: int) -> dict[str, Any]:
    return {"manifest": text}


def _optimized(function: Any, count: int, url: str) -> None:
    # One worker keeps the items in the dataset's order; forked, it starts at once (spawned, it imports everything
    # again, about 9 s here) and is handed the decoded images without pickling them.
    start = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    try:
        _litdata().optimize(fn=function, inputs=list(range(count)), output_dir=url, chunk_bytes=CHUNK_BYTES,
                            num_workers=1, verbose=False, reorder_files=False, start_method=start)  # fmt: skip
    except RuntimeError as error:
        if "already contains" not in str(error):
            raise
        raise UserInputError(
            f"{url} already holds chunks but the folder has no manifest (a conversion that was stopped, or chunks "
            f"of something else): delete it, or name another data.stream.chunks"
        ) from None


def _write_chunks(stream: Streamed, splits: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Write ``splits`` (``train``, maybe ``test``: datasets with ``pixels_of`` and ``targets``) as chunks at
    ``data.stream.chunks``, then the manifest (``splits`` added: each one's count and targets), which makes them
    complete."""
    for name, images in splits.items():
        rank_zero_info(f"Writing {len(images):,} images of the {name} split as chunks to {stream.url(name)}")
        _optimized(partial(_item, images), len(images), stream.url(name))
    counts = {name: {"count": len(images), "targets": images.targets.tolist()} for name, images in splits.items()}
    text = json.dumps({**manifest, "format": _FORMAT, "splits": counts}).encode()
    _optimized(partial(_manifest_item, text), 1, stream.url("manifest"))


class StreamedImages(Dataset):
    """A split's images read from its chunks, each chunk whole (training follows the chunks:
    :mod:`project.data.stream_order`), with the targets of the manifest: an example is the image's
    uint8 pixels and its target, as :class:`~project.data.file_images.FileImages` gives it, so every other part of
    the data module (splits, sampler, augmentation, normalisation) is the files' own. Each process (a DataLoader
    worker) opens the chunks itself.

    Args:
        stream: where the chunks are and where downloads go.
        split: ``train`` or ``test``.
        shape: ``(C, H, W)`` of every image.
        targets: the split's targets, in the chunks' order.
    """

    decodes_on_access = True  # reading downloads and copies: work for DataLoader workers

    def __init__(self, stream: Streamed, split: str, shape: tuple[int, int, int], targets: Tensor) -> None:
        self.stream, self.split, self.shape, self.targets = stream, split, shape, targets
        self.opened: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "opened": None}  # a worker opens the chunks itself

    def chunks(self) -> HeldChunks:
        """This split's chunks, opened once per process (litdata's dataset of them, its index checked), each read
        whole when first asked for (:class:`~project.data.stream_order.HeldChunks`)."""
        if self.opened is None or self.opened[0] != os.getpid():
            where = self.stream.url(self.split)
            dataset = _streaming_dataset(where, self.stream)
            sizes = _chunk_sizes(Path(dataset.input_dir.path, "index.json"))
            if sum(sizes) != len(self.targets) or len(dataset) != len(self.targets):
                raise UserInputError(f"{where} holds {len(dataset):,} images, its manifest {len(self.targets):,}")
            starts = torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.int64)
            # A slice of a whole chunk: litdata downloads it whole (into data.stream.cache_dir), then reads it in
            # sequence (a plain index from a local: remote reads no bytes in litdata 0.2.76).
            self.opened = (os.getpid(), HeldChunks(lambda start, end: dataset[start:end], starts, self.shape, where))
        return self.opened[1]

    def chunk_starts(self) -> Tensor:
        """Where each chunk starts, and the count of images last: the layout the training order follows."""
        return self.chunks().starts

    def pixels_of(self, indices: list[int]) -> Tensor:
        """Some images' uint8 pixels, ``(n, C, H, W)``, read from the chunks (each checked: its index and size)."""
        return self.chunks().pixels_of(indices)

    def __getitems__(self, indices: list[int]) -> ExampleBatch:
        """Many examples at once, as :meth:`FileImages.__getitems__ <project.data.file_images.FileImages>` gives
        them."""
        images, targets = self.pixels_of(indices), self.targets[indices]
        examples = [(image, _plain(target)) for image, target in zip(images, targets, strict=True)]
        if targets.ndim == 1:
            targets = targets.to(torch.float64 if targets.is_floating_point() else torch.int64)
        return ExampleBatch(examples, images, targets)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        return self.pixels_of([index])[0], _plain(self.targets[index])


def _plain(target: Tensor) -> Any:
    return target.item() if target.ndim == 0 else target


def _streamed_splits(stream: Streamed, manifest: dict[str, Any], shape: tuple[int, int, int]) -> dict[str, Any]:
    """The splits the chunks hold, as :class:`StreamedImages`, with the manifest's targets."""
    splits = {}
    for name, split in manifest["splits"].items():
        values = split["targets"]
        floating = any(isinstance(value, float) for value in np.ravel(values)) if values else False
        targets = torch.tensor(values, dtype=torch.float32 if floating else torch.int64)
        splits[name] = StreamedImages(stream, name, shape, targets)
    return splits


def check_chunks_or_files(module: FileDataModule) -> None:
    """Refuse a module given chunks to read where there are none yet and no files to write them from, or a place
    litdata does not write to."""
    source, chunks = module.sources()[0], module.stream.chunks
    if chunks is not None and module.manifest is None and chunks.startswith(_READ_ONLY):
        raise UserInputError(
            f"data.stream.chunks {chunks} holds no chunks, and litdata writes chunks only to a folder, s3://, gs:// "
            f"or r2://: write them there first (a folder: without local:)"
        )
    if chunks is not None and module.manifest is None and not source.exists():
        raise DataNotFoundError(
            f"{type(module).__name__}: no chunks at data.stream.chunks {chunks} yet, and no images to "
            f"write them from at {source.resolve()} (data.data_dir)"
        )


def opened(module: FileDataModule) -> dict[str, Any]:
    """``module``'s splits read from its chunks, written first where there are none yet (``module.manifest`` is then
    read again), and checked: the chunks must have been written by the same kind of module with the same conversion
    and, where the files are here too, from them as they are now."""
    if module.manifest is None:
        module.manifest = read_manifest(module.stream)  # written since the module was built (by another process)
    if module.manifest is None:
        _write_module(module)
    expected = {"module": type(module).__name__, "conversion": module.conversion.description}
    if module.sources()[0].exists():
        expected["key"] = _module_key(module)
    _check_manifest(module.manifest, module.stream, expected)
    return _streamed_splits(module.stream, module.manifest, module.image_shape)


def _module_key(module: FileDataModule) -> str:
    """:func:`_source_key` over each source of ``module``'s files (the training files, the test files if apart)."""
    keys = []
    for source in (source for source in module.sources() if source is not None):
        paths, targets = module.files(source)
        folder = source if source.is_dir() else source.parent
        names = [str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path) for path in paths]
        sizes = [path.stat().st_size for path in paths]
        keys.append(_source_key(names, sizes, targets, type(module).__name__, module.conversion.description))
    return "+".join(keys)


def _write_module(module: FileDataModule) -> None:
    """Write ``module``'s files, decoded (its ``data.decoded`` cache built or opened), as chunks."""
    train_source, test_source = module.sources()
    splits = {"train": module.read(train_source)}
    if test_source is not None:
        splits["test"] = module.read(test_source)
    about = {"module": type(module).__name__, "conversion": module.conversion.description, "key": _module_key(module)}
    about |= {"source": str(module.data_dir.resolve()), "names": module.stored_names}
    _write_chunks(module.stream, splits, about)
    module.manifest = read_manifest(module.stream)
