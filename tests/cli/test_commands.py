"""``shardb up / sql / cluster / down`` against real node processes, as separate commands.

One three-node cluster (started with ``up --allow-faults``) serves the module; the round trip
test starts and stops its own one-node cluster so that ``down`` is asserted, not assumed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.procs import node_pids, reap, shardb
from consensus.runtime.localhost import free_ports
from shardb.cluster import LocalCluster

pytestmark = pytest.mark.timeout(240)


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 3-node raft cluster with a table ``kv`` split at 100, started by ``shardb up``."""
    base = tmp_path_factory.mktemp("up")
    root = base / "data"
    try:
        done = shardb(base, "up", "--nodes", "3", "--data-dir", str(root), "--allow-faults")
        assert done.returncode == 0, done.stderr
        script = (
            "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL);\n"
            "ALTER TABLE kv SPLIT AT VALUES (100);\n"
            "INSERT INTO kv VALUES (1, 'one'), (2, 'two'), (150, 'many');\n"
        )
        done = shardb(base, "sql", "--data-dir", str(root), input=script)
        assert done.returncode == 0, done.stderr
        yield root
    finally:
        shardb(base, "down", "--data-dir", str(root))
        assert not reap(base), "shardb down left nodes running"


def test_up_sql_file_ranges_json_down_round_trip(tmp_path: Path) -> None:
    """``up`` reports each node's ports and pid; ``sql -f`` runs a script; ``cluster ranges
    --json`` is machine-readable and shows the split; ``down`` stops every node and keeps the
    data, so a second ``up`` resumes the same cluster with its rows."""
    root = tmp_path / "data"
    try:
        up = shardb(tmp_path, "up", "--nodes", "1", "--data-dir", str(root), "--json")
        assert up.returncode == 0, up.stderr
        nodes = json.loads(up.stdout)
        assert [n["node_id"] for n in nodes] == [1]
        assert nodes[0]["client"].startswith("127.0.0.1:") and _pid_alive(nodes[0]["pid"])
        assert f"shardb down --data-dir {root}" in up.stderr

        script = tmp_path / "setup.sql"
        script.write_text(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);\n"
            "INSERT INTO t VALUES (1, 'a'), (2, 'b'),\n  (30, 'c');\n"
            ".split t AT 10 20\n"
            "SELECT count(*) FROM t;\n"
        )
        run = shardb(tmp_path, "sql", "--data-dir", str(root), "-f", str(script), "-F", "csv")
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines()[-2:] == ["count(*)", "3"]

        ranges = shardb(tmp_path, "cluster", "ranges", "--table", "t", "--json", "-d", str(root))
        assert ranges.returncode == 0, ranges.stderr
        bounds = [(r["start_key"], r["end_key"]) for r in json.loads(ranges.stdout)]
        assert bounds == [(None, 10), (10, 20), (20, None)]

        # This cluster was started without --allow-faults: the nodes refuse, clearly.
        refused = shardb(tmp_path, "sql", "-d", str(root), "-e", ".isolate n1")
        assert refused.returncode == 1
        assert "refuses fault injection" in refused.stderr

        down = shardb(tmp_path, "down", "--data-dir", str(root), "--json")
        assert down.returncode == 0, down.stderr
        assert json.loads(down.stdout) == [{"stopped": 1}]
        assert not _pid_alive(nodes[0]["pid"])
        assert node_pids(tmp_path) == []

        again = shardb(tmp_path, "up", "--data-dir", str(root), "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)[0]["client"] == nodes[0]["client"]
        count = shardb(tmp_path, "sql", "-d", str(root), "-e", "SELECT count(*) FROM t", "--json")
        assert count.returncode == 0, count.stderr
        assert json.loads(count.stdout) == [{"count(*)": 3}]
    finally:
        shardb(tmp_path, "down", "--data-dir", str(root))
        assert not reap(tmp_path), "shardb down left nodes running"


def test_a_second_up_on_a_running_cluster_is_refused(cluster: Path, tmp_path: Path) -> None:
    done = shardb(tmp_path, "up", "--data-dir", str(cluster))
    assert done.returncode == 1
    assert "already running" in done.stderr


def test_bad_sql_exits_1_with_sqlites_error_on_stderr(cluster: Path, tmp_path: Path) -> None:
    """A failing statement: exit status 1, SQLite's own message on stderr, nothing on stdout,
    and the script stops there."""
    done = shardb(
        tmp_path,
        "sql",
        "-d",
        str(cluster),
        "-e",
        "INSERT INTO kv VALUES (1, 'again'); INSERT INTO kv VALUES (3, 'three')",
    )
    assert done.returncode == 1
    assert "UNIQUE constraint failed: kv.k" in done.stderr
    assert done.stdout == ""
    check = shardb(tmp_path, "sql", "-d", str(cluster), "-e", "SELECT v FROM kv WHERE k = 3")
    assert check.returncode == 0 and "(0 rows)" in check.stdout


def test_address_from_shardb_addr_and_format_from_the_config_file(
    cluster: Path, tmp_path: Path
) -> None:
    """With no ADDR, ``SHARDB_ADDR`` names the gateways; ``[client] format`` picks the output
    format; a flag overrides the file."""
    addresses = ",".join(LocalCluster.load(cluster).address_list)
    config = tmp_path / "shardb.toml"
    config.write_text('[client]\nformat = "tsv"\nconsistency = "lease"\n')
    env = {"SHARDB_ADDR": addresses, "SHARDB_CONFIG": str(config)}
    query = "SELECT k, v FROM kv WHERE k < 100 ORDER BY k"
    done = shardb(tmp_path, "sql", "-e", query, "-e", ".consistency", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["k\tv", "1\tone", "2\ttwo", "lease"]
    flagged = shardb(tmp_path, "sql", "--json", "-e", query, env=env)
    assert json.loads(flagged.stdout) == [{"k": 1, "v": "one"}, {"k": 2, "v": "two"}]


def test_cluster_status_nodes_and_split(cluster: Path, tmp_path: Path) -> None:
    """``status`` lists each group on each node with one leader per group; ``nodes`` counts
    replicas; ``split`` cuts a range and prints the table's ranges."""
    status = shardb(tmp_path, "cluster", "status", "-d", str(cluster), "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert sorted({r["node_id"] for r in rows}) == [1, 2, 3]
    groups = sorted({r["group"] for r in rows})
    assert len(groups) >= 3  # the meta group and kv's two ranges
    for group in groups:
        roles = [r["role"] for r in rows if r["group"] == group]
        assert len(roles) == 3 and roles.count("leader") <= 1

    nodes = shardb(tmp_path, "cluster", "nodes", "-d", str(cluster), "-F", "csv")
    assert nodes.returncode == 0, nodes.stderr
    lines = nodes.stdout.splitlines()
    assert lines[0] == "node_id,address,alive,replicas,leaders"
    assert [line.split(",")[2] for line in lines[1:]] == ["yes", "yes", "yes"]

    split = shardb(tmp_path, "cluster", "split", "kv", "50", "-d", str(cluster), "--json")
    assert split.returncode == 0, split.stderr
    bounds = [(r["start_key"], r["end_key"]) for r in json.loads(split.stdout)]
    assert (None, 50) in bounds and (50, 100) in bounds


def test_crash_and_restart_a_node_of_an_up_cluster(cluster: Path, tmp_path: Path) -> None:
    """``.crash`` kills the recorded process (SIGKILL); ``.restart`` starts it again and
    records its new pid next to the others', so ``down`` still stops every node."""
    before = LocalCluster.load(cluster).layout.pids
    crash = shardb(tmp_path, "sql", "-d", str(cluster), "-e", ".crash 3")
    assert crash.returncode == 0, crash.stderr
    assert "n3 killed" in crash.stderr
    assert not _pid_alive(before[3])
    assert 3 not in LocalCluster.load(cluster).layout.pids

    again = shardb(tmp_path, "sql", "-d", str(cluster), "-e", ".crash 3")
    assert again.returncode == 1 and "not running" in again.stderr

    restart = shardb(tmp_path, "sql", "-d", str(cluster), "-e", ".restart n3")
    assert restart.returncode == 0, restart.stderr
    after = LocalCluster.load(cluster).layout.pids
    assert after[1] == before[1] and after[2] == before[2]
    assert after[3] != before[3] and _pid_alive(after[3])


def test_unreachable_cluster_exits_3(tmp_path: Path) -> None:
    """Nothing listens at ADDR: exit status 3 (cluster unavailable), the address on stderr."""
    (port,) = free_ports(1)
    done = shardb(tmp_path, "sql", "-e", "SELECT 1", f"127.0.0.1:{port}")
    assert done.returncode == 3
    assert f"127.0.0.1:{port}" in done.stderr
    assert done.stdout == ""


def test_crash_without_a_local_cluster_is_refused(cluster: Path, tmp_path: Path) -> None:
    """A session opened on bare addresses has no processes to kill: a clear refusal."""
    addresses = ",".join(LocalCluster.load(cluster).address_list)
    done = shardb(tmp_path, "sql", "-e", ".crash 2", addresses)
    assert done.returncode == 1
    assert "needs the node processes" in done.stderr
    assert os.path.exists(cluster / "cluster.json")


def test_transfer_leader_moves_a_groups_leadership(cluster: Path, tmp_path: Path) -> None:
    """``cluster transfer-leader GROUP NODE`` asks the group's leader to hand over and reports
    once NODE leads; ``cluster status`` then shows NODE as the group's leader. (The meta group:
    range groups are moved back to their placement hint by the nodes' leader balancer.)"""
    status = json.loads(shardb(tmp_path, "cluster", "status", "-d", str(cluster), "--json").stdout)
    group = 1
    leader = next(r["node_id"] for r in status if r["group"] == group and r["role"] == "leader")
    target = 1 if leader != 1 else 2
    done = shardb(
        tmp_path, "cluster", "transfer-leader", str(group), str(target), "-d", str(cluster)
    )
    assert done.returncode == 0, done.stderr
    assert f"moved from node {leader} to node {target}" in done.stdout
    after = json.loads(shardb(tmp_path, "cluster", "status", "-d", str(cluster), "--json").stdout)
    assert {r["node_id"] for r in after if r["group"] == group and r["role"] == "leader"} == {
        target
    }


def test_network_faults_from_the_shell_reach_every_node_and_heal(
    cluster: Path, tmp_path: Path
) -> None:
    """``.partition``, ``.slow`` and ``.heal`` go to the nodes' fault op (with the auto-heal
    deadline); with one node cut off, the majority side elects leaders for every range and
    takes writes. (A write that reaches a leader in the very moment it is cut off can only
    end with an unknown outcome, so the write waits for the majority's leaders.)"""
    done = shardb(
        tmp_path,
        "sql",
        "-d",
        str(cluster),
        "--heal-after",
        "30",
        "-e",
        ".partition n3 | n1 n2",
        "-e",
        ".slow n1 5ms",
    )
    assert done.returncode == 0, done.stderr
    assert "partitioned n3 | n1 n2 (heals by itself in 30 s" in done.stderr
    kv_groups = {
        r["group_id"]
        for r in json.loads(
            shardb(tmp_path, "cluster", "ranges", "-d", str(cluster), "--json").stdout
        )
        if r["table"] == "kv"
    }
    deadline = time.monotonic() + 20
    while True:
        status = shardb(tmp_path, "cluster", "status", "-d", str(cluster), "--json")
        rows = json.loads(status.stdout) if status.returncode == 0 else []
        led = {r["group"] for r in rows if r["role"] == "leader" and r["node_id"] in (1, 2)}
        if kv_groups <= led or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert kv_groups <= led, rows
    done = shardb(
        tmp_path,
        "sql",
        "-d",
        str(cluster),
        "-e",
        "INSERT INTO kv VALUES (7, 'during the partition')",
        "-e",
        ".heal",
    )
    assert done.returncode == 0, done.stderr
    assert "healed n1, n2, n3" in done.stderr
    check = shardb(tmp_path, "sql", "-d", str(cluster), "-e", "SELECT v FROM kv WHERE k = 7")
    assert "during the partition" in check.stdout


def test_add_node_then_remove_node_moves_replicas_and_keeps_the_rows(
    cluster: Path, tmp_path: Path
) -> None:
    """``cluster add-node`` starts node 4 with ``--join`` (id reserved by the cluster); the
    placement driver gives it replicas; ``cluster remove-node 4`` drains it (its replicas move
    back, add before remove), forgets it and stops its process. The rows survive both moves.
    Runs last in this module: it changes the module cluster's membership and restores it."""

    def count() -> object:
        done = shardb(
            tmp_path, "sql", "-d", str(cluster), "-e", "SELECT count(*) FROM kv", "--json"
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    before = count()
    added = shardb(tmp_path, "cluster", "add-node", "--data-dir", str(cluster))
    assert added.returncode == 0, added.stderr
    assert "node 4 joined" in added.stdout
    layout = LocalCluster.load(cluster).layout
    assert [n.node_id for n in layout.nodes] == [1, 2, 3, 4]
    assert layout.nodes[-1].joined

    removed = shardb(
        tmp_path, "cluster", "remove-node", "4", "--data-dir", str(cluster), "--timeout", "180"
    )
    assert removed.returncode == 0, removed.stderr
    assert "node 4 drained" in removed.stdout
    assert [n.node_id for n in LocalCluster.load(cluster).layout.nodes] == [1, 2, 3]
    nodes = shardb(tmp_path, "cluster", "nodes", "-d", str(cluster), "--json")
    assert nodes.returncode == 0, nodes.stderr
    assert sorted(n["node_id"] for n in json.loads(nodes.stdout)) == [1, 2, 3]
    assert count() == before
