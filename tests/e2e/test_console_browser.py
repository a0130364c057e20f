"""The console in a real browser: Playwright drives Debian's chromium (headless)
against a real ``pulse api``, dataflow and dispatcher on the real Kafka and Redis.

One stack and one browser for the module, the tests in the order a person
would go: refused without a key, the overview with live numbers, a mistake
pinned to its line, a dry-run, a deploy that the overview then shows as the
active version, a customer found with profile and timeline. Each page's
screenshot goes to docs/img/ (the README shows them).
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pulse.rules_files import copy_with_waits
from pulse.settings import Settings, load_settings
from tests.helpers import PulseProcess, isolated_settings, produce_events, wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium; scripts/bootstrap does)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")

IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
WRITE, READ, ADMIN = "console-write-key", "console-read-key", "console-admin-key"
CUSTOMER = "c-console-1"
NO_RATE = "\u2013"  # what a card shows before its second reading


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def stack(live_services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    tmp = tmp_path_factory.mktemp("console")
    rules = copy_with_waits(
        load_settings(environ={}).rules_dir, tmp / "rules", {"abandoned_cart": "2s"}
    )
    with isolated_settings(live_services, tmp / "recovery") as isolated:
        settings = load_settings(
            environ=isolated.as_environ(),
            api_port=_port(),
            dispatch_metrics_port=_port(),
            write_keys=(WRITE,),
            read_keys=(READ,),
            admin_keys=(ADMIN,),
            rules_dir=str(rules),
            rules_activation_s=1.0,
        )
        procs = [
            PulseProcess(settings, tmp, "dataflow", "run"),
            PulseProcess(settings, tmp, "api", "api"),
            PulseProcess(settings, tmp, "dispatcher", "dispatch"),
        ]
        try:
            import urllib.request

            def ready() -> bool:
                assert all(p.alive() for p in procs), [p.log_text()[-2000:] for p in procs]
                try:
                    with urllib.request.urlopen(f"{base(settings)}/readyz", timeout=2) as r:
                        return bool(r.status == 200)
                except OSError:
                    return False

            wait_for(ready, 60, "API ready")
            produce_events(settings, shopper_events())
            yield settings
        finally:
            for p in procs:
                p.stop()


def base(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


def shopper_events() -> list[dict[str, Any]]:
    """One known customer who identifies, consents, browses and leaves a cart,
    and some traffic from others so the numbers move."""
    now = dt.datetime.now(tz=dt.UTC)

    def at(seconds: float) -> str:
        return (now + dt.timedelta(seconds=seconds)).isoformat()

    events: list[dict[str, Any]] = [
        {
            "type": "identify",
            "event_id": "cc-1",
            "customer_id": CUSTOMER,
            "timestamp": at(-5),
            "traits": {"email": "ada@example.com", "first_name": "Ada"},
        },
        {
            "type": "consent_changed",
            "event_id": "cc-2",
            "customer_id": CUSTOMER,
            "timestamp": at(-4),
            "consent_channel": "email",
            "granted": True,
        },
        {
            "type": "product_view",
            "event_id": "cc-3",
            "customer_id": CUSTOMER,
            "timestamp": at(-3),
            "sku": "sku-lamp",
            "category": "lighting",
        },
        {
            "type": "add_to_cart",
            "event_id": "cc-4",
            "customer_id": CUSTOMER,
            "timestamp": at(-2),
            "sku": "sku-lamp",
            "price": 49.0,
            "quantity": 1,
        },
    ]
    return events + more_views(200)


def more_views(n: int) -> list[dict[str, Any]]:
    stamp = dt.datetime.now(tz=dt.UTC).isoformat()
    return [
        {
            "type": "product_view",
            "event_id": f"cv-{time.time_ns()}-{i}",
            "customer_id": f"c-other-{i % 40}",
            "timestamp": stamp,
            "sku": f"sku-{i % 17}",
            "category": "garden",
        }
        for i in range(n)
    ]


def rate(page: Any, card: str) -> float:
    shown = page.inner_text(f"#{card}-rate").replace(",", "")
    return 0.0 if shown == NO_RATE else float(shown)


def counted(page: Any, card: str) -> int:
    """The total a card shows in brackets: "(1,234 on the topic)" -> 1234."""
    label = page.inner_text(f"#{card}-rate + .l")
    return int(label.split("(", 1)[1].split(" ", 1)[0].replace(",", ""))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield launched
        launched.close()


def signed_in(browser: Any, settings: Settings, key: str) -> Any:
    """A new browser context (own cookies) signed in with ``key``."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{base(settings)}/console/login")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base(settings)}/console")
    return page


