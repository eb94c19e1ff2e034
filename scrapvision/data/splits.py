"""Cross-validation folds and validation splits for every layout, from scikit-learn.

A fold never splits a group (one physical part, one coil, a duplicated item and its copy), is stratified
by defect, and the validation split that chooses checkpoints and thresholds is carved out of the training
folds, so the held-out fold is only ever scored.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, DataError

#: ``data.fold`` value that makes every item the test set (eval of a folder the model never saw)
ALL_TEST = -1


def refuse_all_test(fold: int) -> None:
    """Training needs a training part: ``data.fold = -1`` (every item the test set) is for eval only."""
    if fold == ALL_TEST:
        raise ConfigError("config key 'data.fold': -1 makes every image the test set; it is for eval of a folder "
                          "the model was not trained on, not for training")


def group_folds(groups: Sequence[str], labels: Sequence[int | bool], n_folds: int, seed: int) -> list[int]:
    """Fold id (0..n_folds-1) of every sample from ``StratifiedGroupKFold`` (shuffled by ``seed``): a group
    never spans two folds, and each fold gets about 1/n of every label."""
    from sklearn.model_selection import StratifiedGroupKFold

    if n_folds < 2:
        raise DataError(f"folds: n_folds must be >= 2, got {n_folds}")
    if len(set(groups)) < n_folds:
        raise DataError(f"folds: {len(set(groups))} groups cannot fill {n_folds} folds")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_of = [0] * len(groups)
    with warnings.catch_warnings():  # a class with fewer members than folds is expected on small sets
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for fold, (_, held) in enumerate(splitter.split(np.zeros(len(groups)), np.asarray(labels), groups)):
            for i in held:
                fold_of[i] = fold
    return fold_of


def carve_validation(indices: Sequence[int], labels: Sequence[int | bool], groups: Sequence[str],
                     fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) out of ``indices``: about ``fraction`` of them, whole groups, stratified."""
    indices = list(indices)
    if fraction <= 0:
        return indices, []
    sub_groups = [groups[i] for i in indices]
    n_splits = max(2, round(1 / fraction))
    if len(set(sub_groups)) < n_splits:
        raise DataError(f"validation split: {len(set(sub_groups))} groups in the training folds cannot give "
                        f"a {fraction:.0%} validation share; lower data.val_fraction")
    fold_of = group_folds(sub_groups, [labels[i] for i in indices], n_splits, seed)
    return ([i for i, f in zip(indices, fold_of) if f != 0], [i for i, f in zip(indices, fold_of) if f == 0])


def fold_split(labels: Sequence[int | bool], groups: Sequence[str], n_folds: int, fold: int,
               val_fraction: float, seed: int) -> tuple[list[int], list[int], list[int]]:
    """(train, validation, test) indices: fold ``fold`` is the test set; validation comes from the rest.
    ``fold = -1`` (``ALL_TEST``): every item is the test set, for scoring a whole folder that was never trained on."""
    if fold == ALL_TEST:
        return [], [], list(range(len(labels)))
    if not 0 <= fold < n_folds:
        raise DataError(f"folds: fold {fold} is not in 0..{n_folds - 1}")
    fold_of = group_folds(groups, labels, n_folds, seed)
    rest = [i for i, f in enumerate(fold_of) if f != fold]
    train, val = carve_validation(rest, labels, groups, val_fraction, seed)
    return train, val, [i for i, f in enumerate(fold_of) if f == fold]


def fixed_split(splits: Sequence[str], labels: Sequence[int | bool], groups: Sequence[str],
                val_fraction: float, seed: int) -> tuple[list[int], list[int], list[int]]:
    """(train, validation, test) from a ``split`` column; without ``val`` rows, validation is carved from
    ``train``; rows without a split train."""
    train = [i for i, s in enumerate(splits) if s in ("", "train")]
    val = [i for i, s in enumerate(splits) if s == "val"]
    test = [i for i, s in enumerate(splits) if s == "test"]
    if not val:
        train, val = carve_validation(train, labels, groups, val_fraction, seed)
    return train, val, test
