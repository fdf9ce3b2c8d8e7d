#!/usr/bin/env python
"""Does batching texts of similar length together pay (``--data.bucket_window``)? Padding, and the training speed of
the text recipe's network (``project/configs/text.yaml``: TextTransformer width 128, depth 2, 4 heads, max_length
128, batch 32) on this machine, with random batches (dynamic padding alone) and with bucketed ones.

The texts are real and need no network: the docstrings of the installed packages (torch, numpy, Lightning, the
standard library...), up to ``--texts`` of them, tokenised by a WordPiece trained on them (8192 tokens) and cut to 128
tokens, as :class:`~project.data.TextDataModule` does. Each way trains the same network from the same weights on the
same texts for ``--steps`` steps (AdamW, classes drawn at random: the speed, not the accuracy) and reports the share
of real tokens in its batches (over a whole epoch) and real tokens per second.

    python scripts/benchmark_text_batches.py                 # 30 timed steps per way
    python scripts/benchmark_text_batches.py --quick         # a small network, 3 steps: a smoke test
"""

from __future__ import annotations

import argparse
import importlib
import inspect
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


def _measure(data: TextDataModule, network: TextTransformer, steps: int) -> dict[str, float]:
    """Real-token share over an epoch of ``data``'s training batches, and real tokens per second over ``steps``."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    batches = [data.network_batch(batch, augment=True) for batch in data.train_dataloader()]
    share = sum(int((ids != 0).sum()) for ids, _ in batches) / sum(ids.numel() for ids, _ in batches)
    real, start = 0, 0.0
    for step, (ids, targets) in enumerate(batches[: steps + 1]):  # the first step warms up, untimed
        if step == 1:
            real, start = 0, time.perf_counter()
        loss = torch.nn.functional.cross_entropy(network(ids), targets % network.num_outputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        real += int((ids != 0).sum())
    seconds = time.perf_counter() - start
    return {"real_share": share, "tokens_per_s": real / seconds, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 5, 20])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.texts, args.steps = 300, 3
    texts = _docstrings(args.texts)
    from tempfile import TemporaryDirectory

    with TemporaryDirectory() as folder:
        import csv

        with open(f"{folder}/docs.csv", "w", newline="") as file:
            csv.writer(file).writerows([("text", "label"), *((text, i % 4) for i, text in enumerate(texts))])
        size = {"width": 32, "depth": 1, "heads": 2} if args.quick else {"width": 128, "depth": 2, "heads": 4}
        torch.manual_seed(0)
        start = TextTransformer(num_outputs=4, max_length=128, **size).state_dict()
        threads = torch.get_num_threads()
        print(f"{len(texts)} docstrings; {args.steps} training steps of batch 32 per way; {threads} threads")
        print("| batches | real tokens in the batches | real tokens/s | seconds |\n|---|---|---|---|")
        for window in args.windows:
            data = TextDataModule(train=f"{folder}/docs.csv", cache_dir=folder, batch_size=32, bucket_window=window,
                                  split={"shuffle_seed": 0})  # fmt: skip
            data.setup("fit")
            network = TextTransformer(num_outputs=4, max_length=128, **size)
            network.load_state_dict(start)
            result = _measure(data, network, args.steps)
            way = f"bucketed, window {window}" if window else "random (dynamic padding)"
            print(f"| {way} | {result['real_share']:.0%} | {result['tokens_per_s']:,.0f} | {result['seconds']:.1f} |")


if __name__ == "__main__":
    main()
