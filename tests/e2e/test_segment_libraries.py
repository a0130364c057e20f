"""Segment's Node and Python libraries, unchanged, against the whole stack.

Each library sends every call type (track, identify, page, screen, group,
alias), including an alias of two known customers, to the API; the dataflow
builds the profiles; the profile API must serve what the calls said.
`@segment/analytics-node` comes from npm (tests/segment_node, installed by
scripts/bootstrap); `segment-analytics-python` from PyPI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from segment.analytics import Client

from pulse.settings import Settings
from tests.e2e.conftest import WRITE_KEY, get
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).resolve().parent.parent / "segment_node"


def _calls(p: str) -> list[tuple[str, dict[str, Any]]]:
    """Every call type, as (method, fields in the Node library's names)."""
    return [
        ("page", {"anonymousId": f"{p}-anon", "name": "Home", "properties": {"url": "https://x/"}}),
        (
            "identify",
            {
                "userId": f"{p}-ann",
                "anonymousId": f"{p}-anon",
                "traits": {"email": f"{p}@example.com", "firstName": "Ann"},
            },
        ),
        (
            "track",
            {
                "userId": f"{p}-ann",
                "event": "Product Viewed",
                "properties": {"product_id": "P-1", "category": "shoes", "price": 59.9},
            },
        ),
        ("screen", {"userId": f"{p}-ann", "name": "Basket"}),
        (
            "group",
            {
                "userId": f"{p}-ann",
                "groupId": f"{p}-acme",
                "traits": {"plan": "enterprise", "employees": 420},
            },
        ),
        (
            "track",
            {
                "userId": f"{p}-old",
                "event": "Order Completed",
                "properties": {"order_id": f"{p}-o1", "total": 120.0},
            },
        ),
        ("alias", {"userId": f"{p}-ann", "previousId": f"{p}-old"}),
    ]


def _send_with_node(settings: Settings, tmp_path: Path, calls: list[tuple[str, Any]]) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@segment" / "analytics-node").is_dir():
        pytest.fail("Segment's Node library is missing: run scripts/bootstrap")
    script = tmp_path / "calls.json"
    script.write_text(json.dumps([{"method": m, "args": a} for m, a in calls]))
    host = f"http://{settings.api_host}:{settings.api_port}"
    done = subprocess.run(
        [node, str(NODE_DIR / "send.mjs"), host, WRITE_KEY, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == [] and set(report["statuses"]) == {200}


def _send_with_python(settings: Settings, calls: list[tuple[str, Any]]) -> None:
    errors: list[Exception] = []
    client = Client(
        WRITE_KEY,
        host=f"http://{settings.api_host}:{settings.api_port}",
        on_error=lambda error, _batch: errors.append(error),
        max_retries=0,
    )
    for method, a in calls:
        if method == "page":
            client.page(anonymous_id=a["anonymousId"], name=a["name"], properties=a["properties"])
        elif method == "identify":
            client.identify(a["userId"], a["traits"], anonymous_id=a["anonymousId"])
        elif method == "track":
            client.track(a["userId"], a["event"], a["properties"])
        elif method == "screen":
            client.screen(a["userId"], name=a["name"])
        elif method == "group":
            client.group(a["userId"], a["groupId"], a["traits"])
        elif method == "alias":
            client.alias(a["previousId"], a["userId"])
    client.flush()
    client.join()
    assert errors == []


def _profile(settings: Settings, customer: str) -> tuple[int, Any]:
    return get(settings, f"/v1/customers/{customer}/profile")


def _check_profiles(settings: Settings, p: str) -> None:
    expected_counts = {
        "page_view": 2,  # the anonymous page, merged on identify, and the screen
        "identify": 1,
        "product_view": 1,
        "group": 1,
        "order_placed": 1,  # the previous customer's, merged by the alias
        "alias": 1,
    }

    def settled() -> bool:
        status, body = _profile(settings, f"{p}-ann")
        return status == 200 and body["event_counts"] == expected_counts

    wait_for(settled, 90, f"{p}-ann's profile with every call")
    status, profile = _profile(settings, f"{p}-ann")
    assert status == 200
    assert profile["events_total"] == 7
    assert profile["traits"] == {"email": f"{p}@example.com", "first_name": "Ann"}
    assert profile["recently_viewed"] == ["P-1"]
    assert profile["account"]["id"] == f"{p}-acme"
    assert profile["account"]["traits"] == {"plan": "enterprise", "employees": 420}
    assert f"account:{p}-acme" in profile["segments"]
    assert (profile["orders"], profile["revenue"]) == (1, 120.0)
    assert profile["loyalty_points"] > 0
    assert set(profile["anonymous_ids"]) == {f"{p}-anon", f"{p}-old"}
    # The previous customer's own profile is gone: it lives on in the new one.
    wait_for(lambda: _profile(settings, f"{p}-old")[0] == 404, 30, f"{p}-old merged away")


def test_segments_node_library_reaches_the_profile(stack: Settings, tmp_path: Path) -> None:
    _send_with_node(stack, tmp_path, _calls("node"))
    _check_profiles(stack, "node")


def test_segments_python_library_reaches_the_profile(stack: Settings) -> None:
    _send_with_python(stack, _calls("py"))
    _check_profiles(stack, "py")
