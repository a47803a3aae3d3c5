"""The rasterizer against a plain, obviously-correct reference (docs/formats.md, "Code images")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zenodo_hpc.record.raster import code_points, rasterize


def reference(data: bytes, width: int = 80, height: int = 80, pad: int = 32, tab_width: int = 4) -> np.ndarray:
    """The rasterization rules (docs/formats.md, "Code images"), rule by rule, one character at a time."""
    if data.startswith(b"\xef\xbb\xbf"):  # 1. BOM
        data = data[3:]
    text = data.decode("utf-8", errors="replace")  # 2. invalid -> U+FFFD
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # 3. newlines
    text = text.replace("\t", " " * tab_width)  # 4. tabs
    if text == "":  # 5. empty input: no image
        return np.zeros((0, height, width), dtype=np.uint32)
    lines = text.split("\n")
    if text.endswith("\n"):  # a final newline ends the last line, it does not start one
        lines.pop()
    rows = []
    for line in lines:  # 6. cut to width, pad on the right
        row = [ord(ch) for ch in line[:width]]
        rows.append(row + [pad] * (width - len(row)))
    while len(rows) % height:  # 7. pad the last image with rows of pad
        rows.append([pad] * width)
    return np.array(rows, dtype=np.uint32).reshape(-1, height, width)


PIECES = st.sampled_from([
    "a", "Z", " ", "x = 1", "\t", "\r", "\n", "\r\n", "\n\r", "é", "中", "😀", "\x00", "\x0c", "\ufeff",
    "\u2028", "\U0010ffff", "#" * 85, "ab" * 50,
])
TEXT = st.lists(PIECES, max_size=120).map("".join)
INVALID = st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80\x80"])


@st.composite
def raw_bytes(draw: st.DrawFn) -> bytes:
    """Text as UTF-8, with a BOM, invalid sequences and stray bytes mixed in."""
    parts = [p.encode("utf-8") for p in draw(st.lists(TEXT, max_size=4))]
    for _ in range(draw(st.integers(0, 3))):
        parts.insert(draw(st.integers(0, len(parts))), draw(INVALID))
    data = b"".join(parts)
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


@settings(max_examples=400, deadline=None)
@given(data=raw_bytes(), width=st.integers(1, 12), height=st.integers(1, 6), tab=st.integers(0, 5),
       pad=st.sampled_from([32, 0, 46, 0x2591, 0x10FFFF]))
def test_rasterize_matches_reference(data: bytes, width: int, height: int, tab: int, pad: int) -> None:
    got = rasterize(data, width=width, height=height, pad=pad, tab_width=tab)
    want = reference(data, width=width, height=height, pad=pad, tab_width=tab)
    assert got.dtype == np.uint32
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_rasterize_arbitrary_bytes_default_geometry(data: bytes) -> None:
    np.testing.assert_array_equal(rasterize(data), reference(data))


def test_empty_input_gives_no_image() -> None:
    assert rasterize(b"").shape == (0, 80, 80)
    assert rasterize(b"\xef\xbb\xbf").shape == (0, 80, 80)


def test_single_newline_is_one_empty_line() -> None:
    out = rasterize(b"\n")
    assert out.shape == (1, 80, 80)
    assert (out == 32).all()


def test_last_line_without_newline_is_kept() -> None:
    # The 2018 data dropped the last line of every file.
    out = rasterize(b"first\nlast")
    assert out[0, 1, :4].tolist() == [ord(c) for c in "last"]
    assert (out[0, 2:] == 32).all()


def test_last_segment_is_padded_to_full_height() -> None:
    out = rasterize(b"x\n" * 81)
    assert out.shape == (2, 80, 80)
    assert out[1, 0, 0] == ord("x")
    assert (out[1, 1:] == 32).all()


@pytest.mark.parametrize("final_newline", [True, False])
def test_exactly_80k_lines(final_newline: bool) -> None:
    lines = [f"line {i}" for i in range(80_000)]
    data = ("\n".join(lines) + ("\n" if final_newline else "")).encode()
    out = rasterize(data)
    assert out.shape == (1000, 80, 80)
    np.testing.assert_array_equal(out, reference(data))
    last = "".join(map(chr, out[-1, -1])).rstrip()
    assert last == "line 79999"


def test_crlf_lone_cr_and_tabs() -> None:
    out = rasterize(b"a\r\nb\rc\td")
    rows = ["".join(map(chr, row)).rstrip() for row in out[0, :3]]
    assert rows == ["a", "b", "c    d"]


@pytest.mark.parametrize("length", [80, 200], ids=["exactly-width", "longer-is-cut"])
def test_a_line_of_width_characters_or_more_fills_one_row_and_the_next_line_starts_a_new_row(length: int) -> None:
    out = rasterize(b"w" * length + b"\nv\n", width=80)
    assert (out[0, 0] == ord("w")).all()
    assert out[0, 1, 0] == ord("v") and (out[0, 1, 1:] == 32).all()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a\xffb", [ord("a"), 0xFFFD, ord("b")]),  # invalid UTF-8 becomes the replacement character
        ("😀\x0c\x00".encode(), [0x1F600, 0x0C, 0x00]),  # non-BMP and control characters keep theirs
        (b"\xef\xbb\xbfa\xef\xbb\xbfb", [ord("a"), 0xFEFF, ord("b")]),  # the leading BOM goes, an inner one stays
    ],
    ids=["invalid-utf8-becomes-replacement-character", "non-bmp-and-control-characters", "inner-bom-is-kept"],
)
def test_each_character_is_its_code_point(data: bytes, expected: list[int]) -> None:
    assert rasterize(data)[0, 0, :3].tolist() == expected


def test_ascii_fast_path_and_unicode_path_agree() -> None:
    ascii_text = b"def f():\n\treturn 1\n"
    assert code_points(ascii_text).dtype == np.uint8
    assert code_points("é\n".encode()).dtype == np.uint32
    np.testing.assert_array_equal(rasterize(ascii_text), reference(ascii_text))


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError):
        rasterize(b"x", width=0)


def test_narrow_images_are_the_same_images() -> None:
    from zenodo_hpc.record.raster import rasterize_narrow

    for data, dtype in ((b"x = 1\n" * 200, np.uint8), (b"no newline at the end", np.uint8),
                        (b"\t tab\r\nCRLF\n" + b"y" * 200, np.uint8), ("caf\u00e9\n".encode(), np.uint8),
                        ("\uffff\n".encode(), np.uint16),
                        ("\u00e9\U0001f600\n".encode(), np.uint32), ("x" * 90 + "\u20ac", np.uint16)):
        data = data.encode() if isinstance(data, str) else data
        wide, narrow = rasterize(data), rasterize_narrow(data)
        np.testing.assert_array_equal(wide, narrow)
        assert narrow.dtype == dtype, data
    assert rasterize_narrow(b"x", pad=300).dtype == np.uint16  # a pad above 255 needs a wider type
    assert rasterize_narrow(b"x", pad=0x10000).dtype == np.uint32
    assert rasterize_narrow("\u00e9".encode(), pad=0x10000).dtype == np.uint32


def test_rasterize_many_gives_each_file_its_own_images() -> None:
    """Joined into one layout, every file still starts on a new image and ends as it would alone."""
    from zenodo_hpc.record.raster import rasterize_many, rasterize_narrow

    texts = [b"", b"\n", b"one line, no newline", b"x\n" * 80, b"x\n" * 81, b"y" * 200 + b"\nshort\n",
             b"\xef\xbb\xbfBOM\r\nCRLF\rCR\n\tTab\n", "caf\u00e9\n".encode(), "\U0001f600 wide\n".encode(),
             b"\n" * 160, b"last\n\n", Path(__file__).read_bytes()]
    for geometry in ({}, {"width": 7, "height": 3}, {"pad": 0}, {"pad": 300}, {"tab_width": 8}):
        many = rasterize_many(texts, **geometry)
        assert len(many) == len(texts)
        for text, images in zip(texts, many, strict=True):
            alone = rasterize_narrow(text, **geometry)
            assert images.dtype == alone.dtype and images.shape == alone.shape, (text[:20], geometry)
            np.testing.assert_array_equal(images, alone)
    assert rasterize_many([]) == []
    with pytest.raises(ValueError, match="at least 1"):
        rasterize_many([b"x"], height=0)


@settings(max_examples=60)
@given(texts=st.lists(raw_bytes(), max_size=6), width=st.integers(1, 12), height=st.integers(1, 6),
       pad=st.sampled_from([32, 0, 0x2591]))
def test_rasterize_many_matches_the_reference_file_by_file(texts: list[bytes], width: int, height: int,
                                                          pad: int) -> None:
    from zenodo_hpc.record.raster import rasterize_many

    for text, images in zip(texts, rasterize_many(texts, width=width, height=height, pad=pad), strict=True):
        np.testing.assert_array_equal(images, reference(text, width=width, height=height, pad=pad))
