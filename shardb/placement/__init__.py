"""Placement: range descriptors, the range map, and (later) the placement driver."""

from shardb.placement.descriptors import Key, RangeDescriptor, RangeMap, RangeMapError

__all__ = ["Key", "RangeDescriptor", "RangeMap", "RangeMapError"]
