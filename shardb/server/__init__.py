"""The database node: gateway (SQL in, cluster answer out), the client-port SQL ops, and the
services that keep a node's replicas in line with the meta group (``service``)."""
