"""png: grey and palette PNGs of code images, decoded by Pillow (a test dependency only)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from zenodo_hpc.dataset.png import (
    CLASS_COLOURS,
    PALETTE_TABLE,
    PNG_SIGNATURE,
    character_class,
    clip_code_points,
    encode,
    encode_grey,
    encode_palette,
)
from zenodo_hpc.record.raster import rasterize

Image = pytest.importorskip("PIL.Image", reason="Pillow decodes the PNGs in these tests: pip install pillow")

CODE = (
    "def greet(name):\n"
    "\treturn f'héllo, {name}! ÿ Ā → 😀 \\x00'\n"
    "x = [1, 2, 3]  # ß µ × ÷ \u00a0 \u00ad\n"
    "\x00\x07\x1b\x7f\x85 end\n"
).encode()


@pytest.fixture(scope="module")
def code_image() -> np.ndarray:
    """A real 80x80 code image with ASCII, Latin-1, BMP and astral characters and control codes."""
    images = rasterize(CODE)
    assert images.shape == (1, 80, 80)
    return images[0]


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, checking each CRC on the way."""
    assert png.startswith(PNG_SIGNATURE)
    out, pos = [], len(PNG_SIGNATURE)
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + data), f"bad CRC in {kind!r}"
        out.append((kind, data))
        pos += 12 + length
    assert pos == len(png)
    return out


def test_grey_png_holds_the_clipped_code_points(code_image: np.ndarray) -> None:
    png = encode_grey(code_image)
    image = decode(png)
    assert image.mode == "L"
    assert image.size == (80, 80)
    pixels = np.asarray(image)
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, np.minimum(code_image, 255))
    assert pixels[0, 0] == ord("d") and pixels[0, 79] == 32  # the pad
    assert 255 in pixels and 0 in pixels  # non-Latin-1 clipped to 255; NUL kept


def test_palette_png_indices_are_the_clipped_code_points(code_image: np.ndarray) -> None:
    png = encode_palette(code_image)
    image = decode(png)
    assert image.mode == "P"
    assert image.size == (80, 80)
    np.testing.assert_array_equal(np.asarray(image), np.minimum(code_image, 255))
    palette = image.getpalette()
    assert bytes(palette[:768]) == PALETTE_TABLE
    colours = image.convert("RGB")
    assert colours.getpixel((0, 0)) == CLASS_COLOURS["letter"]  # "d"
    assert colours.getpixel((79, 0)) == CLASS_COLOURS["space"]  # the pad
    assert colours.getpixel((3, 1)) == CLASS_COLOURS["space"]  # the tab became spaces


def test_palette_classes() -> None:
    expected = {
        0: "control", 10: "control", 31: "control", 127: "control", 133: "control", 159: "control",
        32: "space", ord("a"): "letter", ord("Z"): "letter", ord("7"): "digit", ord("{"): "punctuation",
        ord("_"): "punctuation", ord("~"): "punctuation", 160: "latin1_space", 173: "latin1_space",
        ord("é"): "latin1_letter", ord("ß"): "latin1_letter", ord("µ"): "latin1_letter",
        ord("×"): "latin1_symbol", ord("÷"): "latin1_symbol", ord("©"): "latin1_symbol", 255: "beyond_latin1",
    }
    for index, name in expected.items():
        assert character_class(index) == name, index
    assert len(PALETTE_TABLE) == 768
    assert {character_class(i) for i in range(256)} == set(CLASS_COLOURS)
    with pytest.raises(ValueError):
        character_class(256)


def test_files_are_deterministic_and_minimal(code_image: np.ndarray) -> None:
    for mode in ("grey", "palette"):
        first, second = encode(code_image, mode), encode(code_image.copy(), mode)
        assert first == second
        kinds = [kind for kind, _ in chunks(first)]
        assert kinds == ([b"IHDR", b"PLTE", b"IDAT", b"IEND"] if mode == "palette" else [b"IHDR", b"IDAT", b"IEND"])
        header = dict(chunks(first))[b"IHDR"]
        assert struct.unpack(">IIBBBBB", header) == (80, 80, 8, 3 if mode == "palette" else 0, 0, 0, 0)
        raw = zlib.decompress(dict(chunks(first))[b"IDAT"])
        rows = np.frombuffer(raw, dtype=np.uint8).reshape(80, 81)
        assert not rows[:, 0].any()  # filter type 0 on every row


def test_narrow_and_signed_inputs_give_the_same_png(code_image: np.ndarray) -> None:
    ascii_part = np.minimum(code_image, 126)
    reference = encode_grey(ascii_part)
    for dtype in (np.uint8, np.uint16, np.int32, np.int64):
        assert encode_grey(ascii_part.astype(dtype)) == reference
    assert encode_palette(code_image.astype(np.int64)) == encode_palette(code_image)


def test_non_square_images() -> None:
    image = np.arange(3 * 5, dtype=np.uint32).reshape(3, 5) * 40
    decoded = decode(encode_grey(image))
    assert decoded.size == (5, 3)
    np.testing.assert_array_equal(np.asarray(decoded), clip_code_points(image))


@pytest.mark.parametrize("bad", [
    np.zeros((80,), np.uint32), np.zeros((2, 80, 80), np.uint32), np.zeros((0, 80), np.uint32),
    np.zeros((80, 80), np.float32), np.full((2, 2), -1, np.int64),
])
def test_bad_arrays_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_grey(bad)
    with pytest.raises(ValueError):
        encode_palette(bad)


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown PNG mode 'gray'"):
        encode(np.zeros((80, 80), np.uint32), "gray")


code_points = arrays(
    np.uint32,
    st.tuples(st.integers(1, 90), st.integers(1, 90)),
    elements=st.one_of(st.integers(0, 300), st.integers(0, 0x10FFFF), st.integers(0, 2**32 - 1)),
)


@settings(max_examples=60, deadline=None)
@given(code_points)
def test_any_uint32_array_round_trips(image: np.ndarray) -> None:
    clipped = np.minimum(image, 255)
    grey, palette = encode_grey(image), encode_palette(image)
    assert grey == encode_grey(image) and palette == encode_palette(image)
    decoded_grey, decoded_palette = decode(grey), decode(palette)
    assert (decoded_grey.mode, decoded_palette.mode) == ("L", "P")
    assert decoded_grey.size == decoded_palette.size == (image.shape[1], image.shape[0])
    np.testing.assert_array_equal(np.asarray(decoded_grey), clipped)
    np.testing.assert_array_equal(np.asarray(decoded_palette), clipped)
    chunks(grey), chunks(palette)
