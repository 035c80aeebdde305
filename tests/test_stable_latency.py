"""Latency rounds are repeated until their median is stable: rounds are added while their
inter-quartile spread exceeds the tolerance, up to a cap, and the count is recorded."""

from __future__ import annotations

import types

import pytest
from torch import nn

import searchkd.torch_meter
from searchkd.config import build_config
from searchkd.meters import Timing, repeat_until_stable
from searchkd.torch_meter import TorchLatencyMeter


def rounds_of(values: list[float]):
    remaining = iter(values)
    return lambda: next(remaining)


def test_steady_rounds_stop_at_the_requested_count():
    median, spread, rounds = repeat_until_stable(rounds_of([1.0, 1.01, 0.99, 5.0]), 3, 10, 0.05)
    assert (median, rounds) == (1.0, 3) and spread == pytest.approx(0.02)


def test_noisy_first_rounds_are_outvoted_by_added_rounds():
    values = [2.0, 2.2, 1.0] + [1.0] * 20  # something else ran during the first two rounds
    fixed = repeat_until_stable(rounds_of(values), 3, 20, None)
    adaptive = repeat_until_stable(rounds_of(values), 3, 20, 0.05)
    assert fixed == (2.0, pytest.approx(1.2), 3)
    # two outliers need nine steady rounds before the upper quartile is a steady one
    assert adaptive == (1.0, 0.0, 11)


def test_rounds_stop_at_the_cap_when_they_never_agree():
    values = [1.0, 3.0] * 10
    median, spread, rounds = repeat_until_stable(rounds_of(values), 3, 7, 0.05)
    assert rounds == 7 and spread > 0.05 * median


class _Clock:
    """A fake perf_counter that a fake model advances by the durations it is given."""

    def __init__(self, durations_ms: list[float]) -> None:
        self.now, self.durations = 0.0, iter(durations_ms)

    def perf_counter(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += next(self.durations) / 1000.0


class _Timed(nn.Module):
    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self.clock = clock

    def forward(self, x):
        self.clock.tick()
        return x


@pytest.mark.parametrize("tolerance, rounds, median", [(None, 3, 9.0), (0.05, 11, 1.0)])
def test_torch_meter_adds_rounds_while_noisy_and_records_how_many(
    monkeypatch, tolerance, rounds, median
):
    runs = 4
    # warm-up call, then rounds of 4 calls: two slow rounds, then steady 1 ms rounds
    durations = [1.0] + [9.0] * runs + [9.0] * runs + [1.0] * (runs * 12)
    clock = _Clock(durations)
    monkeypatch.setattr(
        searchkd.torch_meter, "time", types.SimpleNamespace(perf_counter=clock.perf_counter)
    )
    meter = TorchLatencyMeter(
        timing=Timing(warmup=1, runs=runs, repeats=3, tolerance=tolerance, max_repeats=20)
    )
    latency = meter.measure(_Timed(clock), (1, 2, 2))
    assert latency.repeats == rounds
    assert latency.median_ms == pytest.approx(median)


def test_default_tolerance_keeps_the_study_fingerprint_of_earlier_studies():
    default = build_config().search_settings()["latency"]
    assert "tolerance" not in default and "max_repeats" not in default
    tuned = build_config(overrides={"latency": {"tolerance": 0.1}}).search_settings()["latency"]
    assert tuned["tolerance"] == 0.1
