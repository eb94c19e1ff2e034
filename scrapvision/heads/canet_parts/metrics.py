"""Copper-content metrics of the ``canet`` head, shared by its ``evaluate`` and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import r2_score


def content_metrics(true_c: np.ndarray, pred_c: np.ndarray, true_a: Sequence[np.ndarray],
                    pred_a: Sequence[np.ndarray] | None, loss_sum: float = 0.0) -> dict[str, float]:
    """Content errors in percentage points (pp) of mass fraction, R^2, and per-photo copper-area errors.
    ``true_a`` / ``pred_a`` hold each sample's per-photo areas (a 2-D array, or ragged when photo counts differ).
    ``trivial_mae_pp`` scores the "copper area fraction of the masks = content" estimate on the same photos."""
    err = 100 * (pred_c - true_c)
    metrics = {
        "loss": loss_sum / max(1, len(true_c)),
        "content_mae_pp": float(np.abs(err).mean()),
        "content_rmse_pp": float(np.sqrt((err**2).mean())),
        "content_r2": float(r2_score(true_c, pred_c)) if len(true_c) > 1 else float("nan"),
        "content_max_err_pp": float(np.abs(err).max()),
        "within_1pp": float((np.abs(err) <= 1).mean()),
        "trivial_mae_pp": float(100 * np.abs(np.array([a.mean() for a in true_a]) - true_c).mean()),
    }
    if pred_a is not None:
        area_err = 100 * (np.concatenate(list(pred_a)) - np.concatenate(list(true_a)))
        metrics["area_mae_pp"] = float(np.abs(area_err).mean())
        metrics["area_rmse_pp"] = float(np.sqrt((area_err**2).mean()))
    return metrics
