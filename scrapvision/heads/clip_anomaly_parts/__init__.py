"""Parts of the ``clip_anomaly`` head: pure modules, data sets, metrics and overlays."""
