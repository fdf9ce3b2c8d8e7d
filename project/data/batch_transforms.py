"""Batch versions of the common torchvision ``transforms.v2`` transforms: a whole batch of images (N, C, H, W, float
pixels on the 0..1 scale) at once, on the device it is on, each image with its own random parameters, drawn from the
distributions v2 draws them from (tested against v2 image by image: ``tests/test_batch_augmentation.py``).

:func:`batch_version` gives the batch version of a built v2 transform, or ``None`` where there is none here (another
class, a subclass, or options the batch version does not take: a fill per channel, a padding mode torch lacks,
bicubic interpolation, ColorJitter's hue); :class:`project.data.augment.BatchAugmentation` then runs that transform
on each image on its own. Covered: ``RandomCrop`` (with padding), ``RandomResizedCrop``, ``RandomHorizontalFlip``,
``RandomVerticalFlip``, ``RandomAffine``, ``RandomRotation``, ``RandomErasing``, ``ColorJitter`` (without hue),
``TrivialAugmentWide`` and ``RandAugment``.

Random draws come from torch's global generators (parameters from the CPU's, then moved to the batch's device; the
noise of ``RandomErasing(value="random")`` from the device's), which the caller seeds for each batch
(:func:`project.data.augment.seeded`), as it does for the per-image transforms. The pixel operations are
torchvision's own formulas (its affine grid, blends, posterize, solarize; ``autocontrast`` and ``equalize`` are its
functional ones, which take batches), so that a given parameter gives the image v2 gives, up to rounding.
``RandomResizedCrop`` samples the crop with ``grid_sample`` (bilinear, or nearest), which is ``interpolate``'s result
when the crop is enlarged, as it always is here (the transforms keep the image's size); it would not antialias a
crop made smaller.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from project.data.batch_colour import brightness, contrast, posterize, saturation, sharpness, solarize

_BatchTransform = Callable[[Tensor], Tensor]
"""A batch version: images (N, C, H, W) in, images of the same shape out."""

_MODES = {v2.InterpolationMode.NEAREST: "nearest", v2.InterpolationMode.BILINEAR: "bilinear"}
"""The interpolations ``grid_sample`` makes as v2 does (v2 may hold them as the enum or its string value)."""
_PAD_MODES = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}
_TRIES = 10
"""How many random rectangles ``RandomResizedCrop`` and ``RandomErasing`` try before they give up, as v2's."""


def batch_version(transform: v2.Transform) -> _BatchTransform | None:
    """The batch version of ``transform`` (its options read from its public attributes), or ``None``."""
    maker = _MAKERS.get(type(transform))
    return None if maker is None else maker(transform)


def _mode(interpolation: object) -> str | None:
    try:
        return _MODES.get(v2.InterpolationMode(interpolation))
    except ValueError:  # an integer code of PIL's
        return None


def _uniform(shape: int | tuple[int, ...], low: float, high: float) -> Tensor:
    return torch.empty(shape, dtype=torch.float64).uniform_(float(low), float(high))


def _fill(fill: object) -> tuple[bool, float | None]:
    """Whether a batch version takes ``fill`` (one number, or none), and it as a float (``None``: none, which v2's
    warps treat apart from 0)."""
    if fill is None or not isinstance(fill, int | float) or isinstance(fill, bool):
        return fill is None, None
    return True, float(fill)


# -- crops and flips -----------------------------------------------------------------------------------------------
def _random_crop(transform: v2.RandomCrop) -> _BatchTransform | None:
    takes, fill = _fill(transform.fill)
    if transform.pad_if_needed or transform.padding_mode not in _PAD_MODES or not takes:
        return None
    left, top, right, bottom = transform.padding or (0, 0, 0, 0)
    height, width = transform.size
    mode = _PAD_MODES[transform.padding_mode]

    def crop(images: Tensor) -> Tensor:
        extra = {"value": fill or 0.0} if mode == "constant" else {}
        padded = (
            F.pad(images, (left, right, top, bottom), mode=mode, **extra) if left + right + top + bottom else images
        )
        n, _, padded_height, padded_width = padded.shape
        if padded_height < height or padded_width < width:
            raise ValueError(f"Required crop size {(height, width)} is larger than {(padded_height, padded_width)}")
        tops = torch.randint(0, padded_height - height + 1, (n,)).tolist()
        lefts = torch.randint(0, padded_width - width + 1, (n,)).tolist()
        # views of the padded batch, copied out in one torch.stack (a gather by index is slower on the CPU)
        return torch.stack(
            [image[:, t : t + height, j : j + width] for image, t, j in zip(padded, tops, lefts, strict=True)]
        )

    return crop


