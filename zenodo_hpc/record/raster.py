"""Turn a file's bytes into 80x80 "code images": one pixel per character, value = its code point.

The rules are in docs/formats.md ("Code images"). The layout is one boolean-mask assignment into
an array already filled with pad: row ``r`` of the mask selects the first ``min(len + 1, width)`` cells of
line ``r``, i.e. the line's characters followed by its newline (rewritten as pad, so it lands where pad
belongs anyway). The source is then the code points themselves, in order, with no copy to drop newlines
unless some line is ``width`` or more characters long. No per-line or per-character Python loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

BOM = b"\xef\xbb\xbf"
IMAGE_TYPES = (np.uint8, np.uint16, np.uint32)  # narrowest first: a file's images take the first that holds them


def code_points(data: bytes, *, tab_width: int = 4) -> np.ndarray:
    """The text's code points (BOM dropped, newlines normalised, tabs expanded), as a 1-D array.

    ASCII input (most source code) stays one byte per character (``uint8``); anything else is decoded
    as UTF-8 with U+FFFD for invalid sequences and returned as ``uint32``.
    """
    return _decoded(normalized_text(data, tab_width))


def normalized_text(data: bytes, tab_width: int) -> bytes:
    """The bytes with the BOM dropped, ``\\r\\n`` and ``\\r`` made ``\\n``, tabs expanded to ``tab_width`` spaces.

    ``\\r``, ``\\n`` and ``\\t`` are ASCII and never part of a multi-byte UTF-8 sequence, so they are rewritten
    on the raw bytes, before any decoding.
    """
    if data.startswith(BOM):
        data = data[len(BOM):]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if b"\t" in data:
        data = data.replace(b"\t", b" " * tab_width)
    return data


def _decoded(text: bytes) -> np.ndarray:
    if text.isascii():
        return np.frombuffer(text, dtype=np.uint8)
    return np.frombuffer(text.decode("utf-8", errors="replace").encode("utf-32-le"), dtype=np.uint32)


def rasterize(
    data: bytes, *, width: int = 80, height: int = 80, pad: int = 32, tab_width: int = 4
) -> np.ndarray:
    """Rasterize ``data`` into an array of shape ``(N, height, width)``, dtype ``uint32``.

    N = ceil(lines / height); empty input gives N = 0. The rules are in docs/formats.md ("Code images").
    """
    return _rasterize(data, width, height, pad, tab_width, narrow=False)


def rasterize_narrow(
    data: bytes, *, width: int = 80, height: int = 80, pad: int = 32, tab_width: int = 4
) -> np.ndarray:
    """The same images as :func:`rasterize`, in the narrowest of ``uint8`` (ASCII and Latin-1 text, most code),
    ``uint16`` (the Basic Multilingual Plane) and ``uint32`` that holds the text's code points and the pad.

    What the record writer stores anyway: building the images a quarter (or half) of the size saves the time
    and memory of a uint32 array that would only be narrowed again.
    """
    return _rasterize(data, width, height, pad, tab_width, narrow=True)


def rasterize_many(
    datas: Sequence[bytes], *, width: int = 80, height: int = 80, pad: int = 32, tab_width: int = 4
) -> list[np.ndarray]:
    """The images of several files, each equal to :func:`rasterize_narrow`'s, the ASCII ones laid out at once.

    Most files of a record are small, and a dozen array operations' fixed cost (~50 us per file) is then
    most of a file's time. Joined, each ASCII text is ended with empty lines up to a whole number of images
    (empty lines are rows of pad, as an image's last rows are), so that the next file starts on a new image,
    and the one layout is cut back into each file's images (views into it).
    """
    _check_geometry(width, height)
    images: list[np.ndarray | None] = [None] * len(datas)
    parts: list[bytes] = []
    joined_files: list[tuple[int, int]] = []  # (index in datas, its number of images)
    for i, data in enumerate(datas):
        text = normalized_text(bytes(data), tab_width)
        if pad > 0xFF or not text.isascii():
            cp = _decoded(text)
            images[i] = _layout(cp, _narrowest(cp, pad), width, height, pad)
            continue
        unended = bool(text) and not text.endswith(b"\n")  # its last line's newline is added here
        lines = text.count(b"\n") + unended
        count = -(-lines // height)
        parts += [text, b"\n" * (count * height - lines + unended)]
        joined_files.append((i, count))
    if joined_files:
        laid_out = _layout(np.frombuffer(b"".join(parts), dtype=np.uint8), np.uint8, width, height, pad)
        start = 0
        for i, count in joined_files:
            images[i] = laid_out[start:start + count]
            start += count
    return images  # type: ignore[return-value]  # every slot is filled above


def _check_geometry(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError("width and height must be at least 1")


def _rasterize(data: bytes, width: int, height: int, pad: int, tab_width: int, *, narrow: bool) -> np.ndarray:
    _check_geometry(width, height)
    cp = code_points(bytes(data), tab_width=tab_width)
    return _layout(cp, _narrowest(cp, pad) if narrow else np.uint32, width, height, pad)


def _layout(cp: np.ndarray, dtype: type[np.unsignedinteger], width: int, height: int, pad: int) -> np.ndarray:
    """Lay code points out line by line into ``(N, height, width)`` images of ``dtype`` (docs/formats.md)."""
    n = cp.size
    if n == 0:
        return np.empty((0, height, width), dtype=dtype)

    newlines = np.flatnonzero(cp == 10)
    if cp[-1] == 10:
        ends = newlines
        source = cp.astype(dtype)
    else:  # the last line has no newline: give it a virtual one at position n
        ends = np.append(newlines, n)
        source = np.empty(n + 1, dtype=dtype)
        source[:n] = cp
    source[ends] = pad
    lines = ends.size
    starts = np.empty(lines, dtype=np.intp)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts

    cells = lengths + 1  # the line's characters and its (pad) newline
    full = np.flatnonzero(lengths >= width)
    if full.size:
        source = _drop_past_width(source, starts[full], lengths[full], width)
        np.minimum(cells, width, out=cells)

    images = -(-lines // height)
    out = np.full((images * height, width), pad, dtype=dtype)
    out[:lines][_first_cells_masks(width)[cells]] = source
    return out.reshape(images, height, width)


def narrowest_uint(max_value: int) -> type[np.unsignedinteger]:
    """The narrowest of uint8, uint16 and uint32 holding every value up to ``max_value``."""
    for dtype in IMAGE_TYPES[:-1]:
        if max_value <= np.iinfo(dtype).max:
            return dtype
    return IMAGE_TYPES[-1]


def _narrowest(cp: np.ndarray, pad: int) -> type[np.unsignedinteger]:
    """The narrowest type holding every code point and the pad (ASCII comes as bytes: no max taken)."""
    return narrowest_uint(max(pad, 0x7F if cp.dtype == np.uint8 or cp.size == 0 else int(cp.max())))


@lru_cache(maxsize=8)
def _first_cells_masks(width: int) -> np.ndarray:
    """Row ``k`` selects the first ``k`` of ``width`` cells: ``masks[cells]`` is the whole 2-D mask."""
    masks = np.tri(width + 1, width, -1, dtype=bool)
    masks.flags.writeable = False  # shared by every call
    return masks


def _drop_past_width(source: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """Remove, from lines of ``width`` or more characters, everything from column ``width`` on.

    That is the characters that are cut and the line's newline, which has no cell left to land in.
    """
    dropped = lengths - width + 1
    first = starts + width
    before = np.cumsum(dropped) - dropped
    positions = np.arange(int(before[-1] + dropped[-1]), dtype=np.intp) + np.repeat(first - before, dropped)
    keep = np.ones(source.size, dtype=bool)
    keep[positions] = False
    return source[keep]
