#!/usr/bin/env python
"""Few-shot transfer curves: test accuracy by labels per class, from a pretrained backbone or from scratch.

Two studies. ``fashion``: pretrain on MNIST, then train on Fashion-MNIST (a different kind of image). ``digits``:
pretrain on MNIST digits 0-4 only, then train on digits 5-9 (the same kind of image, new classes). For each number
of labelled training images per class and each seed, every method trains for the same number of optimizer steps on
the same stratified subset: ``from scratch`` (random initialisation), ``fine-tuned`` (the pretrained backbone and a
new head, the backbone at a third of the head's learning rate) and, in the digits study, ``linear probe`` (the
pretrained backbone frozen throughout: only the head trains, ``linear_probe.yaml``) and ``LoRA`` (rank-8
adapters on the frozen backbone's layers and the head train at the head's learning rate, ``lora.yaml``). Each is
tested on the target's whole test split. Writes ``<out>/<study>.csv`` (one row per run), ``<out>/<study>.png``
(mean and spread over seeds) and prints a Markdown table.

    python scripts/few_shot.py --data-dir ../shared/data --out docs                       # fashion: few_shot.*
    python scripts/few_shot.py --data-dir ../shared/data --out docs --study digits --seeds 0 1 2 3 4

Every run goes through the command line with the project's presets (the ``study`` modifier: no logs or
checkpoints). Without ``--pretrained``, a network is first pretrained for one epoch with the default recipe on the
study's source data and its weights are saved to ``<out>/pretrained_<study>.safetensors``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from safetensors.torch import save_file

from project.cli import run_cli

SIZES = ("1", "5", "10", "50", "100", "500", "all")
SCRATCH, FINE_TUNED, PROBE, LORA = "from scratch", "fine-tuned", "linear probe", "LoRA"


@dataclass(frozen=True)
class Study:
    name: str  # the files' names
    source: tuple[str, ...]  # options of the pretraining run (the default recipe's MNIST otherwise)
    target: tuple[str, ...]  # options of every run on the target data
    target_name: str
    methods: tuple[str, ...]
    sizes: tuple[str, ...]


STUDIES = {
    "fashion": Study("few_shot", (), ("--config=finetune_fashion_mnist",), "Fashion-MNIST", (SCRATCH, FINE_TUNED),
                     ("10", "50", "100", "500", "all")),
    "digits": Study("transfer_digits", ("--data.labels.only_classes=[0,1,2,3,4]",),
                    ("--data.labels.only_classes=[5,6,7,8,9]",), "MNIST digits 5-9",
                    (SCRATCH, PROBE, LORA, FINE_TUNED), ("1", "5", "10", "50", "all")),
}  # fmt: skip


def pretrain(data_dir: str, study: Study, out: Path) -> Path:
    """One epoch of the default recipe on the study's source data; returns the saved weights."""
    cli = run_cli(["fit", "--config=study", *study.source, f"--data.data_dir={data_dir}", "--data.download=false",
                   "--trainer.max_epochs=1", "--seed_everything=0"])  # fmt: skip
    accuracy = cli.trainer.callback_metrics["test/acc"].item()
    print(f"pretrained for 1 epoch: source test accuracy {accuracy:.4f}")
    path = out / f"pretrained_{study.name}.safetensors"
    save_file({k: v.contiguous() for k, v in cli.model.network.state_dict().items()}, str(path))
    return path


def run_args(
    data_dir: str, study: Study, size: str, seed: int, method: str, pretrained: Path, steps: int, lr: float
) -> list[str]:
    """The command line of one run on the study's target data for ``steps`` steps by ``method``."""
    args = [
        "fit", *study.target, "--config=study", f"--data.data_dir={data_dir}",
        "--data.download=false", f"--data.split.split_seed={seed}", f"--seed_everything={seed}",
        f"--trainer.max_steps={steps}", "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0",
        f"--model.optimizer.lr={lr}", "--model.finetuning.freeze_backbone_epochs=0",
    ]  # fmt: skip
    if size != "all":
        args.append(f"--data.split.samples_per_class={size}")
    return [*args, *method_args(method, pretrained, lr)]