def _flip(dim: int) -> Callable[[v2.Transform], _BatchTransform]:
    def make(transform: v2.RandomHorizontalFlip | v2.RandomVerticalFlip) -> _BatchTransform:
        def flip(images: Tensor) -> Tensor:
            where = (torch.rand(len(images)) < transform.p).nonzero()[:, 0].to(images.device)
            out = images.clone()
            out[where] = images[where].flip(dim)
            return out

        return flip

    return make


def _first_fitting(sizes: tuple[Tensor, Tensor], fits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Of ``_TRIES`` random rectangles a row (heights and widths, (N, tries)), the first that ``fits``, and whether
    any does."""
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)
    return sizes[0].gather(1, first)[:, 0], sizes[1].gather(1, first)[:, 0], fits.any(dim=1)


def _rectangles(n: int, area: float, scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """``_TRIES`` rectangles for each of ``n`` images, as v2 draws them: an area a share of ``area`` drawn from
    ``scale``, an aspect ratio log-uniform in ``ratio``; their (height, width) at ratio (width / height)."""
    areas = area * _uniform((n, _TRIES), *scale)
    ratios = torch.exp(_uniform((n, _TRIES), math.log(ratio[0]), math.log(ratio[1])))
    return torch.round(torch.sqrt(areas / ratios)), torch.round(torch.sqrt(areas * ratios))


def _random_resized_crop(transform: v2.RandomResizedCrop) -> _BatchTransform | None:
    mode = _mode(transform.interpolation)
    if mode is None:
        return None
    out_height, out_width = transform.size
    low, high = min(transform.ratio), max(transform.ratio)

    def resized_crop(images: Tensor) -> Tensor:
        n, _, height, width = images.shape
        heights, widths = _rectangles(n, height * width, transform.scale, transform.ratio)
        fits = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
        heights, widths, found = _first_fitting((heights, widths), fits)
        central = (width, height)  # v2's fallback: the central crop of the allowed ratio nearest the image's
        if width / height < low:
            central = (width, round(width / low))
        elif width / height > high:
            central = (round(height * high), height)
        widths, heights = torch.where(found, widths, central[0]), torch.where(found, heights, central[1])
        tops = torch.where(found, torch.floor(torch.rand(n, dtype=torch.float64) * (height - heights + 1)),
                           (height - heights) // 2)  # fmt: skip
        lefts = torch.where(found, torch.floor(torch.rand(n, dtype=torch.float64) * (width - widths + 1)),
                            (width - widths) // 2)  # fmt: skip
        xs = (_sample_points(lefts, widths, out_width) / width * 2 - 1).to(images.device, images.dtype)
        ys = (_sample_points(tops, heights, out_height) / height * 2 - 1).to(images.device, images.dtype)
        grid = torch.stack((xs[:, None, :].expand(n, out_height, out_width),
                            ys[:, :, None].expand(n, out_height, out_width)), dim=-1)  # fmt: skip
        return F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)

    return resized_crop


def _sample_points(starts: Tensor, lengths: Tensor, size: int) -> Tensor:
    """Where ``interpolate`` (align_corners=False) samples a crop of ``lengths`` pixels from ``starts`` to make
    ``size`` pixels, kept inside the crop as it keeps them, as edges of pixels (+0.5) for ``grid_sample``."""
    centres = (torch.arange(size, dtype=torch.float64) + 0.5) * (lengths[:, None] / size) - 0.5
    inside = torch.minimum(centres.clamp(min=0), (lengths - 1)[:, None])
    return starts[:, None] + inside + 0.5


# -- erasing -------------------------------------------------------------------------------------------------------
def _random_erasing(transform: v2.RandomErasing) -> _BatchTransform:
    def erase(images: Tensor) -> Tensor:
        n, channels, height, width = images.shape
        widths, heights = _rectangles(n, height * width, transform.scale, transform.ratio)  # v2 erases h = sqrt(a * r)
        heights, widths, found = _first_fitting((heights, widths), (heights < height) & (widths < width))
        erased = (torch.rand(n) < transform.p) & found
        tops = torch.floor(torch.rand(n, dtype=torch.float64) * (height - heights + 1))
        lefts = torch.floor(torch.rand(n, dtype=torch.float64) * (width - widths + 1))
        rows, columns = torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64)
        in_rows = (rows >= tops[:, None]) & (rows < (tops + heights)[:, None])
        in_columns = (columns >= lefts[:, None]) & (columns < (lefts + widths)[:, None])
        inside = (in_rows[:, :, None] & in_columns[:, None, :] & erased[:, None, None])[:, None].to(images.device)
        if transform.value is not None:
            value = torch.tensor(transform.value, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
            if value.shape[1] not in (1, channels):
                raise ValueError(f"RandomErasing's value has {value.shape[1]} numbers for {channels} channels")
            return (
                images.masked_fill(inside, value.item()) if value.numel() == 1 else torch.where(inside, value, images)
            )
        out, where = images.clone(), erased.nonzero()[:, 0].to(images.device)  # value="random": normal noise, as v2's
        noise = torch.randn((len(where), *images.shape[1:]), device=images.device, dtype=images.dtype)
        out[where] = torch.where(inside[where], noise, images[where])
        return out

    return erase


# -- affine transforms ---------------------------------------------------------------------------------------------
def _inverse_affine(
    center: tuple[Tensor | float, Tensor | float], angle: Tensor, translate: tuple[Tensor, Tensor], scale: Tensor,
    shear: tuple[Tensor, Tensor],
) -> Tensor:  # fmt: skip
    """torchvision's ``_get_inverse_affine_matrix`` for a batch of parameters (degrees; (N,) each): (N, 2, 3)."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear[0]), torch.deg2rad(shear[1])
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d / scale, -b / scale, -c / scale, a / scale
    (cx, cy), (tx, ty) = center, translate
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack((m0, m1, m2, m3, m4, m5), dim=-1).view(-1, 2, 3)


def _warp(images: Tensor, theta: Tensor, mode: str, fill: float | None) -> Tensor:
    """``images`` through the inverse affine matrices ``theta`` (N, 2, 3, pixels from the image's centre), as
    torchvision's affine kernel: its grid, ``grid_sample`` with zeros outside, then ``fill`` where its mask (the
    share of in-image pixels a point samples) says, even a fill of 0 (bilinear: the edges then darken twice, as in
    v2). The grid and the mask are made by broadcasting, the mask from the grid (v2 samples a channel of ones)."""
    height, width = images.shape[-2:]
    options = {"dtype": images.dtype, "device": images.device}
    xs = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, width, **options)[None, None, :]
    ys = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, height, **options)[None, :, None]
    scaled = (theta / torch.tensor([[0.5 * width], [0.5 * height]], dtype=torch.float64)).to(**options)
    rows = [scaled[:, row, :, None, None] for row in (0, 1)]
    grid_x, grid_y = (row[:, 0] * xs + row[:, 1] * ys + row[:, 2] for row in rows)
    out = F.grid_sample(images, torch.stack((grid_x, grid_y), dim=-1), mode=mode, align_corners=False)
    if fill is None:
        return out
    x, y = ((grid_x + 1) * width - 1) / 2, ((grid_y + 1) * height - 1) / 2  # in pixels
    if mode == "nearest":
        x, y = x.round(), y.round()
        inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
        return out.masked_fill_(~inside[:, None], fill)
    share = torch.minimum(x + 1, width - x).clamp(0, 1) * torch.minimum(y + 1, height - y).clamp(0, 1)
    return out.sub_(fill).mul_(share[:, None]).add_(fill)


