"""Code images as PNG files, with no image library: numpy, zlib and struct only.

Two encodings of one ``(height, width)`` array of code points (docs/formats.md, "Code images"):

- :func:`encode_grey`: 8-bit greyscale (colour type 0). A pixel is the code point, clipped to 255: the
  convention of the published Kaggle export. ASCII and Latin-1 code keep their exact values; anything
  from U+00FF on is 255.
- :func:`encode_palette`: 8-bit palette (colour type 3). The pixel *index* is the same clipped code point
  (code points below 255 kept, 255 for U+00FF and beyond), so a reader that takes the indices gets exactly
  what the grey PNG holds; the *palette* colours the character classes (:data:`CLASS_COLOURS`), so the same
  file viewed as a picture shows the shape of the code: letters, digits, punctuation, spaces.

The bytes are deterministic: signature, ``IHDR``, ``PLTE`` (palette only), one ``IDAT``, ``IEND``; no
``tIME``, text or gamma chunks; every row with filter type 0 (none); zlib level 6. Encoding the same
array twice gives identical files (with the same zlib library: another zlib build, e.g. zlib-ng, may
compress differently, and the pixels still decode the same).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ZLIB_LEVEL = 6  # zlib's default: level 9 takes 3 times as long for 2% smaller code images
MAX_INDEX = 255  # grey value / palette index of every code point >= 255

GREY = 0  # PNG colour types
PALETTE = 3

# The palette's character classes (which index is in which: character_class) and their RGB colours:
# a white background (the pad is a space), near-black letters, the rest from matplotlib's "tab10" colours.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "control": (0xD6, 0x27, 0x28),  # red: C0 controls 0-31 (but space), DEL 127, C1 controls 128-159
    "space": (0xFF, 0xFF, 0xFF),  # white: space 32 (also the pad of every line and image)
    "letter": (0x1A, 0x1A, 0x1A),  # near black: A-Z, a-z
    "digit": (0x1F, 0x77, 0xB4),  # blue: 0-9
    "punctuation": (0xFF, 0x7F, 0x0E),  # orange: the other printable ASCII characters, 33-126
    "latin1_space": (0xC7, 0xC7, 0xC7),  # light grey: no-break space 160, soft hyphen 173
    "latin1_letter": (0x2C, 0xA0, 0x2C),  # green: Latin-1 letters (192-254 but 215 and 247; 170, 181, 186)
    "latin1_symbol": (0x94, 0x67, 0xBD),  # purple: the other Latin-1 characters 161-191, 215, 247
    "beyond_latin1": (0xE3, 0x77, 0xC2),  # pink: index 255, U+00FF and every code point above it
}


def character_class(index: int) -> str:
    """The class (a key of :data:`CLASS_COLOURS`) of palette index 0..255."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"palette index {index} is not in 0..255")
    if index == MAX_INDEX:
        return "beyond_latin1"
    if index == 32:
        return "space"
    if index < 32 or 127 <= index < 160:
        return "control"
    char = chr(index)
    if index < 127:
        if char.isascii() and char.isalpha():
            return "letter"
        return "digit" if char.isdigit() else "punctuation"
    if index in (160, 173):
        return "latin1_space"
    return "latin1_letter" if char.isalpha() else "latin1_symbol"


def palette_table() -> bytes:
    """The 768 bytes of the ``PLTE`` chunk: one RGB triple per index 0..255."""
    return b"".join(bytes(CLASS_COLOURS[character_class(i)]) for i in range(MAX_INDEX + 1))


PALETTE_TABLE = palette_table()


def clip_code_points(image: np.ndarray) -> np.ndarray:
    """``(height, width)`` ``uint8`` array: each code point, or 255 when it is 255 or more."""
    array = _check_image(image)
    return np.minimum(array, MAX_INDEX).astype(np.uint8)


def encode_grey(image: np.ndarray) -> bytes:
    """8-bit greyscale PNG (colour type 0) of a ``(height, width)`` array of code points, clipped to 255."""
    return _encode(clip_code_points(image), GREY)


def encode_palette(image: np.ndarray) -> bytes:
    """8-bit palette PNG (colour type 3): index = code point (255 for >= 255), colours = character classes."""
    return _encode(clip_code_points(image), PALETTE, PALETTE_TABLE)


def encode(image: np.ndarray, mode: str) -> bytes:
    """:func:`encode_grey` for ``mode="grey"``, :func:`encode_palette` for ``mode="palette"``."""
    if mode == "grey":
        return encode_grey(image)
    if mode == "palette":
        return encode_palette(image)
    raise ValueError(f"unknown PNG mode {mode!r}: use grey or palette")


# --- the file format -------------------------------------------------------------------------------------


def _check_image(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"a code image is a non-empty 2-D array, not one of shape {array.shape}")
    if array.dtype.kind not in "ui":
        raise ValueError(f"a code image holds integer code points, not {array.dtype}")
    if array.dtype.kind == "i" and array.size and int(array.min()) < 0:
        raise ValueError("a code image holds code points, which are never negative")
    if max(array.shape) > 0x7FFFFFFF:
        raise ValueError(f"a PNG is at most 2**31 - 1 pixels wide and high, not {array.shape}")
    return array


def _chunk(kind: bytes, payload: bytes) -> bytes:
    """Length, type, data and the CRC-32 of type and data (PNG specification, section 5.3)."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _encode(pixels: np.ndarray, colour_type: int, palette: bytes | None = None) -> bytes:
    height, width = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)  # 8 bits, deflate, filter 0, no interlace
    rows = np.zeros((height, width + 1), dtype=np.uint8)  # each row starts with its filter type, 0 (none)
    rows[:, 1:] = pixels
    chunks = [_chunk(b"IHDR", header)]
    if palette is not None:
        chunks.append(_chunk(b"PLTE", palette))
    chunks.append(_chunk(b"IDAT", zlib.compress(rows.tobytes(), ZLIB_LEVEL)))
    chunks.append(_chunk(b"IEND", b""))
    return PNG_SIGNATURE + b"".join(chunks)
