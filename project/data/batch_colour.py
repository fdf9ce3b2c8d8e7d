"""Colour operations on a batch of images (N, C, H, W, float pixels on the 0..1 scale), each image with its own
factor (a tensor of N), by torchvision ``transforms.v2``'s formulas (its ``adjust_brightness``, ``adjust_saturation``,
``adjust_contrast``, ``adjust_sharpness``, ``posterize``, ``solarize`` take one factor for a whole batch): the pieces
of :mod:`project.data.batch_transforms`' ``ColorJitter``, ``TrivialAugmentWide`` and ``RandAugment``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _blend(images: Tensor, other: Tensor, factors: Tensor) -> Tensor:
    ratio = factors.to(images.device, images.dtype)[:, None, None, None]
    return (images * ratio + other * (1 - ratio)).clamp(0, 1)


def _grey(images: Tensor) -> Tensor:
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(dim=1)
    return (r * 0.2989 + g * 0.587 + b * 0.114)[:, None]


def brightness(images: Tensor, factors: Tensor) -> Tensor:
    """Each image times its factor (``adjust_brightness``)."""
    return _blend(images, torch.zeros_like(images), factors)


def saturation(images: Tensor, factors: Tensor) -> Tensor:
    """Each image blended with its grey version by its factor (``adjust_saturation``; greyscale images unchanged)."""
    return images if images.shape[1] == 1 else _blend(images, _grey(images), factors)


def contrast(images: Tensor, factors: Tensor) -> Tensor:
    """Each image blended with its grey mean by its factor (``adjust_contrast``)."""
    return _blend(images, _grey(images).mean(dim=(1, 2, 3), keepdim=True), factors)


def sharpness(images: Tensor, factors: Tensor) -> Tensor:
    """Each image blended with its 3x3 smoothing by its factor, its border unchanged (``adjust_sharpness``)."""
    channels, height, width = images.shape[1:]
    if height <= 2 or width <= 2:
        return images
    kernel = torch.full((3, 3), 1.0 / 13.0, dtype=images.dtype, device=images.device)
    kernel[1, 1] = 5.0 / 13.0
    blurred = F.conv2d(images, kernel.expand(channels, 1, 3, 3), groups=channels)
    out = images.clone()
    inner = out[..., 1:-1, 1:-1]
    inner += (blurred - inner) * (1 - factors.to(images.device, images.dtype))[:, None, None, None]
    return out.clamp(0, 1)


def posterize(images: Tensor, bits: Tensor) -> Tensor:
    """Each image kept to ``2**bits`` levels a channel, ``bits`` its own (``posterize`` on float pixels)."""
    levels = (2 ** bits.round()).to(images.device, images.dtype)[:, None, None, None]
    return torch.minimum((images * levels).floor().clamp(min=0), levels - 1) / levels


def solarize(images: Tensor, thresholds: Tensor) -> Tensor:
    """Each image's pixels at or above its threshold inverted (``solarize``)."""
    return torch.where(images >= thresholds.to(images.device, images.dtype)[:, None, None, None], 1 - images, images)
