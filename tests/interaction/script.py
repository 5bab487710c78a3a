"""Parse and re-render interaction scripts (the datadriven file format).

A script is a sequence of blocks. Lines that are blank or start with ``#`` before a command
are kept verbatim (comments, separators). A block is one command line, a ``----`` line, and
the expected output: every line up to the next blank line or the end of the file. Output
never contains a blank line (the runner prints ``ok`` for a command with nothing to say), so
no second separator is needed.

``render(script, outputs)`` rebuilds the file with new outputs and everything else byte for
byte, so ``--rewrite`` produces a reviewable diff that touches only outputs, and
``render(parse(text), expected)`` == ``text`` for a well-formed file ending in a newline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SEPARATOR = "----"
XFAIL_PREFIX = "# xfail:"


class ScriptError(ValueError):
    """The script file is malformed."""


@dataclass
class Block:
    leading: list[str]
    """Blank and comment lines before the command, verbatim."""
    command: str
    line_no: int
    """1-based line number of the command, for error messages."""
    expected: list[str] = field(default_factory=list)


@dataclass
class Script:
    blocks: list[Block]
    trailing: list[str]
    """Blank and comment lines after the last block."""

    def xfail_reason(self) -> str | None:
        """A ``# xfail: <reason>`` line before the first command marks a known core bug."""
        head = self.blocks[0].leading if self.blocks else self.trailing
        for line in head:
            if line.startswith(XFAIL_PREFIX):
                return line[len(XFAIL_PREFIX) :].strip()
        return None


def _is_filler(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("#")


def parse(text: str) -> Script:
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _is_filler(line):
            pending.append(line)
            i += 1
            continue
        if line.strip() == SEPARATOR:
            raise ScriptError(f"line {i + 1}: '{SEPARATOR}' without a command before it")
        if i + 1 >= len(lines) or lines[i + 1].strip() != SEPARATOR:
            raise ScriptError(f"line {i + 1}: command {line!r} must be followed by '{SEPARATOR}'")
        block = Block(leading=pending, command=line, line_no=i + 1)
        pending = []
        i += 2
        while i < len(lines) and lines[i].strip():
            block.expected.append(lines[i])
            i += 1
        blocks.append(block)
    return Script(blocks=blocks, trailing=pending)


def render(script: Script, outputs: list[list[str]]) -> str:
    if len(outputs) != len(script.blocks):
        raise ScriptError(f"{len(outputs)} outputs for {len(script.blocks)} blocks")
    out: list[str] = []
    for block, output in zip(script.blocks, outputs, strict=True):
        if any(not line.strip() for line in output):
            raise ScriptError(f"line {block.line_no}: output contains a blank line")
        out.extend(block.leading)
        out.append(block.command)
        out.append(SEPARATOR)
        out.extend(output)
    out.extend(script.trailing)
    return "\n".join(out) + "\n"
