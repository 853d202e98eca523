"""What every training benchmark here measures the same way: a step's rate and FLOPs, a loader's rate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


def step_rate_and_flops(step: Callable[[], object], steps: int) -> tuple[float, float]:
    """(steps per second over ``steps`` timed calls, FLOPs of one call by torch's FlopCounterMode).

    The counted call runs first and also warms the step up (allocations,
    lazy initialisation), so the timed calls do not include them.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start), float(counter.get_total_flops())


def items_per_second(items: Iterable, limit: int | None = None) -> float:
    """Items per second drawn from ``items`` in this process, up to ``limit`` of them (all when None)."""
    start, n = time.perf_counter(), 0
    for _ in items:
        n += 1
        if limit is not None and n >= limit:
            break
    return n / (time.perf_counter() - start)


def print_header(*columns: str) -> None:
    """A markdown table's header and rule."""
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
