"""Make a photo or scan of a handwritten digit look like MNIST's digits, which a network trained on MNIST expects.

MNIST's digits were made this way (LeCun et al.): the ink, light on a black background, scaled to fit a 20x20 box
with its aspect ratio kept (anti-aliased, hence the grey levels), then placed in a 28x28 frame so that its centre of
mass is at the frame's centre. A user's image is usually dark ink on light paper, at another size, anywhere in the
frame; resizing it to 28x28 alone gives the network something it never saw. :func:`mnist_like` does the same steps.
What is ink is measured against the ink's own level and the paper's noise, not a fixed grey: faint strokes, and small
scans whose strokes touch the image's border, keep their ink and its grey levels.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import functional as TF

BOX, FRAME = 20, 28
_INK_THRESHOLD = 0.25
"""A pixel is ink where it is brighter than this fraction of the brightest pixel (after the paper is removed)..."""
_NOISE_SIGMAS = 3
"""...and brighter than the paper by this many standard deviations of the paper's noise (measured on the border)."""


def mnist_like(image: Image.Image) -> Image.Image:
    """The image's digit as MNIST would have it: greyscale, light ink on black, fitted in 20x20 and centred by mass in
    28x28. An image without ink gives a black frame."""
    grey = TF.pil_to_tensor(image.convert("L"))[0].float()
    border = torch.cat([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if border.median() > 127:  # dark ink on light paper: inverted, as MNIST's ink is the bright part
        grey, border = 255 - grey, 255 - border
    paper = border.median()
    noise = 1.4826 * (border - paper).abs().median()  # its standard deviation, from medians: ink may touch the border
    ink = (grey - paper).clamp(min=0)
    ink[ink <= max(_INK_THRESHOLD * ink.max(), _NOISE_SIGMAS * noise)] = 0  # black background, ink keeps its greys
    rows, columns = torch.nonzero(ink, as_tuple=True)
    if len(rows) == 0:
        return Image.new("L", (FRAME, FRAME))
    ink = ink[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    height, width = ink.shape
    scale = BOX / max(height, width)
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    digit = TF.resize(ink[None], size, antialias=True)[0].clamp(min=0)  # a stroke thinner than a pixel gets dimmer,
    digit *= 255 / digit.max()  # so the brightest pixel is made full ink afterwards, as in MNIST's digits
    frame = torch.zeros(FRAME, FRAME)
    total = digit.sum()
    centre_row = (digit.sum(1) * torch.arange(size[0])).sum() / total
    centre_column = (digit.sum(0) * torch.arange(size[1])).sum() / total
    top = min(max(round(FRAME / 2 - 0.5 - centre_row.item()), 0), FRAME - size[0])  # centre of mass at the centre
    left = min(max(round(FRAME / 2 - 0.5 - centre_column.item()), 0), FRAME - size[1])
    frame[top : top + size[0], left : left + size[1]] = digit
    return TF.to_pil_image(frame.round().to(torch.uint8))
