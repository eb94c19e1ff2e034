"""Fit a linear probe as a logistic regression, with its L2 strength chosen by cross-validation.

A probe's linear layer on frozen features is a convex problem. Gradient epochs with a fixed learning rate and
no regulariser (the scrap_cls probe recipe before 2026-12-03) drift towards the unregularised fit, and which
regularisation suits a few hundred photos depends on the features and the data. The usual protocol of linear-probe
papers (CLIP's, for one) is an L-BFGS logistic regression whose inverse regularisation ``C`` is swept on held-out
data. Here the held-out data are stratified folds of the training photos themselves, so the recipe needs no
validation split and never looks at the photos it is scored on. scikit-learn does the fitting.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

#: the inverse L2 strengths tried (scikit-learn's C: the loss summed over photos against 1/2 ||W||^2)
DEFAULT_CS: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: folds of the training photos that choose C (scikit-learn's default count)
DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class LogisticProbe:
    """A fitted probe: ``logits = ((x - mean) / sqrt(var + 1e-5)) @ weight.T + bias`` over all ``num_classes``
    (1e-5: the eps of the model's BatchNorm1d, which holds ``mean`` and ``var``)."""

    mean: np.ndarray  # [D] feature means of the training photos
    var: np.ndarray  # [D] their variances (population, as a standardiser uses)
    weight: np.ndarray  # [K, D]
    bias: np.ndarray  # [K]; a class without training photos gets a bias far below the others
    c: float  # the C chosen
    cv_accuracy: dict[float, float]  # mean accuracy over the folds, per C tried


def fit_logistic_probe(features: np.ndarray, labels: np.ndarray, num_classes: int, cs: Sequence[float] = DEFAULT_CS,
                       folds: int = DEFAULT_FOLDS, seed: int = 0) -> LogisticProbe:
    """Standardise ``features`` [N, D], choose C among ``cs`` by stratified ``folds``-fold accuracy on them, and
    refit on all of them with that C (the smallest C among equal scores: the stronger regulariser)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"a logistic-regression probe needs photos of at least 2 classes; the training photos hold "
                        f"{len(present)}")
    counts = np.bincount(y, minlength=num_classes)
    n_splits = min(folds, int(counts[present].max()))
    if n_splits < 2:
        raise DataError("a logistic-regression probe chooses its regularisation on folds of the training photos and "
                        "needs at least 2 photos of some class")
    mean, var = x.mean(axis=0), x.var(axis=0)
    z = (x - mean) / np.sqrt(var + 1e-5)  # as the model's BatchNorm1d(affine=False) in eval mode
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores: dict[float, float] = {}
    with warnings.catch_warnings():
        # a grade with fewer photos than folds is legal (it is left out of some folds); say nothing about it
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        for c in cs:
            scores[float(c)] = float(cross_val_score(LogisticRegression(C=c, max_iter=5000), z, y,
                                                     cv=splitter).mean())
    best = max(scores.values())
    chosen = min(c for c, score in scores.items() if score == best)
    fitted = LogisticRegression(C=chosen, max_iter=5000).fit(z, y)
    weight = np.zeros((num_classes, x.shape[1]))
    bias = np.zeros(num_classes)
    classes = fitted.classes_.astype(int)
    weight[classes] = fitted.coef_ if len(classes) > 2 else np.vstack([-fitted.coef_, fitted.coef_]) / 2
    bias[classes] = fitted.intercept_ if len(classes) > 2 else np.array([-fitted.intercept_[0], fitted.intercept_[0]]) / 2
    absent = np.setdiff1d(np.arange(num_classes), classes)
    bias[absent] = bias[classes].min() - 30.0  # never predicted: the training photos never showed it
    return LogisticProbe(mean, var, weight, bias, chosen, scores)
