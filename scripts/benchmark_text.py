#!/usr/bin/env python
"""How fast the small text encoder (TextTransformer) trains, and what padding costs, on a corpus of
``scripts/text_corpus.py`` (``unlabelled/``, ``train.csv``):

(a) ``pretraining`` and ``fine-tuning``: training steps (forward, backward, optimizer) of the project's own runs,
    ``fit --config pretrain_text`` (masked tokens, blocks of ``max_length`` tokens) and ``fit --config text``
    (classification, batches padded to their longest text; ``fine-tuning, bucketed``: with
    ``--data.bucket_window 50``), with the ``study`` modifier (no logs, no checkpoints), each in a process of its
    own. Per run: tokens per second (real tokens, and with padding), the median step time after 10 warm-up steps,
    and the peak memory (CPU: the process's peak resident memory, Linux's high-water mark reset when training
    starts, and its rise during training; CUDA: ``torch.cuda.max_memory_allocated``).
(b) ``padding``: the classifier's training steps on the same texts batched three ways, in one process, interleaved
    over ``--repeats`` rounds (median): padded to ``max_length``; padded to each batch's longest (dynamic padding,
    what the data module does, batches drawn at random); and bucketed (the texts of a window of 50 random batches
    sorted by length before batching: each batch holds texts of nearly one length), ``padding_steps`` timed steps
    each after 3 of warm-up, the network and optimizer those of (a)'s fine-tuning. Real tokens per second and the
    ratio to padding to ``max_length``: does dynamic padding pay, and does bucketing pay more?

    python scripts/benchmark_text.py --corpus corpus/docstrings --out docs/benchmark_text.json
    python scripts/benchmark_text.py --corpus corpus/docstrings --device cuda --out docs/benchmark_text_cuda.json
    python scripts/benchmark_text.py --corpus corpus/docstrings --quick            # a smoke test

The network is the presets' (width 128, depth 2, 4 heads, ``max_length`` 128, vocabulary 8192, batch 32);
``--quick`` a tiny one and a few steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from torch.nn import functional

from project.data.cache import CACHE_DIR_ENV

WARM_UP = 10
BUCKET_WINDOW = 50
RUNS = ("pretraining", "fine-tuning", "fine-tuning, bucketed")
"""The timed runs of (a): ``fine-tuning, bucketed`` adds ``--data.bucket_window 50``."""
_PADDING_WARM_UP = 3
RESULT = "benchmark_text result: "


@dataclass(frozen=True)
class Settings:
    width: int = 128
    depth: int = 2
    heads: int = 4
    max_length: int = 128
    vocab_size: int = 8192
    batch_size: int = 32
    steps: int = 40  # timed steps of each run of (a), after the warm-up
    padding_steps: int = 20  # timed steps of each way of (b) in each round, after 3 of warm-up
    repeats: int = 3  # rounds of the padding comparison

    @classmethod
    def quick(cls) -> Settings:
        return cls(width=32, depth=1, heads=2, max_length=32, vocab_size=300, batch_size=8, steps=5, padding_steps=5,
                   repeats=2)  # fmt: skip


class StepTimer(L.Callback):
    """Times every training step and counts its tokens (real and padded); the memory at the end of training."""

    seconds: ClassVar[list[float]] = []
    tokens: ClassVar[list[tuple[int, int, int]]] = []  # (real tokens, with padding, texts) of each step
    memory: ClassVar[dict[str, float]] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # the high-water mark from here on
            self.resident_at_start = _memory_mb("VmRSS")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        ids = batch[0]
        StepTimer.tokens.append((int((ids != 0).sum()), ids.numel(), ids.shape[0]))
        _synchronise(pl_module.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        _synchronise(pl_module.device)
        StepTimer.seconds.append(time.perf_counter() - self.start)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            StepTimer.memory = {"peak_cuda_mb": torch.cuda.max_memory_allocated(pl_module.device) / 2**20}
        else:
            peak = _memory_mb("VmHWM")
            StepTimer.memory = {"peak_rss_mb": peak, "training_rise_mb": peak - self.resident_at_start}


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory_mb(field: str) -> float:
    """A memory figure of this process from Linux's /proc/self/status: VmRSS (resident now), VmHWM (its peak)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024


