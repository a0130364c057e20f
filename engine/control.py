"""Control messages: what travels on ``<prefix>.control`` besides events.

Erasures (engine.privacy) and rule deployments share the topic so that both
take effect at one point of the stream for every worker.
"""

from __future__ import annotations

import msgspec

from engine.privacy import EraseCustomer


class RulesDeployed(
    msgspec.Struct, frozen=True, kw_only=True, tag="rules_deployed", tag_field="type"
):
    """A rule-set version, whole: every file's text, so any process can compile it.

    It applies to events (and due actions) from ``effective_at`` (event time)
    on; ``pulse rules deploy`` sets that a little after publishing so every
    worker has it before the stream gets there.
    """

    version: str
    effective_at: float
    deployed_at: float
    files: dict[str, str]  # file name -> text (rules and policy.yaml)
    deployed_by: str = ""
    note: str = ""  # e.g. "rollback from 3f2a... to 9c1e..."


ControlMessage = EraseCustomer | RulesDeployed

_decode = msgspec.json.Decoder(ControlMessage)


def decode_control(raw: bytes) -> ControlMessage:
    """Raises msgspec.DecodeError / ValidationError with the field on bad input."""
    message: ControlMessage = _decode.decode(raw)
    return message


def encode_control(message: ControlMessage) -> bytes:
    return msgspec.json.encode(message)
