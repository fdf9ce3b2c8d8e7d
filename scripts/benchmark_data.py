#!/usr/bin/env python
"""How fast image folders are read as they grow, four ways, side by side in one process on generated folders:

(a) ``torchvision``: torchvision's ``ImageFolder`` with the usual transforms (decode and convert through PIL,
    ``Resize``, ``ToTensor``, ``Normalize``) and a shuffling DataLoader on the same number of workers as (b);
(b) ``project-loader``: this project's DataLoader path (``--data.decoded.cache false``, images too large to hold: each
    image decoded again every epoch; workers chosen by the project, one per core;
    ``--data.loading.leave_cores_to_workers true``, as work bound by decoding wants it);
(c) ``project-cache``: this project's cache path (the default for data too large to hold: decoded once into a
    cache file on disk, then batches gathered from the memory-mapped file by index); epoch 1 includes building
    the cache;
(d) the limits: ``decode`` is the pure decode rate of the same files on every core (a process pool, the project's
    decoder, nothing else: the ceiling of an uncached epoch); ``decode-float`` adds the conversion to normalised
    float32, the network's input, which every path makes (into reused memory on a CPU; on a GPU it is made
    there); ``read-cache`` reads the cache file in shuffled batches of uint8 (the ceiling of a cached epoch).

    python scripts/benchmark_data.py --out docs/benchmark_data.json --plot docs/benchmark_data.png
    python scripts/benchmark_data.py --quick        # 2,000 and 8,000 PNGs, 1,000 JPEGs: a smoke test

Folders (generated once into ``--work-dir`` and reused): 28x28 greyscale PNGs at 10k, 50k and 200k files (MNIST's
digits, repeated and shifted, when ``--data-dir`` holds MNIST; otherwise drawn blobs), and 224x224 RGB JPEGs
(quality 90, smooth random pictures) at 10k and 50k. Each path iterates every image of the folder in batches of 256
and does nothing with them: the data pipeline alone. Per path and size: seconds and images per second of epochs 1
and 2, the set-up before the first epoch (the project's data module decodes every file once to check it), peak
resident memory of the process and its workers (anonymous memory, which grows with what a process holds, and
file-backed, the cache's pages that the page cache lends), and the disk the images and the cache take. Prints the
table and the ratios the targets are stated in (each path's batches are normalised float32 on the CPU: the project's
DataLoader carries uint8 and normalises in the data module's ``on_after_batch_transfer``, which the loop calls as
the Trainer would), fits the slope of log(seconds per epoch) against log(images), and
writes the JSON and the log-log plot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from project.data import DecodedImages, ImageFolderDataModule, Loading, Split
from project.data.cache import HEADER_BYTES, SUFFIX, DecodedCache
from project.data.cores import available_cores
from project.data.decoding import MNIST_MEAN, MNIST_STD, ImageConversion
from project.data.in_memory import normalised
from project.data.loading import FloatBatches
from project.files.atomic import written_whole

BATCH = 256
CLASSES = 10
RGB_MEAN, RGB_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class Kind:
    name: str
    channels: int
    size: int
    suffix: str

    @property
    def mean_std(self) -> tuple[list[float], list[float]]:
        return ([MNIST_MEAN], [MNIST_STD]) if self.channels == 1 else (RGB_MEAN, RGB_STD)


PNG = Kind("png28", 1, 28, "png")
JPEG = Kind("jpeg224", 3, 224, "jpg")


@dataclass
class Result:
    kind: str
    images: int
    path: str
    setup_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    peak_anon_mb: float = 0.0
    peak_file_mb: float = 0.0
    disk_mb: float = 0.0

    def rate(self, epoch: int) -> float:
        return self.images / self.epoch_seconds[epoch]


# -- generated folders ---------------------------------------------------------------------------------------------
def mnist_digits(data_dir: Path | None) -> np.ndarray | None:
    try:
        return datasets.MNIST(str(data_dir), train=True).data.numpy() if data_dir else None
    except (RuntimeError, OSError):
        return None


def picture(kind: Kind, index: int, digits: np.ndarray | None) -> Image.Image:
    rng = np.random.default_rng(index)
    if kind == PNG:
        if digits is not None:  # MNIST's digit, shifted by up to 2 pixels: a file like theirs, not a copy
            digit = np.roll(digits[index % len(digits)], tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
            return Image.fromarray(digit)
        yy, xx = np.mgrid[:28, :28]
        cy, cx, r = [*rng.uniform(8, 20, 2).tolist(), rng.uniform(3, 8)]
        return Image.fromarray((255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))).astype(np.uint8))
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # smooth random colours: a JPEG of a photo's size
    return Image.fromarray(coarse).resize((224, 224), Image.BICUBIC)


def write_one(job: tuple[Kind, Path, int, np.ndarray | None]) -> int:
    kind, root, index, digits = job
    path = root / f"class_{index % CLASSES}" / f"{index:07d}.{kind.suffix}"
    picture(kind, index, digits).save(path, **({"quality": 90} if kind == JPEG else {}))
    return path.stat().st_size


def image_folder(work_dir: Path, kind: Kind, count: int, digits: np.ndarray | None) -> Path:
    """``work_dir/<kind>-<count>/class_k/*.png`` (made once; a finished folder has a ``.complete`` file)."""
    root = work_dir / f"{kind.name}-{count}"
    if (root / ".complete").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for k in range(CLASSES):
        (root / f"class_{k}").mkdir(parents=True)
    started = time.perf_counter()
    with Pool(available_cores()) as pool:
        jobs = ((kind, root, index, digits if kind == PNG else None) for index in range(count))
        total = sum(pool.imap_unordered(write_one, jobs, chunksize=512))
    (root / ".complete").write_text(f"{count} files, {total} bytes\n")
    print(f"wrote {root}: {count:,} files, {total / 2**20:.0f} MiB, {time.perf_counter() - started:.0f} s", flush=True)
    return root


def folder_mb(root: Path) -> float:
    return sum(entry.stat().st_size for entry in root.rglob("*") if entry.is_file()) / 2**20


# -- memory --------------------------------------------------------------------------------------------------------
def rss_of(pid: int) -> tuple[int, int]:
    """(anonymous, file-backed) resident kB of a process."""
    values = {"RssAnon:": 0, "RssFile:": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            parts = line.split()
            if parts and parts[0] in values:
                values[parts[0]] = int(parts[1])
    except OSError:
        pass
    return values["RssAnon:"], values["RssFile:"]


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found + [grandchild for child in found for grandchild in children(child)]


class PeakMemory:
    """Peak anonymous and file-backed resident memory of this process and its children (DataLoader workers), sampled
    every 20 ms while the block runs."""

    def __enter__(self) -> PeakMemory:
        self.anon = self.file = 0
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def sample(self) -> None:
        while self.running:
            pids = [os.getpid(), *children(os.getpid())]
            readings = [rss_of(pid) for pid in pids]
            self.anon = max(self.anon, sum(anon for anon, _ in readings))
            self.file = max(self.file, sum(file for _, file in readings))
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()


# -- the paths -----------------------------------------------------------------------------------------------------
def timed_epochs(result: Result, batches: Callable[[], Iterable], epochs: int) -> None:
    for _ in range(epochs):
        started, seen = time.perf_counter(), 0
        for images, _ in batches():
            seen += len(images)
        result.epoch_seconds.append(time.perf_counter() - started)
        assert seen == result.images, (seen, result.images)


def torchvision_folder(root: Path, kind: Kind, workers: int, result: Result, epochs: int) -> None:
    mean, std = kind.mean_std
    steps = [transforms.Grayscale()] if kind.channels == 1 else []
    steps += [transforms.Resize((kind.size, kind.size)), transforms.ToTensor(), transforms.Normalize(mean, std)]
    started = time.perf_counter()
    dataset = datasets.ImageFolder(str(root), transform=transforms.Compose(steps))
    loader = DataLoader(dataset, BATCH, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    result.setup_seconds = time.perf_counter() - started
    timed_epochs(result, lambda: loader, epochs)


def project_module(root: Path, kind: Kind, cache_dir: Path | None) -> ImageFolderDataModule:
    """The folder module on ``root``, its decoded images left on disk: in the cache in ``cache_dir``, or, without
    one, decoded again each time they are read."""
    mean, std = kind.mean_std
    cached = {"cache": False} if cache_dir is None else {"cache_dir": str(cache_dir)}
    decoded = DecodedImages(max_memory_mb=0, **cached)
    loading = Loading(leave_cores_to_workers=True)  # the DataLoader path bound by decoding: the workers get the cores
    return ImageFolderDataModule(data_dir=str(root), channels=kind.channels, image_size=kind.size, mean=mean, std=std,
                                 batch_size=BATCH, split=Split(test_size=1, val_size=1), decoded=decoded,
                                 loading=loading)  # fmt: skip


def project_path(root: Path, kind: Kind, cache_dir: Path | None, result: Result, epochs: int) -> int:
    """The project's DataLoader path (no cache) or cache path; the images it trains on (all but the two held out)."""
    data = project_module(root, kind, cache_dir)
    started = time.perf_counter()
    data.setup("fit")
    result.setup_seconds = time.perf_counter() - started
    loader = data.train_dataloader()
    result.images = len(data.train_set)
    timed_epochs(result, lambda: (data.on_after_batch_transfer(batch, 0) for batch in loader), epochs)  # normalised
    if cache_dir is not None:  # building the cache is epoch 1's work
        result.epoch_seconds[0] += result.setup_seconds
        result.disk_mb = sum(path.stat().st_size for path in cache_dir.glob(f"*{SUFFIX}")) / 2**20
    return loader.num_workers if isinstance(loader, DataLoader) else 0


FLOATS = FloatBatches()  # each pool process's own: the batches converted into reused memory, as every path does


def decode_only(job: tuple[ImageConversion, list[Path], bool]) -> int:
    conversion, paths, to_float = job
    decoded = [conversion.decode(path) for path in paths]
    if not to_float:
        return sum(map(torch.numel, decoded))
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (conversion.mean, conversion.std))
    return normalised(FLOATS.unit_scaled(torch.stack(decoded)), mean, std, copy=False).numel()


def decode_limit(root: Path, kind: Kind, result: Result, to_float: bool) -> None:
    """Every file decoded (and, ``to_float``, normalised to float32 a batch at a time) on every core."""
    conversion = ImageConversion(kind.channels, kind.size, *kind.mean_std)
    paths = sorted(root.rglob(f"*.{kind.suffix}"))
    jobs = [(conversion, paths[start : start + BATCH], to_float) for start in range(0, len(paths), BATCH)]
    started = time.perf_counter()
    with Pool(available_cores(), initializer=torch.set_num_threads, initargs=(1,)) as pool:  # as DataLoader workers
        for _ in pool.imap_unordered(decode_only, jobs):
            pass
    result.epoch_seconds.append(time.perf_counter() - started)


def read_limit(cache_dir: Path, result: Result) -> None:
    (path,) = cache_dir.glob(f"*{SUFFIX}")
    stated = json.loads(path.read_bytes()[:HEADER_BYTES].split(b"\n")[1])
    pixels = DecodedCache(path, stated["key"], stated["count"], tuple(stated["shape"])).pixels()
    buffer = torch.empty((BATCH, *pixels.shape[1:]), dtype=torch.uint8)  # reused, as the project's gather does
    started = time.perf_counter()
    for index in torch.randperm(len(pixels)).split(BATCH):
        torch.index_select(pixels, 0, index, out=buffer[: len(index)])
    result.epoch_seconds.append(time.perf_counter() - started)
    result.images = len(pixels)


def measure(root: Path, kind: Kind, count: int, work_dir: Path, epochs: int) -> list[Result]:
    cache_dir = work_dir / "cache" / f"{kind.name}-{count}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    results = []
    loader = Result(kind.name, count, "project-loader")
    with PeakMemory() as memory:
        workers = project_path(root, kind, None, loader, epochs)
    loader.peak_anon_mb, loader.peak_file_mb = memory.anon / 1024, memory.file / 1024
    vision = Result(kind.name, count, "torchvision")
    with PeakMemory() as memory:
        torchvision_folder(root, kind, workers, vision, epochs)
    vision.peak_anon_mb, vision.peak_file_mb = memory.anon / 1024, memory.file / 1024
    cached = Result(kind.name, count, "project-cache")
    with PeakMemory() as memory:
        project_path(root, kind, cache_dir, cached, epochs)
    cached.peak_anon_mb, cached.peak_file_mb = memory.anon / 1024, memory.file / 1024
    decode = Result(kind.name, count, "decode")
    decode_limit(root, kind, decode, to_float=False)
    decode_float = Result(kind.name, count, "decode-float")
    decode_limit(root, kind, decode_float, to_float=True)
    read = Result(kind.name, count, "read-cache")
    read_limit(cache_dir, read)
    results = [vision, loader, cached, decode, decode_float, read]
    vision.disk_mb = decode.disk_mb = folder_mb(root)
    shutil.rmtree(cache_dir, ignore_errors=True)
    for result in results:
        print(row(result), flush=True)
    return results


# -- the report ----------------------------------------------------------------------------------------------------
def row(result: Result) -> str:
    epochs = " | ".join(f"{seconds:.2f} s, {result.images / seconds:,.0f}/s" for seconds in result.epoch_seconds)
    memory = f"{result.peak_anon_mb:,.0f} + {result.peak_file_mb:,.0f}" if result.peak_anon_mb else ""
    disk = f"{result.disk_mb:,.0f}" if result.disk_mb else ""
    return (
        f"| {result.kind} | {result.images:,} | {result.path} | {result.setup_seconds:.2f} | {epochs}"
        f"{' | ' if len(result.epoch_seconds) == 1 else ''} | {memory} | {disk} |"
    )


def table(results: list[Result]) -> str:
    head = (
        "| images | count | path | set-up s | epoch 1 | epoch 2 | peak MiB (anon + file) | disk MiB |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(row(result) for result in results)])


def ratios(results: list[Result]) -> list[dict[str, object]]:
    """Per folder: the ratios the targets are stated in (epoch 2, all workers warm)."""
    found = []
    for kind, count in dict.fromkeys((r.kind, r.images if r.path == "torchvision" else None) for r in results):
        if count is None:
            continue
        by = {r.path: r for r in results if r.kind == kind and abs(r.images - count) <= 2}
        loader, last = by["project-loader"], len(by["project-loader"].epoch_seconds) - 1
        found.append({
            "images": kind, "count": count,
            "loader / torchvision": loader.rate(last) / by["torchvision"].rate(last),
            "decode limit / loader": by["decode"].rate(0) / loader.rate(last),
            "decode-float limit / loader": by["decode-float"].rate(0) / loader.rate(last),
            "cache / loader (epoch 2)": by["project-cache"].rate(last) / loader.rate(last),
            "cache / loader (epoch 1, building included)": by["project-cache"].rate(0) / loader.rate(0),
            "read limit / cache": by["read-cache"].rate(0) / by["project-cache"].rate(last),
        })  # fmt: skip
    return found


def slopes(results: list[Result]) -> list[dict[str, object]]:
    """The slope of log(seconds of the last epoch) against log(images), per path and kind of image."""
    found = []
    for kind in dict.fromkeys(r.kind for r in results):
        for path in dict.fromkeys(r.path for r in results):
            points = [(r.images, r.epoch_seconds[-1]) for r in results if r.kind == kind and r.path == path]
            if len(points) >= 2:
                x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
                found.append({"images": kind, "path": path, "slope": float(np.polyfit(x, y, 1)[0])})
    return found


def plot(results: list[Result], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 5))
    styles = {PNG.name: "-", JPEG.name: "--"}
    for kind in dict.fromkeys(r.kind for r in results):
        for index, path in enumerate(dict.fromkeys(r.path for r in results)):
            points = sorted((r.images, r.epoch_seconds[-1]) for r in results if r.kind == kind and r.path == path)
            label = f"{path}, {kind}"
            axes.plot(*zip(*points, strict=True), styles[kind], marker="o", color=f"C{index}", label=label)
    axes.set(xscale="log", yscale="log", xlabel="images", ylabel="seconds per epoch (epoch 2; limits: one pass)")
    axes.set_title(f"Seconds per epoch against images, {available_cores()} cores")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    with written_whole(out) as file:
        figure.savefig(file, format="png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/benchmark_data"), help="generated folders")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="MNIST, for realistic PNGs")
    parser.add_argument("--png", type=int, nargs="*", default=[10_000, 50_000, 200_000], help="PNG folder sizes")
    parser.add_argument("--jpeg", type=int, nargs="*", default=[10_000, 50_000], help="JPEG folder sizes")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2,000 and 8,000 PNGs, 1,000 JPEGs")
    parser.add_argument("--out", type=Path, help="the results as JSON")
    parser.add_argument("--plot", type=Path, help="the log-log plot as PNG")
    args = parser.parse_args()
    if args.quick:
        args.png, args.jpeg = [2_000, 8_000], [1_000]
    digits = mnist_digits(args.data_dir)
    results: list[Result] = []
    print(table([]), flush=True)
    for kind, counts in ((PNG, args.png), (JPEG, args.jpeg)):
        for count in counts:
            root = image_folder(args.work_dir, kind, count, digits)
            results += measure(root, kind, count, args.work_dir, args.epochs)
    print("\n" + table(results))
    found = {"ratios": ratios(results), "slopes": slopes(results)}
    for name, rows in found.items():
        print(f"\n{name}:")
        for entry in rows:
            print("  " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()))
    machine = {"cpu": platform.processor() or platform.machine(), "cores": available_cores()}
    machine["torch"] = torch.__version__
    if args.out:
        report = {"machine": machine, "batch": BATCH, "results": [asdict(r) for r in results], **found}
        with written_whole(args.out, "w") as file:
            file.write(json.dumps(report, indent=1) + "\n")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
