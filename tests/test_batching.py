"""Epoch batch order: random, and grouped by length (``training.group_by_length``)."""

from __future__ import annotations

import random

import pytest
import torch

from structkd.train import TrainConfig, Trainer, epoch_batches
from structkd.train.batching import LENGTH_WINDOW


def _lengths(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.choice([rng.randint(1, 15), rng.randint(16, 90)]) for _ in range(n)]


def _padded_work(batches: list[list[int]], lengths: list[int], power: int) -> int:
    """What a padded batch costs: its size times its longest item, to a power (2: arc scores, 3: inside)."""
    return sum(len(b) * max(lengths[i] for i in b) ** power for b in batches)


@pytest.mark.parametrize("n, batch_size", [(1, 4), (37, 4), (1000, 32), (5000, 7)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_grouped_batches_hold_the_same_items_in_as_many_batches(n, batch_size, drop_last):
    lengths = _lengths(n, n)
    plain = epoch_batches(n, batch_size, seed=3, epoch=1, drop_last=drop_last)
    grouped = epoch_batches(n, batch_size, seed=3, epoch=1, drop_last=drop_last, lengths=lengths)
    assert len(grouped) == len(plain)
    items = [i for b in grouped for i in b]
    assert len(items) == len(set(items))
    if drop_last:
        assert all(len(b) == batch_size for b in grouped) and len(items) == n - n % batch_size
    else:
        assert sorted(items) == list(range(n))
        assert sum(len(b) < batch_size for b in grouped) <= 1  # one short batch at most, as without grouping


def test_grouped_batches_are_neighbours_in_length_and_cut_padding():
    n, batch_size = 1000, 32
    lengths = _lengths(n, 0)
    grouped = epoch_batches(n, batch_size, seed=0, epoch=0, lengths=lengths)
    plain = epoch_batches(n, batch_size, seed=0, epoch=0)
    for power in (1, 2, 3):
        assert _padded_work(grouped, lengths, power) < 0.8 * _padded_work(plain, lengths, power)
    # within one window (here the whole epoch) the items are sorted: batches do not overlap in length
    assert n <= LENGTH_WINDOW * batch_size
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in grouped)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:]))


def test_grouped_batches_sort_within_windows_only():
    """Items are sorted inside windows of ``LENGTH_WINDOW`` batches of the shuffled order, not across the
    epoch: with lengths that rise with the index, a window's batches still cover its own mixture."""
    batch_size = 2
    window = LENGTH_WINDOW * batch_size
    n = 3 * window
    lengths = list(range(n))
    grouped = epoch_batches(n, batch_size, seed=1, epoch=0, shuffle=False, lengths=lengths)
    # without shuffling: each window of consecutive items, longest first, and the batches in that order
    expected = [i for start in range(0, n, window) for i in reversed(range(start, start + window))]
    assert [i for b in grouped for i in b] == expected
    shuffled = epoch_batches(n, batch_size, seed=1, epoch=0, lengths=lengths)
    assert shuffled != grouped and sorted(map(tuple, shuffled)) != sorted(map(tuple, grouped))


def test_grouped_order_depends_on_seed_and_epoch_only():
    lengths = _lengths(300, 1)
    first = epoch_batches(300, 8, seed=5, epoch=2, lengths=lengths)
    assert epoch_batches(300, 8, seed=5, epoch=2, lengths=lengths) == first
    assert epoch_batches(300, 8, seed=5, epoch=3, lengths=lengths) != first
    assert epoch_batches(300, 8, seed=6, epoch=2, lengths=lengths) != first
    torch.manual_seed(0)  # the global generator plays no part
    assert epoch_batches(300, 8, seed=5, epoch=2, lengths=lengths) == first


def test_lengths_must_match_the_items(tmp_path):
    with pytest.raises(ValueError, match="lengths has 3 entries for 4 items"):
        epoch_batches(4, 2, seed=0, epoch=0, lengths=[1, 2, 3])
    data = [torch.zeros(2) for _ in range(4)]
    model = torch.nn.Linear(2, 1)
    config = TrainConfig(epochs=1, batch_size=2, output_dir=str(tmp_path), progress=False, group_by_length=True)
    with pytest.raises(ValueError, match="group_by_length needs the training items' lengths"):
        Trainer(model, config, data, None, lambda m, b: m(b).sum(), None)
    with pytest.raises(ValueError, match="lengths has 3 entries for 4 training items"):
        Trainer(model, config, data, None, lambda m, b: m(b).sum(), None, lengths=[1, 2, 3])


@pytest.mark.parametrize("group_by_length", [False, True])
def test_trainer_feeds_the_batches_of_epoch_batches(tmp_path, group_by_length):
    n, batch_size = 50, 4
    lengths = _lengths(n, 2)
    data = [torch.tensor([float(i)]) for i in range(n)]
    seen: list[list[int]] = []

    def loss_fn(model, batch):
        seen.append(batch[:, 0].long().tolist())
        return model(batch).sum()

    config = TrainConfig(epochs=2, batch_size=batch_size, seed=9, output_dir=str(tmp_path), progress=False,
                         group_by_length=group_by_length)
    Trainer(torch.nn.Linear(1, 1), config, data, None, loss_fn, None, lengths=lengths).train()
    expected = [b for epoch in range(2)
                for b in epoch_batches(n, batch_size, 9, epoch, lengths=lengths if group_by_length else None)]
    assert seen == expected


def test_benchmark_padding_ratios():
    """``benchmarks/bench_batching.py``'s padding measure: 1 for equal lengths, above 1 otherwise, and lower
    for grouped batches than for random ones."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_batching import padded_work

    same = padded_work([7] * 100)
    assert all(abs(v - 1.0) < 1e-12 for order in same.values() for v in order.values())
    mixed = padded_work(_lengths(2000, 4))
    for power in (1, 2, 3):
        assert 1.0 < mixed["grouped"][power] < mixed["random"][power]
        assert mixed["grouped"][power] < 1.5 ** power  # 2000 items: windows of 1600 sorted, so little is left