def seen(page: Any, predicate: Any, timeout_s: float, what: str) -> None:
    """``wait_for``, with what the page showed when it timed out."""
    try:
        wait_for(predicate, timeout_s, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the page showed:\n{page.inner_text('body')}") from None


def shot(page: Any, name: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMG / f"console-{name}.png"), full_page=True)


def test_without_a_key_or_with_a_write_key_the_console_refuses(
    stack: Settings, browser: Any
) -> None:
    page = browser.new_context().new_page()
    response = page.goto(f"{base(stack)}/console/rules")
    assert response.status == 401
    assert "needs an API key" in page.inner_text("#login-message")
    page.fill("#key", WRITE)
    page.click("button[type=submit]")
    assert "write key" in page.inner_text("#login-message")
    page.fill("#key", "not-a-key")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("#login-message")
    shot(page, "login")
    # A form posted without the session's CSRF token is refused.
    api = page.request.post(f"{base(stack)}/console/rules/abandoned_cart/check", form={"text": ""})
    assert api.status == 401


def test_overview_loads_with_live_numbers(stack: Settings, browser: Any) -> None:
    page = signed_in(browser, stack, READ)
    # Every event produced is on the topic and processed (and the outcome of
    # the one message sent, which comes back as an event).
    seen(
        page,
        lambda: counted(page, "events-in") >= 204 and counted(page, "processed") >= 204,
        30,
        "the overview to show the events in and processed",
    )
    # More traffic while the page is open: it updates itself (no reload) and
    # shows a rate above zero.
    first = page.inner_text("#read-at")
    produce_events(stack, more_views(100))
    seen(
        page,
        lambda: page.inner_text("#read-at") != first and counted(page, "processed") >= 304,
        20,
        "the page to show the new events processed, by itself",
    )
    assert rate(page, "processed") > 0 or rate(page, "events-in") > 0
    assert page.inner_text("#active-version") not in ("", "none")
    assert "dataflow" in page.inner_text("#lag")
    assert f"{stack.events_dlq_topic}\t0" in page.inner_text("#dead-letters")
    shot(page, "overview")
    page.goto(f"{base(stack)}/console/rules")
    assert "abandoned_cart" in page.inner_text("#rules")
    # The welcome message went out (the dispatcher's log channel): delivered 1, failed 0.
    welcome = page.locator("#rules tr", has_text="welcome").inner_text()
    assert "1 / 0" in welcome, welcome
    shot(page, "rules")


def test_a_rule_with_a_mistake_shows_the_error_at_its_line(stack: Settings, browser: Any) -> None:
    page = signed_in(browser, stack, READ)
    page.goto(f"{base(stack)}/console/rules/abandoned_cart")
    page.wait_for_selector("#check-ok")
    text = page.input_value("#text")
    lines = text.split("\n")
    bad = next(i for i, line in enumerate(lines) if line.strip() == "channel: email")
    lines[bad] = lines[bad].replace("email", "emial")
    page.fill("#text", "\n".join(lines))
    page.wait_for_selector("#check-problems")
    problem = page.inner_text("#check-problems")
    column = lines[bad].index("emial") + 1
    assert f"line {bad + 1}, column {column}" in problem, problem
    assert "emial" in problem
    assert page.inner_text("#gutter .err") == str(bad + 1)
    shot(page, "rule-error")


def test_a_dry_run_returns_a_report(stack: Settings, browser: Any) -> None:
    page = signed_in(browser, stack, READ)
    page.goto(f"{base(stack)}/console/rules/abandoned_cart")
    page.wait_for_selector("#check-ok")
    page.click("#dry-run")
    report = page.wait_for_selector("#dry-run-report", timeout=30_000)
    text = report.inner_text()
    assert "events of" in text and "Nothing was sent" in text
    assert "events of 41 customers" in text  # everything on the topic, replayed
    assert page.inner_text("#would-fire").isdigit()
    assert CUSTOMER in page.inner_text("#dry-run-report table:last-of-type")
    shot(page, "dry-run")


