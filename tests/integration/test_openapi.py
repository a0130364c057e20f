"""Schemathesis against every operation of the OpenAPI document, Kafka and Redis up.

Valid and invalid requests generated from the document must never get a 5xx,
and every answer must match the documented status codes, content types,
headers and schemas.

Schemathesis' own pytest decorator (``schema.parametrize``) does not run on
pytest 9.2 (it reads ``Item._nodeid``), so each operation is a parametrized
test that drives Schemathesis' Python API with Hypothesis directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import negative_data_rejection

from api.app import create_app
from pulse.settings import Settings, load_settings

pytestmark = pytest.mark.integration

READ_KEY = "schemathesis-read-key"
# A batch with one invalid item is still a valid request: that item is reported
# as rejected in a 200, so "invalid data must get a 4xx" does not apply to the
# items of a batch (a bad envelope is still a 422).
BATCHES = {"/v1/events/batch", "/v1/batch"}
# Free-text query parameters (category names): a query string cannot tell the
# boolean ``true`` or the number ``3`` that negative generation sends from the
# category names "true" and "3", which are valid. Everything else (no 5xx,
# answers as documented, positive cases accepted) is still checked.
FREE_TEXT_QUERY = {"/v1/customers/{customer_id}/recommendations"}
MAX_EXAMPLES = 100


def _operations() -> list[tuple[str, str]]:
    document = create_app(Settings(read_keys=(READ_KEY,))).openapi()
    return [(method.upper(), path) for path, ops in document["paths"].items() for method in ops]


def _integral_floats(value: Any) -> bool:
    """JSON Schema counts 3.0 as an integer; msgspec (strictly typed, as Pulse decodes
    events) does not, so valid-data cases holding one are left out: a known, documented
    difference, not one for this test to rediscover on every run."""
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_integral_floats(v) for v in value.values())
    if isinstance(value, list):
        return any(_integral_floats(v) for v in value)
    return False


@pytest.fixture
def api_schema(pulse_settings: Settings) -> Iterator[schemathesis.BaseSchema]:
    keyed = load_settings(
        environ=pulse_settings.as_environ(),
        write_keys=["schemathesis-write-key"],
        read_keys=[READ_KEY],
    )
    # Loading the document starts the app's lifespan (producer, Redis client).
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(keyed))
    asgi.shutdown_lifespans()


@pytest.mark.parametrize(("method", "path"), _operations())
def test_operation_conforms_to_the_document(
    api_schema: schemathesis.BaseSchema, method: str, path: str
) -> None:
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE).filter(
            lambda case: not _integral_floats(case.body)
        ),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    excluded: list[schemathesis.CheckFunction] = (
        [negative_data_rejection] if path in BATCHES | FREE_TEXT_QUERY else []
    )

    @given(case=cases)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {READ_KEY}"}, excluded_checks=excluded
        )

    check()
