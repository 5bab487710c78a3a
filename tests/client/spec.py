"""The error-code table of the SQL client protocol, written out from the protocol document
(not imported from the client) so that the tests check the client against the spec."""

from __future__ import annotations

from shardb.client.errors import (
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

SPEC_ERROR_CLASSES: dict[str, type[Error]] = {
    "syntax_error": ProgrammingError,
    "unknown_table": ProgrammingError,
    "unknown_index": ProgrammingError,
    "parameter_error": ProgrammingError,
    "non_deterministic": ProgrammingError,
    "unsupported": NotSupportedError,
    "sql_error": OperationalError,
    "constraint": IntegrityError,
    "data_error": DataError,
    "unavailable": OperationalError,
    "timeout": OperationalError,
    "unknown_outcome": OperationalError,
    "partial": OperationalError,
    "bad_request": InterfaceError,
    "overloaded": OperationalError,
    "internal": InternalError,
}
