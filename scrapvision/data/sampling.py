"""Sample order of training epochs: the Trainer's sampler and the one class-balanced order of the heads.

Reproducibility: the order of epoch ``k`` comes from a generator seeded with ``(seed, k)``, so a run resumed
at epoch ``k`` continues exactly as the uninterrupted run would, and every DDP rank draws the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from ..distributed import DistInfo
from .images import sample_rng


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class EpochSampler(Sampler[int]):
    """One shared order per epoch (from ``indices(dataset, epoch, generator)``, e.g. a task's
    ``epoch_indices``), split into rank-interleaved shards of the global batch."""

    def __init__(self, indices: Callable[[Dataset, int, torch.Generator], Sequence[int]], dataset: Dataset,
                 seed: int, info: DistInfo) -> None:
        self.indices, self.dataset, self.seed, self.info = indices, dataset, seed, info
        self.epoch = 0
        self._order: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = list(self.indices(self.dataset, epoch, generator))
        usable = len(order) - len(order) % self.info.world_size
        self._order = order[self.info.rank : usable : self.info.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)


def balanced_order(labels: Sequence[int], epoch: int, seed: int, generator: torch.Generator,
                   dataset_length: bool = False, anchor: int | None = None) -> list[int]:
    """Indices of one epoch in which every class (a label value; bools work) is drawn equally often.

    By default a class is drawn as often as the rarest class has samples: every sample of the rarest
    once plus as many of each other class (Bozic et al.'s balanced sampling for defects);
    ``dataset_length`` makes the epoch as long as the data set instead; ``anchor`` draws every class as
    often as that class has samples (segdec: every defective image once per epoch, as many defect-free ones,
    also when defects are the majority). The draws of a class walk through
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
    if anchor is not None and anchor in by_class:
        draws = len(by_class[anchor])
    else:
        draws = len(labels) // len(by_class) if dataset_length else min(len(m) for m in by_class.values())
    order: list[int] = []
    rank = lambda item: (item[0] != anchor, len(item[1]), item[0])  # noqa: E731 - anchor, then rarest first
    for label, members in sorted(by_class.items(), key=rank):
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


def rarest_label(labels: Sequence[Sequence[bool]]) -> list[int]:
    """One group per multi-label sample for :func:`balanced_order`: 0 when it holds no class, else 1 + the
    class it holds that the fewest samples hold (ties: the lower index). Balancing these groups draws every
    defect class at least as often as its group, and the clean images as often as each class."""
    counts = [sum(bool(row[c]) for row in labels) for c in range(len(labels[0]))] if labels else []
    return [1 + min((c for c, on in enumerate(row) if on), key=lambda c: (counts[c], c)) if any(row) else 0
            for row in labels]


def share_per_batch(order: Sequence[int], first: Sequence[bool], batch_size: int) -> list[int]:
    """``order`` regrouped into batches of ``batch_size`` that each start with half their places (an odd size:
    one more, then one fewer, in turn) of the indices flagged in ``first``, in their order, then the others.

    Used with :func:`balanced_order` (as many flagged as unflagged draws), so every batch holds flagged
    samples (canet: assayed ones). Leading each batch, they reach every DDP rank's shard (every
    ``world_size``-th index) while ``batch_size // 2 >= world_size``. Every batch is full but the last; the
    epoch ends with the last flagged index (with equal counts, at most one unflagged draw is left out)."""
    flagged = [i for i in order if first[i]]
    others = [i for i in order if not first[i]]
    batches: list[int] = []
    taken = used = 0
    for k in range(len(order)):
        if taken >= len(flagged):
            break
        lead = flagged[taken:taken + max(1, (batch_size + 1 - k % 2) // 2)]
        fill = others[used:used + batch_size - len(lead)]
        lead += flagged[taken + len(lead):taken + batch_size - len(fill)]  # no others left: more flagged
        batches += lead + fill
        taken, used = taken + len(lead), used + len(fill)
    return batches