def network_args(settings: Settings) -> list[str]:
    return [
        f"--model.network.init_args.vocab_size={settings.vocab_size}",
        f"--model.network.init_args.width={settings.width}",
        f"--model.network.init_args.depth={settings.depth}",
        f"--model.network.init_args.heads={settings.heads}",
        f"--model.network.init_args.max_length={settings.max_length}",
        f"--data.max_length={settings.max_length}",
        f"--data.vocab_size={settings.vocab_size}",
        f"--data.batch_size={settings.batch_size}",
    ]


def run_args(kind: str, corpus: Path, settings: Settings, device: str) -> list[str]:
    """The command line of one timed run (:data:`RUNS`) on the corpus."""
    data = {
        "pretraining": ["--config=pretrain_text", f"--data.files={corpus / 'unlabelled'}"],
        "fine-tuning": ["--config=text", f"--data.train={corpus / 'train.csv'}"],
        "fine-tuning, bucketed": ["--config=text", f"--data.train={corpus / 'train.csv'}",
                                  f"--data.bucket_window={BUCKET_WINDOW}"],
    }[kind]  # fmt: skip
    return [
        "fit", *data, "--config=study", *network_args(settings),
        f"--trainer.max_steps={WARM_UP + settings.steps}", "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0",
        "--test_after_fit=false", "--seed_everything=0",
        f"--trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", "--trainer.devices=1",
    ]  # fmt: skip


def measure(kind: str, corpus: Path, settings: Settings, device: str) -> dict:
    """One timed run in this process (its tokenizer and token cache in a temporary folder): its row."""
    from project.cli import run_cli

    StepTimer.seconds, StepTimer.tokens = [], []
    with tempfile.TemporaryDirectory(prefix="benchmark_text-") as cache:
        os.environ[CACHE_DIR_ENV] = cache
        run_cli(run_args(kind, corpus, settings, device), callbacks=[StepTimer()])
    seconds, tokens = StepTimer.seconds[WARM_UP:], StepTimer.tokens[WARM_UP:]
    real, padded = sum(t[0] for t in tokens), sum(t[1] for t in tokens)
    return {
        "run": kind,
        "steps": len(seconds),
        "median_step_ms": 1000 * statistics.median(seconds),
        "real_tokens_per_s": real / sum(seconds),
        "tokens_per_s_with_padding": padded / sum(seconds),
        "mean_length": padded / sum(t[2] for t in tokens),
        **StepTimer.memory,
    }


def in_own_process(kind: str, args: argparse.Namespace) -> dict:
    """One timed run in a new process, so that its peak memory is its own."""
    command = [sys.executable, __file__, "--corpus", args.corpus, "--device", args.device, "--one", kind]
    command += ["--quick"] if args.quick else []
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the {kind} run failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    line = next(line for line in result.stdout.splitlines() if line.startswith(RESULT))
    return json.loads(line.removeprefix(RESULT))


