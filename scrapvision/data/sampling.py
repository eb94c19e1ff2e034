"""The one class-balanced epoch order, shared by every head that samples classes equally often."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .images import sample_rng


def balanced_order(labels: Sequence[int], epoch: int, seed: int, generator: torch.Generator,
                   dataset_length: bool = False) -> list[int]:
    """Indices of one epoch in which every class (a label value; bools work) is drawn equally often.

    By default a class is drawn as often as the rarest class has samples: every sample of the rarest
    once plus as many of each other class (Bozic et al.'s balanced sampling for defects);
    ``dataset_length`` makes the epoch as long as the data set instead. The draws of a class walk through
    permutations keyed by ``(seed, cycle, 7919 + label)`` that continue from epoch to epoch, so over a run
    every member is drawn equally often; a class taken whole in an epoch is taken in index order. The
    epoch is then shuffled by ``generator``. Everything derives from ``(seed, epoch)`` and the generator,
    so the order is the same on every DDP rank and after a resume. One class only: a plain shuffle.
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    if len(by_class) < 2:
        return torch.randperm(len(labels), generator=generator).tolist()
    draws = len(labels) // len(by_class) if dataset_length else min(len(m) for m in by_class.values())
    order: list[int] = []
    for label, members in sorted(by_class.items(), key=lambda item: (len(item[1]), item[0])):  # rarest first
        order += _cycled(members, epoch * draws, draws, seed, 7919 + label)
    return [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]


def _cycled(members: list[int], start: int, count: int, seed: int, salt: int) -> list[int]:
    """Draws ``start .. start + count`` of the endless walk through seeded permutations of ``members``."""
    if count == len(members) and start % count == 0:
        return list(members)
    chosen, permutations = [], {}
    for k in range(start, start + count):
        cycle, position = divmod(k, len(members))
        if cycle not in permutations:
            permutations[cycle] = sample_rng(seed, cycle, salt).permutation(len(members))
        chosen.append(members[permutations[cycle][position]])
    return chosen
