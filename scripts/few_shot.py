#!/usr/bin/env python
"""Few-shot curve: Fashion-MNIST test accuracy, fine-tuned from MNIST vs trained from scratch, by labels per class.

For each number of labelled training images per class and each seed, two networks are trained for the same number
of optimizer steps on the same stratified subset: one starts from a backbone pretrained on MNIST, the other from a
random initialisation. Both are tested on all 10,000 Fashion-MNIST test images. Writes ``<out>/few_shot.csv`` (one
row per run), ``<out>/few_shot.png`` (mean and spread over seeds) and prints a Markdown table.

    python scripts/few_shot.py --data-dir ../shared/data --out docs

Every run goes through the command line with the project's presets (``finetune_fashion_mnist`` and the ``study``
modifier: no logs or checkpoints): the recipe is the shipped one. Without ``--pretrained``, a network is first
pretrained on MNIST for one epoch with the default recipe and its weights are saved to
``<out>/pretrained_mnist.safetensors``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

from matplotlib.figure import Figure
from safetensors.torch import save_file

from project.cli import run_cli

SIZES = ("10", "50", "100", "500", "all")


def pretrain_on_mnist(data_dir: str, out: Path) -> Path:
    """One epoch of the default MNIST recipe; returns the saved weights."""
    cli = run_cli(["fit", "--config=study", f"--data.data_dir={data_dir}", "--data.download=false",
                   "--trainer.max_epochs=1", "--seed_everything=0"])  # fmt: skip
    accuracy = cli.trainer.callback_metrics["test/acc"].item()
    print(f"pretrained on MNIST for 1 epoch: MNIST test accuracy {accuracy:.4f}")
    path = out / "pretrained_mnist.safetensors"
    save_file({k: v.contiguous() for k, v in cli.model.network.state_dict().items()}, str(path))
    return path


def run_one(data_dir: str, size: str, seed: int, pretrained: Path | None, steps: int, lr: float) -> dict:
    """One run of the Fashion-MNIST fine-tuning recipe for ``steps`` steps, from ``pretrained`` or from scratch."""
    args = [
        "fit", "--config=finetune_fashion_mnist", "--config=study", f"--data.data_dir={data_dir}",
        "--data.download=false", f"--data.split_seed={seed}", f"--seed_everything={seed}",
        f"--trainer.max_steps={steps}", "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0",
        f"--model.optimizer.lr={lr}", "--model.freeze_backbone_epochs=0",
    ]  # fmt: skip
    if size != "all":
        args.append(f"--data.samples_per_class={size}")
    args += (
        [f"--model.pretrained={pretrained}", f"--model.backbone_lr={lr / 3}"]
        if pretrained
        else ["--model.backbone_lr=null"]
    )
    start = time.perf_counter()
    cli = run_cli(args)
    return {
        "labels_per_class": size,
        "seed": seed,
        "init": "fine-tuned from MNIST" if pretrained else "from scratch",
        "test_accuracy": round(cli.trainer.callback_metrics["test/acc"].item(), 4),
        "optimizer_steps": cli.trainer.global_step,
        "seconds": round(time.perf_counter() - start, 1),
    }


def summarise(rows: list[dict]) -> dict[tuple[str, str], tuple[float, float]]:
    """(size, init) -> (mean, standard deviation) of the test accuracy over seeds."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["labels_per_class"], row["init"]), []).append(row["test_accuracy"])
    return {key: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for key, v in groups.items()}


def markdown_table(summary: dict, sizes: list[str], seeds: int) -> str:
    lines = [
        f"Fashion-MNIST test accuracy, mean ± sd over {seeds} seeds:",
        "",
        "| labels per class | from scratch | fine-tuned from MNIST | difference |",
        "|---|---|---|---|",
    ]
    for size in sizes:
        scratch, tuned = summary[(size, "from scratch")], summary[(size, "fine-tuned from MNIST")]
        lines.append(
            f"| {size} | {scratch[0]:.2%} ± {scratch[1]:.2%} | {tuned[0]:.2%} ± {tuned[1]:.2%} | "
            f"{(tuned[0] - scratch[0]) * 100:+.1f} points |"
        )
    return "\n".join(lines)


def plot(summary: dict, sizes: list[str], steps: int, seeds: int, path: Path) -> None:
    figure = Figure(figsize=(6, 4), dpi=100)  # no pyplot: no display or GUI backend needed
    axes = figure.subplots()
    positions = range(len(sizes))
    for init, marker in (("from scratch", "o"), ("fine-tuned from MNIST", "s")):
        means = [summary[(size, init)][0] * 100 for size in sizes]
        spreads = [summary[(size, init)][1] * 100 for size in sizes]
        axes.errorbar(positions, means, yerr=spreads, marker=marker, capsize=3, label=init)
    axes.set_xticks(list(positions), sizes)
    axes.set_xlabel("labelled training images per class")
    axes.set_ylabel("Fashion-MNIST test accuracy (%)")
    axes.set_title(f"{steps} optimizer steps each, mean ± sd over {seeds} seeds")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw and FashionMNIST/raw")
    parser.add_argument("--out", default="results/few_shot", help="where the CSV, PNG and weights go")
    parser.add_argument("--pretrained", help="MNIST-pretrained weights; default: pretrain for one epoch first")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of every run (batch 64)")
    parser.add_argument("--lr", type=float, default=0.003, help="peak learning rate (the backbone gets a third)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pretrained = Path(args.pretrained) if args.pretrained else pretrain_on_mnist(args.data_dir, out)

    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            for weights in (None, pretrained):
                row = run_one(args.data_dir, size, seed, weights, args.steps, args.lr)
                print(row, flush=True)
                rows.append(row)

    with (out / "few_shot.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows)
    plot(summary, args.sizes, args.steps, len(args.seeds), out / "few_shot.png")
    print(markdown_table(summary, args.sizes, len(args.seeds)))
    print(f"wrote {out / 'few_shot.csv'} and {out / 'few_shot.png'}")


if __name__ == "__main__":
    main()
