"""Held-out questions split over the processes of a run, and the per-question results gathered back.

Each rank takes an equal share (a short last share repeats rows from the start), so every rank makes the same number
of model calls, as ZeRO-3's gathered parameters need; the repeats are dropped when the results are gathered by row.
"""

from __future__ import annotations

import math

from accelerate.utils import gather_object


def rank_share(n: int, accelerator) -> list[int]:
    """Row indices of this process's share of `n` rows."""
    share = math.ceil(n / accelerator.num_processes)
    return [(accelerator.process_index * share + j) % n for j in range(share)]


def gather_by_row(index: list[int], results: list) -> dict[int, object]:
    """`{row: result}` over all processes (a repeated row appears once)."""
    return dict(gather_object(list(zip(index, results))))
