"""Bytes to typed events without ever raising: bad input becomes a DeadLetter value."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from engine.events import BaseEvent, Event

event_decoder: msgspec.json.Decoder[BaseEvent] = msgspec.json.Decoder(Event)  # type: ignore[arg-type]
_decoder = event_decoder
_encoder = msgspec.json.Encoder()


class DeadLetter(msgspec.Struct, frozen=True):
    """Input that could not become an event: the reason and the original bytes."""

    reason: str
    raw: bytes


def decode_event(raw: bytes | None, received_at: float) -> BaseEvent | DeadLetter:
    """Decode and validate one event; fills in the receive time when it has none."""
    if raw is None:
        return DeadLetter("empty record (no value)", b"")
    try:
        event: BaseEvent = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return DeadLetter(f"invalid event: {exc}", raw)
    except msgspec.DecodeError as exc:
        return DeadLetter(f"undecodable: {exc}", raw)
    except Exception as exc:  # msgspec guarantees little about exotic inputs
        return DeadLetter(f"undecodable: {type(exc).__name__}: {exc}", raw)
    if event.timestamp is None:
        event = msgspec.structs.replace(
            event, timestamp=datetime.fromtimestamp(received_at, tz=UTC)
        )
    return event


def encode_event(event: BaseEvent) -> bytes:
    return _encoder.encode(event)
