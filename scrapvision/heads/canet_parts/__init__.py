"""Metrics of the ``canet`` head (apart from its Task glue in ``heads/canet.py``)."""
