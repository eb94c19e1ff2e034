"""``python -m scrapvision`` (and ``torchrun -m scrapvision train ...``)."""

import sys

from .cli import main

sys.exit(main())
