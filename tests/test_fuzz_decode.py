"""The decode + fingerprint fuzz target (tests/fuzzdecode.py): a short bounded run, and the replay of
every crashing input a longer run (scripts/fuzz_decode.py) found and kept in tests/data/fuzz/."""

from __future__ import annotations

import hypothesis
import pytest
from fuzzdecode import CRASHES, check, mutated, seeds
from hypothesis import HealthCheck, Phase


def test_every_seed_decodes():
    assert all(check(data) == "ok" for data in seeds())


@hypothesis.settings(max_examples=150, deadline=None, database=None, derandomize=True,
                     suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
@hypothesis.given(data=mutated())
def test_mutated_images_give_a_fingerprint_or_our_error(data):
    check(data)


KEPT = sorted(CRASHES.glob("*.bin"))


@pytest.mark.parametrize("path", KEPT, ids=[p.name for p in KEPT])
def test_kept_crashes_are_fixed(path):
    for query in (False, True):
        check(path.read_bytes(), query)
