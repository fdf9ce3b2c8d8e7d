#!/usr/bin/env python
"""Speed, memory and accuracy of five ways to train the classic MNIST CNN, side by side in one process, on one
device and the same real data:

1. ``tutorial``: the classic tutorial loop (torchvision MNIST through PIL and ToTensor, DataLoader, batch 64, SGD
   lr 0.01; a test pass after each epoch);
2. ``tuned``: a tuned raw PyTorch loop (uint8 data kept on the device, batch 512, Nesterov SGD with a one-cycle
   schedule; bf16 autocast and channels-last on a GPU);
3. ``project``: this project's Trainer path with the default preset, as users run it (its logs and checkpoints too);
4. ``one-epoch``: the same with the ``one_epoch`` recipe (99.0% in one epoch: lr 0.008, no dropout, a hidden layer
   of 256, label smoothing);
5. ``project-fast``: the same with the ``gpu`` preset (batch 512, scaled learning rate; on a CPU without bf16,
   channels-last and compilation, which only pay on a GPU).

    python scripts/benchmark.py --data-dir ../shared/data --seeds 0 1 2 --runs tutorial tuned one-epoch
    python scripts/benchmark.py --data-dir ../shared/data                 # all five, 1 epoch each, seed 0
    python scripts/benchmark.py --data-dir ../shared/data --device cuda --epochs 6
    python scripts/benchmark.py --data-dir ../shared/data --quick         # 50 steps an epoch: a smoke test

Each seed (``--seeds``, default 0) runs every way in turn, in the same process, seeded alike (the tutorial's and the
tuned loop's initial weights and shuffling; the project's ``--seed_everything``). Per epoch: training seconds,
training + evaluation seconds (the tutorials' test pass; the Trainer's validations, logging and checkpoints), images
per training second, test accuracy (measured outside the timings). Per run: start-up (from the call to the first
step), time to 99.0% test accuracy (training seconds until the end of the first epoch that reaches it), peak memory
(resident set; the GPU's max allocated). Per seed: each way's epoch time and final test accuracy, and its ratio to
the tutorial's epoch. Prints the tables and the ratios project / tutorial, one-epoch / tutorial and project-fast /
tuned (over all seeds), and writes them as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from project.cli import run_cli
from project.networks import ConvNet

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass
class Epoch:
    train_seconds: float
    total_seconds: float
    images_per_second: float
    test_accuracy: float


@dataclass
class Run:
    name: str
    seed: int = 0
    startup_seconds: float = 0.0
    first_step_seconds: float = 0.0
    epochs: list[Epoch] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float = 0.0

    @property
    def mean_epoch_seconds(self) -> float:
        """Training + evaluation, an epoch on average."""
        return sum(epoch.total_seconds for epoch in self.epochs) / len(self.epochs)

    @property
    def seconds_to_99(self) -> float | None:
        elapsed = 0.0
        for epoch in self.epochs:
            elapsed += epoch.train_seconds
            if epoch.test_accuracy >= 0.99:
                return elapsed
        return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak resident memory (and GPU memory) while the block runs: Linux resets the peak through clear_refs."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        Path("/proc/self/clear_refs").write_text("5")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def read(self, run: Run) -> None:
        status = Path("/proc/self/status").read_text().splitlines()
        run.peak_rss_mb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
        if self.device.type == "cuda":
            run.peak_gpu_mb = torch.cuda.max_memory_allocated(self.device) / 2**20

    def __exit__(self, *args: object) -> None:
        pass


@torch.no_grad()
def accuracy(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    right = sum((model(images).argmax(1) == targets).sum().item() for images, targets in batches)
    model.train()
    return right / sum(len(targets) for _, targets in batches)


def tutorial(data_dir: str, device: torch.device, epochs: int, quick: bool, seed: int) -> Run:
    """pytorch/examples' MNIST loop as tutorials write it: PIL images, ToTensor, DataLoader, SGD lr 0.01."""
    run, start = Run("tutorial", seed), time.perf_counter()
    torch.manual_seed(seed)  # the initial weights and the DataLoader's shuffling
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    train = datasets.MNIST(data_dir, train=True, transform=transform)
    test = datasets.MNIST(data_dir, train=False, transform=transform)
    if quick:
        train, test = Subset(train, range(min(len(train), 50 * 64))), Subset(test, range(min(len(test), 2000)))
    train_loader = DataLoader(train, batch_size=64, shuffle=True)
    test_loader = DataLoader(test, batch_size=1000)
    model = ConvNet().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(epochs):
        sync(device)
        epoch_start = time.perf_counter()
        for images, targets in train_loader:
            images, targets = images.to(device), targets.to(device)
            if not run.startup_seconds:
                run.startup_seconds = time.perf_counter() - start
            optimizer.zero_grad()
            F.cross_entropy(model(images), targets).backward()
            optimizer.step()
        sync(device)
        trained = time.perf_counter()
        test_accuracy = accuracy(model, [(i.to(device), t.to(device)) for i, t in test_loader])
        sync(device)
        total = time.perf_counter() - epoch_start
        run.epochs.append(Epoch(trained - epoch_start, total, len(train) / (trained - epoch_start), test_accuracy))
    return run


