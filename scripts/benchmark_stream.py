#!/usr/bin/env python
"""How fast an image folder trains from litdata chunks (``--data.stream.chunks``) against the decoded-image cache,
side by side in one process, on a generated folder of 28x28 greyscale PNGs (10 classes):

- ``in-memory``: the default for data that fits (decoded into the cache once, read into memory, batches drawn by
  index);
- ``cache``: the cache path for data too large to hold (``--data.decoded.max_memory_mb 0``: batches gathered from
  the memory-mapped cache file);
- ``chunks``: the chunks in a local folder, read in place through DataLoader workers (one per core);
- ``chunks-remote``: the same chunks behind litdata's ``local:`` prefix, as object storage is read: chunks are
  downloaded whole into ``data.stream.cache_dir`` as batches need them (epoch 1), then read from there;
- ``chunks, no workers``: the chunks in a folder read by the main process (``--data.loading.num_workers 0``).

On the chunk paths the training order follows the chunks (:mod:`project.data.stream_order`): each is read whole once
an epoch by each process that reads it, its items served from memory.

Decoding the files into the cache (once, what the cache path's first epoch costs) and writing the chunks from it are
timed apart. Each path iterates the training split (90%) in batches of 256 and normalises them as the Trainer would
(``on_after_batch_transfer``, on the CPU); nothing is trained.

    python scripts/benchmark_stream.py --out docs/benchmark_stream.json
    python scripts/benchmark_stream.py --quick      # 2,000 images: a smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from project.data import DecodedImages, ImageFolderDataModule, Split
from project.files.atomic import written_whole

BATCH = 256


def write_folder(root: Path, count: int) -> Path:
    """``root/<class>/<i>.png``: ``count`` 28x28 greyscale PNGs, a bright bar at each class's own place."""
    if root.is_dir() and sum(1 for _ in root.rglob("*.png")) == count:
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        k = i % 10
        pixels = rng.integers(0, 60, (28, 28), dtype=np.uint8)
        pixels[2 + 2 * k : 5 + 2 * k, 4:24] = 255
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / f"class{k}" / f"{i}.png")
    return root


def module(folder: Path, work: Path, **options) -> ImageFolderDataModule:
    split = Split(val_size=1, test_size=0.1)
    decoded = options.pop("decoded", {"cache_dir": str(work / "cache")})
    return ImageFolderDataModule(data_dir=str(folder), batch_size=BATCH, split=split, decoded=decoded, **options)


def epochs(data: ImageFolderDataModule, count: int = 2) -> list[tuple[float, int]]:
    """Seconds and images of ``count`` passes over the training split, through one loader, as the Trainer keeps it
    (DataLoader workers started in the first, kept for the next)."""
    out, loader = [], data.train_dataloader()
    for _ in range(count):
        start, seen = time.perf_counter(), 0
        for batch in loader:
            images, _ = data.on_after_batch_transfer(batch, 0)
            seen += len(images)
        out.append((time.perf_counter() - start, seen))
    return out


def measure(folder: Path, work: Path) -> list[dict]:
    chunks, downloads = work / "chunks", work / "downloads"
    shutil.rmtree(chunks, ignore_errors=True)
    shutil.rmtree(downloads, ignore_errors=True)
    shutil.rmtree(work / "cache", ignore_errors=True)
    start = time.perf_counter()
    module(folder, work).setup("fit")  # the decoded cache, built once (every file decoded): every path starts from it
    rows = [{"path": "decode into the cache", "setup_s": time.perf_counter() - start}]
    start = time.perf_counter()
    module(folder, work, stream={"chunks": str(chunks), "cache_dir": str(downloads)}).prepare_data()
    rows.append({"path": "write chunks", "setup_s": time.perf_counter() - start})
    paths = {
        "in-memory": {},
        "cache": {"decoded": DecodedImages(cache_dir=str(work / "cache"), max_memory_mb=0)},
        "chunks": {"stream": {"chunks": str(chunks), "cache_dir": str(downloads)}},
        "chunks-remote": {"stream": {"chunks": f"local:{chunks}", "cache_dir": str(downloads)}},
        "chunks, no workers": {
            "stream": {"chunks": str(chunks), "cache_dir": str(downloads)},
            "loading": {"num_workers": 0},
        },
    }
    for name, options in paths.items():
        start = time.perf_counter()
        data = module(folder, work, **options)
        data.setup("fit")
        row = {"path": name, "setup_s": time.perf_counter() - start}
        for number, (seconds, seen) in enumerate(epochs(data), start=1):
            row |= {f"epoch{number}_s": seconds, f"epoch{number}_per_s": seen / seconds, "images": seen}
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| path | set-up s | epoch 1 | epoch 2 |", "|---|---|---|---|"]
    for row in rows:
        timed = "images" in row
        cells = [f"{row[f'epoch{n}_s']:.2f} s, {row[f'epoch{n}_per_s']:,.0f}/s" if timed else "" for n in (1, 2)]
        lines.append(f"| {row['path']} | {row['setup_s']:.2f} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000, help="PNG files in the generated folder")
    parser.add_argument("--quick", action="store_true", help="2,000 images: a smoke test")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/benchmark_stream"), help="folder, cache, chunks")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    count = 2_000 if args.quick else args.images
    folder = write_folder(args.work_dir / f"png28-{count}", count)
    rows = measure(folder, args.work_dir / f"work-{count}")
    print(table(rows))
    if args.out:
        machine = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "images": count}
        with written_whole(args.out, "w") as file:
            file.write(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
