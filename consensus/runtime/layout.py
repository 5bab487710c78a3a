"""Files in a node's data dir (``shardb node start --data-dir``)."""

from typing import Final

LOG_FILE: Final = "log.db"
"""The consensus log, hard state, snapshots and group registry of every group on the node."""
DATA_FILE: Final = "data.db"
"""The state machine's user data."""
PID_FILE: Final = "node.pid"
"""The running process's pid, held under an exclusive flock."""
