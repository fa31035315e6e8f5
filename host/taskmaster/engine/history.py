"""Job history events: what each transition appends to a job's history list."""

from __future__ import annotations

from typing import Any

import msgspec

TRACEBACK_LIMIT = 8192
"""Characters of a traceback kept in a history event (the tail, where the error is)."""


class JobEvent(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One entry of a job's history."""

    type: str
    """submitted, started, progress, retry_scheduled, completed, failed, dead_lettered,
    replayed, retried, cancel_requested, cancelled, priority_changed, recovered, requeued."""
    at_ms: int = 0
    """Server time; stamped by the script that appends the event."""
    attempt: int | None = None
    worker: str | None = None
    plugin: str | None = None
    version: str | None = None
    message: str | None = None
    error: str | None = None
    traceback: str | None = None
    delay_s: float | None = None
    progress: float | None = None
    wait_ms: int | None = None
    """On `started`: from submission to this first attempt."""
    run_ms: int | None = None
    """On an attempt's outcome: how long it ran."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(JobEvent)


def event(type: str, **fields: Any) -> bytes:
    """An event to append; the store's script adds the time."""
    return _encoder.encode(JobEvent(type=type, **fields))


def wire(history_event: JobEvent, at_ms: int = 0) -> list[Any]:
    """An event as the batched scripts take it: the JSON to append and the fields the
    metrics count (see `tally` in scripts.py). at_ms 0: stamp it with the script's time."""
    if at_ms:  # stamped here: formatting a number costs the script far more
        history_event = msgspec.structs.replace(history_event, at_ms=at_ms)
    # As text: the scripts' msgpack decoder knows no binary type.
    return [_encoder.encode(history_event).decode(), history_event.type,
            history_event.version or "",
            -1 if history_event.wait_ms is None else history_event.wait_ms,
            -1 if history_event.run_ms is None else history_event.run_ms, 1 if at_ms else 0]


def decode_events(raw: list[bytes]) -> list[JobEvent]:
    return [_decoder.decode(item) for item in raw]


_list_decoder = msgspec.json.Decoder(list[JobEvent])


def decode_event_list(raw: bytes) -> list[JobEvent]:
    """A JSON array of events (one stream entry of several)."""
    return _list_decoder.decode(raw)


def error_summary(error: str | None) -> str | None:
    """The last line of a traceback ('ValueError: boom'), without the module path."""
    if not error:
        return error
    last = next((line for line in reversed(error.strip().splitlines()) if line.strip()), "")
    kind, sep, message = last.partition(": ")
    return f"{kind.rsplit('.', 1)[-1]}{sep}{message}"


def traceback_tail(error: str | None) -> str | None:
    if error is None or "Traceback" not in error:
        return None
    return error[-TRACEBACK_LIMIT:]
