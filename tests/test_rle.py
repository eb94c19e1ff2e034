"""Kaggle RLE codecs: hand-computed strings, the reference oracle, every real string, property tests."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scrapvision.data.rle import (
    rle_decode,
    rle_decode_reference,
    rle_encode,
    rle_encode_reference,
    rle_runs,
)
from scrapvision.errors import DataError
from tests.conftest import real_dataset

H, W = 256, 1600


def _mask(shape, pixels):
    mask = np.zeros(shape, dtype=bool)
    for row, col in pixels:
        mask[row, col] = True
    return mask


# Pixel (row, col) of an HxW mask is number col * H + row + 1 (column-major, 1-indexed).
HAND_CASES = [
    (_mask((3, 4), []), ""),
    (np.ones((3, 4), dtype=bool), "1 12"),
    (_mask((3, 4), [(0, 0)]), "1 1"),
    (_mask((3, 4), [(2, 0)]), "3 1"),
    (_mask((3, 4), [(0, 1)]), "4 1"),
    (_mask((3, 4), [(2, 3)]), "12 1"),
    (_mask((3, 4), [(0, 1), (1, 1), (2, 1)]), "4 3"),
    (_mask((3, 4), [(2, 0), (0, 1)]), "3 2"),  # a run wraps from the bottom of one column to the next
    (_mask((3, 4), [(0, 0), (2, 0), (1, 2), (2, 3)]), "1 1 3 1 8 1 12 1"),
    (_mask((H, W), [(0, 1), (H - 1, W - 1)]), f"{H + 1} 1 {H * W} 1"),
]


@pytest.mark.parametrize("mask,expected", HAND_CASES)
def test_hand_computed_strings(mask, expected):
    assert rle_encode(mask) == expected
    assert rle_encode_reference(mask) == expected
    np.testing.assert_array_equal(rle_decode(expected, mask.shape), mask)
    np.testing.assert_array_equal(rle_decode_reference(expected, mask.shape), mask)


def test_decode_returns_contiguous_bool_and_accepts_uint8_masks():
    mask = rle_decode("2 3 9 2", (4, 5))
    assert mask.dtype == bool and mask.shape == (4, 5) and mask.flags.c_contiguous
    assert rle_encode(mask.astype(np.uint8) * 255) == "2 3 9 2"


def test_touching_runs_decode_as_one_run():
    np.testing.assert_array_equal(rle_decode("1 2 3 2", (3, 4)), rle_decode("1 4", (3, 4)))


def test_encode_refuses_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        rle_encode(np.zeros((2, 3, 4), dtype=bool))


def test_vectorised_matches_reference_on_many_full_size_masks():
    rng = np.random.default_rng(0)
    for density in (0.0, 0.001, 0.05, 0.5, 0.97, 1.0):
        mask = rng.random((H, W)) < density
        text = rle_encode(mask)
        assert text == rle_encode_reference(mask)
        np.testing.assert_array_equal(rle_decode(text, (H, W)), mask)


MALFORMED = [
    ("1 2 3", "odd number"),
    ("1 2 x 4", "non-integer"),
    ("1.5 2", "non-integer"),
    ("1 -2", "non-integer"),
    ("1e3 2", "non-integer"),
    ("1\x1f3", "non-integer"),  # str.split() whitespace that is not ASCII whitespace (crashed the parser)
    ("1\xa03", "non-integer"),  # no-break space, as pasted from a spreadsheet
    ("1 3\u2003", "non-integer"),
    ("0 3", "1-indexed"),
    ("5 0", "length 0"),
    ("10 2 3 2", "not sorted"),
    ("1 5 3 2", "overlaps"),
    (f"{H * W} 2", "past the image"),
    (f"{H * W + 1} 1", "past the image"),
    ("1" * 30 + " 1", "past the image"),
    ("9" * 19 + " 1", "past the image"),  # saturates NumPy's parser at the int64 maximum
    ("+3 4", "non-integer"),  # NumPy's parser alone would accept a sign
]


@pytest.mark.parametrize("text", ["", " ", "\t\n ", "1\v2\f5 3\r\n20 1", "  7 2  "])
def test_blank_and_any_ascii_whitespace_decode_as_the_reference(text):
    np.testing.assert_array_equal(rle_decode(text, (H, W)), rle_decode_reference(text, (H, W)))


@pytest.mark.parametrize("text,problem", MALFORMED)
def test_malformed_strings_raise_one_line_data_error_naming_the_image(text, problem):
    with pytest.raises(DataError) as info:
        rle_decode(text, (H, W), image_id="abc123.jpg")
    message = str(info.value)
    assert "abc123.jpg" in message and problem in message and "\n" not in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(DataError, match="abc123.jpg"):
        rle_decode_reference(text, (H, W), image_id="abc123.jpg")


def test_real_strings_round_trip_byte_for_byte():
    path = real_dataset("severstal_sample") / "train.csv"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1390
    for row in rows:
        mask = rle_decode(row["EncodedPixels"], (H, W), row["ImageId"])
        assert mask.any()
        assert rle_encode(mask) == row["EncodedPixels"], row["ImageId"]
    for row in rows[:: len(rows) // 10]:  # the loop oracle agrees on a spread of real masks
        np.testing.assert_array_equal(rle_decode_reference(row["EncodedPixels"], (H, W)),
                                      rle_decode(row["EncodedPixels"], (H, W)))


@st.composite
def masks(draw):
    shape = draw(st.tuples(st.integers(1, 24), st.integers(1, 24)))
    kind = draw(st.sampled_from(["random", "empty", "full", "edges"]))
    if kind == "empty":
        return np.zeros(shape, dtype=bool)
    if kind == "full":
        return np.ones(shape, dtype=bool)
    mask = draw(hnp.arrays(bool, shape))
    if kind == "edges":  # first and last pixel set: runs touching both ends of the flat order
        mask[0, 0] = mask[-1, -1] = True
    return mask


@settings(max_examples=200, deadline=None)
@given(masks())
def test_property_encode_decode_round_trip(mask):
    text = rle_encode(mask)
    assert text == rle_encode_reference(mask)
    np.testing.assert_array_equal(rle_decode(text, mask.shape), mask)


@st.composite
def canonical_strings(draw):
    """Valid Kaggle strings: sorted, non-touching runs inside an HxW image."""
    shape = draw(st.tuples(st.integers(1, 30), st.integers(1, 30)))
    n_pixels = shape[0] * shape[1]
    cuts = sorted(draw(st.sets(st.integers(0, n_pixels), max_size=20)))
    runs = [(a, b) for a, b in zip(cuts[0::2], cuts[1::2])]
    runs = [(a, b) for i, (a, b) in enumerate(runs) if i == 0 or a > runs[i - 1][1]]
    return " ".join(f"{a + 1} {b - a}" for a, b in runs), shape


@settings(max_examples=200, deadline=None)
@given(canonical_strings())
def test_property_decode_encode_returns_the_string(case):
    text, shape = case
    assert rle_encode(rle_decode(text, shape)) == text


TOKENS = st.one_of(st.integers(-5, 700).map(str), st.sampled_from(["", "x", "1.0", "+3", "٣", "\t", "\n", "9" * 25]))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(TOKENS, max_size=12).map(" ".join)))
def test_fuzz_decoder_only_raises_data_error(text):
    shape = (20, 30)
    try:
        mask = rle_decode(text, shape, image_id="fuzz.jpg")
    except DataError as exc:
        assert "fuzz.jpg" in str(exc) and "\n" not in str(exc)
        return
    assert mask.shape == shape and mask.dtype == bool
    starts, lengths = rle_runs(text, shape)
    assert int(mask.sum()) == int(lengths.sum())
