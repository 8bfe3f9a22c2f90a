"""The ``smoke`` budget of Tables 2 and 3 (a module of its own, so that pytest-xdist runs it
beside ``test_reproduce.py`` instead of after it)."""

from __future__ import annotations

import pytest
from test_reproduce import smoke_check


@pytest.mark.parametrize("table", ["table2", "table3"])
def test_smoke_budget_runs_skips_and_reports(table, tmp_path, capsys):
    smoke_check(table, tmp_path, capsys)
