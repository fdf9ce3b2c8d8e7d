#!/usr/bin/env python
"""Does pretraining pay for text, and from how many labels? The small encoder (TextTransformer) is pretrained once
by masked-language modelling on a corpus's unlabelled text, then fine-tuned on 10, 50 and 200 labelled texts per
class, against the same network trained from scratch on the same labels **with the same tokenizer** (the pretrained
run's: only the starting weights differ), for several seeds; every run is tested on the corpus's whole test set.

    python scripts/text_corpus.py --out corpus/docstrings            # the real corpus (docstrings, by package)
    python scripts/text_study.py --corpus corpus/docstrings --out docs
    python scripts/text_study.py --corpus corpus/docstrings --out results/text_study --quick    # a smoke test

``--corpus`` is a folder as ``scripts/text_corpus.py`` writes it: ``unlabelled/`` (the pretraining text, no test
text in it), ``train.csv`` and ``test.csv`` (``text,label``). Every run goes through the command line with the
project's presets, in this process:

- pretraining: ``fit --config pretrain_text --data.files CORPUS/unlabelled`` for ``--pretrain-steps`` optimizer
  steps (its checkpoint ``--work/pretrained.ckpt``; the runs' caches in ``--work/cache``; ``--pretrained CKPT``
  reuses a checkpoint instead);
- each fine-tune: ``fit --config text --config study --data.train CORPUS/train.csv --data.test CORPUS/test.csv
  --data.tokenizer CKPT --data.split.samples_per_class N`` for ``--steps`` optimizer steps (the same for every size
  and method, the same learning rate for every weight: only the starting weights differ), ``pretrained`` adding
  ``--model.finetuning.pretrained CKPT`` (``--backbone-lr-factor 0.33``: the backbone at a third of the head's
  learning rate, as ``scripts/few_shot.py``'s), ``from scratch`` not.

Writes ``<out>/text_study.md`` (the table: mean ± sd over seeds and the gain of pretraining), ``<out>/text_study.json``
(the settings, the corpus's summary, every run, the summary) and ``<out>/text_study.png`` (test accuracy against
labels per class, one line per method, error bars one sd).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from matplotlib.figure import Figure

from project.data.cache import CACHE_DIR_ENV

SIZES = (10, 50, 200)
SCRATCH, PRETRAINED = "from scratch", "pretrained"
METHODS = (SCRATCH, PRETRAINED)


@dataclass(frozen=True)
class Settings:
    """What every run of the study shares (``--quick``: a tiny network and a few steps, for a smoke test)."""

    width: int = 128
    depth: int = 2
    heads: int = 4
    max_length: int = 64  # 71% of the docstrings' prose fits whole (median 40 tokens); half the cost of 128
    vocab_size: int = 4096
    pretrain_steps: int = 3000  # 0.21 s a step on this 2-core CPU when quiet: about 11 minutes
    pretrain_batch_size: int = 32
    steps: int = 80  # optimizer steps of every fine-tune
    batch_size: int = 32
    lr: float = 1e-3  # the peak learning rate of every fine-tune
    backbone_lr_factor: float = 1.0  # the pretrained backbone's learning rate, as a share of ``lr``

    @classmethod
    def quick(cls) -> Settings:
        return cls(width=32, depth=1, heads=2, max_length=32, vocab_size=500, pretrain_steps=20, steps=10,
                   pretrain_batch_size=16, batch_size=16)  # fmt: skip


def network_args(settings: Settings) -> list[str]:
    """The options that make a run's TextTransformer the study's (the same shape pretrained and fine-tuned)."""
    return [
        f"--model.network.init_args.vocab_size={settings.vocab_size}",
        f"--model.network.init_args.width={settings.width}",
        f"--model.network.init_args.depth={settings.depth}",
        f"--model.network.init_args.heads={settings.heads}",
        f"--model.network.init_args.max_length={settings.max_length}",
        f"--data.max_length={settings.max_length}",
    ]


def pretrain_args(corpus: Path, work: Path, settings: Settings) -> list[str]:
    """The command line of the pretraining run: masked-language modelling on the corpus's unlabelled text (the
    ``study`` modifier: no logs, no checkpoints; :func:`pretrain` saves the one checkpoint)."""
    return [
        "fit", "--config=pretrain_text", "--config=study", f"--data.files={corpus / 'unlabelled'}",
        f"--data.vocab_size={settings.vocab_size}",
        f"--data.batch_size={settings.pretrain_batch_size}", *network_args(settings),
        f"--trainer.max_steps={settings.pretrain_steps}", "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0",
        "--test_after_fit=false", "--seed_everything=0",
    ]  # fmt: skip


def finetune_args(corpus: Path, checkpoint: Path, settings: Settings, size: int, seed: int, method: str) -> list[str]:
    """The command line of one fine-tune (``method``: from the pretrained weights or from scratch; both with the
    pretrained run's tokenizer) on ``size`` labelled texts per class, tested on the whole test set."""
    args = [
        "fit", "--config=text", "--config=study", f"--data.train={corpus / 'train.csv'}",
        f"--data.test={corpus / 'test.csv'}", f"--data.tokenizer={checkpoint}",
        f"--data.batch_size={settings.batch_size}",
        f"--data.split.samples_per_class={size}", f"--data.split.split_seed={seed}", f"--seed_everything={seed}",
        *network_args(settings), f"--trainer.max_steps={settings.steps}", "--trainer.max_epochs=-1",
        "--trainer.limit_val_batches=0", f"--model.optimizer.init_args.lr={settings.lr}",
        "--model.finetuning.freeze_backbone_epochs=0", "--data.bucket_window=0",  # random batches, as measured
    ]  # fmt: skip
    if method == PRETRAINED:
        return [
            *args,
            f"--model.finetuning.pretrained={checkpoint}",
            f"--model.finetuning.backbone_lr={settings.lr * settings.backbone_lr_factor}",
        ]
    return [*args, "--model.finetuning.backbone_lr=null"]


def pretrain(corpus: Path, work: Path, settings: Settings) -> tuple[Path, dict]:
    """Pretrain once, save the checkpoint (``work/pretrained.ckpt``) and validate it; returns its path and what the
    validation said (masked-token accuracy and perplexity on the held-out blocks)."""
    from project.cli import run_cli

    start = time.perf_counter()
    cli = run_cli(pretrain_args(corpus, work, settings))
    checkpoint = work / "pretrained.ckpt"
    cli.trainer.save_checkpoint(checkpoint)  # written whole: the project's checkpoint plugin
    seconds = time.perf_counter() - start
    cli.trainer.limit_val_batches = 1.0
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    found = {"checkpoint": str(checkpoint), "steps": cli.trainer.global_step, "seconds": round(seconds, 1),
             **{k: round(v, 4) for k, v in metrics.items()}}  # fmt: skip
    print(f"pretrained: {found}", flush=True)
    return checkpoint, found


def finetune(corpus: Path, checkpoint: Path, settings: Settings, size: int, seed: int, method: str) -> dict:
    """One fine-tune, tested: its row of the study."""
    from project.cli import run_cli

    start = time.perf_counter()
    cli = run_cli(finetune_args(corpus, checkpoint, settings, size, seed, method))
    return {
        "labels_per_class": size,
        "seed": seed,
        "method": method,
        "test_accuracy": round(cli.trainer.callback_metrics["test/acc"].item(), 4),
        "optimizer_steps": cli.trainer.global_step,
        "seconds": round(time.perf_counter() - start, 1),
    }


def summarise(rows: list[dict]) -> dict[int, dict[str, dict]]:
    """size -> method -> mean, std (the sample standard deviation, 0 for one seed) and each seed's test accuracy."""
    summary: dict[int, dict[str, dict]] = {}
    for row in sorted(rows, key=lambda r: (r["labels_per_class"], r["method"], r["seed"])):
        cell = summary.setdefault(row["labels_per_class"], {}).setdefault(row["method"], {"seeds": {}})
        cell["seeds"][row["seed"]] = row["test_accuracy"]
    for methods in summary.values():
        for cell in methods.values():
            values = list(cell["seeds"].values())
            cell["mean"] = statistics.mean(values)
            cell["std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


def markdown_table(summary: dict[int, dict[str, dict]], seeds: int, classes: int | None = None) -> str:
    """The study's table: per size, each method's mean ± sd and each seed's accuracy, and the gain of
    pretraining (mean of pretrained minus mean of from scratch, in points)."""
    chance = f" (chance {1 / classes:.1%})" if classes else ""
    lines = [
        f"Test accuracy{chance}, mean ± sd over {seeds} seed{'s' * (seeds > 1)} (each seed's in brackets):",
        "",
        f"| labels per class | {' | '.join(METHODS)} | pretrained minus scratch |",
        "|---|" + "---|" * (len(METHODS) + 1),
    ]
    for size, methods in sorted(summary.items()):
        cells = []
        for method in METHODS:
            cell = methods.get(method)
            if cell is None:
                cells.append("—")
                continue
            each = ", ".join(f"{v:.1%}" for v in cell["seeds"].values())
            cells.append(f"{cell['mean']:.1%} ± {cell['std']:.1%} ({each})")
        gain = "—"
        if all(m in methods for m in METHODS):
            gain = f"{(methods[PRETRAINED]['mean'] - methods[SCRATCH]['mean']) * 100:+.1f} points"
        lines.append(f"| {size} | {' | '.join(cells)} | {gain} |")
    return "\n".join(lines)


def plot(summary: dict[int, dict[str, dict]], title: str) -> bytes:
    """Test accuracy against labels per class (log scale), one line per method with error bars (one sd): a PNG."""
    figure = Figure(figsize=(6, 4), dpi=100)  # no pyplot: no display or GUI backend needed
    axes = figure.subplots()
    for method, marker in zip(METHODS, "os", strict=True):
        sizes = [size for size in sorted(summary) if method in summary[size]]
        means = [summary[size][method]["mean"] * 100 for size in sizes]
        spreads = [summary[size][method]["std"] * 100 for size in sizes]
        axes.errorbar(sizes, means, yerr=spreads, marker=marker, capsize=3, label=method)
    axes.set_xscale("log")
    axes.set_xticks(sorted(summary), [str(size) for size in sorted(summary)])
    axes.minorticks_off()
    axes.set_xlabel("labelled training texts per class")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_results(out: Path, rows: list[dict], settings: Settings, about: dict) -> dict[int, dict[str, dict]]:
    """``text_study.md``, ``.json`` and ``.png`` into ``out``, each written whole; returns the summary."""
    from project.files.atomic import written_whole

    summary = summarise(rows)
    seeds = len({row["seed"] for row in rows})
    classes = about.get("corpus", {}).get("classes")
    table = markdown_table(summary, seeds, classes)
    title = f"{settings.steps} fine-tuning steps each, mean ± sd over {seeds} seed{'s' * (seeds > 1)}"
    payload = {"settings": asdict(settings), **about, "runs": rows,
               "summary": {str(size): methods for size, methods in summary.items()}}  # fmt: skip
    files = {
        "text_study.md": (table + "\n").encode(),
        "text_study.json": (json.dumps(payload, indent=2) + "\n").encode(),
        "text_study.png": plot(summary, title),
    }
    for name, content in files.items():
        with written_whole(out / name) as file:
            file.write(content)
    print(table)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="a folder of scripts/text_corpus.py")
    parser.add_argument("--out", default="results/text_study", help="where the table, JSON and plot go")
    parser.add_argument("--work", default="results/text_study", help="where the pretrained checkpoint and the cache go")
    parser.add_argument("--pretrained", help="a pretraining checkpoint to reuse instead of pretraining here")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="labels per class")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pretrain-steps", type=int, help=f"default {Settings.pretrain_steps}")
    parser.add_argument("--steps", type=int, help=f"optimizer steps of every fine-tune (default {Settings.steps})")
    parser.add_argument("--lr", type=float, help=f"peak learning rate of the fine-tunes (default {Settings.lr})")
    parser.add_argument("--backbone-lr-factor", type=float, help="the pretrained backbone's learning rate over --lr "
                        f"(default {Settings.backbone_lr_factor}; scripts/few_shot.py's: 0.33)")  # fmt: skip
    parser.add_argument("--width", type=int, help=f"the encoder's width (default {Settings.width})")
    parser.add_argument("--depth", type=int, help=f"the encoder's layers (default {Settings.depth})")
    parser.add_argument("--heads", type=int, help=f"attention heads (default {Settings.heads})")
    parser.add_argument("--quick", action="store_true", help="a tiny network and a few steps: a smoke test")
    args = parser.parse_args(argv)
    corpus = Path(args.corpus)
    missing = [name for name in ("unlabelled", "train.csv", "test.csv") if not (corpus / name).exists()]
    if missing:
        parser.error(f"--corpus {corpus} lacks {', '.join(missing)}: build it with scripts/text_corpus.py --out DIR")
    if any(size < 1 for size in args.sizes) or len(set(args.sizes)) != len(args.sizes):
        parser.error(f"--sizes must be different positive integers, got {args.sizes}")
    settings = Settings.quick() if args.quick else Settings()
    changes = {"pretrain_steps": args.pretrain_steps, "steps": args.steps, "lr": args.lr,
               "backbone_lr_factor": args.backbone_lr_factor, "width": args.width, "depth": args.depth,
               "heads": args.heads}  # fmt: skip
    for name, value in changes.items():
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    settings = Settings(**{**asdict(settings), **{k: v for k, v in changes.items() if v is not None}})
    if args.pretrained and not Path(args.pretrained).is_file():
        parser.error(f"--pretrained {args.pretrained}: no such file")
    out = Path(args.out)
    work = Path(args.work)
    os.environ[CACHE_DIR_ENV] = str(work / "cache")  # the token cache and tokenizers of the runs, not ./cache
    if not args.pretrained and (work / "pretrained.ckpt").exists():
        parser.error(f"{work / 'pretrained.ckpt'} exists: reuse it (--pretrained) or choose another --work")
    about_corpus = corpus / "corpus.json"
    about: dict = {"corpus": json.loads(about_corpus.read_text()) if about_corpus.is_file() else {}}

    start = time.perf_counter()
    if args.pretrained:
        checkpoint, about["pretraining"] = Path(args.pretrained), {"checkpoint": args.pretrained}
    else:
        checkpoint, about["pretraining"] = pretrain(corpus, work, settings)
    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            for method in METHODS:  # interleaved: a drift of the machine's speed hits both alike
                rows.append(finetune(corpus, checkpoint, settings, size, seed, method))
                print(rows[-1], flush=True)
    about["seconds"] = round(time.perf_counter() - start, 1)
    write_results(out, rows, settings, about)
    print(f"wrote {out / 'text_study.md'}, .json and .png in {about['seconds']:.0f} s")


if __name__ == "__main__":
    main()