def _centre(center: list[float] | None, height: int, width: int) -> tuple[float, float]:
    return (0.0, 0.0) if center is None else (center[0] - width * 0.5, center[1] - height * 0.5)


def _random_affine(transform: v2.RandomAffine | v2.RandomRotation) -> _BatchTransform | None:
    mode, (takes, fill) = _mode(transform.interpolation), _fill(transform.fill)
    rotation = isinstance(transform, v2.RandomRotation)
    if mode is None or not takes or (rotation and transform.expand):
        return None

    def affine(images: Tensor) -> Tensor:
        n, _, height, width = images.shape
        angle, zeros = _uniform(n, *transform.degrees), torch.zeros(n, dtype=torch.float64)
        if rotation:  # v2's rotate turns by -angle in its inverse matrix
            theta = _inverse_affine(_centre(transform.center, height, width), -angle, (zeros, zeros), zeros + 1,
                                    (zeros, zeros))  # fmt: skip
            return _warp(images, theta, mode, fill)
        translate, scale, shear = (zeros, zeros), zeros + 1, [zeros, zeros]
        if transform.translate is not None:
            dx, dy = transform.translate[0] * width, transform.translate[1] * height
            translate = (torch.round(_uniform(n, -dx, dx)), torch.round(_uniform(n, -dy, dy)))
        if transform.scale is not None:
            scale = _uniform(n, *transform.scale)
        if transform.shear is not None:
            shear[0] = _uniform(n, transform.shear[0], transform.shear[1])
            if len(transform.shear) == 4:
                shear[1] = _uniform(n, transform.shear[2], transform.shear[3])
        theta = _inverse_affine(_centre(transform.center, height, width), angle, translate, scale, tuple(shear))
        return _warp(images, theta, mode, fill)

    return affine


