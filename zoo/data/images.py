"""Decode any image file researchers have into one form: an HxWx3 uint8 RGB array.

Grayscale, palette, 16-bit, CMYK and transparent images are converted; EXIF orientation is
applied (phone photos are often stored sideways); truncated files and non-images raise
`ImageDecodeError` naming the file instead of PIL's context-free messages.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageDecodeError, MissingFileError, PathLike

# PIL formats that name a file type but cannot give pixels here: stubs that need an external
# handler (BUFR, GRIB, HDF5, MPEG), vector formats (EPS needs Ghostscript, WMF/EMF Windows),
# and IPTC metadata.
_NOT_PIXELS = frozenset({"BUFR", "GRIB", "HDF5", "MPEG", "EPS", "WMF", "IPTC"})


def _readable_extensions() -> frozenset:
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN and fmt not in _NOT_PIXELS)


# Every image file suffix FaceScope reads (folders, pair lists, the app): whatever PIL opens,
# PGM/PPM, 16-bit PNG and TIFF included. The one list; readers import it from here.
IMAGE_EXTENSIONS = _readable_extensions()

# Transparent pixels become white: face photos exported as PNG with an alpha cut-out look
# like studio shots, and black would add a hard dark edge a detector could latch on to.
_BACKGROUND = (255, 255, 255)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: rescale to 8 bits rather than clip everything to white.
        values = np.asarray(image, dtype=np.float64)
        top = values.max() if values.size and values.max() > 0 else 1.0
        image = Image.fromarray(np.round(values * (255.0 / top)).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB")


def decode_image(data: Union[bytes, Path, str], source: Optional[PathLike] = None) -> np.ndarray:
    """Decode image bytes (or a path) to HxWx3 uint8 RGB; `source` names it in errors."""
    source = source if source is not None else (data if not isinstance(data, bytes) else "<bytes>")
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            # A researcher's own 100 MP scan is data, not an attack: decode it without PIL's
            # warning. Past PIL's hard limit (twice the warning's) DecompressionBombError still
            # stops it and is reported below, naming the file.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
        with image:
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
    except FileNotFoundError:
        raise MissingFileError("image file not found", source) from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image PIL can read", source) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageDecodeError(f"unreadable image ({error})", source) from None
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageDecodeError(f"image has no pixels (shape {array.shape})", source)
    return np.ascontiguousarray(array)


def load_image(path: PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (see `decode_image`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError("image file not found", path)
    return decode_image(path, source=path)


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes, the encoding InsightFace RecordIO files use for their crops."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
