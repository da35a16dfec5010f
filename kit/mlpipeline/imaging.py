"""Image files to pixels: one function that the ingest stage and the model service both call,
so that the served model sees exactly the pixels the pipeline trained and checked on.

Self-contained (numpy and Pillow, no torch, nothing else of the kit): the service's image
copies this file beside `mlpipeline/serving/`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# the file kinds a source folder may hold, by suffix (lower case)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class ImageError(ValueError):
    """A file that is not a usable image: the message says why, in one line."""


class ImageTooSmall(ImageError):
    """An image smaller than the configured size, where enlarging it is refused."""


@dataclass(frozen=True)
class ImageShape:
    """What every image becomes: `channels` (1: grayscale, 3: RGB) of `height` x `width`
    pixels; `resize` says how another aspect ratio gets there (crop: the shorter side scaled
    to fit, then the centre cut out; stretch: both sides scaled)."""

    channels: Literal[1, 3]
    height: int
    width: int
    resize: Literal["crop", "stretch"] = "crop"
    max_pixels: int = 50_000_000  # larger files are refused before decoding (decompression bombs)
    upscale: bool = True  # False: an image smaller than height x width raises ImageTooSmall

    @property
    def array_shape(self) -> tuple[int, int, int]:
        """(C, H, W), as the network takes it."""
        return (self.channels, self.height, self.width)


def decode(source: bytes | Path, shape: ImageShape) -> np.ndarray:
    """The image in `source` (a file's bytes, or its path) as uint8 pixels of
    `shape.array_shape`: EXIF orientation applied, converted to the channels (alpha dropped,
    16-bit scaled to 8), resized with Pillow's bilinear filter. Raises ImageError for anything
    that is not an image Pillow can decode, or one over `shape.max_pixels` (ImageTooSmall for
    one that would be enlarged, where `shape.upscale` is False)."""
    try:
        if not (len(source) if isinstance(source, bytes) else source.stat().st_size):
            raise ImageError("empty file (0 bytes)")
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            if image.width * image.height > shape.max_pixels:
                raise ImageError(
                    f"{image.width}x{image.height} pixels is over the limit of {shape.max_pixels}"
                )
            image = ImageOps.exif_transpose(image)
            if not shape.upscale and (image.width < shape.width or image.height < shape.height):
                raise ImageTooSmall(
                    f"{image.width}x{image.height} pixels (width x height) is smaller than "
                    f"the configured {shape.width}x{shape.height}"
                )
            image = _to_mode(image, "L" if shape.channels == 1 else "RGB")
            image = _resize(image, shape)
            pixels = np.asarray(image, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageError("not an image file Pillow can read") from None
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, ImageError):
            raise
        raise ImageError(f"cannot decode: {' '.join(str(err).split())[:120]}") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1).copy()


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """`image` in Pillow mode L or RGB; 16-bit and 32-bit integer images scaled to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / top) + 0.5, 0, 255).astype(np.uint8))
    if image.mode in ("P", "LA", "PA"):
        image = image.convert("RGBA")
    return image if image.mode == mode else image.convert(mode)


def _resize(image: Image.Image, shape: ImageShape) -> Image.Image:
    size = (shape.width, shape.height)
    if image.size == size:
        return image
    if shape.resize == "stretch":
        return image.resize(size, Image.Resampling.BILINEAR)
    return ImageOps.fit(image, size, Image.Resampling.BILINEAR)
