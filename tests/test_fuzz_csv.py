"""Hypothesis fuzz of the CSV/TXT readers a user points at: whatever the bytes, a reader returns a result or
raises one ``DataError`` line that names the file; never another exception, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapvision.data.classification import read_class_csv
from scrapvision.data.inference import input_files
from scrapvision.data.severstal import read_coverage, read_train_csv
from scrapvision.errors import DataError

HEADERS = ["ImageId", "ClassId", "EncodedPixels", "ImageId_ClassId", "image", "class", "Image", "label"]
CELLS = st.one_of(
    st.sampled_from(HEADERS),
    st.sampled_from(["", "nan", "NaN", "None", "1", "4", "5", "0", "-1", "1 3", "1 3 10 2", "3 1 1 2", "x",
                     "a.jpg", "a.jpg_1", "a.jpg_9", "../a.jpg", "/etc/passwd", '"q,uoted"', "1e3", "٣"]),
    st.integers(-3, 400000).map(str),
    st.text(max_size=12),
)
ROWS = st.lists(st.lists(CELLS, min_size=1, max_size=4).map(",".join), max_size=6)
#: structured rows most of the time, raw text (odd bytes, unbalanced quotes) the rest
FILES = st.one_of(ROWS.map("\n".join), st.text(max_size=80))

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(reader, name: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            reader(path)
        except DataError as exc:
            message = str(exc)
            assert name in message and "\n" not in message, message


@SETTINGS
@given(FILES)
def test_fuzz_severstal_train_csv(text):
    check(read_train_csv, "train.csv", text)


@SETTINGS
@given(FILES)
def test_fuzz_severstal_coverage_list(text):
    check(read_coverage, "images_covered.csv", text)


@SETTINGS
@given(FILES)
def test_fuzz_scrap_labels_csv(text):
    check(lambda path: read_class_csv(path, path.parent), "labels.csv", text)


@SETTINGS
@given(FILES, st.sampled_from(["list.csv", "list.txt"]))
def test_fuzz_prediction_lists(text, name):
    check(input_files, name, text)


def test_a_header_cell_with_a_line_break_still_gives_a_one_line_error() -> None:
    """Found by the fuzzer above (a quoted header holding a newline): the error named the cell verbatim."""
    check(read_train_csv, "train.csv", '"0\n0"')
