"""The frontier benchmark's choice of students to retrain: the best by proxy accuracy in
each latency bin, relative to the reference network."""

from benchmarks.frontier import choose


def _candidate(ms: float, proxy: float) -> dict:
    return {"search_ms": ms, "proxy": proxy, "arch": {}, "source": f"{ms}/{proxy}"}


def test_each_latency_bin_contributes_its_best_by_proxy_accuracy():
    found = [
        _candidate(0.03, 0.70),  # x0.3: fast bin
        _candidate(0.06, 0.75),  # x0.6: still the fast bin (edges are inclusive above)
        _candidate(0.07, 0.90),  # x0.7
        _candidate(0.10, 0.80),  # x1.0
        _candidate(0.20, 0.95),  # x2.0: slower than the reference
    ]
    chosen = choose(found, reference_ms=0.1, per_bin=1)
    assert [c["search_ms"] for c in chosen] == [0.06, 0.07, 0.10, 0.20]


def test_a_bin_gives_at_most_per_bin_students_and_empty_bins_give_none():
    found = [_candidate(0.02, p) for p in (0.5, 0.9, 0.7)] + [_candidate(0.3, 0.6)]
    chosen = choose(found, reference_ms=0.1, per_bin=2)
    assert [c["proxy"] for c in chosen] == [0.9, 0.7, 0.6]
