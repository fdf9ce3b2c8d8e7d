"""What the prediction server (:mod:`project.inference.serving`) takes in a ``POST /predict`` body, and how each input
becomes the bytes of an image file, which the server then decodes exactly as ``predict`` decodes a file:

- ``multipart/form-data``: one or more image files in the field ``files`` (``curl -F files=@digit.png``), any format
  ``predict`` reads (PNG, JPEG, BMP, ...), any size and mode; each is converted and resized as a file is;
- ``application/json``: ``{"inputs": [array, ...]}``, each array the pixels an image file would hold, as nested
  lists of whole numbers from 0 to 255 (not normalised): ``HxW`` (greyscale), ``HxWxC`` or ``CxHxW`` with C = 1
  (greyscale), 3 (RGB) or 4 (RGBA); when both the first and the last side could be the channels (3xHx3), the last is.
  An array is predicted as the PNG file of its pixels would be (:func:`png_bytes`).

Anything else is a :class:`BadRequest` with the HTTP status that says why: 400 a body that is not what its
Content-Type says (JSON that does not parse, a multipart body cut short), 413 too large (bytes, or an image's pixels),
415 another Content-Type, 422 a well-formed body whose inputs are not images (bytes that do not decode, an array of
another shape or values out of range, a form field other than ``files``).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from project.data.decoding import UndecodableImage
from project.errors import first_line

_MEDIA_TYPES = ("multipart/form-data", "application/json")
"""The Content-Types ``/predict`` takes."""
MAX_PIXELS = 40_000_000
"""The most pixels an uploaded image may declare (a 7,000 x 5,700 photo): a PNG of a few kilobytes can declare a
billion pixels, which decoding would hold in memory."""
_CHANNELS = (1, 3, 4)
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_PARAMETER = re.compile(r';\s*(name|filename)="([^"]*)"', re.IGNORECASE)


class BadRequest(Exception):
    """An input the server refuses: the HTTP ``status`` and a one-line message saying why and what it takes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def media_type(content_type: str) -> str:
    """The media type of a ``Content-Type`` header, if ``/predict`` takes it; a 415 otherwise."""
    media = content_type.partition(";")[0].strip().lower()
    if media not in _MEDIA_TYPES:
        given = f"Content-Type {media}" if media else "no Content-Type"
        raise BadRequest(
            415,
            f"{given}: send image files as multipart/form-data in the field 'files' (curl -F files=@image.png), or "
            f'pixel arrays as application/json {{"inputs": [array, ...]}}',
        )
    return media


def request_images(body: bytes, content_type: str, decode: Callable[[bytes], Tensor]) -> list[Tensor]:
    """Each input of a ``/predict`` body through ``decode`` (an image file's bytes to the network's input), in the
    order they were given."""
    if media_type(content_type) == "multipart/form-data":
        sources = _form_files(body, content_type)
    else:
        sources = [(f"inputs[{index}]", png_bytes(pixels)) for index, pixels in enumerate(_json_arrays(body))]
    return [_decoded(name, data, decode) for name, data in sources]


def _decoded(name: str, data: bytes, decode: Callable[[bytes], Tensor]) -> Tensor:
    """One input through ``decode``, once its header says it is an image of at most :data:`MAX_PIXELS`."""
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
    except Exception as error:  # PIL's UnidentifiedImageError, DecompressionBombError, SyntaxError, ...
        raise BadRequest(422, f"{name}: not an image that can be decoded ({first_line(error)})") from None
    if width * height > MAX_PIXELS:
        raise BadRequest(413, f"{name}: an image of {width}x{height} pixels; this server takes at most {MAX_PIXELS:,}")
    try:
        return decode(data)
    except UndecodableImage as error:
        raise BadRequest(422, f"{name}: not an image that can be decoded ({error.reason})") from None


def _form_files(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """The files of a ``multipart/form-data`` body (RFC 7578), with their names, from the field ``files``."""
    boundary = _BOUNDARY.search(content_type)
    if not boundary:
        raise BadRequest(400, "a multipart/form-data Content-Type names its boundary; this one has none")
    sections = (b"\r\n" + body).split(b"\r\n--" + boundary.group(1).encode("latin-1"))
    if len(sections) < 2 or not sections[-1].startswith(b"--"):
        raise BadRequest(400, "the multipart/form-data body is cut short: it has no closing boundary")
    files = []
    for section in sections[1:-1]:
        head, separated, data = section.partition(b"\r\n\r\n")
        if not separated:
            raise BadRequest(400, "a part of the multipart/form-data body has no blank line after its headers")
        lines = head.decode("latin-1").split("\r\n")
        disposition = next((line for line in lines if line.lower().startswith("content-disposition:")), "")
        parameters = {key.lower(): value for key, value in _PARAMETER.findall(disposition)}
        if parameters.get("name") != "files":
            raise BadRequest(
                422, f"a form field {parameters.get('name')!r}: send images in the field 'files' (-F files=@image.png)"
            )
        files.append((parameters.get("filename") or f"files[{len(files)}]", data))
    if not files:
        raise BadRequest(422, "no files: send one or more images in the field 'files' (-F files=@image.png)")
    return files


def _json_arrays(body: bytes) -> list[np.ndarray]:
    """The arrays of a JSON body ``{"inputs": [array, ...]}``, checked (:func:`_pixels`)."""
    try:
        content = json.loads(body)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRequest(400, f"the body is not JSON: {first_line(error)}") from None
    inputs = content.get("inputs") if isinstance(content, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest(422, 'a JSON body is {"inputs": [array, ...]}: one or more arrays of pixels')
    return [_pixels(item, f"inputs[{index}]") for index, item in enumerate(inputs)]


def _pixels(item: Any, name: str) -> np.ndarray:
    """``item`` as the ``HxW`` or ``HxWxC`` uint8 pixels of an image, or the 422 saying what an array must be."""
    try:
        array = np.asarray(item)
    except ValueError:  # numpy refuses ragged lists
        raise BadRequest(422, f"{name}: not a rectangular array (its rows differ in length)") from None
    if array.dtype.kind not in "iuf":
        raise BadRequest(422, f"{name}: an array of {array.dtype.name} values; pixels are numbers from 0 to 255")
    shape = list(array.shape)
    if array.ndim == 3 and shape[-1] not in _CHANNELS and shape[0] in _CHANNELS:
        array = array.transpose(1, 2, 0)  # CxHxW
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in _CHANNELS)) or 0 in array.shape:
        raise BadRequest(
            422, f"{name}: an array of shape {shape}; an image is HxW, HxWxC or CxHxW with C = 1, 3 or 4 channels"
        )
    if not (np.isfinite(array).all() and (array >= 0).all() and (array <= 255).all() and (array % 1 == 0).all()):
        raise BadRequest(
            422, f"{name}: pixels are whole numbers from 0 to 255, as an image file holds them (not normalised)"
        )
    return array.astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """The PNG file of ``pixels`` (``HxW`` greyscale, ``HxWx3`` RGB or ``HxWx4`` RGBA, uint8): what an array sent to
    the server stands for."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
