"""Fixtures of the store's unit tests: the chart they keep."""

from __future__ import annotations

import pytest

from stateservice.core.chart import Chart
from tests.support import charts


@pytest.fixture
def chart() -> Chart:
    """`charts.RELEASE`: canary -> fleet after 2 reports (counting from 0); fleet -> done at 7 (from 5)."""
    return charts.load(charts.RELEASE, "release.yaml")
