"""Export a trained network as a model folder (:mod:`project.inference.model_folder`): safetensors weights, ONNX
(and, asked for, a ``torch.export`` program), ``config.json`` and a ``README.md`` model card.

Each executable export takes a batch of any size (the batch dimension is dynamic) and returns the network's raw outputs
(logits, or values for regression). A text model's takes token ids, ``ids``, int64 ``(batch, length)``, both
dimensions dynamic, padded with 0 (the network derives its attention mask from ``ids != 0``), and its tokenizer is
written beside it (``tokenizer.json``, which ``config.json``'s preprocessing names in place of the checkpoint's JSON).
``config.json`` says what the files expect and hold: the network's class path and
init arguments (as the checkpoint records them), the preprocessing (channels, size, mean and std per channel; a text
model's tokenizer and ``max_length``), the class names, the task and its options (the decision threshold, ...), how to
read the outputs, the metrics the run measured and the exports' largest differences from the checkpoint; ``README.md``
says it for people (:mod:`project.inference.model_card`). After writing, the exports are run on the same inputs as
the eager network (images of two batch sizes; texts tokenised, of two batch sizes and lengths) and their largest
difference (relative to the outputs' scale) is reported and checked. A network fine-tuned with LoRA is
exported with its adapters merged into its weights: a plain network, which ``--model.finetuning.pretrained`` takes as
any other. TorchScript is not offered: it is deprecated in current PyTorch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from project.errors import UserInputError
from project.files.atomic import written_folder
from project.inference.model_card import card_text, measured_metrics
from project.inference.model_folder import CARD, CONFIG, TOKENIZER
from project.inference.prediction import checkpoint_preprocessing, onnx_runner
from project.inference.prediction_files import is_text
from project.networks.lora import has_adapters, merge_adapters
from project.training.averaging import averaged_weights
from project.training.checkpoints import import_path, read_checkpoint
from project.training.specs import PROJECT_VERSION

FORMATS = ("onnx", "pt2", "safetensors")
"""The files an export can hold (``python -m project export --formats``)."""
DEFAULT_FORMATS = ("onnx", "safetensors")
"""The files of a model folder unless told (``torch.export``'s ``.pt2`` is asked for by name)."""


def default_folder(checkpoint_path: Path) -> Path:
    """Where a checkpoint's exports go unless told: ``<run folder>/export/<checkpoint name>/``."""
    return Path(checkpoint_path).resolve().parent.parent / "export" / Path(checkpoint_path).stem


def _example_images(preprocessing: dict[str, Any], count: int = 4) -> Tensor:
    """A batch of normalised noise shaped like the network's images (for tracing and parity checks)."""
    generator = torch.Generator().manual_seed(0)
    size = preprocessing["image_size"]
    return torch.randn(count, preprocessing["channels"], size, size, generator=generator)


def _example_ids(preprocessing: dict[str, Any], words: list[int], seed: int = 0) -> Tensor:
    """A batch of texts as a text model takes them, one of ``words`` token pieces each: texts decoded from token ids
    drawn at random (no special token), then tokenised as ``predict`` tokenises, truncated to ``max_length`` and
    padded with 0 to the longest of the batch."""
    from project.data.tokenizer import TextTokenizer

    tokenizer = TextTokenizer.from_json(preprocessing["tokenizer"])
    generator = torch.Generator().manual_seed(seed)
    special = set(tokenizer.special_ids)
    texts = []
    for count in words:
        drawn = torch.randint(0, tokenizer.vocab_size, (4 * count + 8,), generator=generator).tolist()
        texts.append(tokenizer.decode([token for token in drawn if token not in special][:count]))
    return tokenizer.pad(tokenizer.encode(texts, preprocessing["max_length"]))


def _example_inputs(preprocessing: dict[str, Any]) -> Tensor:
    """The batch the exports are traced with: 4 images, or 4 texts of 3 to 12 token pieces (padded)."""
    return _example_ids(preprocessing, [3, 12, 7, 5]) if is_text(preprocessing) else _example_images(preprocessing)


def _check_inputs(preprocessing: dict[str, Any]) -> list[Tensor]:
    """The batches the exports are checked on, of other sizes than traced: 1 and 7 images; 7 short texts of mixed
    lengths (padded) and 1 text longer than ``max_length`` (truncated)."""
    if not is_text(preprocessing):
        return [_example_images(preprocessing, 1), _example_images(preprocessing, 7)]
    return [_example_ids(preprocessing, [1, 9, 2, 15, 4, 6, 3], seed=1), _example_ids(preprocessing, [600], seed=2)]


def _dynamic_shapes(inputs: Tensor, preprocessing: dict[str, Any]) -> tuple[dict[int, Any]]:
    """The dimensions an export leaves free: the batch, and a text model's length (2, ``[CLS] [SEP]``, to
    ``max_length``)."""
    free = {0: torch.export.Dim("batch", min=1, max=65536)}
    if is_text(preprocessing):
        free[1] = torch.export.Dim("length", min=2, max=preprocessing["max_length"])
    return (free,)


def _export_onnx(network: nn.Module, inputs: Tensor, path: Path, preprocessing: dict[str, Any]) -> None:
    torch.onnx.export(
        network,
        (inputs,),
        str(path),
        input_names=["ids" if is_text(preprocessing) else "images"],
        output_names=["outputs"],
        dynamic_shapes=_dynamic_shapes(inputs, preprocessing),
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def _export_program(network: nn.Module, inputs: Tensor, path: Path, preprocessing: dict[str, Any]) -> None:
    program = torch.export.export(network, (inputs,), dynamic_shapes=_dynamic_shapes(inputs, preprocessing))
    torch.export.save(program, str(path))


def _export_safetensors(network: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({name: tensor.contiguous() for name, tensor in network.state_dict().items()}, str(path))


def run_export(path: Path, inputs: Tensor) -> Tensor:
    """The outputs of an exported file (ONNX through onnxruntime, a program through ``torch.export.load``) for a
    batch of normalised images, or of a text model's token ids."""
    if path.suffix == ".onnx":
        return onnx_runner(path)(inputs)
    with torch.no_grad():
        return torch.export.load(str(path)).module()(inputs)


def _largest_differences(folder: Path, network: nn.Module, inputs: Tensor) -> dict[str, float]:
    """The largest difference between each executable export's outputs and the eager network's, relative to the
    outputs' scale (their largest magnitude, or 1 when smaller): float32 rounding, not the logits' size."""
    with torch.no_grad():
        expected = network(inputs)
    scale = max(expected.abs().max().item(), 1.0)
    found = {}
    for name in ("model.onnx", "model.pt2"):
        if (folder / name).is_file():
            found[name] = (run_export(folder / name, inputs) - expected).abs().max().item() / scale
    return found


def _merged_adapters_difference(network: nn.Module, inputs: Tensor) -> dict[str, float]:
    """Merge a LoRA network's adapters into its weights (:func:`project.networks.lora.merge_adapters`); how far the
    merged network's outputs are from the adapters' (relative to the outputs' scale). Empty for other networks."""
    if not has_adapters(network):
        return {}
    with torch.no_grad():
        before = network(inputs)
        merge_adapters(network)
        after = network(inputs)
    return {"merged adapters": (after - before).abs().max().item() / max(before.abs().max().item(), 1.0)}


def _checked_differences(
    folder: Path, network: nn.Module, preprocessing: dict[str, Any], tolerance: float
) -> dict[str, float]:
    """:func:`_largest_differences` over batches of other sizes (and, for texts, lengths) than the one traced
    (:func:`_check_inputs`: those dimensions are dynamic); refused above ``tolerance``."""
    differences: dict[str, float] = {}
    for inputs in _check_inputs(preprocessing):
        for name, value in _largest_differences(folder, network, inputs).items():
            differences[name] = max(value, differences.get(name, 0.0))
    failed = {name: value for name, value in differences.items() if not value <= tolerance}
    if failed:
        raise UserInputError(f"the exports differ from the network by more than {tolerance}: {failed}")
    return differences


def _name(checkpoint_path: Path, out: Path) -> str:
    """The model's name in its card: the folder's, or for the default folder the run's and the checkpoint's
    (``mnist-version_0-last``)."""
    if Path(out).resolve() != default_folder(checkpoint_path):
        return Path(out).resolve().name
    run = Path(checkpoint_path).resolve().parent.parent
    return f"{run.parent.name}-{run.name}-{Path(checkpoint_path).stem}"


def _dataset(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint records of its data: the data module's class, the dataset's name, how it was split."""
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    return {"class_path": data.get("_class_path"), "name": data.get("dataset"), "split": data.get("split")}


_IMAGE_INPUT = "float32 (batch, channels, size, size): pixels / 255, minus mean, over std, per channel"
_TEXT_INPUT = (
    f"int64 ids (batch, length): token ids of {TOKENIZER} ([CLS] text [SEP], at most max_length), padded with 0 to the "
    "longest of the batch (the network's attention mask is ids != 0)"
)


def _config(
    checkpoint_path: Path, checkpoint: dict[str, Any], model: Any, preprocessing: dict[str, Any]
) -> dict[str, Any]:
    """``config.json`` but the files and differences: what the files expect, what the run recorded and measured."""
    return {
        "format": "a model folder of python -m project export",
        "project_version": PROJECT_VERSION,
        # The run it came from (<run>/version_N/checkpoints/<name>.ckpt), without this machine's folders: it may be
        # published (--push_to_hub).
        "checkpoint": "/".join(Path(checkpoint_path).resolve().parts[-4:]),
        "network": checkpoint["hyper_parameters"]["network"],  # {class_path, init_args}: built from the allow-list
        "num_outputs": model.task.num_outputs,
        "outputs": model.task.outputs_meaning,
        "task": model.task.name,
        "task_class": import_path(type(model.task)),
        "task_options": model.task.options,  # the threshold of decisions, ...: prediction reads them
        "input": _TEXT_INPUT if is_text(preprocessing) else _IMAGE_INPUT,
        # With the class names; a text model's names its tokenizer file (written beside it) in place of its JSON.
        "preprocessing": {**preprocessing, "tokenizer": TOKENIZER} if is_text(preprocessing) else preprocessing,
        "dataset": _dataset(checkpoint),
        "lora_merged": checkpoint["hyper_parameters"].get("lora"),
        "averaged_weights": averaged_weights(checkpoint),  # EMA or SWA: the files hold the average (else null)
        "metrics": measured_metrics(checkpoint_path, checkpoint),
    }


def _write_formats(
    network: nn.Module, preprocessing: dict[str, Any], folder: Path, formats: tuple[str, ...], said: _Steps
) -> list[str]:
    """Write ``model.<format>`` of each of ``formats`` into ``folder`` (and a text model's ``tokenizer.json``), saying
    each; the names of the files written."""
    inputs = _example_inputs(preprocessing)
    writers = {
        "onnx": lambda: _export_onnx(network, inputs, folder / "model.onnx", preprocessing),
        "pt2": lambda: _export_program(network, inputs, folder / "model.pt2", preprocessing),
        "safetensors": lambda: _export_safetensors(network, folder / "model.safetensors"),
    }
    for name in formats:
        writers[name]()
        said(f"wrote model.{name}")
    if not is_text(preprocessing):
        return [f"model.{name}" for name in formats]
    (folder / TOKENIZER).write_text(preprocessing["tokenizer"], encoding="utf-8")
    return [*(f"model.{name}" for name in formats), TOKENIZER]


class _Steps:
    """Tells ``progress`` each step of an export done, with the seconds it took."""

    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.progress = progress
        self.since = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        if self.progress is not None:
            self.progress(f"{step} ({now - self.since:.1f} s)")
        self.since = now


def export_checkpoint(
    checkpoint_path: Path,
    out: Path,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    tolerance: float = 1e-5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write a checkpoint's model folder into ``out`` (a new folder; whole or not at all): the exports in
    ``formats`` (and a text model's ``tokenizer.json``), ``config.json`` and the ``README.md`` model card; check the
    exports against the eager network on inputs of two batch sizes (:func:`_check_inputs`), and return what
    ``config.json`` holds; ``progress`` is told each step done
    (``wrote model.onnx (2.1 s)``)."""
    said = _Steps(progress)
    from project.training.task_module import TaskModule

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise UserInputError(f"--formats: {', '.join(unknown) or 'none given'}; choose from {', '.join(FORMATS)}")
    if os.path.lexists(out):  # a link, even one to nothing, is there too
        raise UserInputError(f"{out} already exists: give another --out, or remove it (nothing is overwritten)")
    checkpoint = read_checkpoint(checkpoint_path)
    model = TaskModule.from_checkpoint(checkpoint, checkpoint_path).eval()
    network = model.network.eval()
    said(f"read {checkpoint_path}")
    preprocessing = checkpoint_preprocessing(checkpoint, checkpoint_path)
    # LoRA: the exports are of the merged, plain network.
    merging = _merged_adapters_difference(network, _example_inputs(preprocessing))
    config = _config(checkpoint_path, checkpoint, model, preprocessing)
    with written_folder(out) as staging:  # the files appear together, or not at all
        files = _write_formats(network, preprocessing, staging, formats, said)
        differences = {**merging, **_checked_differences(staging, network, preprocessing, tolerance)}
        said(f"checked {', '.join(f'model.{name}' for name in formats)} against the checkpoint's network")
        config["files"] = files
        config["largest_difference_from_the_checkpoint"] = differences
        (staging / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (staging / CARD).write_text(
            card_text(config, checkpoint, checkpoint_path, _name(checkpoint_path, out)), "utf-8"
        )
    return config
