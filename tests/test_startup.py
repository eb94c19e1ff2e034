"""`scrapvision --help` answers without importing torch or timm (seconds of start-up on a plant PC)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], []])
def test_help_and_usage_errors_do_not_import_torch(argv):
    code = ("import sys\nfrom scrapvision.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'timm', 'torchvision', 'cv2', 'albumentations') if m in sys.modules]\n"
            "print('heavy:', ','.join(heavy))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "heavy: \n" in done.stdout or done.stdout.rstrip().endswith("heavy:"), done.stdout[-300:] + done.stderr[-300:]


def test_lazy_names_still_import_from_the_package():
    import scrapvision

    assert scrapvision.BACKBONES.names() and callable(scrapvision.create_backbone)
    assert scrapvision.Trainer.__name__ == "Trainer" and scrapvision.Task.__name__ == "Task"
    with pytest.raises(AttributeError):
        scrapvision.no_such_name  # noqa: B018
