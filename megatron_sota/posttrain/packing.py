"""Best-fit decreasing bin packing: which examples share a row of fixed length.

Pure arithmetic on lengths; it knows nothing of tokens, masks or files.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import List, Sequence


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> List[List[int]]:
    """Rows of example indices, longest example first: each goes to the open row it fills most tightly
    (least room left that still fits it), else to a new row. Every index appears once; no row holds more
    than `capacity`. Raises ValueError for an example longer than `capacity` (the caller names its record)."""
    too_long = [i for i, n in enumerate(lengths) if n > capacity or n < 1]
    if too_long:
        raise ValueError(f"examples {too_long[:5]} have lengths outside [1, {capacity}]")
    rows: List[List[int]] = []
    room: List[tuple[int, int]] = []  # (room left, row) of rows with room, sorted: bisect finds the tightest fit
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        need = lengths[index]
        at = bisect_left(room, (need, -1))
        if at < len(room):
            left, row = room.pop(at)
        else:
            left, row = capacity, len(rows)
            rows.append([])
        rows[row].append(index)
        if left > need:
            insort(room, (left - need, row))
    return rows