def run_one(
    data_dir: str, study: Study, size: str, seed: int, method: str, pretrained: Path, steps: int, lr: float
) -> dict:
    """One run on the study's target data for ``steps`` steps by ``method``."""
    start = time.perf_counter()
    cli = run_cli(run_args(data_dir, study, size, seed, method, pretrained, steps, lr))
    return {
        "labels_per_class": size,
        "seed": seed,
        "method": method,
        "test_accuracy": round(cli.trainer.callback_metrics["test/acc"].item(), 4),
        "optimizer_steps": cli.trainer.global_step,
        "seconds": round(time.perf_counter() - start, 1),
    }


def method_args(method: str, pretrained: Path, lr: float) -> list[str]:
    """The options that make a run train by ``method``, as the shipped presets do."""
    if method == SCRATCH:
        return ["--model.finetuning.backbone_lr=null"]
    if method == PROBE:
        return [f"--model.finetuning.pretrained={pretrained}", "--config=linear_probe"]
    if method == LORA:  # rank-8 adapters on every layer of the backbone, at the head's learning rate
        return [f"--model.finetuning.pretrained={pretrained}", "--config=lora"]
    return [f"--model.finetuning.pretrained={pretrained}", f"--model.finetuning.backbone_lr={lr / 3}"]


def summarise(rows: list[dict]) -> dict[tuple[str, str], tuple[float, float]]:
    """(size, method) -> (mean, standard deviation) of the test accuracy over seeds."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["labels_per_class"], row["method"]), []).append(row["test_accuracy"])
    return {key: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for key, v in groups.items()}


def markdown_table(summary: dict, study: Study, sizes: list[str], seeds: int) -> str:
    methods = study.methods
    lines = [
        f"{study.target_name} test accuracy, mean ± sd over {seeds} seeds:",
        "",
        f"| labels per class | {' | '.join(methods)} | fine-tuned minus scratch |",
        "|---|" + "---|" * (len(methods) + 1),
    ]
    for size in sizes:
        cells = [f"{summary[(size, m)][0]:.2%} ± {summary[(size, m)][1]:.2%}" for m in methods]
        gain = (summary[(size, FINE_TUNED)][0] - summary[(size, SCRATCH)][0]) * 100
        lines.append(f"| {size} | {' | '.join(cells)} | {gain:+.1f} points |")
    return "\n".join(lines)


def plot(summary: dict, study: Study, sizes: list[str], steps: int, seeds: int, path: Path) -> None:
    figure = Figure(figsize=(6, 4), dpi=100)  # no pyplot: no display or GUI backend needed
    axes = figure.subplots()
    positions = range(len(sizes))
    for method, marker in zip(study.methods, "osD", strict=False):
        means = [summary[(size, method)][0] * 100 for size in sizes]
        spreads = [summary[(size, method)][1] * 100 for size in sizes]
        axes.errorbar(positions, means, yerr=spreads, marker=marker, capsize=3, label=method)
    axes.set_xticks(list(positions), sizes)
    axes.set_xlabel("labelled training images per class")
    axes.set_ylabel(f"{study.target_name} test accuracy (%)")
    axes.set_title(f"{steps} optimizer steps each, mean ± sd over {seeds} seeds")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw (and FashionMNIST/raw)")
    parser.add_argument("--study", choices=sorted(STUDIES), default="fashion")
    parser.add_argument("--out", default="results/few_shot", help="where the CSV, PNG and weights go")
    parser.add_argument("--pretrained", help="weights pretrained on the source; default: pretrain for one epoch first")
    parser.add_argument("--sizes", nargs="+", choices=SIZES, help="labels per class (default: the study's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of every run (batch 64)")
    parser.add_argument("--lr", type=float, default=0.003, help="peak learning rate (the backbone gets a third)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
    study = STUDIES[args.study]
    sizes = args.sizes or list(study.sizes)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pretrained = Path(args.pretrained) if args.pretrained else pretrain(args.data_dir, study, out)

    rows = []
    for size in sizes:
        for seed in args.seeds:
            for method in study.methods:
                row = run_one(args.data_dir, study, size, seed, method, pretrained, args.steps, args.lr)
                print(row, flush=True)
                rows.append(row)

    table, picture = out / f"{study.name}.csv", out / f"{study.name}.png"
    with table.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows)
    plot(summary, study, sizes, args.steps, len(args.seeds), picture)
    print(markdown_table(summary, study, sizes, len(args.seeds)))
    print(f"wrote {table} and {picture}")


if __name__ == "__main__":
    main()
