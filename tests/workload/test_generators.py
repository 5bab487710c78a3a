"""YCSB generators: seeded distribution checks against theory.

Reference: Gray et al., "Quickly Generating Billion-Record Synthetic Databases", SIGMOD 1994,
§4 (zipfian sampler); Cooper et al., "Benchmarking Cloud Serving Systems with YCSB",
SoCC 2010, §4.1 (uniform, zipfian, latest, hotspot; scrambling).
"""

from __future__ import annotations

import itertools
import math
import random
import struct
from collections import Counter

import pytest

from shardb.workload import (
    AcknowledgedCounter,
    CounterGenerator,
    DiscreteGenerator,
    HotspotIntegerGenerator,
    ScrambledZipfianGenerator,
    SkewedLatestGenerator,
    UniformLongGenerator,
    ZipfianGenerator,
    build_key_name,
    fnv_hash64,
    zeta,
)

CHI2_DF19_P001 = 43.82
"""Critical chi-square value for 19 degrees of freedom at p = 0.001."""


def _within(observed: int, draws: int, p: float, sigmas: float = 4.0) -> bool:
    expected = draws * p
    return abs(observed - expected) <= sigmas * math.sqrt(draws * p * (1 - p))


def _reference_fnv1a(value: int) -> int:
    """FNV-1a 64 over the 8 little-endian bytes of a signed 64-bit value, as Java's abs()."""
    h = 0xCBF29CE484222325
    for byte in struct.pack("<q", value):
        h = ((h ^ byte) * 0x100000001B3) & (2**64 - 1)
    signed = h - 2**64 if h >= 2**63 else h
    return signed if signed == -(2**63) else abs(signed)


def test_fnv_hash_matches_fnv1a_and_ycsb_key_names() -> None:
    """YCSB hashes key numbers with FNV-1a 64 (Utils.fnvhash64), so our key names equal
    YCSB's: record 0 is the well-known ``user6284781860667377211``."""
    for value in [0, 1, 2, 255, 256, 10**6, 2**40 + 7, 2**63 - 1, -1, -(2**63)]:
        assert fnv_hash64(value) == _reference_fnv1a(value)
    assert build_key_name(0) == "user6284781860667377211"
    assert build_key_name(5, zero_padding=8, ordered=True) == "user00000005"


