"""Control messages: what travels on ``<prefix>.control`` besides events.

Erasures (engine.privacy) and rule deployments share the topic so that both
take effect at one point of the stream for every worker; profiles handed
over by an alias of two known customers come back to the dataflow on it.
"""

from __future__ import annotations

import msgspec

from engine.privacy import EraseCustomer
from engine.profile import CustomerState


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


class CustomerMerged(
    msgspec.Struct, frozen=True, kw_only=True, tag="customer_merged", tag_field="type"
):
    """A profile on its way to the customer it was aliased into (engine/identity.py).

    Written by the dataflow itself: its customer states cannot reach each other
    within the flow, so a customer id aliased into another hands its profile
    over through this topic. ``customer_id`` receives it (the record's key);
    ``previous_id`` is whose it was, absorbed once however often it arrives;
    ``path`` lists the aliased ids it passed on the way, which breaks a cycle
    of aliases.
    """

    customer_id: str
    previous_id: str
    state: CustomerState
    path: tuple[str, ...] = ()


ControlMessage = EraseCustomer | RulesDeployed | CustomerMerged

_decode = msgspec.json.Decoder(ControlMessage)


def decode_control(raw: bytes) -> ControlMessage:
    """Raises msgspec.DecodeError / ValidationError with the field on bad input."""
    message: ControlMessage = _decode.decode(raw)
    return message


def encode_control(message: ControlMessage) -> bytes:
    return msgspec.json.encode(message)