# -- colour --------------------------------------------------------------------------------------------------------
def _color_jitter(transform: v2.ColorJitter) -> _BatchTransform | None:
    if transform.hue is not None:
        return None
    steps = ((transform.brightness, brightness), (transform.contrast, contrast), (transform.saturation, saturation))

    def jitter(images: Tensor) -> Tensor:
        n, images = len(images), images.clone()
        order = torch.rand(n, 4).argsort(dim=1)  # each image its own order of the four, as v2's randperm(4)
        factors = [None if span is None else _uniform(n, *span) for span, _ in steps]
        for position in range(4):
            for index, (span, operation) in enumerate(steps):
                chosen = order[:, position] == index
                if span is not None and chosen.any():
                    where = chosen.nonzero()[:, 0].to(images.device)
                    images[where] = operation(images[where], factors[index][chosen])
        return images

    return jitter


# -- TrivialAugmentWide and RandAugment ----------------------------------------------------------------------------
_OPERATIONS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
               "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")  # fmt: skip
"""The operations of both, in v2's order (``_AUGMENTATION_SPACE``), which the random draw indexes."""
_SIGNED = frozenset(_OPERATIONS[1:10])


def _magnitudes(wide: bool, bins: int, height: int, width: int) -> Tensor:
    """v2's magnitudes (operations by bins, float64; 0 for operations without one): TrivialAugmentWide's (``wide``)
    or RandAugment's."""
    line = lambda top: torch.linspace(0.0, top, bins, dtype=torch.float64)  # noqa: E731
    shear, colour = (0.99, 0.99) if wide else (0.3, 0.9)
    steps = torch.arange(bins, dtype=torch.float64) / ((bins - 1) / (6 if wide else 4))
    table = {
        "ShearX": line(shear), "ShearY": line(shear),
        "TranslateX": line(32.0 if wide else 150.0 / 331.0 * width),
        "TranslateY": line(32.0 if wide else 150.0 / 331.0 * height),
        "Rotate": line(135.0 if wide else 30.0),
        "Brightness": line(colour), "Color": line(colour), "Contrast": line(colour), "Sharpness": line(colour),
        "Posterize": (8 - steps).round(), "Solarize": torch.linspace(1.0, 0.0, bins, dtype=torch.float64),
    }  # fmt: skip
    return torch.stack([table.get(name, torch.zeros(bins, dtype=torch.float64)) for name in _OPERATIONS])


