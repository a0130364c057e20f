"""Request and response bodies as msgspec Structs, published in the OpenAPI document.

Responses are encoded from these Structs, so what the API sends is what the
document says; request bodies that Pulse validates with msgspec (events, the
Segment calls) are described by the very types that validate them.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from engine.events import Event
from engine.profile import ProfileView
from engine.rfm import Rfm
from engine.scores.serving import ServedScores

MAX_BATCH = 1000
"""Most events (or Segment calls) one batch request may carry."""

_REF = "#/components/schemas/{name}"


# Problems (RFC 9457) ---------------------------------------------------------


class FieldError(Struct, frozen=True):
    """One reason a request or event was refused: the field ('' for the whole) and why."""

    field: str
    reason: str


class Problem(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details; ``errors`` names each bad field and the reason."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = None


# Collector results -----------------------------------------------------------


class Accepted(Struct, frozen=True):
    """Kafka has the event."""

    status: Literal["accepted"]
    event_id: str


class ItemResult(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What happened to one item of a batch, by its position in the request.

    ``accepted``: Kafka acknowledged it. ``rejected``: invalid, see ``errors``;
    do not resend it unchanged. ``unacknowledged``: Kafka did not confirm it in
    time; resend it (a repeated event id is dropped, so resending is safe).
    """

    index: int
    status: Literal["accepted", "rejected", "unacknowledged"]
    event_id: str | None = None
    errors: list[FieldError] | None = None


class BatchAccepted(Struct, frozen=True, kw_only=True):
    """Every valid item is on Kafka; invalid ones are listed with their errors."""

    accepted: int
    rejected: int
    results: list[ItemResult]


class BatchUnavailable(Problem, frozen=True, kw_only=True):
    """Kafka did not acknowledge some valid items: only those marked ``accepted`` are stored."""

    accepted: int
    rejected: int
    unacknowledged: int
    results: list[ItemResult]


class SegmentAccepted(Struct, frozen=True):
    """Segment's answer (``success``) plus the id of the stored event."""

    success: bool
    event_id: str


class SegmentBatchAccepted(BatchAccepted, frozen=True, kw_only=True):
    success: bool


# Reads -----------------------------------------------------------------------


class Recommendation(Struct, frozen=True, kw_only=True):
    sku: str
    score: float  # the blended evidence; comparable within one answer only
    # The evidence that weighed most (engine/recs/ranker.py EVIDENCE).
    reason: Literal["bought_before", "viewed", "similar", "category", "popular", "trending"]
    category: str | None


class Recommendations(Struct, frozen=True, kw_only=True):
    customer_id: str
    context: str
    items: list[Recommendation]
    strategy: Literal["personalised", "trending"]  # trending: nothing known of the customer


class SimilarItem(Struct, frozen=True, kw_only=True):
    sku: str
    score: float  # a share of the best related item's weight, in (0, 1]
    category: str | None


class SimilarItems(Struct, frozen=True, kw_only=True):
    sku: str
    items: list[SimilarItem]
    strategy: Literal["related", "popular in category", "popular"]


class NextAction(Struct, frozen=True, kw_only=True):
    """What to show the customer now (docs/next-best-action.md). Without a live
    decision (none made, or its window is over, or an unknown customer): the
    control action, with no decision id."""

    customer_id: str
    action: str
    decision_id: str | None  # for POST /v1/decisions/{decision_id}/reward
    params: dict[str, Any]  # the action's params from actions.yaml (percent: 10, ...)
    decided_at: float | None  # event time of the decision, epoch seconds
    expires_at: float | None  # rewards count, and the decision stands, until then


class DecisionReward(Struct, frozen=True, forbid_unknown_fields=True):
    """An explicit reward for a decision: how much the website's goal was met, 0 to 1."""

    value: Annotated[float, Meta(ge=0.0, le=1.0)] = 1.0


class RewardAccepted(Struct, frozen=True, kw_only=True):
    """The reward is on the events topic, as a ``decision_reward`` custom event
    with a fixed id: sending it again is a duplicate the engine drops."""

    status: Literal["accepted"]
    decision_id: str
    event_id: str
    value: float


# Requests --------------------------------------------------------------------


class EventBatch(Struct, frozen=True):
    """Up to 1,000 events; each is validated on its own and reported by index."""

    events: Annotated[list[Event], Meta(max_length=MAX_BATCH)]  # type: ignore[valid-type]


