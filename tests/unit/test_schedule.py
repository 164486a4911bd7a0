"""The order the test processes take the suite in: every test once, slices of the
sizes the work-stealing scheduler cuts, the long tests spread over the slices."""

from __future__ import annotations

from tests.schedule import plan, slice_sizes


def test_slices_are_cut_as_the_scheduler_cuts_them() -> None:
    assert slice_sizes(851, 6) == [141, 142, 142, 142, 142, 142]
    assert slice_sizes(5, 2) == [2, 3] and sum(slice_sizes(17, 4)) == 17


def ids(file: str, n: int) -> list[str]:
    return [f"{file}::test_{i}" for i in range(n)]


def slices(order: list[str], processes: int) -> list[list[str]]:
    found, start = [], 0
    for size in slice_sizes(len(order), processes):
        found.append(order[start : start + size])
        start += size
    return found


def test_long_tests_start_different_slices_and_every_test_runs_once() -> None:
    long_file = ids("tests/integration/test_long.py", 3)
    items = ids("tests/unit/test_a.py", 10) + long_file + ids("tests/unit/test_b.py", 8)
    durations = dict.fromkeys(long_file, 60.0)
    order = plan(items, lambda i: i, 3, durations)
    assert sorted(order) == sorted(items)
    assert {s[0] for s in slices(order, 3)} == set(long_file)


def test_a_light_file_stays_whole_and_in_its_own_order() -> None:
    light = ids("tests/contract/test_light.py", 4)
    items = light + ids("tests/integration/test_x.py", 2) + ids("tests/unit/test_y.py", 6)
    durations = {"tests/integration/test_x.py::test_0": 30.0}
    order = plan(items, lambda i: i, 2, durations)
    where = [order.index(i) for i in light]
    assert where == list(range(where[0], where[0] + 4))  # together and in order
    assert any(set(light) <= set(s) for s in slices(order, 2))
    assert order[-1] == "tests/unit/test_y.py::test_5"  # quick unit tests fill the slices' ends


def test_one_process_or_unknown_durations_change_nothing_that_matters() -> None:
    items = ids("tests/unit/test_a.py", 5)
    assert plan(items, lambda i: i, 1, {}) == items
    assert sorted(plan(items, lambda i: i, 2, {})) == sorted(items)