def test_same_seed_same_sequence() -> None:
    """Every generator draws from the injected Random: a seed replays the run exactly."""

    def draws(seed: int) -> list[int]:
        gen = ScrambledZipfianGenerator(0, 999, rng=random.Random(seed))
        return [gen.next_value() for _ in range(200)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_uniform_is_flat() -> None:
    """Uniform: chi-square over 20 equal buckets stays below the p=0.001 critical value."""
    gen = UniformLongGenerator(0, 1999, rng=random.Random(1))
    n = 40_000
    buckets = Counter(gen.next_value() // 100 for _ in range(n))
    assert set(buckets) == set(range(20))
    expected = n / 20
    chi2 = sum((buckets[b] - expected) ** 2 / expected for b in range(20))
    assert chi2 < CHI2_DF19_P001


def test_zipfian_head_frequencies_match_theory() -> None:
    """Gray et al. §4: item 0 is drawn with probability 1/zeta(n), item 1 with
    2^-theta/zeta(n) (both exact in the sampler); popularity falls with rank."""
    n, theta, draws = 1000, 0.99, 60_000
    gen = ZipfianGenerator(0, n - 1, rng=random.Random(2), theta=theta)
    counts = Counter(gen.next_value() for _ in range(draws))
    zn = zeta(n, theta)
    assert _within(counts[0], draws, 1 / zn)
    assert _within(counts[1], draws, 2**-theta / zn)
    assert counts[0] > counts[1] > counts[10] > counts[500]
    assert min(counts) >= 0 and max(counts) <= n - 1


def test_zipfian_tail_follows_power_law() -> None:
    """Gray et al. §4: the mass of ranks [10, 100) vs [100, 1000) matches the zipf law
    within a few percent (the sampler approximates ranks above 2)."""
    n, theta, draws = 1000, 0.99, 60_000
    gen = ZipfianGenerator(0, n - 1, rng=random.Random(3), theta=theta)
    counts = Counter(gen.next_value() for _ in range(draws))
    zn = zeta(n, theta)
    for lo, hi in [(10, 100), (100, 1000)]:
        p = sum(math.pow(i + 1, -theta) for i in range(lo, hi)) / zn
        observed = sum(counts[i] for i in range(lo, hi)) / draws
        assert abs(observed - p) < 0.03, (lo, hi, observed, p)


def test_incremental_zeta_equals_recomputation() -> None:
    """Growing the item count extends zeta incrementally instead of summing from 1."""
    theta = 0.99
    assert zeta(5000, theta, start=1000, initial=zeta(1000, theta)) == pytest.approx(
        zeta(5000, theta), rel=1e-12
    )
    gen = ZipfianGenerator(0, 99, rng=random.Random(4))
    grown = [gen.next_long(10_000) for _ in range(20_000)]
    assert max(grown) >= 100  # draws reach the new items
    with pytest.raises(ValueError, match="went down"):
        gen.next_long(50)


def test_scrambled_zipfian_spreads_hot_keys_and_keeps_skew() -> None:
    """Cooper et al. §4.1: scrambling hashes popular items over the key space, so the hot
    keys are not adjacent (they would land in one shard), while the skew remains."""
    n, draws = 10_000, 50_000
    gen = ScrambledZipfianGenerator(0, n - 1, rng=random.Random(5))
    counts = Counter(gen.next_value() for _ in range(draws))
    assert min(counts) >= 0 and max(counts) <= n - 1
    hottest = [key for key, _ in counts.most_common(10)]
    # Unscrambled, the ten hottest would be 0..9; scrambled, no two are neighbours and they
    # spread over at least 5 of the 10 deciles of the key space.
    ordered = sorted(hottest)
    assert min(b - a for a, b in itertools.pairwise(ordered)) > 1
    assert max(hottest) - min(hottest) > n // 4
    assert len({key * 10 // n for key in hottest}) >= 5
    # The hottest key is the hash of the zipfian's rank-0 item.
    assert hottest[0] == fnv_hash64(0) % n
    # Still skewed: the hottest key gets far more than a uniform share.
    assert counts.most_common(1)[0][1] > 50 * draws / n


def test_hotspot_sends_the_configured_fraction_to_the_hot_set() -> None:
    """Hotspot: 80% of operations go to the lowest 20% of keys, uniformly inside each set."""
    draws = 40_000
    gen = HotspotIntegerGenerator(
        0, 999, hot_set_fraction=0.2, hot_operation_fraction=0.8, rng=random.Random(6)
    )
    values = [gen.next_value() for _ in range(draws)]
    hot = sum(1 for v in values if v < 200)
    assert _within(hot, draws, 0.8)
    assert gen.hot_upper == 199
    assert min(values) == 0 and max(values) == 999
    hot_halves = Counter(v < 100 for v in values if v < 200)
    assert _within(hot_halves[True], hot, 0.5)


def test_hotspot_refuses_bad_fractions() -> None:
    with pytest.raises(ValueError, match="hotspotdatafraction"):
        HotspotIntegerGenerator(
            0, 9, hot_set_fraction=1.5, hot_operation_fraction=0.5, rng=random.Random(0)
        )


def test_latest_favours_recent_inserts_and_follows_new_ones() -> None:
    """SkewedLatest (workload D): the newest acknowledged record is the most popular, no draw
    goes beyond the acknowledged limit, and the hot spot moves as inserts are acknowledged."""
    counter = AcknowledgedCounter(1000)
    latest = SkewedLatestGenerator(counter, rng=random.Random(7))
    assert counter.last_value() == 999
    counts = Counter(latest.next_value() for _ in range(20_000))
    assert counts.most_common(1)[0][0] == 999
    assert max(counts) <= 999
    recent = sum(c for key, c in counts.items() if key >= 900)
    assert recent > 0.5 * 20_000  # the newest 10% of records get most of the reads
    for _ in range(100):
        counter.acknowledge(counter.next_value())
    counts = Counter(latest.next_value() for _ in range(20_000))
    assert counts.most_common(1)[0][0] == 1099
    assert max(counts) <= 1099


def test_acknowledged_counter_advances_only_over_contiguous_acks() -> None:
    """YCSB's AcknowledgedCounterGenerator: reads may only target keys whose insert (and every
    earlier one) has been acknowledged."""
    counter = AcknowledgedCounter(10)
    a, b, c = counter.next_value(), counter.next_value(), counter.next_value()
    assert (a, b, c) == (10, 11, 12)
    counter.acknowledge(c)
    counter.acknowledge(b)
    assert counter.last_value() == 9
    counter.acknowledge(a)
    assert counter.last_value() == 12
    with pytest.raises(ValueError, match="not outstanding"):
        counter.acknowledge(a)


def test_counter_counts_from_start() -> None:
    counter = CounterGenerator(5)
    assert [counter.next_value() for _ in range(3)] == [5, 6, 7]
    assert counter.last_value() == 7


def test_discrete_generator_respects_weights() -> None:
    """The operation chooser draws each kind with its proportion of the total weight."""
    gen: DiscreteGenerator[str] = DiscreteGenerator(rng=random.Random(8))
    gen.add_value(0.5, "read")
    gen.add_value(0.3, "update")
    gen.add_value(0.2, "scan")
    draws = 30_000
    counts = Counter(gen.next_value() for _ in range(draws))
    for name, p in [("read", 0.5), ("update", 0.3), ("scan", 0.2)]:
        assert _within(counts[name], draws, p)