SegmentId = Annotated[str, Meta(min_length=1, max_length=256)]
# RFC 3339; as Segment's servers take it, also without zero padding.
# api/segment.py parses it and names the field when it is not a time.
SegmentTime = Annotated[
    str,
    Meta(
        max_length=64,
        examples=["2012-12-02T00:30:08.276Z"],
        description="RFC 3339 (zero padding optional)",
        extra_json_schema={"format": "date-time"},
    ),
]


class SegmentCall(Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields common to Segment's calls (Segment Spec). Unknown fields are ignored.

    Without ``messageId`` the event id is derived from the call's content
    (docs/segment.md); with ``sentAt`` the time is corrected for the client's
    clock skew: received - (sentAt - timestamp)."""

    messageId: SegmentId | None = None
    userId: SegmentId | None = None
    anonymousId: SegmentId | None = None
    timestamp: SegmentTime | None = None
    originalTimestamp: SegmentTime | None = None
    sentAt: SegmentTime | None = None
    context: dict[str, Any] = {}
    integrations: dict[str, Any] = {}
    writeKey: str | None = None


class SegmentTrack(SegmentCall, frozen=True, kw_only=True, tag="track"):
    event: Annotated[str, Meta(min_length=1, max_length=256)]
    properties: dict[str, Any] = {}


class SegmentIdentify(SegmentCall, frozen=True, kw_only=True, tag="identify"):
    traits: dict[str, Any] = {}


class SegmentPage(SegmentCall, frozen=True, kw_only=True, tag="page"):
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] = {}


class SegmentScreen(SegmentCall, frozen=True, kw_only=True, tag="screen"):
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] = {}


class SegmentAlias(SegmentCall, frozen=True, kw_only=True, tag="alias"):
    """``previousId`` (an anonymous id or another user id) is ``userId`` from now on."""

    userId: SegmentId
    previousId: SegmentId


class SegmentGroup(SegmentCall, frozen=True, kw_only=True, tag="group"):
    """The user belongs to the account ``groupId``, with its traits."""

    groupId: SegmentId | int
    traits: dict[str, Any] = {}


SegmentMessage = (
    SegmentTrack | SegmentIdentify | SegmentPage | SegmentScreen | SegmentAlias | SegmentGroup
)


class SegmentBatch(Struct, frozen=True, kw_only=True):
    """Segment's batch: ``context`` and ``integrations`` here apply to every call."""

    batch: Annotated[list[SegmentMessage], Meta(max_length=MAX_BATCH)]
    context: dict[str, Any] = {}
    integrations: dict[str, Any] = {}
    writeKey: str | None = None
    sentAt: SegmentTime | None = None


SEGMENT_CALLS: dict[str, type[SegmentCall]] = {
    "track": SegmentTrack,
    "identify": SegmentIdentify,
    "page": SegmentPage,
    "screen": SegmentScreen,
    "alias": SegmentAlias,
    "group": SegmentGroup,
}


# Profiles ----------------------------------------------------------------------


class Profile(ProfileView, kw_only=True):
    """The served profile plus what depends on the clock, computed at read time."""

    rfm: Rfm
    # Learned online (docs/scores.md); null for an anonymous profile or with scores off.
    scores: ServedScores | None = None


# Privacy -----------------------------------------------------------------------


class ErasureAccepted(Struct, frozen=True):
    """The erasure is on the control topic; the dataflow applies it within moments."""

    status: Literal["erasure requested"]
    customer_id: str
    request_id: str
    anonymous_ids: list[str]


class InboxMessage(Struct, frozen=True, kw_only=True):
    """One in-app message: what the rule's action put in its payload."""

    trigger_id: str
    rule_id: str
    template: str
    payload: dict[str, Any]
    fired_at: float  # when the rule fired (event time, epoch seconds)


class CustomerMatches(Struct, frozen=True, kw_only=True):
    """The customers whose profile holds the e-mail address asked for (usually one)."""

    email: str
    customer_ids: list[str]


class Inbox(Struct, frozen=True, kw_only=True):
    """A customer's in-app messages, newest first (at most the newest 100)."""

    customer_id: str
    messages: list[InboxMessage]


class CustomerExport(Struct, frozen=True, kw_only=True):
    """Everything Pulse serves about a customer (right of access)."""

    customer_id: str
    exported_at: datetime
    profile: ProfileView | None
    segments: list[str]
    inbox: list[InboxMessage]
    redis_keys: list[str]


# The OpenAPI document --------------------------------------------------------


_INTEGERS = {"minimum": -(2**63), "maximum": 2**64 - 1}  # what msgspec decodes into an int
_IDS = (("customer_id", "anonymous_id"), ("userId", "anonymousId"))


def _document_checks(component: dict[str, Any]) -> None:
    """Say in the document what validation enforces beyond the Structs' types:
    one of the two ids, event timestamps with an offset, 64-bit integers."""
    properties = component.get("properties", {})
    for known, anonymous in _IDS:
        if known in properties and anonymous in properties:
            component["anyOf"] = [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in (known, anonymous)
            ]
    if "event_id" in properties and "timestamp" in properties:
        for branch in properties["timestamp"].get("anyOf", []):
            if branch.get("type") == "string":
                branch["format"] = "date-time"
    _bound_integers(component)


def _bound_integers(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for key, value in _INTEGERS.items():
                node.setdefault(key, value)
        for value in node.values():
            _bound_integers(value)
    elif isinstance(node, list):
        for value in node:
            _bound_integers(value)


# Rules --------------------------------------------------------------------------


class RulesToValidate(Struct, frozen=True, forbid_unknown_fields=True):
    """Rule files to check: file name -> YAML text (a rule, or policy.yaml).

    They are checked together with the other files of the API's rule directory
    (a posted file replaces the one of the same name) unless ``alone`` is true.
    """

    files: Annotated[dict[str, str], Meta(min_length=1, max_length=500)]
    alone: bool = False


class RuleProblem(Struct, frozen=True):
    file: str
    line: int
    column: int
    message: str
    text: str  # "file:line:col: message"


class RulesValidation(Struct, frozen=True, kw_only=True):
    """``valid`` false lists every problem; true gives the version the set would deploy as."""

    valid: bool
    version: str | None
    rules: int  # enabled rules in the set
    problems: list[RuleProblem]


def _components() -> dict[str, Any]:
    types: list[Any] = [
        Event,
        EventBatch,
        Problem,
        Accepted,
        BatchAccepted,
        BatchUnavailable,
        SegmentAccepted,
        SegmentBatchAccepted,
        SegmentBatch,
        *SEGMENT_CALLS.values(),
        ProfileView,
        Profile,
        Recommendations,
        SimilarItems,
        NextAction,
        DecisionReward,
        RewardAccepted,
        ErasureAccepted,
        CustomerExport,
        Inbox,
        CustomerMatches,
        RulesToValidate,
        RulesValidation,
    ]
    (event, *_), components = msgspec.json.schema_components(types, ref_template=_REF)
    components["Event"] = event  # the tagged union: anyOf with a discriminator on "type"
    for component in components.values():
        _document_checks(component)
    # An alias needs both ids (engine.events.Alias), not one of them.
    alias = components["Alias"]
    alias.pop("anyOf", None)
    alias["required"] = sorted({*alias.get("required", []), "customer_id", "anonymous_id"})
    # The single-call endpoints (/v1/track, ...) imply the type: it is optional there.
    for call in SEGMENT_CALLS.values():
        single = copy.deepcopy(components[call.__name__])
        single["required"] = [name for name in single.get("required", []) if name != "type"]
        single["title"] = f"{single.get('title', call.__name__)}Call"
        components[f"{call.__name__}Call"] = single
    return components


COMPONENTS: dict[str, Any] = _components()


def ref(name: str) -> dict[str, str]:
    assert name in COMPONENTS, name
    return {"$ref": _REF.format(name=name)}


def json_body(component: str) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads a JSON body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref(component)}},
        }
    }


_PROBLEMS: dict[int, str] = {
    401: "No API key, or not a valid one (see WWW-Authenticate)",
    403: "The key is valid but may not use this endpoint (a write key on a read endpoint)",
    404: "Not found",
    413: "Body (or batch) over the size limit",
    415: "Unsupported Content-Encoding (identity and gzip are supported)",
    422: "Invalid request: each bad field and the reason",
    503: "Kafka did not acknowledge in time; retry after Retry-After seconds",
}


def ok(component: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(component)}}}


def problems(*statuses: int, unavailable: str = "Problem") -> dict[int | str, dict[str, Any]]:
    """Documented problem+json responses; ``unavailable`` is the 503 body's schema."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        schema = unavailable if status == 503 else "Problem"
        response: dict[str, Any] = {
            "description": _PROBLEMS[status],
            "content": {"application/problem+json": {"schema": ref(schema)}},
        }
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"required": True, "schema": {"type": "string"}}
            }
        if status == 503:
            response["headers"] = {"Retry-After": {"required": True, "schema": {"type": "string"}}}
        out[status] = response
    return out
