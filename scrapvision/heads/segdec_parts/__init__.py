"""Data pipeline and metrics of the ``segdec`` head (kept apart so ``heads/segdec.py`` stays one screenful per idea)."""
