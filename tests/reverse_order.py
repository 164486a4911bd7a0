"""Run the collected tests in reverse order: `pytest -p tests.reverse_order ...`
(`.ci/order_check` does so for the contract tests). A test that passes only after
another has left something behind (a run, a clone, a changed image) fails
when it runs first. Applied after every other reordering (tests/schedule.py)."""

from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.reverse()


def pytest_report_header() -> str:
    return "test order: reversed (tests.reverse_order)"
