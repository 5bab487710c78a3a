"""One conformance suite for every consensus backend (see harness.py)."""
