"""Number generators for YCSB-style workloads, ported from YCSB's ``site.ycsb.generator``.

Our own code after YCSB's algorithms (brianfrankcooper/YCSB, ``core/src/main/java/site/ycsb/
generator``), with two differences on purpose:

- Randomness is an injected ``random.Random`` so a run replays from a seed (YCSB uses
  ``ThreadLocalRandom``); the sequences are therefore not bit-identical to Java's.
- ``ZipfianGenerator`` recomputes ``eta`` with the *current* item count when the count grows.
  YCSB keeps using the item count given at construction, which skews the tail of a growing
  ("latest") distribution; Gray et al. §4's formula has the current ``n``.

Every generator has ``next_value() -> int`` and ``last_value() -> int``. None is thread-safe:
a workload's generators are driven from one thread (trio tasks interleave only at awaits).

Reference: Gray, Sundaresan, Englert, Baclawski, Weinberger, "Quickly Generating Billion-Record
Synthetic Databases", SIGMOD 1994, §4 (the zipfian sampler); Cooper et al., "Benchmarking
Cloud Serving Systems with YCSB", SoCC 2010, §4.1 (the distributions and why scrambled).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Final, Generic, Protocol, TypeVar

ZIPFIAN_CONSTANT: Final = 0.99
"""YCSB's default skew (theta)."""

SCRAMBLED_ITEM_COUNT: Final = 10_000_000_000_000_000
"""The scrambled zipfian draws from this many items and hashes them onto the key space, so the
popularity of a key does not depend on how many keys there are (YCSB's ``ITEM_COUNT``)."""

SCRAMBLED_ZETAN: Final = 26.46902820178302
"""zeta(SCRAMBLED_ITEM_COUNT, 0.99), precomputed by YCSB: summing 10^16 terms is not an option."""

FNV_OFFSET_BASIS_64: Final = 0xCBF29CE484222325
FNV_PRIME_64: Final = 1099511628211
_MASK_64: Final = (1 << 64) - 1
T = TypeVar("T")
_SIGN_64: Final = 1 << 63

ACK_WINDOW: Final = 1 << 20
"""At most this many insert key numbers may be outstanding (unacknowledged) at once: YCSB's
window. A run that exceeds it has lost track of its inserts, so it fails loudly."""


class NumberGenerator(Protocol):
    def next_value(self) -> int: ...

    def last_value(self) -> int: ...


def _to_signed_64(value: int) -> int:
    value &= _MASK_64
    return value - (1 << 64) if value & _SIGN_64 else value


def fnv_hash64(value: int) -> int:
    """YCSB's ``Utils.fnvhash64``: FNV-1a over the 8 low-order bytes of a Java ``long``.

    The result is ``Math.abs`` of the signed hash, including Java's quirk that
    ``abs(Long.MIN_VALUE)`` stays negative, so key names match YCSB's for the same key number.
    """
    hashval = FNV_OFFSET_BASIS_64
    val = _to_signed_64(value)
    for _ in range(8):
        octet = val & 0xFF
        val >>= 8  # arithmetic shift, as Java's >> on a long
        hashval = ((hashval ^ octet) * FNV_PRIME_64) & _MASK_64
    signed = _to_signed_64(hashval)
    if signed == -_SIGN_64:
        return signed
    return abs(signed)


def java_remainder(dividend: int, divisor: int) -> int:
    """Java's ``%`` on longs: the sign of the result follows the dividend."""
    remainder = abs(dividend) % abs(divisor)
    return -remainder if dividend < 0 else remainder


class ConstantGenerator:
    def __init__(self, value: int) -> None:
        self._value = value

    def next_value(self) -> int:
        return self._value

    def last_value(self) -> int:
        return self._value


class UniformLongGenerator:
    """Uniform over ``[lower, upper]`` inclusive."""

    def __init__(self, lower: int, upper: int, *, rng: random.Random) -> None:
        if lower > upper:
            raise ValueError(f"uniform: lower bound {lower} > upper bound {upper}")
        self._lower = lower
        self._upper = upper
        self._rng = rng
        self._last = lower

    def next_value(self) -> int:
        self._last = self._rng.randint(self._lower, self._upper)
        return self._last

    def last_value(self) -> int:
        return self._last


class SequentialGenerator:
    """``lower, lower+1, ..., upper, lower, ...``: YCSB's ``sequential`` request distribution."""

    def __init__(self, lower: int, upper: int) -> None:
        if lower > upper:
            raise ValueError(f"sequential: lower bound {lower} > upper bound {upper}")
        self._lower = lower
        self._count = upper - lower + 1
        self._next = 0
        self._last = lower

    def next_value(self) -> int:
        self._last = self._lower + self._next % self._count
        self._next += 1
        return self._last

    def last_value(self) -> int:
        return self._last