def _bucketed(sequences: list[list[int]], batch_size: int, rng: random.Random) -> list[list[list[int]]]:
    """Batches of texts of nearly one length: windows of 50 random batches, each sorted by length and cut into
    batches, the batches shuffled."""
    order = list(range(len(sequences)))
    rng.shuffle(order)
    window = 50 * batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(sequences[i]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return [[sequences[i] for i in batch] for batch in batches if len(batch) == batch_size]


def _random(sequences: list[list[int]], batch_size: int, rng: random.Random) -> list[list[list[int]]]:
    order = list(range(len(sequences)))
    rng.shuffle(order)
    return [
        [sequences[i] for i in order[s : s + batch_size]] for s in range(0, len(order) - batch_size + 1, batch_size)
    ]


def padding(corpus: Path, settings: Settings, device: str, seed: int = 0) -> list[dict]:
    """(b): the classifier's training steps with batches padded to ``max_length``, dynamically and bucketed."""
    from project.data.tokenizer import TextTokenizer
    from project.networks.text_transformer import TextTransformer

    with (corpus / "train.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    classes = sorted({row["label"] for row in rows})
    texts, labels = [row["text"] for row in rows], [classes.index(row["label"]) for row in rows]
    tokenizer = TextTokenizer.train(texts, vocab_size=settings.vocab_size)
    encoded = tokenizer.encode(texts, settings.max_length)
    sequences = [[*ids, label] for ids, label in zip(encoded, labels, strict=True)]  # the label last
    torch.manual_seed(seed)
    shape = {
        "width": settings.width,
        "depth": settings.depth,
        "heads": settings.heads,
        "max_length": settings.max_length,
    }
    network = TextTransformer(vocab_size=tokenizer.vocab_size, num_outputs=len(classes), **shape).to(device)
    network.train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=0.01, foreach=True)
    rng = random.Random(seed)
    ways = {"padded to max_length": _random, "dynamic padding": _random, "bucketed by length": _bucketed}
    found: dict[str, list[tuple[float, int, int]]] = {way: [] for way in ways}
    for _ in range(settings.repeats):  # interleaved: a drift of the machine's speed hits each way alike
        for way, batching in ways.items():
            batches = batching(sequences, settings.batch_size, rng)[: _PADDING_WARM_UP + settings.padding_steps]
            seconds, real, padded = 0.0, 0, 0
            for step, batch in enumerate(batches):
                ids = tokenizer.pad([sequence[:-1] for sequence in batch])
                if way == "padded to max_length":
                    ids = functional.pad(ids, (0, settings.max_length - ids.shape[1]))
                ids = ids.to(device)
                targets = torch.tensor([sequence[-1] for sequence in batch], device=device)
                _synchronise(ids.device)
                start = time.perf_counter()
                loss = functional.cross_entropy(network(ids), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                _synchronise(ids.device)
                if step >= _PADDING_WARM_UP:
                    seconds += time.perf_counter() - start
                    real, padded = real + int((ids != 0).sum()), padded + ids.numel()
            found[way].append((real / seconds, real, padded))
    baseline = statistics.median(r[0] for r in found["padded to max_length"])
    return [
        {
            "batches": way,
            "real_tokens_share": runs[0][1] / runs[0][2],
            "real_tokens_per_s": statistics.median(r[0] for r in runs),
            "vs_max_length": statistics.median(r[0] for r in runs) / baseline,
            "rounds": len(runs),
        }
        for way, runs in found.items()
    ]


def tables(runs: list[dict], padded: list[dict], device: str) -> str:
    memory = "peak CUDA MB" if device == "cuda" else "peak RSS MB | rise in training MB"
    lines = [
        f"| run | tokens/s (real) | tokens/s (with padding) | mean length | step ms (median) | {memory} |",
        "|---|---|---|---|---|---|" + ("" if device == "cuda" else "---|"),
    ]
    for r in runs:
        mem = (
            f"{r['peak_cuda_mb']:,.0f}"
            if device == "cuda"
            else f"{r['peak_rss_mb']:,.0f} | {r['training_rise_mb']:,.0f}"
        )
        lines.append(
            f"| {r['run']} | {r['real_tokens_per_s']:,.0f} | {r['tokens_per_s_with_padding']:,.0f} | "
            f"{r['mean_length']:.1f} | {r['median_step_ms']:.1f} | {mem} |"
        )
    lines += [
        "",
        "| fine-tuning batches | real tokens share | real tokens/s | vs padded to max_length |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {p['batches']} | {p['real_tokens_share']:.0%} | {p['real_tokens_per_s']:,.0f} | {p['vs_max_length']:.2f}x |"
        for p in padded
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="a folder of scripts/text_corpus.py")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", help="a JSON file for the results")
    parser.add_argument("--quick", action="store_true", help="a tiny network and a few steps: a smoke test")
    parser.add_argument("--one", choices=RUNS, help=argparse.SUPPRESS)  # a run's own process
    args = parser.parse_args(argv)
    corpus = Path(args.corpus)
    missing = [name for name in ("unlabelled", "train.csv") if not (corpus / name).exists()]
    if missing:
        parser.error(f"--corpus {corpus} lacks {', '.join(missing)}: build it with scripts/text_corpus.py --out DIR")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    settings = Settings.quick() if args.quick else Settings()
    if args.one:
        print(RESULT + json.dumps(measure(args.one, corpus, settings, args.device)))
        return
    runs = [in_own_process(kind, args) for kind in RUNS]
    padded = padding(corpus, settings, args.device)
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    machine = f"{name}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    network = f"width {settings.width}, depth {settings.depth}, vocabulary {settings.vocab_size}"
    print(f"\n{machine}; batch {settings.batch_size}, max_length {settings.max_length}, {network}; "
          f"{settings.steps} steps after {WARM_UP}\n")  # fmt: skip
    print(tables(runs, padded, args.device))
    if args.out:
        from project.files.atomic import written_whole

        payload = {"machine": machine, "device": args.device, "settings": asdict(settings), "runs": runs,
                   "padding": padded}  # fmt: skip
        with written_whole(Path(args.out), "w") as file:
            file.write(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
