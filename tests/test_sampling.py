"""The one class-balanced sampler shared by segdec, clip_anomaly and scrap_cls."""

from __future__ import annotations

from collections import Counter

import torch

from scrapvision.data.sampling import balanced_order


def order(labels, epoch, seed=0, **kwargs):
    return balanced_order(labels, epoch, seed, torch.Generator().manual_seed(1000 * seed + epoch), **kwargs)


def test_rarest_class_whole_and_the_others_cycle_evenly_over_epochs():
    labels = [2] * 3 + [0] * 7 + [1] * 5
    drawn: Counter[int] = Counter()
    for epoch in range(35):  # 35 * 3 draws per class: every member of 7 and of 5 an equal number of times
        indices = order(labels, epoch)
        assert sorted(i for i in indices if labels[i] == 2) == [0, 1, 2]
        assert Counter(labels[i] for i in indices) == {0: 3, 1: 3, 2: 3}
        drawn.update(indices)
    assert {drawn[i] for i in range(3, 10)} == {15} and {drawn[i] for i in range(10, 15)} == {21}


def test_dataset_length_epochs_draw_classes_equally_often():
    labels = [True] * 2 + [False] * 9
    indices = order(labels, epoch=0, dataset_length=True)
    assert len(indices) == 10 and Counter(labels[i] for i in indices) == {True: 5, False: 5}
    assert len({i for i in indices if not labels[i]}) == 5  # no negative twice before all were drawn


def test_order_depends_only_on_seed_and_epoch():
    labels = [i % 4 == 0 for i in range(40)]
    assert order(labels, 3, seed=5) == order(labels, 3, seed=5)  # a resumed run and every DDP rank agree
    assert order(labels, 3, seed=5) != order(labels, 4, seed=5)
    assert sorted(order([1] * 6, 0)) == list(range(6))  # one class: a plain shuffle


def test_anchor_class_is_drawn_whole_even_when_it_is_the_majority():
    """segdec's rule: every defective image once per epoch plus as many defect-free ones (repeated when
    they are fewer), so a small training split with more defects than not still sees all of them."""
    labels = [True] * 7 + [False] * 3
    order = balanced_order(labels, 0, 0, torch.Generator().manual_seed(0), anchor=1)
    assert sorted(i for i in order if labels[i]) == list(range(7))
    assert len(order) == 14 and sum(not labels[i] for i in order) == 7
