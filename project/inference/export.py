"""Export a trained network as a model folder (:mod:`project.inference.model_folder`): safetensors weights, ONNX
(and, asked for, a ``torch.export`` program), ``config.json`` and a ``README.md`` model card.

Each executable export takes a batch of any size (the batch dimension is dynamic) and returns the network's raw outputs
(logits, or values for regression). ``config.json`` says what the files expect and hold: the network's class path and
init arguments (as the checkpoint records them), the preprocessing (channels, size, mean and std per channel), the
class names, the task and its options (the decision threshold, ...), how to read the outputs, the metrics the run
measured and the exports' largest differences from the checkpoint; ``README.md`` says it for people
(:mod:`project.inference.model_card`). After writing, the exports are run on the same images as the eager network and
their largest difference (relative to the outputs' scale) is reported and checked. A network fine-tuned with LoRA is
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
from project.inference.model_folder import CARD, CONFIG
from project.inference.prediction import checkpoint_preprocessing, onnx_runner
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


def _batch_dimension() -> dict[int, Any]:
    return {0: torch.export.Dim("batch", min=1, max=65536)}


def _export_onnx(network: nn.Module, images: Tensor, path: Path) -> None:
    torch.onnx.export(
        network,
        (images,),
        str(path),
        input_names=["images"],
        output_names=["outputs"],
        dynamic_shapes=(_batch_dimension(),),
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def _export_program(network: nn.Module, images: Tensor, path: Path) -> None:
    program = torch.export.export(network, (images,), dynamic_shapes=(_batch_dimension(),))
    torch.export.save(program, str(path))


def _export_safetensors(network: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({name: tensor.contiguous() for name, tensor in network.state_dict().items()}, str(path))


def run_export(path: Path, images: Tensor) -> Tensor:
    """The outputs of an exported file (ONNX through onnxruntime, a program through ``torch.export.load``)."""
    if path.suffix == ".onnx":
        return onnx_runner(path)(images)
    with torch.no_grad():
        return torch.export.load(str(path)).module()(images)


def _largest_differences(folder: Path, network: nn.Module, images: Tensor) -> dict[str, float]:
    """The largest difference between each executable export's outputs and the eager network's, relative to the
    outputs' scale (their largest magnitude, or 1 when smaller): float32 rounding, not the logits' size."""
    with torch.no_grad():
        expected = network(images)
    scale = max(expected.abs().max().item(), 1.0)
    found = {}
    for name in ("model.onnx", "model.pt2"):
        if (folder / name).is_file():
            found[name] = (run_export(folder / name, images) - expected).abs().max().item() / scale
    return found


def _merged_adapters_difference(network: nn.Module, images: Tensor) -> dict[str, float]:
    """Merge a LoRA network's adapters into its weights (:func:`project.networks.lora.merge_adapters`); how far the
    merged network's outputs are from the adapters' (relative to the outputs' scale). Empty for other networks."""
    if not has_adapters(network):
        return {}
    with torch.no_grad():
        before = network(images)
        merge_adapters(network)
        after = network(images)
    return {"merged adapters": (after - before).abs().max().item() / max(before.abs().max().item(), 1.0)}


def _checked_differences(
    folder: Path, network: nn.Module, preprocessing: dict[str, Any], tolerance: float
) -> dict[str, float]:
    """:func:`_largest_differences` over batches of other sizes than the one traced (the batch dimension is
    dynamic); refused above ``tolerance``."""
    differences: dict[str, float] = {}
    for count in (1, 7):
        for name, value in _largest_differences(folder, network, _example_images(preprocessing, count)).items():
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
        "input": "float32 (batch, channels, size, size): pixels / 255, minus mean, over std, per channel",
        "preprocessing": preprocessing,  # with the class names
        "dataset": _dataset(checkpoint),
        "lora_merged": checkpoint["hyper_parameters"].get("lora"),
        "averaged_weights": averaged_weights(checkpoint),  # EMA or SWA: the files hold the average (else null)
        "metrics": measured_metrics(checkpoint_path, checkpoint),
    }


def _write_formats(network: nn.Module, images: Tensor, folder: Path, formats: tuple[str, ...], said: _Steps) -> None:
    """Write ``model.<format>`` of each of ``formats`` into ``folder``, saying each."""
    writers = {
        "onnx": lambda: _export_onnx(network, images, folder / "model.onnx"),
        "pt2": lambda: _export_program(network, images, folder / "model.pt2"),
        "safetensors": lambda: _export_safetensors(network, folder / "model.safetensors"),
    }
    for name in formats:
        writers[name]()
        said(f"wrote model.{name}")


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
    ``formats``, ``config.json`` and the ``README.md`` model card; check the exports against the eager network on
    images of two batch sizes, and return what ``config.json`` holds; ``progress`` is told each step done
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
    images = _example_images(preprocessing)
    merging = _merged_adapters_difference(network, images)  # LoRA: the exports are of the merged, plain network
    config = _config(checkpoint_path, checkpoint, model, preprocessing)
    with written_folder(out) as staging:  # the files appear together, or not at all
        _write_formats(network, images, staging, formats, said)
        differences = {**merging, **_checked_differences(staging, network, preprocessing, tolerance)}
        said(f"checked {', '.join(f'model.{name}' for name in formats)} against the checkpoint's network")
        config["files"] = [f"model.{name}" for name in formats]
        config["largest_difference_from_the_checkpoint"] = differences
        (staging / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (staging / CARD).write_text(
            card_text(config, checkpoint, checkpoint_path, _name(checkpoint_path, out)), "utf-8"
        )
    return config
