"""Local clusters of real node processes (``LocalCluster``) and waiting for them to serve."""

from shardb.cluster.local import (
    ClusterError,
    ClusterLayout,
    LocalCluster,
    NodeSpec,
    stop_recorded,
)
from shardb.cluster.ready import wait_ready

__all__ = [
    "ClusterError",
    "ClusterLayout",
    "LocalCluster",
    "NodeSpec",
    "stop_recorded",
    "wait_ready",
]
