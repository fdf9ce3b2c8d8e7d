"""The model card of a model folder (its ``README.md``), in Hugging Face's model-card layout, from what the run
recorded: YAML metadata (``library_name``, ``tags``, ``datasets``, ``metrics``, and a ``model-index`` holding the
metrics the run measured as evaluation results, each naming its split), then the sections of the Hub's card template:
model details, intended use, limits, how to load, training data, training settings, evaluation.

Every number in a card was measured by the run (:func:`measured_metrics`): the metrics of ``python -m project
evaluate`` reports of the checkpoint (``<run folder>/evaluation/*/metrics.json``), the validation metrics TensorBoard
logged just before the checkpoint was saved, the test metrics of the run's test of its best checkpoint (when the
checkpoint is that one), or the best score the checkpoint records. When none is found, the card says so. The YAML is
written here (``yaml.safe_dump``), so that an export needs no ``huggingface_hub``; the tests read it back with
``huggingface_hub.ModelCard``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor

_SPLITS = {"val": "validation", "test": "test", "train": "train"}
"""The run's split names, and the Hub's."""
_METRIC_TYPES = {"acc": "accuracy", "mse": "mse", "mae": "mae", "f1": "f1", "loss": "loss"}
"""Metric names as logged (``val/acc``), and as the Hub's ``metrics`` list names them."""


def _metric(name: str, value: Any, split: str, source: str) -> dict[str, Any] | None:
    """One measured metric as the card and ``config.json`` hold it (``None`` for a value that is not a number)."""
    value = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if value is None or not math.isfinite(value):
        return None
    short = name.rpartition("/")[2]
    kind = _METRIC_TYPES.get(short, short)
    return {"name": name, "type": kind, "value": value, "split": _SPLITS.get(split, split), "source": source}


