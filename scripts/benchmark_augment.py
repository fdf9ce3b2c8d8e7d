#!/usr/bin/env python
"""How fast the augmentation presets run, per image (torchvision ``transforms.v2``, one call per image and transform,
as before the batch versions) against whole batches at once (``project.data.batch_transforms``, each image its own
draw), side by side in one process, on random images: each preset at 28x28 greyscale (batches of 64) and 224x224
RGB (batches of 32), the crop sizes set to the images' own. Both ways include the presets' MixUp / CutMix, as
training runs them (``BatchAugmentation.seeded``). Prints images per second and the ratio, median of the repeats.

    python scripts/benchmark_augment.py                  # on the CPU, one thread
    python scripts/benchmark_augment.py --device cuda    # on a GPU, when there is one
    python scripts/benchmark_augment.py --quick          # one repeat each: a smoke test
    python scripts/benchmark_augment.py --kornia         # and kornia.augmentation's versions of the presets

``--kornia`` adds a column: the same presets in ``kornia.augmentation`` (``AugmentationSequential`` of its
``RandomCrop``, ``RandomHorizontalFlip``, ``RandomAffine``, ``RandomResizedCrop``, ``auto.TrivialAugment``,
``RandomErasing``; kornia installed apart: ``pip install kornia``), then the same MixUp / CutMix: the comparison the
batch versions here were chosen on.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from project.data.augment import Augmentation, BatchAugmentation, seeded

PRESETS = ("augment", "augment_digits", "augment_finetune")
SIZES = (((1, 28, 28), 64), ((3, 224, 224), 32))
"""Image shapes (channels, height, width) and their batch sizes."""
MODIFIERS = Path(__file__).resolve().parents[1] / "project" / "configs" / "modifiers"


def preset_options(preset: str, size: int) -> dict[str, Any]:
    """The preset's ``data.augment`` options, with every ``size`` argument set to ``size`` (the images keep theirs)."""
    options = yaml.safe_load((MODIFIERS / f"{preset}.yaml").read_text())["data"]["init_args"]["augment"]
    for spec in options.get("transforms") or []:
        if isinstance(spec, dict) and "size" in (spec.get("init_args") or {}):
            spec["init_args"]["size"] = size
    return options


def per_image(augmentation: BatchAugmentation) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """The augmentation as it ran before the batch versions: each image through the v2 transforms, then the mix."""

    def run(images: torch.Tensor, labels: torch.Tensor) -> Any:
        with seeded(1, images.device):
            if augmentation.per_image is not None:
                images = torch.stack([augmentation.per_image(image) for image in images])
            return augmentation.mix(images, labels) if augmentation.mix is not None else images

    return run


def kornia_version(preset: str, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The preset's transforms in ``kornia.augmentation``, as near as kornia has them."""
    import kornia.augmentation as K  # only for --kornia: not a dependency of the project

    if preset == "augment":
        steps = [
            K.RandomCrop((size, size), padding=2),
            K.RandomHorizontalFlip(),
            K.RandomErasing(scale=(0.02, 0.2), p=0.5),
        ]
    elif preset == "augment_digits":
        steps = [K.RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1)), K.RandomErasing(scale=(0.02, 0.1), p=0.25)]
    else:
        steps = [K.RandomResizedCrop((size, size)), K.RandomHorizontalFlip(), K.auto.TrivialAugment()]
        steps.append(K.RandomErasing(p=0.25))
    return K.AugmentationSequential(*steps)


def median_seconds(run: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` runs after one warm-up (CUDA synchronised around each)."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(
    preset: str, shape: tuple[int, int, int], batch: int, repeats: int, device: torch.device, kornia: bool = False
) -> tuple:
    """Images per second of the preset per image and in batches (and through kornia), on ``batch`` random images of
    ``shape``."""
    augmentation = BatchAugmentation(Augmentation(**preset_options(preset, shape[1])), seed=0)
    augmentation.mix_with("multiclass", 10)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, *shape, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch,), generator=generator).to(device)
    slow = median_seconds(lambda: per_image(augmentation)(images, labels), repeats, device)
    fast = median_seconds(lambda: augmentation.seeded(images, labels, 1), repeats, device)
    if not kornia:
        return batch / slow, batch / fast
    other = kornia_version(preset, shape[1]).to(device)
    mix = augmentation.mix or (lambda images, labels: images)
    mixed = median_seconds(lambda: mix(other(images), labels), repeats, device)
    return batch / slow, batch / fast, batch / mixed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="where the batches are (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each (median; default 7)")
    parser.add_argument("--quick", action="store_true", help="one timed run each: a smoke test")
    parser.add_argument("--kornia", action="store_true", help="and kornia.augmentation's versions (kornia installed)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# {when}, {name}, torch {torch.__version__}, {args.threads} thread(s), median of {repeats}")
    extra = (" kornia, images/s |", "---|") if args.kornia else ("", "")
    print(f"| preset | images | per image (v2), images/s | batch, images/s | batch / per image |{extra[0]}")
    print(f"|---|---|---|---|---|{extra[1]}")
    for preset in PRESETS:
        for shape, batch in SIZES:
            slow, fast, *other = measure(preset, shape, batch, repeats, device, kornia=args.kornia)
            size = f"{batch} x {shape[0]}x{shape[1]}x{shape[2]}"
            more = f" {other[0]:,.0f} |" if other else ""
            print(f"| `{preset}` | {size} | {slow:,.0f} | {fast:,.0f} | {fast / slow:.1f}x |{more}", flush=True)


if __name__ == "__main__":
    main()