class CounterGenerator:
    """``start, start+1, ...``: the load phase's key numbers."""

    def __init__(self, start: int) -> None:
        self._next = start

    def next_value(self) -> int:
        value = self._next
        self._next += 1
        return value

    def last_value(self) -> int:
        return self._next - 1


class AcknowledgedCounter:
    """A counter whose ``last_value`` is the highest value below which *every* value has been
    acknowledged (YCSB's ``AcknowledgedCounterGenerator``).

    Run-phase inserts draw key numbers from it; reads pick keys no higher than ``last_value``,
    so a read never targets a record whose insert may not have finished yet.
    """

    def __init__(self, start: int) -> None:
        self._next = start
        self._limit = start - 1
        self._acked: set[int] = set()

    def next_value(self) -> int:
        value = self._next
        self._next += 1
        return value

    def last_value(self) -> int:
        return self._limit

    def acknowledge(self, value: int) -> None:
        if value <= self._limit or value >= self._next or value in self._acked:
            raise ValueError(f"acknowledged {value}, which is not outstanding")
        if value - self._limit > ACK_WINDOW:
            raise ValueError(f"more than {ACK_WINDOW} unacknowledged insert keys")
        self._acked.add(value)
        # Only membership tests on the set: the order of its elements never matters.
        while self._limit + 1 in self._acked:
            self._limit += 1
            self._acked.discard(self._limit)


def zeta(n: int, theta: float, *, start: int = 0, initial: float = 0.0) -> float:
    """``initial + sum(1 / i**theta for i in start+1 .. n)``: zeta from scratch (start=0) or
    extended incrementally from a previous count ``start`` (Gray et al. §4)."""
    return initial + math.fsum(math.pow(i, -theta) for i in range(start + 1, n + 1))


class ZipfianGenerator:
    """Zipfian over ``[lower, upper]``: ``lower`` most popular, then ``lower+1``, and so on.

    Gray et al. §4's constant-time sampler. ``next_long(item_count)`` may be asked for a larger
    item count than before (SkewedLatest does, as inserts land): zeta is then extended
    incrementally instead of recomputed. A smaller count is refused (YCSB's default too), since
    it would cost a full recomputation and usually means a caller read a stale count.
    """

    def __init__(
        self,
        lower: int,
        upper: int,
        *,
        rng: random.Random,
        theta: float = ZIPFIAN_CONSTANT,
        zetan: float | None = None,
    ) -> None:
        if lower > upper:
            raise ValueError(f"zipfian: lower bound {lower} > upper bound {upper}")
        if not 0.0 < theta < 1.0:
            raise ValueError(f"zipfian constant must be in (0, 1), got {theta}")
        self._rng = rng
        self._base = lower
        self._items = upper - lower + 1
        self._theta = theta
        self._alpha = 1.0 / (1.0 - theta)
        self._zeta2theta = zeta(2, theta)
        self._count_for_zeta = self._items
        self._zetan = zeta(self._items, theta) if zetan is None else zetan
        self._eta = self._compute_eta(self._items)
        self._last = lower

    @property
    def items(self) -> int:
        return self._items

    def _compute_eta(self, item_count: int) -> float:
        return (1.0 - math.pow(2.0 / item_count, 1.0 - self._theta)) / (
            1.0 - self._zeta2theta / self._zetan
        )

    def next_long(self, item_count: int) -> int:
        """One draw from ``[lower, lower + item_count)`` (Gray et al. §4)."""
        if item_count != self._count_for_zeta:
            if item_count < self._count_for_zeta:
                raise ValueError(
                    f"zipfian item count went down from {self._count_for_zeta} to {item_count}"
                )
            self._zetan = zeta(
                item_count, self._theta, start=self._count_for_zeta, initial=self._zetan
            )
            self._count_for_zeta = item_count
            self._eta = self._compute_eta(item_count)
        u = self._rng.random()
        uz = u * self._zetan
        if uz < 1.0:
            value = self._base
        elif uz < 1.0 + math.pow(0.5, self._theta):
            value = self._base + 1
        else:
            value = self._base + int(
                item_count * math.pow(self._eta * u - self._eta + 1.0, self._alpha)
            )
        self._last = value
        return value

    def next_value(self) -> int:
        return self.next_long(self._items)

    def last_value(self) -> int:
        return self._last