def _evaluation_metrics(run_folder: Path, checkpoint_path: Path) -> list[dict[str, Any]]:
    """The overall metrics of every ``python -m project evaluate`` report of this checkpoint in the run folder."""
    found = []
    for path in sorted((run_folder / "evaluation").glob("*/metrics.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            if Path(report["checkpoint"]).name != checkpoint_path.name:
                continue
            overall, split = dict(report["overall"]), str(report["split"])
        except (OSError, ValueError, KeyError, TypeError):  # not a report evaluate wrote: nothing is taken from it
            continue
        source = f"python -m project evaluate ({path.relative_to(run_folder)}, {report.get('count', '?')} examples)"
        found += [_metric(f"{split}/{name}", value, split, source) for name, value in overall.items()]
    return [metric for metric in found if metric]


def _best_record(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The best-checkpoint callback's record in the checkpoint (``monitor``, ``best_model_score``, ...)."""
    for state in (checkpoint.get("callbacks") or {}).values():
        if isinstance(state, dict) and state.get("best_model_path") and state.get("monitor"):
            return state
    return None


def _logged_scalars(run_folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every ``val/`` and ``test/`` scalar TensorBoard shows for the run folder, (step, value) in order: its event
    files read as TensorBoard reads them (in order; the steps a resumed run rewound dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not any(run_folder.glob("events.out.tfevents.*")):
        return {}
    accumulator = EventAccumulator(str(run_folder), size_guidance={"scalars": 0, "images": 1, "tensors": 1})
    try:
        accumulator.Reload()
    except Exception:  # an event file TensorBoard cannot read: nothing is taken from it
        return {}
    tags = [tag for tag in accumulator.Tags().get("scalars", []) if tag.startswith(("val/", "test/"))]
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in tags}


def _logged_metrics(run_folder: Path, checkpoint_path: Path, checkpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """The validation metrics logged by the validation that ran just before the checkpoint was saved, and, when the
    checkpoint is the run's best, the metrics of the run's test of it (``fit`` tests its best checkpoint)."""
    step = int(checkpoint.get("global_step", -1))
    best = _best_record(checkpoint)
    is_best = best is not None and Path(str(best["best_model_path"])).name == checkpoint_path.name
    found = []
    for tag, events in sorted(_logged_scalars(run_folder).items()):
        split = tag.partition("/")[0]
        if split == "val":
            values = [value for at, value in events if at in (step - 1, step)]
            where = f"TensorBoard, the validation at step {step}, before this checkpoint was saved"
        else:
            values = [value for _, value in events] if is_best else []
            where = "TensorBoard, the run's test of its best checkpoint (this one)"
        if values:
            found.append(_metric(tag, values[-1], split, where))
    if best is not None and is_best and not any(metric and metric["split"] == "validation" for metric in found):
        score = best.get("best_model_score")
        value = score.item() if isinstance(score, Tensor) else score
        found.append(_metric(str(best["monitor"]), value, "val", "the checkpoint's record of its best score"))
    return [metric for metric in found if metric]


def measured_metrics(checkpoint_path: Path, checkpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics the run measured for this checkpoint, from its run folder (``<run>/checkpoints/<name>.ckpt``):
    :func:`_evaluation_metrics` first, then :func:`_logged_metrics` for the splits and names they lack."""
    run_folder = Path(checkpoint_path).resolve().parent.parent
    found = _evaluation_metrics(run_folder, Path(checkpoint_path))
    taken = {(metric["split"], metric["name"].rpartition("/")[2]) for metric in found}
    for metric in _logged_metrics(run_folder, Path(checkpoint_path), checkpoint):
        if (metric["split"], metric["name"].rpartition("/")[2]) not in taken:
            found.append(metric)
    return found


def _run_config(run_folder: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` (what ``fit`` was given) as data; empty when absent or unreadable."""
    from project.errors import UserInputError
    from project.files.yaml_text import read_yaml

    path = run_folder / "config.yaml"
    try:
        config = read_yaml(path.read_text(encoding="utf-8"), str(path)) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, UserInputError):
        return {}
    return config if isinstance(config, dict) else {}


def _spec_text(spec: Any) -> str:
    """A ``{class_path, init_args}`` spec in one line: the class's name and its arguments that are set."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        return "none" if spec is None else f"`{spec}`"
    arguments = {key: value for key, value in (spec.get("init_args") or {}).items() if value not in (None, {}, [])}
    shown = ", ".join(f"{key}={value}" for key, value in arguments.items())
    return f"`{spec['class_path']}`" + (f" ({shown})" if shown else "")


def _fine_tuned_from(hparams: dict[str, Any], run: dict[str, Any]) -> str:
    """What the network started from: a weight file, a library's pretrained weights, or random weights."""
    pretrained = (hparams.get("finetuning") or {}).get("pretrained")
    if pretrained:
        return f"the weights of `{pretrained}` (model.finetuning.pretrained)"
    network = ((run.get("model") or {}).get("network") or {}) if isinstance(run.get("model"), dict) else {}
    weights = (network.get("init_args") or {}).get("weights") if isinstance(network, dict) else None
    if weights:
        return f"the pretrained weights `{weights}` of `{network.get('class_path')}`"
    return "random weights (trained from scratch)" if run else "not recorded (the run's config.yaml was not found)"


def _training_lines(config: dict[str, Any], checkpoint: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """The training settings the checkpoint and the run's ``config.yaml`` record, as Markdown list items."""
    hparams = checkpoint.get("hyper_parameters") or {}
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    optimizer = hparams.get("optimizer") or {}
    trainer = run.get("trainer") if isinstance(run.get("trainer"), dict) else {}
    augment = {key: value for key, value in (data.get("augment") or {}).items() if value not in (None, 0, 0.0, [])}
    lines = [
        f"- optimizer: {_spec_text(optimizer)}",
        f"- learning rate: {(optimizer.get('init_args') or {}).get('lr', 'not recorded')}",
        f"- learning-rate schedule: {_spec_text(hparams.get('lr_scheduler'))}",
        f"- trained for {checkpoint.get('global_step', '?')} optimizer steps; saved in epoch "
        f"{int(checkpoint.get('epoch', -1)) + 1} of {trainer.get('max_epochs', 'an unrecorded number')} planned",
        f"- batch size: {data.get('batch_size', 'not recorded')}",
        f"- augmentation: {augment or 'none'}",
        f"- started from: {_fine_tuned_from(hparams, run)}",
        f"- LoRA: {hparams.get('lora') or 'none'}"
        + (" (adapters merged into the weights)" if hparams.get("lora") else ""),
        f"- averaged weights (EMA/SWA): {config.get('averaged_weights') or 'none'}",
        f"- seed: {run.get('seed_everything', 'not recorded')}",
    ]
    return lines


_PIPELINES = ("image-classification", "text-classification", "fill-mask")
"""The card's task types that are also Hugging Face pipeline tags."""


def _task_type(config: dict[str, Any]) -> str:
    """The Hub's task type of the model: image or text classification, regression, or a masked-token model's
    ``fill-mask``."""
    kind = "text" if "tokenizer" in config["preprocessing"] else "image"
    if config["task"] == "masked_tokens":
        return "fill-mask"
    return f"{kind}-classification" if config["task"] != "regression" else f"{kind}-regression"


def _front_matter(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The card's YAML metadata: library, tags, datasets, metrics, and ``model-index`` with one result per split."""
    metrics = config.get("metrics") or []
    dataset = config.get("dataset") or {}
    task_type = _task_type(config)
    results = []
    for split in dict.fromkeys(metric["split"] for metric in metrics):
        results.append({
            "task": {"type": task_type, "name": config["task"]},
            "dataset": {"name": dataset.get("name") or "unknown", "type": dataset.get("name") or "unknown",
                        "split": split},
            "metrics": [{"type": metric["type"], "value": metric["value"], "name": metric["name"]}
                        for metric in metrics if metric["split"] == split],
        })  # fmt: skip
    meta: dict[str, Any] = {
        "library_name": "pytorch",
        "tags": ["pytorch", "pytorch-lightning", "safetensors", task_type, config["task"]],
        "pipeline_tag": task_type if task_type in _PIPELINES else None,
        "datasets": [dataset["name"]] if dataset.get("name") else None,
        "metrics": sorted({metric["type"] for metric in metrics}) or None,
    }
    meta = {key: value for key, value in meta.items() if value is not None}
    if results:
        meta["model-index"] = [{"name": name, "results": results}]
    return meta


def _evaluation_lines(metrics: list[dict[str, Any]], run: dict[str, Any]) -> list[str]:
    """The Evaluation section's table (split, metric, value, where it was measured), or why there is none; and
    whether the run measured on part of a split only (``trainer.limit_val_batches``, ``limit_test_batches``)."""
    if not metrics:
        return [
            "No metric measured by the run was found for this checkpoint (no `python -m project evaluate` report of "
            "it in the run folder, no validation logged just before it was saved, no best score recorded): nothing "
            "is claimed here. Run `python -m project evaluate CHECKPOINT --split test` before exporting to add one."
        ]
    lines = ["| split | metric | value | measured by |", "|---|---|---|---|"]
    lines += [f"| {m['split']} | {m['name']} | {m['value']:.4f} | {m['source']} |" for m in metrics]
    trainer = run.get("trainer") if isinstance(run.get("trainer"), dict) else {}
    limits = {key: trainer.get(key) for key in ("limit_val_batches", "limit_test_batches")}
    limited = {key: value for key, value in limits.items() if value not in (None, 1.0)}
    if limited:
        lines += [
            "",
            f"The run measured on part of its splits only ({limited}): the logged numbers are of fewer examples than "
            "the split holds; a `python -m project evaluate` report covers a whole split.",
        ]
    return lines


def _usage_lines(config: dict[str, Any]) -> list[str]:
    """How to load the folder: project.load, predict, serve, onnxruntime."""
    text = "tokenizer" in config["preprocessing"]
    lines = [
        "```python",
        "import project",
        "",
        'model = project.load("path/to/this/folder")  # config.json + model.safetensors; no pickle',
        'rows, skipped = model.predict(["a new text"])   # tokenised as in training, for you'
        if text
        else 'rows, skipped = model.predict(["digit.png"])   # the preprocessing of training, applied for you',
        "logits = model.network(model.ids(texts))       # or token ids padded with 0, straight to the network"
        if text
        else "logits = model.network(images)                  # or a normalised float32 batch, straight to the network",
        "```",
        "",
        "```bash",
        "python -m project predict path/to/this/folder texts.txt --out predictions.csv  # one text a line; - : stdin"
        if text
        else "python -m project predict path/to/this/folder my_images/ --out predictions.csv",
        *([] if text else ["python -m project serve path/to/this/folder"]),
        "```",
    ]
    if "model.onnx" in config.get("files", []):
        lines += ["", *(_onnx_text_lines(config) if text else _onnx_image_lines(config))]
    return lines


def _onnx_image_lines(config: dict[str, Any]) -> list[str]:
    size, channels = config["preprocessing"]["image_size"], config["preprocessing"]["channels"]
    return [
        "Without this project, with onnxruntime (normalise the pixels as `config.json`'s `preprocessing` says):",
        "",
        "```python",
        "import numpy as np, onnxruntime",
        "",
        'session = onnxruntime.InferenceSession("model.onnx")',
        f"images = np.zeros((1, {channels}, {size}, {size}), np.float32)  # (pixels / 255 - mean) / std",
        'outputs = session.run(None, {"images": images})[0]',
        "```",
    ]


def _onnx_text_lines(config: dict[str, Any]) -> list[str]:
    length = config["preprocessing"]["max_length"]
    return [
        "Without this project, with onnxruntime and tokenizers (pad a batch with 0 to its longest text):",
        "",
        "```python",
        "import numpy as np, onnxruntime",
        "from tokenizers import Tokenizer",
        "",
        'tokenizer = Tokenizer.from_file("tokenizer.json")',
        'session = onnxruntime.InferenceSession("model.onnx")',
        'ids = tokenizer.encode("a new text").ids  # [CLS] ... [SEP]',
        f"ids = ids if len(ids) <= {length} else ids[: {length - 1}] + ids[-1:]  # at most max_length, [SEP] last",
        'outputs = session.run(None, {"ids": np.array([ids], np.int64)})[0]',
        "```",
    ]


def _input_text(config: dict[str, Any]) -> str:
    """What the network takes, in the card's words."""
    preprocessing = config["preprocessing"]
    if "tokenizer" in preprocessing:
        return f"{config['input']}; tokenizer {preprocessing['tokenizer']}, at most {preprocessing['max_length']} ids"
    return (
        f"{config['input']}; {preprocessing['channels']} channel(s), {preprocessing['image_size']} pixels "
        f"square, mean {preprocessing['mean']}, std {preprocessing['std']}"
    )


def _use_and_limits(config: dict[str, Any], data_name: str) -> tuple[str, str]:
    """The card's intended use and its limits, for a model of images or of texts."""
    preprocessing = config["preprocessing"]
    if "tokenizer" in preprocessing:
        use = (
            f"Predicting the {config['task']} outputs above for texts like those of {data_name}: tokenised with its "
            f"tokenizer (tokenizer.json), at most {preprocessing['max_length']} tokens (longer texts are cut)."
        )
        kind, one, others = "texts", "a text", "Texts of another kind (other sources, topics, languages or styles)"
    else:
        use = (
            f"Predicting the {config['task']} outputs above for images like those of {data_name}: "
            f"{preprocessing['channels']}-channel images, resized to {preprocessing['image_size']} pixels and "
            "normalised as in training."
        )
        kind, one = "images", "an image"
        others = "Images of another kind (other sources, scans, photos, other backgrounds or contrast)"
    limits = (
        f"The network saw only {data_name}'s training {kind}. {others} are still given one of the classes, often "
        f"with a high probability: the outputs say nothing about whether {one} belongs to these classes at all. "
        f"The metrics below hold for held-out {kind} of the same data, not for the {kind} you may use it on; measure "
        "on your own before relying on it. Biases of the training data (how classes, writers or sources are "
        "represented) are passed on."
    )
    return use + " It is a template's model: a baseline and a starting point for fine-tuning, not a product.", limits


def card_text(config: dict[str, Any], checkpoint: dict[str, Any], checkpoint_path: Path, name: str) -> str:
    """The model card (``README.md``) of a model folder whose ``config.json`` holds ``config``, exported from
    ``checkpoint`` (read from ``checkpoint_path``, in its run folder)."""
    run = _run_config(Path(checkpoint_path).resolve().parent.parent)
    preprocessing, dataset = config["preprocessing"], config.get("dataset") or {}
    names = preprocessing["class_names"]
    data_name = dataset.get("name") or "the run's data"
    meta = yaml.safe_dump(_front_matter(config, name), sort_keys=False, allow_unicode=True)
    use, limits = _use_and_limits(config, data_name)
    sections = [
        f"---\n{meta}---",
        f"# {name}",
        f"A `{config['network']['class_path']}` network for the `{config['task']}` task on {data_name}, trained and "
        "exported with this PyTorch Lightning template (`python -m project export`).",
        "## Model details",
        f"- network: {_spec_text(config['network'])}\n- outputs: {config['num_outputs']} ({config['outputs']})\n"
        f"- task: `{config['task_class']}` with options {config['task_options']}\n"
        f"- input: {_input_text(config)}\n"
        f"- classes: {', '.join(str(n) for n in names) if names else 'none (values)'}\n"
        f"- files: {', '.join(config['files'])}, config.json, README.md\n"
        f"- largest difference of the exports from the checkpoint: {config['largest_difference_from_the_checkpoint']}",
        "## Intended use",
        use,
        "## Bias, risks and limitations",
        limits,
        "## How to load",
        "\n".join(_usage_lines(config)),
        "## Training data",
        f"{data_name} (`{dataset.get('class_path', 'not recorded')}`), split {dataset.get('split') or 'not recorded'}.",
        "## Training settings",
        "\n".join(_training_lines(config, checkpoint, run)),
        "## Evaluation",
        "\n".join(_evaluation_lines(config.get("metrics") or [], run)),
    ]
    return "\n\n".join(sections) + "\n"
