"""``shardb demo`` end to end: real node processes, the sample data, the shell, the clean-up.

The interactive test drives the shell through a pseudo-terminal (stdlib ``pty``), so
prompt_toolkit sees a real terminal: multi-line input, history recall, a dot-command and Tab
completion are typed as keys.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.procs import env_for, node_pids, reap, shardb
from shardb.surface.dataset import ORDERS, PRODUCTS, demo_tables

pytestmark = pytest.mark.timeout(180)

_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\r")
UP = b"\x1b[A"
EXPECT_S = 60.0


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Path]:
    """The test's directory; any node left running under it is stopped, and reported."""
    yield tmp_path
    leftovers = reap(tmp_path)
    assert not leftovers, f"node processes outlived the command: {leftovers}"


def test_demo_execute_prints_the_row_count_and_cleans_up(sandbox: Path) -> None:
    """``demo -e`` runs non-interactively (CI): the sample data is there, split into several
    ranges, stdout carries only the result, and no process or temp dir is left behind."""
    done = shardb(
        sandbox,
        "demo",
        "--format",
        "csv",
        "-e",
        "SELECT count(*) FROM orders; SELECT count(*) FROM products",
        "-e",
        "SELECT count(*) FROM shardb_ranges WHERE table_name = 'orders'",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "count(*)",
        str(ORDERS),
        "count(*)",
        str(PRODUCTS),
        "count(*)",
        "3",
    ]
    assert "demo cluster ready: n1=127.0.0.1:" in done.stderr
    assert node_pids(sandbox) == []
    assert [p.name for p in sandbox.iterdir() if p.name.startswith("shardb-demo-")] == []


class Terminal:
    """A child process on a pseudo-terminal; ``expect`` waits for text on its screen."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        master, slave = os.openpty()
        # A wide screen keeps rich from folding result tables into vertical records.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.screen = b""
        self.seen = 0

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def _read(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.screen += _ANSI.sub(b"", data)
        return True

    def expect(self, pattern: bytes, timeout_s: float = EXPECT_S) -> bytes:
        """Wait until ``pattern`` (a regex) shows after the previous match; return the text
        up to and including it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while True:
            match = regex.search(self.screen, self.seen)
            if match is not None:
                text = self.screen[self.seen : match.end()]
                self.seen = match.end()
                return text
            remaining = deadline - time.monotonic()
            alive = remaining > 0 and self._read(min(remaining, 0.5))
            if not alive and regex.search(self.screen, self.seen) is None:
                tail = self.screen[-3000:].decode(errors="replace")
                raise AssertionError(f"never saw {pattern!r}; screen ends with:\n{tail}")

    def wait(self, timeout_s: float = EXPECT_S) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            # SIGTERM first: the demo turns it into an interrupt and stops its nodes.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        os.close(self.master)


def _orders_of(customer: str) -> int:
    orders = next(t for t in demo_tables() if t.name == "orders")
    return sum(1 for row in orders.rows if row[2] == customer)


PROMPT = rb"shardb 127\.0\.0\.1:\d+ raft/linearizable>"


def test_interactive_demo_shell_through_a_terminal(sandbox: Path) -> None:
    """Typed at a real terminal: Enter inside a statement continues it on a new line; Up
    recalls earlier input from history; a dot-command runs on Enter; Tab completes a table
    name from the cluster's schema; ``.quit`` ends the demo and it cleans up."""
    history = sandbox / "history"
    env = env_for(sandbox, {"TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"})
    term = Terminal(
        [sys.executable, "-m", "shardb.cli", "demo", "--history", str(history)], env, sandbox
    )
    try:
        term.expect(PROMPT)
        # Multi-line: no ';' yet, so Enter adds a line under a continuation prompt.
        term.send(b"SELECT count(*)\r")
        term.expect(rb"\.\.\.>")
        term.send(b"FROM orders;\r")
        assert b"2000" in term.expect(rb"\(1 row\)")
        term.expect(PROMPT)

        term.send(b".tables\r")
        listing = term.expect(rb"\(2 rows\)")
        assert b"orders" in listing and b"products" in listing
        term.expect(PROMPT)

        # Up twice: past ".tables" to the two-line SELECT, then Enter runs it again.
        term.send(UP)
        term.expect(rb"\.tables")
        term.send(UP)
        term.expect(rb"FROM orders;")
        term.send(b"\r")
        assert f"{ORDERS}".encode() in term.expect(rb"\(1 row\)")
        term.expect(PROMPT)

        # Tab completes "cust" to the only name it can be, a column of the demo's schema
        # (else the statement would fail with "no such column").
        term.send(b"SELECT count(*) FROM orders WHERE cust\t")
        term.expect(rb"customer")
        term.send(b" = 'ada';\r")
        result = term.expect(rb"\(1 row\)|Error")
        assert f"{_orders_of('ada')}".encode() in result, result

        term.expect(PROMPT)
        term.send(b".quit\r")
        assert term.wait() == 0
    finally:
        term.close()
    assert "+SELECT count(*)\n+FROM orders;" in history.read_text()
    assert [p.name for p in sandbox.iterdir() if p.name.startswith("shardb-demo-")] == []
