"""The SQL shell: a prompt_toolkit REPL, a script runner and result formatting.

Typical use by ``shardb sql``::

    code = trio.run(run_script, session, text, sys.stdout, sys.stderr)   # -e / -f / piped
    code = trio.run(run_shell, session)                                  # a terminal

``session`` is anything that satisfies :class:`Session` (the async client behind an adapter).
"""

from shardb.shell.commands import Command, CommandError, help_text, is_command, parse_command
from shardb.shell.executor import Executor, format_trace, input_complete, statement_complete
from shardb.shell.format import FormatOptions, OutputMode, format_value, render_result
from shardb.shell.repl import (
    DEFAULT_HISTORY_PATH,
    Shell,
    ShellCompleter,
    make_prompt_session,
    prompt_text,
    run_script,
    run_shell,
    schema_words,
)
from shardb.shell.session import (
    CONSISTENCY_LEVELS,
    Crash,
    ExitCode,
    FaultCommand,
    FaultsDisabled,
    Heal,
    Isolate,
    Partition,
    Restart,
    Rows,
    Session,
    ShellError,
    Skew,
    Slow,
    StatementResult,
    classify_error,
)

__all__ = [
    "CONSISTENCY_LEVELS",
    "DEFAULT_HISTORY_PATH",
    "Command",
    "CommandError",
    "Crash",
    "Executor",
    "ExitCode",
    "FaultCommand",
    "FaultsDisabled",
    "FormatOptions",
    "Heal",
    "Isolate",
    "OutputMode",
    "Partition",
    "Restart",
    "Rows",
    "Session",
    "Shell",
    "ShellCompleter",
    "ShellError",
    "Skew",
    "Slow",
    "StatementResult",
    "classify_error",
    "format_trace",
    "format_value",
    "help_text",
    "input_complete",
    "is_command",
    "make_prompt_session",
    "parse_command",
    "prompt_text",
    "render_result",
    "run_script",
    "run_shell",
    "schema_words",
    "statement_complete",
]
