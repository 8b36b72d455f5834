"""Deterministic, resumable batch order: the order of an epoch depends only on ``(seed, epoch)``; a batch that
costs more than a budget is computed in micro-batches (:class:`CostCollate`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch

__all__ = ["BatchCost", "CostCollate", "EpochBatchSampler", "IndexedItems", "LENGTH_WINDOW", "MicroBatches",
           "cubic_cost", "epoch_batches", "map_in_pieces", "move_to_device", "span_cost", "split_by_cost"]


LENGTH_WINDOW = 50  # group_by_length: items are sorted by length within windows of this many batches


def epoch_batches(
    n_items: int,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_last: bool = False,
    lengths: Sequence[int] | None = None,
) -> list[list[int]]:
    """Index batches of one epoch: a permutation of ``range(n_items)`` drawn from a generator seeded with
    ``seed + epoch`` (identity if not ``shuffle``), cut into chunks of ``batch_size``.

    With ``lengths`` (one per item) the batches group items of similar length, so that a padded batch wastes
    little work (a parser's arc scores grow with the square of the padded length, its inside algorithm with the
    cube): the permutation is cut into windows of ``LENGTH_WINDOW * batch_size`` items, each window is sorted
    by length (longest first; ties keep the permutation's order), the result is cut into batches, and the
    batches are shuffled with the same generator (not when ``shuffle`` is false).  Every item still comes once
    per epoch and the number of batches is the same; each batch is a random set of neighbours in length.  With
    ``drop_last`` the short batch left out holds the shortest items of the last window (other items each epoch,
    as the permutation changes).
    """
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(n_items, generator=gen).tolist() if shuffle else list(range(n_items))
    if lengths is not None:
        if len(lengths) != n_items:
            raise ValueError(f"lengths has {len(lengths)} entries for {n_items} items")
        window = LENGTH_WINDOW * batch_size
        order = [i for start in range(0, n_items, window)
                 for i in sorted(order[start:start + window], key=lambda i: -lengths[i])]
    batches = [order[i : i + batch_size] for i in range(0, n_items, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if lengths is not None and shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
    return batches


class EpochBatchSampler:
    """A batch sampler (for ``DataLoader(batch_sampler=...)``) over a fixed list of index batches.

    Has ``batch_size`` and ``drop_last`` attributes so Accelerate can shard it across processes (process
    ``r`` of ``P`` gets batches ``r, r + P, ...``).
    """

    def __init__(self, batches: Sequence[Sequence[int]], batch_size: int, drop_last: bool = False) -> None:
        self.batches = [list(b) for b in batches]
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        return iter([list(b) for b in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


BatchCost = Callable[[Sequence[int]], float]
"""The cost of computing a batch from the lengths of its items (for a second-order parser, ``n * (L + 1) ** 3``:
the sibling scores and charts grow with the cube of the padded length)."""


def cubic_cost(lengths: Sequence[int]) -> float:
    """``n * (L + 1) ** 3`` for ``n`` sentences of at most ``L`` words (root included): the padded cells of a
    second-order parser's sibling scores."""
    return len(lengths) * (max(lengths) + 1) ** 3


def span_cost(lengths: Sequence[int], n_labels: int) -> float:
    """``n * L ** 2 * n_labels`` for ``n`` sentences of at most ``L`` words: the padded cells of a span head's
    scores (``functools.partial(span_cost, n_labels=...)`` is a :data:`BatchCost`)."""
    return len(lengths) * max(lengths) ** 2 * n_labels


def split_by_cost(indices: Sequence[int], lengths: Sequence[int], cost: BatchCost, budget: float) -> list[list[int]]:
    """A batch's items in consecutive pieces (longest first) that each cost at most ``budget``, or the batch
    itself, in its order, when it does (an item that alone costs more still makes a piece of its own).

    Args:
        indices: the batch's item indices.
        lengths: the length of every training item (indexed by item).
        cost: :data:`BatchCost`.
        budget: the most a piece may cost.
    """
    if cost([lengths[i] for i in indices]) <= budget:
        return [list(indices)]
    pieces: list[list[int]] = []
    for i in sorted(indices, key=lambda i: -lengths[i]):
        if pieces and cost([lengths[j] for j in pieces[-1]] + [lengths[i]]) <= budget:
            pieces[-1].append(i)
        else:
            pieces.append([i])
    return pieces


def map_in_pieces(items: Sequence[Any], lengths: Sequence[int], cost: BatchCost | None, budget: float | None,
                  compute: Callable[[list[Any]], Sequence[Any]]) -> list[Any]:
    """``compute(items)`` (one result per item, each item's independent of the others'), computed in pieces of
    at most ``budget`` (:func:`split_by_cost`) when ``cost`` and ``budget`` are given; results in the items'
    order.  What inference and teacher caches do with a second-order parser's batches of long sentences."""
    if cost is None or budget is None:
        return list(compute(list(items)))
    pieces = split_by_cost(range(len(items)), lengths, cost, budget)
    if len(pieces) == 1:
        return list(compute(list(items)))
    out: list[Any] = [None] * len(items)
    for piece in pieces:
        for k, result in zip(piece, compute([items[k] for k in piece])):
            out[k] = result
    return out


class MicroBatches(NamedTuple):
    """One optimizer step's batch computed in parts (:class:`CostCollate`): the collated ``parts`` and each
    part's share of the batch's items, by which its (mean) loss is weighted."""

    parts: list
    shares: list[float]


class IndexedItems:
    """A dataset view whose item ``i`` is ``(i, data[i])``, so that a collate function knows the indices."""

    def __init__(self, data: Sequence[Any]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return i, self.data[i]


class CostCollate:
    """Collates a batch of :class:`IndexedItems` as one batch, or, when it costs more than ``budget``
    (:func:`split_by_cost`), as :class:`MicroBatches` whose gradients the Trainer accumulates into one step."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any], lengths: Sequence[int], cost: BatchCost,
                 budget: float) -> None:
        self.collate_fn, self.lengths, self.cost, self.budget = collate_fn, lengths, cost, budget

    def __call__(self, items: list[tuple[int, Any]]) -> Any:
        pieces = split_by_cost([i for i, _ in items], self.lengths, self.cost, self.budget)
        if len(pieces) == 1:
            return self.collate_fn([item for _, item in items])
        by_index = dict(items)
        return MicroBatches([self.collate_fn([by_index[i] for i in piece]) for piece in pieces],
                            [len(piece) / len(items) for piece in pieces])


def move_to_device(batch: Any, device: torch.device | str | None) -> Any:
    """Move every tensor in a nested batch (dicts, lists, tuples, objects with ``.to``) to ``device``."""
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch
