#!/usr/bin/env python
"""Does batching texts of similar length together pay (``--data.bucket_window``)? Padding, and the training speed of
the text recipe's network (``project/configs/text.yaml``: TextTransformer width 128, depth 2, 4 heads, max_length
128, batch 32) on this machine, with random batches (dynamic padding alone) and with bucketed ones.

The texts are real and need no network: the docstrings of the installed packages (torch, numpy, Lightning, the
standard library...), up to ``--texts`` of them, tokenised by a WordPiece trained on them (8192 tokens) and cut to 128
tokens, as :class:`~project.data.TextDataModule` does. Each way trains the same network from the same weights on the
same texts for one epoch (AdamW; the speed, not the accuracy), the ways' steps interleaved so that a machine whose
load changes slows them alike, and reports the share of real tokens in its batches and real tokens per second.

    python scripts/benchmark_text_batches.py                 # 1,500 docstrings: ~40 steps per way
    python scripts/benchmark_text_batches.py --quick         # 300 docstrings, a small network: a smoke test
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import random
import time

import torch

from project.data import TextDataModule
from project.networks import TextTransformer

_PACKAGES = (
    *("torch", "torch.nn", "torch.optim", "numpy", "lightning.pytorch", "torchmetrics", "json", "pathlib"),
    *("collections", "typing", "argparse", "inspect", "email", "http.client", "csv", "logging", "asyncio"),
)


def _docstrings(limit: int) -> list[str]:
    """Up to ``limit`` distinct docstrings of the installed packages' public names, shuffled (seeded)."""
    found = []
    for name in _PACKAGES:
        module = importlib.import_module(name)
        for attribute in dir(module):
            doc = inspect.getdoc(getattr(module, attribute, None)) if not attribute.startswith("_") else None
            if doc and len(doc.split()) > 3:
                found.append(" ".join(doc.split()))
    found = list(dict.fromkeys(found))
    random.Random(0).shuffle(found)
    return found[:limit]


def _timed_epochs(ways: dict[str, TextDataModule], networks: dict[str, TextTransformer]) -> dict[str, dict]:
    """One epoch of each way's training batches, the ways' steps interleaved (a machine whose load changes slows them
    alike): the share of real tokens in the batches, seconds, and real tokens per second. A first step of each way
    warms up, untimed."""
    batches = {way: [data.network_batch(b, True) for b in data.train_dataloader()] for way, data in ways.items()}
    optimizers = {way: torch.optim.AdamW(network.parameters(), lr=1e-3) for way, network in networks.items()}
    seconds = dict.fromkeys(ways, 0.0)
    for step in range(max(len(steps) for steps in batches.values()) + 1):
        for way, steps in batches.items():
            ids, targets = steps[max(step - 1, 0)] if step <= len(steps) else (None, None)
            if ids is None:
                continue
            start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(networks[way](ids), targets % networks[way].num_outputs)
            optimizers[way].zero_grad()
            loss.backward()
            optimizers[way].step()
            seconds[way] += (time.perf_counter() - start) if step else 0.0
    results = {}
    for way, steps in batches.items():
        real, padded = sum(int((ids != 0).sum()) for ids, _ in steps), sum(ids.numel() for ids, _ in steps)
        results[way] = {"real_share": real / padded, "seconds": seconds[way], "tokens_per_s": real / seconds[way]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1500)
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 5, 20])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.texts = 300
    texts = _docstrings(args.texts)
    from tempfile import TemporaryDirectory

    with TemporaryDirectory() as folder:
        os.environ["PROJECT_CACHE_DIR"] = folder  # the tokenizer trained on the docstrings: kept there, not in ./cache
        import csv

        with open(f"{folder}/docs.csv", "w", newline="") as file:
            csv.writer(file).writerows([("text", "label"), *((text, i % 4) for i, text in enumerate(texts))])
        size = {"width": 32, "depth": 1, "heads": 2} if args.quick else {"width": 128, "depth": 2, "heads": 4}
        torch.manual_seed(0)
        start = TextTransformer(num_outputs=4, max_length=128, **size).state_dict()
        threads = torch.get_num_threads()
        print(f"{len(texts)} docstrings; an epoch of batch 32 per way, their steps interleaved; {threads} threads")
        print("| batches | real tokens in the batches | real tokens/s | seconds |\n|---|---|---|---|")
        ways, networks = {}, {}
        for window in args.windows:
            way = f"bucketed, window {window}" if window else "random (dynamic padding)"
            ways[way] = TextDataModule(train=f"{folder}/docs.csv", batch_size=32,
                                       bucket_window=window, split={"shuffle_seed": 0})  # fmt: skip
            ways[way].setup("fit")
            networks[way] = TextTransformer(num_outputs=4, max_length=128, **size)
            networks[way].load_state_dict(start)
        for way, result in _timed_epochs(ways, networks).items():
            print(f"| {way} | {result['real_share']:.0%} | {result['tokens_per_s']:,.0f} | {result['seconds']:.1f} |")


if __name__ == "__main__":
    main()
