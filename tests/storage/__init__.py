"""Tests of consensus.storage against real SQLite files."""
