"""The order the test processes take the suite in.

`pytest -n N --dist worksteal` hands each process a contiguous slice of the
collected tests (slice k holds what is left divided by the processes still to
serve), and a process that runs dry takes the back half of the longest queue.
The suite's time sits in a few files that mostly wait (the sandbox's clock,
rollouts, Temporal), so the order decides how long the run takes: if the
longest files share a slice, one process runs them one after another while the
others finish early. So the collection is reordered into N slices of the sizes
the scheduler will cut, the longest files spread over them first (longest
processing time first), each slice starting with its longest file and ending
with quick ones a neighbour may take.

What a test costs comes from `tests/durations.json`, seconds per test from a
whole run (`MODORU_RECORD_DURATIONS=tests/durations.json pytest -n 6 --dist
worksteal` writes it); a test it does not know counts 0.2 s. A file stays in
one slice (its module fixtures are set up once) unless it alone holds more than half a
slice's share of the time, or its tests each start their own sandbox and
worker (integration, reliability): then its tests are spread one by one. The
quick, self-contained tests (unit, workflow, replay) fill each slice to its
size. The spread tests mostly wait on clocks while the whole files (sandbox,
conformance, contract) keep a CPU busy, so half the slices begin with the one
and half with the other: on two cores, six processes that all wait at first
and all compute later leave the CPUs idle, then oversubscribed. A
stale figure changes only the order, never what runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

DURATIONS = Path(__file__).with_name("durations.json")
UNKNOWN_SECONDS_PER_TEST = 0.2
# Files whose tests share no state: they may be cut anywhere to fill a slice.
FILLERS = ("tests/unit/", "tests/workflows/", "tests/replay/")
# Slow files whose tests each start their own sandbox and worker: spread one by one.
SPREAD = ("tests/integration/", "tests/reliability/")

T = TypeVar("T")


def slice_sizes(total: int, processes: int) -> list[int]:
    """The slice each process gets first, as the work-stealing scheduler cuts them."""
    sizes, left = [], total
    for k in range(processes):
        size = left // (processes - k)
        sizes.append(size)
        left -= size
    return sizes


def load_durations(path: Path = DURATIONS) -> dict[str, float]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in found.items() if isinstance(v, int | float)}


def plan(items: Sequence[T], id_of, processes: int, durations: dict[str, float]) -> list[T]:
    """`items` reordered into `processes` slices balanced by their tests' durations; the
    items of one file keep their order and stand together within a slice."""
    if processes <= 1 or len(items) < processes:
        return list(items)
    files: dict[str, list[T]] = {}
    for item in items:
        files.setdefault(id_of(item).split("::")[0], []).append(item)

    def cost(item: T) -> float:
        return durations.get(id_of(item), UNKNOWN_SECONDS_PER_TEST)

    total = sum(cost(item) for item in items)
    units: list[tuple[float, str, list[T]]] = []  # what goes to a slice whole
    fillers: list[T] = []
    for name, members in files.items():
        seconds = sum(cost(m) for m in members)
        if name.startswith(SPREAD) or seconds > total / processes / 2:
            units += [(cost(m), name, [m]) for m in members]
        elif name.startswith(FILLERS):
            fillers += members
        else:
            units.append((seconds, name, members))

    sizes = slice_sizes(len(items), processes)
    taken: list[dict[str, list[T]]] = [{} for _ in sizes]
    share: list[dict[str, float]] = [{} for _ in sizes]
    room, load = list(sizes), [0.0] * processes
    for seconds, name, members in sorted(units, key=lambda u: -u[0]):  # stable on ties
        fits = [k for k in range(processes) if room[k] >= len(members)] or range(processes)
        k = min(fits, key=lambda k: (load[k], -room[k], k))
        taken[k].setdefault(name, []).extend(members)
        share[k][name] = share[k].get(name, 0.0) + seconds
        room[k] -= len(members)
        load[k] += seconds
    position = {id(item): n for n, item in enumerate(items)}
    ordered: list[T] = []
    for k in range(processes):
        names = sorted(taken[k], key=lambda n: -share[k][n])
        if k % 2:  # half the processes begin with the files that keep a CPU busy (see above)
            names.sort(key=lambda n: n.startswith(SPREAD))
        for name in names:
            ordered.extend(sorted(taken[k][name], key=lambda item: position[id(item)]))
        ordered.extend(fillers[: max(room[k], 0)])
        fillers = fillers[max(room[k], 0) :]
    return ordered + fillers
