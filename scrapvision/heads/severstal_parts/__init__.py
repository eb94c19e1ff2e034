"""Post-processing and its search for the ``severstal`` head (kept apart so ``heads/severstal.py`` stays small)."""