def device_split(data_dir: str, train: bool, device: torch.device, count: int | None) -> tuple:
    dataset = datasets.MNIST(data_dir, train=train)
    pixels, targets = dataset.data[:count].unsqueeze(1).to(device), dataset.targets[:count].to(device)
    return pixels, targets


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels.float() / 255 - MNIST_MEAN) / MNIST_STD


def tuned(data_dir: str, device: torch.device, epochs: int, quick: bool, seed: int) -> Run:
    """A tuned raw loop: uint8 data on the device, batch 512, Nesterov SGD + one-cycle (bf16, channels-last on GPU)."""
    run, start = Run("tuned", seed), time.perf_counter()
    torch.manual_seed(seed)  # the initial weights and the order of the batches
    pixels, targets = device_split(data_dir, True, device, 50 * 512 if quick else None)
    test_pixels, test_targets = device_split(data_dir, False, device, 2000 if quick else None)
    on_gpu = device.type == "cuda"
    memory_format = torch.channels_last if on_gpu else torch.contiguous_format
    model = ConvNet().to(device, memory_format=memory_format)
    steps_per_epoch = math.ceil(len(targets) / 512)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=epochs * steps_per_epoch)
    test_batches = [
        (normalise(test_pixels[i : i + 1000]).contiguous(memory_format=memory_format), test_targets[i : i + 1000])
        for i in range(0, len(test_targets), 1000)
    ]
    for _ in range(epochs):
        sync(device)
        epoch_start = time.perf_counter()
        order = torch.randperm(len(targets), device=device)
        for first in range(0, len(order), 512):
            index = order[first : first + 512]
            images = normalise(pixels[index]).contiguous(memory_format=memory_format)
            if not run.startup_seconds:
                run.startup_seconds = time.perf_counter() - start
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
                loss = F.cross_entropy(model(images), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        sync(device)
        trained = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
            test_accuracy = accuracy(model, test_batches)
        sync(device)
        total = time.perf_counter() - epoch_start
        run.epochs.append(Epoch(trained - epoch_start, total, len(targets) / (trained - epoch_start), test_accuracy))
    return run


class Probe(L.Callback):
    """Times a Trainer run from inside: epochs (what the Trainer does between two epoch starts), the training part
    (until validation starts), start-up and the first step; measures test accuracy after each epoch, outside the
    timings."""

    run: Run | None = None
    started = 0.0

    def __init__(self) -> None:
        self.epoch_start = self.validation_start = self.excluded = self.first_batch = 0.0
        self.test_batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.datamodule.normalised_batches("test")  # as the network takes them
        self.test_batches = [(i.to(pl_module.device), t.to(pl_module.device)) for i, t in loader]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.close_epoch(trainer, pl_module)
        self.epoch_start, self.validation_start, self.excluded = time.perf_counter(), 0.0, 0.0

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if not Probe.run.startup_seconds:
            Probe.run.startup_seconds = time.perf_counter() - Probe.started
            self.first_batch = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if not Probe.run.first_step_seconds:
            sync(pl_module.device)
            Probe.run.first_step_seconds = time.perf_counter() - self.first_batch

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training or not trainer.sanity_checking:
            sync(pl_module.device)
            self.validation_start = self.validation_start or time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sync(pl_module.device)
        measured = time.perf_counter()
        with torch.autocast(pl_module.device.type, enabled=False):
            self.test_accuracy = accuracy(pl_module, self.test_batches)
        self.excluded += time.perf_counter() - measured

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.close_epoch(trainer, pl_module)

    def close_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.epoch_start:
            return
        sync(pl_module.device)
        total = time.perf_counter() - self.epoch_start - self.excluded
        train = (self.validation_start or time.perf_counter()) - self.epoch_start
        images = trainer.num_training_batches * trainer.datamodule.batch_size
        Probe.run.epochs.append(Epoch(train, total, images / train, self.test_accuracy))
        self.epoch_start = 0.0


def project(name: str, presets: list[str]) -> Callable[[str, torch.device, int, bool, int], Run]:
    def trainer_run(data_dir: str, device: torch.device, epochs: int, quick: bool, seed: int) -> Run:
        Probe.run, Probe.started = Run(name, seed), time.perf_counter()
        with tempfile.TemporaryDirectory() as logs:
            args = [
                "fit",
                *presets,
                f"--seed_everything={seed}",
                f"--data.data_dir={data_dir}",
                "--data.download=false",
                "--test_after_fit=false",
                f"--trainer.max_epochs={epochs}",
                f"--trainer.accelerator={device.type}",
                "--trainer.devices=1",
                "--trainer.enable_progress_bar=false",
                f"--trainer.logger.init_args.save_dir={logs}",
                "--trainer.val_check_interval=1.0",
            ]  # fmt: skip  (one validation an epoch, as the tutorials test)
            if quick:
                args += [
                    "--trainer.limit_train_batches=50",
                    "--trainer.limit_val_batches=2",
                    "--trainer.limit_test_batches=2",
                ]
            run_cli(args, callbacks=[Probe()])  # in Python: a config never names a __main__ module
        return Probe.run

    return trainer_run


def fast_presets(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return ["--config=gpu"]
    return [
        "--config=gpu",
        "--trainer.precision=32-true",
        "--model.speed.channels_last=false",
        "--model.speed.compile=false",
    ]


def tables(runs: list[Run]) -> str:
    """The per-epoch table, the per-run table and, for each seed, the ways side by side."""
    lines = [
        "| run | seed | epoch | training s | training + evaluation s | images/s | test accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for k, epoch in enumerate(run.epochs, 1):
            lines.append(f"| {run.name} | {run.seed} | {k} | {epoch.train_seconds:.1f} | {epoch.total_seconds:.1f} | "
                         f"{epoch.images_per_second:,.0f} | {epoch.test_accuracy:.2%} |")  # fmt: skip
    lines += [
        "",
        "| run | seed | start-up s | first step s | time to 99.0% | peak RSS MB | peak GPU MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        to_99 = f"{run.seconds_to_99:.1f} s" if run.seconds_to_99 is not None else "not reached"
        gpu = f"{run.peak_gpu_mb:,.0f}" if run.peak_gpu_mb else "-"
        lines.append(f"| {run.name} | {run.seed} | {run.startup_seconds:.1f} | {run.first_step_seconds:.2f} | "
                     f"{to_99} | {run.peak_rss_mb:,.0f} | {gpu} |")  # fmt: skip
    return "\n".join([*lines, "", seed_table(runs)])


def seed_table(runs: list[Run]) -> str:
    """One row a seed: each way's epoch (training + evaluation, averaged over the epochs), its test accuracy after
    the last epoch, and each way's epoch / the tutorial's; then the mean time and the lowest accuracy over the seeds."""
    names = list(dict.fromkeys(run.name for run in runs))
    by_seed: dict[int, dict[str, Run]] = {}
    for run in runs:
        by_seed.setdefault(run.seed, {})[run.name] = run
    header = ["seed", *(f"{name} epoch s" for name in names), *(f"{name} accuracy" for name in names)]
    against = [name for name in names if name != "tutorial"] if "tutorial" in names else []
    header += [f"{name} / tutorial" for name in against]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label: str, seconds: list[float | None], accuracies: list[float | None]) -> str:
        cells = [label, *(f"{s:.1f}" if s is not None else "-" for s in seconds)]
        cells += [f"{a:.2%}" if a is not None else "-" for a in accuracies]
        tutorial_s = seconds[names.index("tutorial")] if against else None
        for name in against:
            way_s = seconds[names.index(name)]
            cells.append(f"{way_s / tutorial_s:.2f}x" if way_s and tutorial_s else "-")
        return "| " + " | ".join(cells) + " |"

    for seed, ways in by_seed.items():
        seconds = [ways[name].mean_epoch_seconds if name in ways else None for name in names]
        lines.append(row(str(seed), seconds, [ways[name].epochs[-1].test_accuracy if name in ways else None
                                              for name in names]))  # fmt: skip
    if len(by_seed) > 1:
        mean = [_mean([run.mean_epoch_seconds for run in runs if run.name == name]) for name in names]
        lowest = [min(run.epochs[-1].test_accuracy for run in runs if run.name == name) for name in names]
        lines.append(row("mean time, lowest accuracy", mean, lowest))
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def ratios(runs: list[Run]) -> dict[str, float]:
    """project / tutorial, one-epoch / tutorial and project-fast / tuned: epoch time (each run's mean epoch,
    averaged over the seeds) and peak memory (the highest over the seeds)."""
    found = {}
    for name, (numerator, denominator) in {"project/tutorial": ("project", "tutorial"),
                                           "one-epoch/tutorial": ("one-epoch", "tutorial"),
                                           "project-fast/tuned": ("project-fast", "tuned")}.items():  # fmt: skip
        top = [run for run in runs if run.name == numerator]
        bottom = [run for run in runs if run.name == denominator]
        if top and bottom:
            found[f"{name} epoch time"] = _mean([run.mean_epoch_seconds for run in top]) / _mean(
                [run.mean_epoch_seconds for run in bottom]
            )
            top_mb, bottom_mb = max(run.peak_rss_mb for run in top), max(run.peak_rss_mb for run in bottom)
            if bottom_mb:
                found[f"{name} peak memory"] = top_mb / bottom_mb
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="each seed runs every way (default: 0)")
    parser.add_argument("--quick", action="store_true", help="50 training steps an epoch and 2,000 test images")
    parser.add_argument("--runs", nargs="+", default=["tutorial", "tuned", "project", "one-epoch", "project-fast"],
                        choices=["tutorial", "tuned", "project", "one-epoch", "project-fast"])  # fmt: skip
    parser.add_argument("--out", default="benchmark.json", help="where the JSON goes")
    args = parser.parse_args()
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    makers = {"tutorial": tutorial, "tuned": tuned, "project": project("project", []),
              "one-epoch": project("one-epoch", ["--config=one_epoch"]),
              "project-fast": project("project-fast", fast_presets(device))}  # fmt: skip
    results: list[Run] = []
    for seed in args.seeds:
        for name in args.runs:
            with PeakMemory(device) as memory:
                run = makers[name](args.data_dir, device, args.epochs, args.quick, seed)
                memory.read(run)
            results.append(run)
            print(f"{name}, seed {seed}: {[round(epoch.total_seconds, 1) for epoch in run.epochs]} s per epoch, "
                  f"test accuracy {[round(epoch.test_accuracy, 4) for epoch in run.epochs]}", flush=True)  # fmt: skip
    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    if device.type == "cuda":
        machine += f", {torch.cuda.get_device_name(device)}"
    seeds = ", ".join(map(str, args.seeds))
    print(f"\n{device.type}: {machine}; {args.epochs} epochs, seeds {seeds}{' (quick)' if args.quick else ''}\n")
    print(tables(results))
    found = ratios(results)
    for name, value in found.items():
        print(f"{name}: {value:.2f}x")
    for run in results:
        if run.first_step_seconds > 1:
            print(
                f"{run.name}: the first step took {run.first_step_seconds:.1f} s (compilation warm-up, in its epoch 1)"
            )
    payload = {"device": device.type, "machine": machine, "epochs": args.epochs, "seeds": args.seeds,
               "quick": args.quick, "ratios": found,
               "runs": [{**asdict(run), "seconds_to_99": run.seconds_to_99} for run in results]}  # fmt: skip
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
