"""Applies a fixed command stream and prints each acknowledged applied index (run by
test_crash.py, which kills it with SIGKILL at random moments)."""

from __future__ import annotations

import sys

from consensus.types import GroupId
from shardb.statemachine import encode_write

from .helpers import FIRST, descriptor, entries, open_sm

SEED = FIRST - 1


def command(index: int) -> bytes:
    """Command 1 creates the counter row 0; even commands insert their own row; odd ones bump
    the counter, so a double apply or a skip shows in the rows. Command n is the entry at
    index SEED + n (the group is registered seeded)."""
    if index == 1:
        return encode_write("t", "INSERT INTO t(id, name, score) VALUES (0, 'c', 0)", (), 1)
    if index % 2 == 0:
        return encode_write("t", "INSERT INTO t(id, name) VALUES (?, 'v')", (index,), 1)
    return encode_write("t", "UPDATE t SET score = score + 1 WHERE id = 0", (), 1)


def main() -> None:
    path, total, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sm = open_sm(__import__("pathlib").Path(path), descriptor(1, None, None))
    # Re-deliver a few already-applied batches, as a core does after a restart.
    index = max(FIRST, int(sm.applied_index(GroupId(1))) - 3 * batch + 1)
    while index <= SEED + total:
        last = min(SEED + total, index + batch - 1)
        commands = (command(i - SEED) for i in range(index, last + 1))
        sm.apply(GroupId(1), entries(index, *commands))
        print("applied", int(sm.applied_index(GroupId(1))), flush=True)
        index = last + 1
    sm.close()


if __name__ == "__main__":
    main()
