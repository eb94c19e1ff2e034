"""errors.first_line, the one way to quote an exception in a one-line error, and the CLI that relies on it."""

import pytest
import timm

from scrapvision import cli
from scrapvision.cli import main
from scrapvision.errors import DataError, first_line


class Custom(Exception):
    pass


@pytest.mark.parametrize("exc, expected", [
    (AssertionError(), "AssertionError"),
    (KeyError(), "KeyError"),
    (ValueError("  \n "), "ValueError"),
    (ValueError("bad row\nTraceback details"), "bad row"),
    (RuntimeError("\n  second line only"), "second line only"),
    (Custom("Caught Custom in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            f'  File "x.py", line 1, in f\n{__name__}.Custom: row 7 is broken'), "row 7 is broken"),
    (DataError("Caught DataError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
               "scrapvision.errors.DataError: mask m.png: not found"), "mask m.png: not found"),
])
def test_first_line(exc, expected):
    assert first_line(exc) == expected


def test_first_line_caps_the_length():
    assert first_line(ValueError("x" * 1000)) == "x" * 300
    assert first_line(ValueError("x" * 1000), limit=None) == "x" * 1000


def test_backbone_assert_without_message_is_a_user_error_not_an_internal_one(monkeypatch, capsys):
    def bare_assert(*args, **kwargs):
        raise AssertionError

    monkeypatch.setattr(timm, "create_model", bare_assert)
    assert main(["train", "--task", "severstal", "--set", "model.backbone=resnet18"]) == 2
    err = capsys.readouterr().err
    assert err == "scrapvision: error: backbone 'resnet18': AssertionError\n"


def test_internal_error_without_message_is_one_line(monkeypatch, capsys):
    def bug(args):
        raise RuntimeError

    monkeypatch.setitem(cli.COMMANDS, "list", bug)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("scrapvision: internal error (RuntimeError); rerun with SCRAPVISION_DEBUG=1")
    assert err.count("\n") == 1


def test_closed_pipe_ends_quietly_not_as_an_internal_error():
    """`scrapvision runs | head`: the reader leaves early; no 'internal error' line, the pipe's exit code."""
    import subprocess
    import sys

    code = ("import sys\nfrom scrapvision import cli\n"
            "def cut(args):\n    raise BrokenPipeError(32, 'Broken pipe')\n"
            "cli.COMMANDS['list'] = cut\nsys.exit(cli.main(['list']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 141, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