class ScrambledZipfianGenerator:
    """Zipfian popularity, but the popular items are scattered over ``[lower, upper]``.

    Draws from a zipfian over ``SCRAMBLED_ITEM_COUNT`` items and hashes the draw (FNV-1a 64)
    onto the range. Without scrambling, the hot keys would be adjacent and land in one shard
    (Cooper et al. §4.1). Only theta 0.99 is supported, because zeta over 10^16 items is only
    known precomputed (as in YCSB).
    """

    def __init__(self, lower: int, upper: int, *, rng: random.Random) -> None:
        if lower > upper:
            raise ValueError(f"scrambled zipfian: lower bound {lower} > upper bound {upper}")
        self._lower = lower
        self._item_count = upper - lower + 1
        self._zipfian = ZipfianGenerator(
            0, SCRAMBLED_ITEM_COUNT, rng=rng, theta=ZIPFIAN_CONSTANT, zetan=SCRAMBLED_ZETAN
        )
        self._last = lower

    def next_value(self) -> int:
        drawn = self._zipfian.next_value()
        self._last = self._lower + java_remainder(fnv_hash64(drawn), self._item_count)
        return self._last

    def last_value(self) -> int:
        return self._last


class SkewedLatestGenerator:
    """Zipfian over *recency*: the most recently acknowledged insert is the most popular.

    ``basis`` is the insert counter; a draw is ``basis.last_value() - zipfian(last_value)``,
    so as inserts are acknowledged the hot spot moves with them (YCSB workload D).
    """

    def __init__(self, basis: NumberGenerator, *, rng: random.Random) -> None:
        latest = basis.last_value()
        if latest < 1:
            raise ValueError("latest: needs at least one acknowledged record beyond key 0")
        self._basis = basis
        self._zipfian = ZipfianGenerator(0, latest - 1, rng=rng)
        self._last = latest

    def next_value(self) -> int:
        latest = self._basis.last_value()
        self._last = latest - self._zipfian.next_long(latest)
        return self._last

    def last_value(self) -> int:
        return self._last


class HotspotIntegerGenerator:
    """A fraction ``hot_operation_fraction`` of draws hit the lowest ``hot_set_fraction`` of
    ``[lower, upper]``; both sets are uniform inside. YCSB clamps bad fractions to 0 with a
    warning; we refuse them, since a silently different workload makes a wrong benchmark."""

    def __init__(
        self,
        lower: int,
        upper: int,
        *,
        hot_set_fraction: float,
        hot_operation_fraction: float,
        rng: random.Random,
    ) -> None:
        if lower > upper:
            raise ValueError(f"hotspot: lower bound {lower} > upper bound {upper}")
        for name, fraction in (
            ("hotspotdatafraction", hot_set_fraction),
            ("hotspotopnfraction", hot_operation_fraction),
        ):
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {fraction}")
        interval = upper - lower + 1
        self._lower = lower
        self._hot = int(interval * hot_set_fraction)
        self._cold = interval - self._hot
        self._hot_operation_fraction = hot_operation_fraction
        self._rng = rng
        self._last = lower

    @property
    def hot_upper(self) -> int:
        """The highest key of the hot set (``lower - 1`` when it is empty)."""
        return self._lower + self._hot - 1

    def next_value(self) -> int:
        # An empty side can never be chosen: with every key hot (or none), the draw goes to
        # the other side instead of dividing by zero as YCSB would.
        hot = self._rng.random() < self._hot_operation_fraction
        if (hot and self._hot > 0) or self._cold == 0:
            self._last = self._lower + self._rng.randrange(self._hot)
        else:
            self._last = self._lower + self._hot + self._rng.randrange(self._cold)
        return self._last

    def last_value(self) -> int:
        return self._last


class DiscreteGenerator(Generic[T]):
    """Picks one of several values with given weights (YCSB's operation chooser).

    Values are tried in the order they were added, so the mapping from a random draw to a
    value is fixed and a seed replays the same mix.
    """

    def __init__(self, *, rng: random.Random) -> None:
        self._rng = rng
        self._choices: list[tuple[float, T]] = []

    def add_value(self, weight: float, value: T) -> None:
        if weight < 0 or math.isnan(weight):
            raise ValueError(f"weight must be >= 0, got {weight}")
        self._choices.append((weight, value))

    def __iter__(self) -> Iterator[tuple[float, T]]:
        return iter(self._choices)

    def next_value(self) -> T:
        total = math.fsum(weight for weight, _ in self._choices)
        if total <= 0:
            raise ValueError("discrete generator has no value with a positive weight")
        draw = self._rng.random()
        for weight, value in self._choices:
            share = weight / total
            if draw < share:
                return value
            draw -= share
        # Rounding can leave a sliver past the last share.
        return self._choices[-1][1]