def test_a_read_key_cannot_deploy(stack: Settings, browser: Any) -> None:
    page = signed_in(browser, stack, READ)
    page.goto(f"{base(stack)}/console/rules/abandoned_cart")
    page.wait_for_selector("#check-ok")
    page.fill("#text", page.input_value("#text").replace("priority: 70", "priority: 71"))
    page.click("#review")
    assert "needs an admin key" in page.inner_text("#deploy-needs-admin")
    # Posting the deploy form anyway (with the session's CSRF token) is refused too.
    csrf = page.input_value("input[name=csrf]")
    answer = page.request.post(
        f"{base(stack)}/console/rules/abandoned_cart/deploy",
        form={"csrf": csrf, "text": "x", "base": "x"},
    )
    assert answer.status == 403
    assert "needs an admin key" in answer.text()


def test_a_deploy_switches_the_active_version_on_the_overview(
    stack: Settings, browser: Any
) -> None:
    page = signed_in(browser, stack, ADMIN)
    before = page.inner_text("#active-version")
    page.goto(f"{base(stack)}/console/rules/abandoned_cart")
    page.wait_for_selector("#check-ok")
    original = page.input_value("#text")
    # An invalid set is refused at review, with the problem at its line.
    page.fill("#text", original.replace("channel: email", "channel: emial"))
    page.wait_for_selector("#check-problems")
    page.click("#review")
    assert "cannot be deployed" in page.inner_text("#deploy-refused")
    # A valid change: the diff against the live version, then deploy.
    page.fill("#text", original.replace("priority: 70", "priority: 71"))
    page.wait_for_selector("#check-ok")
    page.click("#review")
    page.locator("#diff", has_text="+priority: 71").wait_for()
    diff = page.inner_text("#diff")
    assert "-priority: 70" in diff and "+priority: 71" in diff
    shot(page, "deploy-review")
    page.click("#deploy")
    deployed = page.inner_text("#deployed")
    version = deployed.split("Deployed version ")[1].split(":")[0].strip()
    assert version != before
    page.goto(f"{base(stack)}/console")
    wait_for(
        lambda: page.inner_text("#active-version") == version,
        30,
        f"the overview to show version {version} as active",
    )
    shot(page, "overview-after-deploy")


def test_a_customer_search_finds_the_profile_and_its_timeline(
    stack: Settings, browser: Any
) -> None:
    page = signed_in(browser, stack, READ)
    page.goto(f"{base(stack)}/console/customers")
    page.fill("#q", CUSTOMER)
    page.click("#search")
    page.wait_for_url(f"{base(stack)}/console/customers/{CUSTOMER}")
    assert page.inner_text("#customer-id") == CUSTOMER
    attributes = page.inner_text("#attributes")
    assert "ada@example.com" in attributes and "sku-lamp" in attributes
    timeline = page.inner_text("#timeline")
    for kind in ("identify", "consent_changed", "product_view", "add_to_cart"):
        assert kind in timeline, timeline
    wait_for(lambda: _has_decision(page), 20, "the abandoned-cart decision in the timeline")
    assert "Export and erase need an admin key" in page.inner_text("main")
    shot(page, "customer")
    page.goto(f"{base(stack)}/console/charts")
    page.wait_for_selector("#chart-events")
    shot(page, "charts")


def _has_decision(page: Any) -> bool:
    page.reload()
    return "abandoned_cart" in page.inner_text("#timeline")


def test_an_admin_erases_a_customer(stack: Settings, browser: Any) -> None:
    page = signed_in(browser, stack, ADMIN)
    page.goto(f"{base(stack)}/console/customers/c-other-1")
    page.fill("input[name=confirm]", "c-other-1")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#erase")
    assert "Erasure requested for c-other-1" in page.inner_text("#erased")
    time.sleep(0.2)
    page.goto(f"{base(stack)}/console/customers/c-other-1")
    assert "No profile" in page.inner_text("main")
