"""The tie-break benchmark's simulated search: which student each pick rule takes."""

import random

import pytest

from benchmarks.tie_break import RULES, VALIDATION_IMAGES, picks
from searchkd.study import pick_band

# proxy score, MACs, true accuracy: the proxy's best is small; a larger one is 0.005 behind
MEMBERS = [
    {"proxy": [0.840], "macs": 2e6, "truth": 0.930},
    {"proxy": [0.835], "macs": 3e6, "truth": 0.940},
    {"proxy": [0.832], "macs": 1e6, "truth": 0.900},
    {"proxy": [0.700], "macs": 4e6, "truth": 0.950},  # far below: never in the band
]


def test_each_rule_picks_from_the_students_within_the_band():
    chosen = picks(MEMBERS, n=4, band=0.01, rng=random.Random(0))
    assert chosen == {RULES[0]: 0.930, RULES[1]: 0.940, RULES[2]: 0.900}


def test_band_none_is_one_binomial_standard_error_of_the_best():
    assert pick_band(0.84, VALIDATION_IMAGES) == pytest.approx((0.84 * 0.16 / 1000) ** 0.5)
    chosen = picks(MEMBERS, n=4, band=None, rng=random.Random(0))
    assert chosen[RULES[1]] == 0.940 and chosen[RULES[2]] == 0.900
    narrow = picks(MEMBERS, n=4, band=0.0, rng=random.Random(0))
    assert set(narrow.values()) == {0.930}  # nobody ties: every rule takes the best proxy
