import math

import pytest

from searchkd.budget import Budget, parse_limit, resolve_budget
from searchkd.errors import BudgetError


@pytest.mark.parametrize(
    ("raw", "value", "relative"),
    [
        (4_000_000, 4e6, False),
        ("4M", 4e6, False),
        ("1.5G", 1.5e9, False),
        ("500k", 5e5, False),
        ("0.25x", 0.25, True),
        ("2e6", 2e6, False),
        (" 0.5 X ", 0.5, True),
    ],
)
def test_parse_limit(raw, value, relative):
    limit = parse_limit(raw, "max_macs")
    assert limit.value == pytest.approx(value)
    assert limit.relative is relative


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "0x", "4MB", True, float("nan"), "1.5.2M"])
def test_bad_limits_are_one_line(raw):
    with pytest.raises(BudgetError) as info:
        parse_limit(raw, "max_macs")
    assert "\n" not in str(info.value)
    assert "max_macs" in str(info.value)


def test_none_means_unlimited():
    assert parse_limit(None, "max_macs") is None
    assert parse_limit("none", "max_macs") is None


def test_relative_budget_resolves_against_teacher():
    budget = resolve_budget("0.25x", "2M", "0.5x", {"macs": 16e6, "params": 1e6, "latency_ms": 3})
    assert budget.max_macs == pytest.approx(4e6)
    assert budget.max_params == pytest.approx(2e6)
    assert budget.max_latency_ms == pytest.approx(1.5)


def test_relative_budget_without_teacher_cost_fails():
    with pytest.raises(BudgetError, match="absolute"):
        resolve_budget("0.25x", teacher={})


def test_constraints_and_violations():
    budget = Budget(max_macs=4e6, max_params=None, max_latency_ms=2.0)
    within = {"macs": 3e6, "params": 9e9, "latency_ms": 1.0}
    over = {"macs": 5e6, "params": 1, "latency_ms": 3.0}
    assert all(v <= 0 for v in budget.constraints(within))
    assert budget.violations(within) == []
    values = budget.constraints(over)
    assert values[0] == pytest.approx(0.25) and values[2] == pytest.approx(0.5)
    assert values[1] == 0.0  # no params limit
    assert [v.split()[0] for v in budget.violations(over)] == ["macs", "latency_ms"]
    # latency not measured (rejected on MACs first): only the MACs constraint fires
    assert budget.constraints({"macs": 5e6, "params": 1, "latency_ms": None})[2] == 0.0
    assert budget.constraints({"macs": 1, "params": 1, "latency_ms": math.inf})[2] > 0
