#!/usr/bin/env python
"""What each way of fine-tuning costs and gives, on one backbone, side by side in one process: full fine-tuning,
LoRA and a linear probe (the presets of ``scripts/few_shot.py``), and training from scratch as the baseline.

The backbone is the MNIST CNN pretrained on digits 0-4 (the digits study's, ``--pretrained`` or pretrained here for
one epoch); every run trains on digits 5-9 with ``--labels`` labels per class for ``--steps`` optimizer steps
(batch 64), and is tested on the whole test split of digits 5-9.

    python scripts/benchmark_finetuning.py --data-dir ../shared/data --seeds 0 1 2

Per method: parameters that train (their learning rate is not 0); the training state in memory (weights, gradients
and optimizer state); peak resident memory of the run (each run is a process of its own: Linux's high-water mark,
imports and data included) and how far it rose during training (the high-water mark reset when training starts);
the median time of a training step (forward, backward, optimizer; after 10 warm-up steps) and its ratio to full
fine-tuning's; the test accuracy (mean ± sd over seeds).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from few_shot import FINE_TUNED, LORA, PROBE, SCRATCH, STUDIES, pretrain, run_args

from project.cli import run_cli

METHODS = (FINE_TUNED, LORA, PROBE, SCRATCH)


class StepTimer(L.Callback):
    """Times every training step; counts what trains and the memory the training state takes (at the end)."""

    seconds: ClassVar[list[float]] = []
    found: ClassVar[dict[str, float]] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark from here on
        self.resident_at_start = memory_mb("VmRSS")

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        StepTimer.seconds.append(time.perf_counter() - self.start)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        trained = [p for group in optimizer.param_groups if group["lr"] > 0 for p in group["params"]]
        weights = [p for p in pl_module.parameters()]
        state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        grads = [p.grad for p in weights if p.grad is not None]
        StepTimer.found = {
            "training_rise_mb": memory_mb("VmHWM") - self.resident_at_start,
            "parameters": sum(p.numel() for p in weights),
            "trained_parameters": sum(p.numel() for p in trained),
            "training_state_mb": sum(t.numel() * t.element_size() for t in [*weights, *grads, *state]) / 2**20,
        }


def memory_mb(field: str) -> float:
    """A memory figure of this process from Linux's /proc/self/status: VmRSS (resident now), VmHWM (its peak)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024


def peak_of_process_mb() -> float:
    """The process's peak resident memory since it started (VmHWM was reset when training started)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(data_dir: str, method: str, pretrained: Path, labels: str, steps: int, seed: int, lr: float) -> dict:
    StepTimer.seconds = []
    args = run_args(data_dir, STUDIES["digits"], labels, seed, method, pretrained, steps, lr)
    cli = run_cli(args, callbacks=[StepTimer()])  # the digits study's run, timed (a config never names __main__)
    return {
        "method": method,
        "seed": seed,
        **StepTimer.found,
        "peak_rss_mb": peak_of_process_mb(),
        "median_step_ms": 1000 * statistics.median(StepTimer.seconds[10:]),
        "test_accuracy": cli.trainer.callback_metrics["test/acc"].item(),
    }


RESULT = "benchmark_finetuning result: "


def in_own_process(args: argparse.Namespace, method: str, pretrained: Path, seed: int) -> dict:
    """One run in a new process, so that its peak memory is its own."""
    command = [sys.executable, __file__, "--data-dir", args.data_dir, "--pretrained", str(pretrained), "--labels",
               args.labels, "--steps", str(args.steps), "--lr", str(args.lr), "--one", method, str(seed)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the {method} run (seed {seed}) failed:\n{result.stderr[-3000:]}")
    line = next(line for line in result.stdout.splitlines() if line.startswith(RESULT))
    return json.loads(line.removeprefix(RESULT))


def table(rows: list[dict], seeds: int) -> str:
    lines = [
        f"| method | parameters that train | training state MB | peak RSS MB | rise in training MB | step ms | "
        f"step vs full | test accuracy (mean ± sd, {seeds} seeds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_method = {m: [r for r in rows if r["method"] == m] for m in METHODS if any(r["method"] == m for r in rows)}
    full_step = statistics.median(r["median_step_ms"] for r in by_method.get(FINE_TUNED, rows))
    for method, runs in by_method.items():
        step = statistics.median(r["median_step_ms"] for r in runs)
        accuracies = [r["test_accuracy"] for r in runs]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        peak, rise = (statistics.median(r[key] for r in runs) for key in ("peak_rss_mb", "training_rise_mb"))
        lines.append(
            f"| {method} | {runs[0]['trained_parameters']:,} of {runs[0]['parameters']:,} | "
            f"{runs[0]['training_state_mb']:.1f} | {peak:,.0f} | {rise:,.0f} | {step:.2f} | {step / full_step:.2f}x | "
            f"{statistics.mean(accuracies):.2%} ± {spread:.2%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--pretrained", help="weights pretrained on digits 0-4; default: pretrain for one epoch")
    parser.add_argument("--labels", default="50", help="labels per class of digits 5-9 (or all)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--out", default="results/benchmark_finetuning", help="where the JSON (and weights) go")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)  # a run's own process
    args = parser.parse_args()
    if args.one:
        row = measure(args.data_dir, args.one[0], Path(args.pretrained), args.labels, args.steps, int(args.one[1]),
                      args.lr)  # fmt: skip
        print(RESULT + json.dumps(row))
        return
    if args.steps <= 10:
        parser.error(f"--steps must exceed the 10 warm-up steps, got {args.steps}")
    if not (args.labels == "all" or (args.labels.isdigit() and int(args.labels) > 0)):
        parser.error(f"--labels must be a positive integer or all, got {args.labels}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pretrained = Path(args.pretrained) if args.pretrained else pretrain(args.data_dir, STUDIES["digits"], out)
    rows = []
    for seed in args.seeds:  # methods interleaved, so that a drift of the machine's speed hits each alike
        for method in args.methods:
            rows.append(in_own_process(args, method, pretrained, seed))
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"\n{machine}; digits 5-9, {args.labels} labels per class, {args.steps} steps of batch 64\n")
    print(table(rows, len(args.seeds)))
    payload = {"machine": machine, "labels": args.labels, "steps": args.steps, "runs": rows}
    (out / "benchmark_finetuning.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out / 'benchmark_finetuning.json'}")


if __name__ == "__main__":
    main()
