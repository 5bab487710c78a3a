"""Dies in the middle of a split's transaction (run by test_split.py).

Opens the SQL state machine at argv[1], whose group 1 holds ``[None, None)`` and has applied
entries 1..argv[2], and applies the split at key 50 naming right group 7 as the next entry.
Storing the right group's record (after the parent's new bounds were written in the same
transaction) ends the process with ``os._exit``: no rollback, no close, like ``kill -9``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from consensus.types import GroupId

from .helpers import descriptor, entries, open_sm, split

EXIT_CODE = 17


def main() -> None:
    path, applied = Path(sys.argv[1]), int(sys.argv[2])
    sm = open_sm(path, descriptor(1, None, None))
    store = sm._store_group

    def store_then_die(group: Any) -> None:
        if group.descriptor.group_id == GroupId(7):
            os._exit(EXIT_CODE)
        store(group)

    sm._store_group = store_then_die  # type: ignore[method-assign]  # fault injection
    sm.apply(GroupId(1), entries(applied + 1, split(descriptor(1, None, None), 50, 7)))
    print("split applied without dying", flush=True)


if __name__ == "__main__":
    main()