def _geometric(images: Tensor, operations: Tensor, magnitudes: Tensor, mode: str, fill: float | None) -> Tensor:
    """Images whose operation is a shear, translation or rotation (``operations`` 1..5), in one warp: shears about
    the top-left corner, translations by whole pixels (truncated), rotations about the centre, as v2's."""
    n, _, height, width = images.shape
    zeros = torch.zeros(n, dtype=torch.float64)
    name = lambda index: operations == _OPERATIONS.index(index)  # noqa: E731
    corner = (name("ShearX") | name("ShearY")).to(torch.float64)
    centre = (-width * 0.5 * corner, -height * 0.5 * corner)
    degrees = torch.rad2deg(torch.atan(magnitudes))
    shear = (torch.where(name("ShearX"), degrees, zeros), torch.where(name("ShearY"), degrees, zeros))
    translate = (torch.where(name("TranslateX"), magnitudes.trunc(), zeros),
                 torch.where(name("TranslateY"), magnitudes.trunc(), zeros))  # fmt: skip
    angle = torch.where(name("Rotate"), -magnitudes, zeros)
    return _warp(images, _inverse_affine(centre, angle, translate, zeros + 1, shear), mode, fill)


_PIXELWISE: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "Brightness": lambda images, m: brightness(images, 1 + m),
    "Color": lambda images, m: saturation(images, 1 + m),
    "Contrast": lambda images, m: contrast(images, 1 + m),
    "Sharpness": lambda images, m: sharpness(images, 1 + m),
    "Posterize": posterize,
    "Solarize": solarize,
    "AutoContrast": lambda images, m: TF.autocontrast(images),
    "Equalize": lambda images, m: TF.equalize(images),
}


def _operated(images: Tensor, operations: Tensor, magnitudes: Tensor, mode: str, fill: float | None) -> Tensor:
    """Each image through its own operation (indices of ``_OPERATIONS``) at its own signed magnitude."""
    out = images.clone()
    geometric = (operations >= 1) & (operations <= 5)
    groups = [(geometric, None)] + [(operations == _OPERATIONS.index(name), op) for name, op in _PIXELWISE.items()]
    for chosen, operation in groups:
        if not chosen.any():
            continue
        where = chosen.nonzero()[:, 0].to(images.device)
        if operation is None:
            changed = _geometric(images[where], operations[chosen], magnitudes[chosen], mode, fill)
        else:
            changed = operation(images[where], magnitudes[chosen])
        out[where] = changed
    return out


def _auto_augment(transform: v2.TrivialAugmentWide | v2.RandAugment) -> _BatchTransform | None:
    mode, (takes, fill) = _mode(transform.interpolation), _fill(transform.fill)
    if mode is None or not takes:
        return None
    wide = isinstance(transform, v2.TrivialAugmentWide)
    rounds = 1 if wide else transform.num_ops

    def augment(images: Tensor) -> Tensor:
        n, _, height, width = images.shape
        table = _magnitudes(wide, transform.num_magnitude_bins, height, width)
        signed = torch.tensor([name in _SIGNED for name in _OPERATIONS])
        for _ in range(rounds):
            operations = torch.randint(len(_OPERATIONS), (n,))
            bins = torch.randint(transform.num_magnitude_bins, (n,)) if wide else torch.full((n,), transform.magnitude)
            flips = signed[operations] & (torch.rand(n) <= 0.5)
            magnitudes = torch.where(flips, -table[operations, bins], table[operations, bins])
            images = _operated(images, operations, magnitudes, mode, fill)
        return images

    return augment


_MAKERS: dict[type, Callable[..., _BatchTransform | None]] = {
    v2.RandomCrop: _random_crop,
    v2.RandomResizedCrop: _random_resized_crop,
    v2.RandomHorizontalFlip: _flip(-1),
    v2.RandomVerticalFlip: _flip(-2),
    v2.RandomErasing: _random_erasing,
    v2.RandomAffine: _random_affine,
    v2.RandomRotation: _random_affine,
    v2.ColorJitter: _color_jitter,
    v2.TrivialAugmentWide: _auto_augment,
    v2.RandAugment: _auto_augment,
}
"""The v2 classes with a batch version (exactly these classes: a subclass may do otherwise), and its maker."""
