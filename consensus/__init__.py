"""Pure consensus cores (Raft, Multi-Paxos) behind one interface, plus their IO shell.

See ``consensus.api`` for the interface and docs/architecture.md for the layering.
"""
