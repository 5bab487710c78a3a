"""The SQL ops a node serves on its client port (protocol: docs/client-protocol.md).

``sql`` runs one statement through the node's gateway; ``meta`` returns the cluster view
(nodes, ranges with their leaders, tables) for tools such as the shell and ``shardb cluster``.
Arguments are validated before any work starts: a malformed request closes the connection
(``BadRequest``), a bad statement is an error reply and changes nothing.
"""

from __future__ import annotations

from typing import Any, Final

from consensus.runtime.server import BadRequest, OpHandler, arg
from shardb.server.gateway import Consistency, Gateway, Trace

DEFAULT_TIMEOUT_MS: Final = 10_000
MAX_TIMEOUT_MS: Final = 120_000
MAX_PARAMS: Final = 10_000
_PARAM_TYPES: Final = (type(None), int, float, str, bytes)


def _params(args: dict[str, Any]) -> list[Any]:
    params = args.get("params", [])
    if not isinstance(params, list):
        raise BadRequest("params must be a list")
    if len(params) > MAX_PARAMS:
        raise BadRequest(f"at most {MAX_PARAMS} parameters per statement")
    for value in params:
        if isinstance(value, bool) or not isinstance(value, _PARAM_TYPES):
            raise BadRequest(f"parameter of type {type(value).__name__} is not supported")
    return params


def _consistency(args: dict[str, Any]) -> Consistency:
    raw = args.get("consistency", Consistency.LINEARIZABLE.value)
    try:
        return Consistency(raw)
    except ValueError:
        names = ", ".join(c.value for c in Consistency)
        raise BadRequest(f"consistency must be one of {names}") from None


def _timeout_s(args: dict[str, Any]) -> float:
    raw = args.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
        raise BadRequest("timeout_ms must be a positive integer")
    return min(raw, MAX_TIMEOUT_MS) / 1000.0


def sql_ops(gateway: Gateway) -> dict[str, OpHandler]:
    def sql(args: dict[str, Any]) -> Any:
        text = arg(args, "sql", str)
        params = _params(args)
        consistency = _consistency(args)
        timeout = _timeout_s(args)
        want_trace = bool(args.get("trace", False))
        staleness = args.get("max_staleness_ms")
        if staleness is not None and (
            not isinstance(staleness, int) or isinstance(staleness, bool) or staleness < 0
        ):
            raise BadRequest("max_staleness_ms must be a non-negative integer")

        async def run() -> dict[str, Any]:
            trace = Trace()
            answer = await gateway.execute(
                text,
                params,
                consistency=consistency,
                timeout=timeout,
                trace=trace,
                max_staleness_ms=staleness,
            )
            result = answer.as_dict()
            if want_trace:
                result["trace"] = trace.as_dict()
            return result

        return run

    def meta(args: dict[str, Any]) -> Any:
        del args

        async def run() -> dict[str, Any]:
            return await gateway.describe(timeout=_timeout_s({}))

        return run

    return {"sql": sql, "meta": meta}
