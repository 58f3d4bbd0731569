"""The web console in Debian's headless Chromium, driven by Playwright, against `modelplane serve
--http-address` with auth on: signing in, browsing, a bad filter shown at its position, a canary started
and promoted while its bar moves without a reload, a text checked, charts read, a reader's view without
write controls, a gated canary's gates, verdicts and decision, and every page at laptop and phone width
(labelled controls, nothing wider than the screen, screenshots).

Screenshots go to a temporary folder, or to MODELPLANE_CONSOLE_SCREENSHOTS when set (`make
console-screenshots` writes the README's, in clients/console/screenshots/).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from playwright.sync_api import Browser, Page, expect, sync_playwright

from modelplane.server.store.urls import with_database
from modelplane.v1 import common_pb2, deployments_pb2, deployments_pb2_grpc, logs_pb2, logs_pb2_grpc
from tests.support.console_seed import (
    CANARY_ENDPOINT,
    DEPLOYMENT,
    MODEL,
    Metadata,
    seed,
    seed_deployment,
    seed_logs,
    seed_slot_events,
)
from tests.support.live_server import create_database, drop_database
from tests.support.loopback import free_port
from tests.support.processes import environment, launched, modelplane_command, wait_serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)",
)

LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
PAGES = ("models", "deployments", "guardrails", "logs")
# How long the page may take to show what a test waits for; generous on a shared 2-core machine, and
# never a performance bound.
WAIT_MS = 20_000
GRPC_TIMEOUT = 20.0


@dataclass(frozen=True)
class Console:
    """A running server with the seeded data: where its console is, and an admin's and a reader's token."""

    url: str
    grpc_target: str
    admin_token: str
    reader_token: str

    def metadata(self) -> Metadata:
        return (("authorization", f"Bearer {self.admin_token}"),)


def _create_token(database_url: str, cwd: Path, name: str, role: str) -> str:
    result = subprocess.run(
        [
            *modelplane_command(),
            "token",
            "create",
            "--name",
            name,
            "--role",
            role,
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def console(
    admin_url: str, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    """`modelplane serve` with auth and --http-address on a new database, seeded through the gRPC API."""
    directory = tmp_path_factory.mktemp("console")
    name = asyncio.run(create_database(admin_url, template_database))
    database_url = with_database(admin_url, name)
    try:
        admin = _create_token(database_url, directory, "alice", "admin")
        reader = _create_token(database_url, directory, "rita", "reader")
        grpc_port, http_port = free_port(), free_port()
        args = [
            "serve",
            "--address",
            f"127.0.0.1:{grpc_port}",
            "--http-address",
            f"127.0.0.1:{http_port}",
            "--database-url",
            database_url,
            "--workers",
            "1",
            "--shutdown-grace",
            "1",
        ]
        log_path = directory / "server.log"
        with launched(args, directory, log_path) as process:
            target = f"127.0.0.1:{grpc_port}"
            with grpc.insecure_channel(target) as channel:
                wait_serving(process, channel, log_path)
                seed(channel, admin)
            yield Console(f"http://127.0.0.1:{http_port}/", target, admin, reader)
    finally:
        asyncio.run(drop_database(admin_url, name))


@pytest.fixture(scope="module")
def browser(console: Console) -> Iterator[Browser]:
    """Debian's Chromium, headless; Playwright downloads no browser of its own. Started after the server
    (and stopped before it): Playwright's synchronous API holds an event loop while it runs, and the
    server's database is made and dropped with asyncio.run."""
    assert CHROMIUM is not None
    with sync_playwright() as playwright:
        launched_browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched_browser
        finally:
            launched_browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab at laptop width (its own sessionStorage), closed after the test."""
    context = browser.new_context(viewport=LAPTOP)  # type: ignore[arg-type]
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"the page threw: {errors}"


def sign_in(page: Page, console: Console, token: str, route: str = "") -> None:
    """Signs in with the keyboard alone: the token field has focus, Enter submits."""
    page.goto(console.url + (f"#/{route}" if route else ""))
    token_field = page.get_by_label("Bearer token")
    expect(token_field).to_be_focused()
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("navigation", name="Pages")).to_be_visible()


def api_error(console: Console, path: str) -> dict[str, object]:
    """The google.rpc.Status JSON of a GET that fails, asked of the HTTP API directly."""
    request = urllib.request.Request(
        console.url.rstrip("/") + path, headers={"Authorization": f"Bearer {console.admin_token}"}
    )
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(request, timeout=GRPC_TIMEOUT)
    status: dict[str, object] = json.loads(failure.value.read())
    return status


def test_sign_in_by_keyboard_and_browse_versions_aliases_and_their_history(
    page: Page, console: Console
) -> None:
    page.goto(console.url)
    page.keyboard.type("mp_not-a-token")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("UNAUTHENTICATED")
    sign_in(page, console, console.admin_token)
    expect(page.get_by_test_id("access")).to_have_text("read and write")
    versions = page.get_by_role("region", name="Model versions")
    row = versions.get_by_role("row").filter(has_text=f"{MODEL}/versions/2")
    expect(row).to_contain_text("128,000")
    expect(row).to_contain_text("10.00 USD")
    expect(row).to_contain_text("tool use")
    expect(row).to_contain_text("staging")

    history = page.get_by_role("region", name="Alias history (newest first)")
    newest = history.get_by_role("row").nth(1)
    expect(newest).to_contain_text("deployments/chat-prod created")
    moved = history.get_by_role("row").filter(has_text="more context for long stories")
    expect(moved).to_contain_text(f"{MODEL}/versions/1")
    expect(moved).to_contain_text(f"{MODEL}/versions/2")
    expect(moved).to_contain_text("alice")

    # The navigation is links: reachable with Tab and followed with Enter.
    link = page.get_by_role("link", name="Deployments")
    link.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_title("Deployments · modelplane")
    expect(page.get_by_test_id("slot-stable")).to_have_attribute("data-weight-bp", "10000")


def test_a_bad_filter_is_shown_at_the_position_the_server_names(page: Page, console: Console) -> None:
    bad = 'provider = "openai" AND context_windw >= 32000'
    status = api_error(console, "/v1/models/-/versions?" + urllib.parse.urlencode({"filter": bad}))
    details = status["details"]
    assert isinstance(details, list)
    [violation] = [v for d in details if "fieldViolations" in d for v in d["fieldViolations"]]
    assert violation["field"] == "filter"
    position = int(violation["description"].split(":")[0].removeprefix("position "))
    assert bad[position - 1 :].startswith("context_windw")

    sign_in(page, console, console.admin_token)
    search = page.get_by_role("search", name="Search model versions")
    search.get_by_label("Filter").fill(bad)
    search.get_by_label("Filter").press("Enter")
    error = page.locator(".filter-error")
    expect(error).to_have_attribute("data-position", str(position))
    expect(error).to_contain_text(f"position {position}")
    expect(error.locator("mark")).to_have_text("c")
    caret_line = error.locator("pre").inner_text().split("\n")[1]
    assert caret_line == " " * (position - 1) + "^"
    field = search.get_by_label("Filter")
    expect(field).to_have_attribute("aria-invalid", "true")
    assert field.evaluate("input => input.selectionStart") == position - 1

    # A good filter clears it and lists the matching versions only.
    field.fill("context_window >= 32000")
    field.press("Enter")
    versions = page.get_by_role("region", name="Model versions")
    expect(versions.get_by_role("row")).to_have_count(3)
    expect(versions.get_by_role("cell", name=f"{MODEL}/versions/1", exact=True)).to_have_count(0)


def test_which_model_would_i_get_names_why_each_candidate_failed(page: Page, console: Console) -> None:
    sign_in(page, console, console.admin_token)
    resolve = page.get_by_role("form", name="Which model would I get")
    resolve.get_by_label("Minimum context window").fill("200000")
    resolve.get_by_role("button", name="Resolve").click()
    rejections = page.get_by_role("region", name="Rejected candidates")
    expect(rejections.get_by_role("row")).to_have_count(4)
    expect(rejections).to_contain_text("constraints.min_context_window")
    expect(page.get_by_test_id("rejections")).to_contain_text("3 considered")

    resolve.get_by_label("Minimum context window").fill("")
    resolve.get_by_label("By alias").fill(f"{MODEL}/aliases/staging")
    resolve.get_by_role("button", name="Resolve").click()
    expect(page.get_by_test_id("resolved")).to_contain_text(f"{MODEL}/versions/2")


def test_a_canary_started_and_promoted_moves_its_bar_without_a_reload(page: Page, console: Console) -> None:
    sign_in(page, console, console.admin_token, "deployments/chat-prod")
    canary = page.get_by_test_id("slot-canary")
    stable = page.get_by_test_id("slot-stable")
    expect(stable).to_have_attribute("data-weight-bp", "10000")
    # Set on the page now: still there at the end only if nothing reloaded it.
    page.evaluate("window.__sameDocument = true")

    start = page.get_by_role("form", name="Start a rollout")
    start.get_by_label("Target version").select_option(f"{MODEL}/versions/2")
    start.get_by_label("Canary endpoints").fill(CANARY_ENDPOINT)
    start.get_by_label("Canary steps (%)").fill("10, 50")
    start.get_by_label("Reason").fill("longer stories")
    start.get_by_role("button", name="Start rollout").click()
    expect(page.get_by_test_id("rollout-state")).to_have_text("waiting ready")
    expect(canary).to_have_attribute("data-weight-bp", "0")

    # The canary's endpoint reports ready from outside the browser: only the watch stream can tell the page.
    with grpc.insecure_channel(console.grpc_target) as channel:
        deployments_pb2_grpc.DeploymentServiceStub(channel).ReportEndpointHealth(
            deployments_pb2.ReportEndpointHealthRequest(
                deployment=DEPLOYMENT, address=CANARY_ENDPOINT, ready=True
            ),
            metadata=console.metadata(),
            timeout=GRPC_TIMEOUT,
        )
    expect(canary).to_have_attribute("data-weight-bp", "1000")
    expect(stable).to_have_attribute("data-weight-bp", "9000")
    expect(canary.get_by_role("meter")).to_have_attribute("aria-valuetext", "10%")
    expect(page.get_by_test_id("rollout-state")).to_have_text("progressing")
    expect(page.get_by_text("1 of 1 canary endpoints ready")).to_be_visible()

    controls = page.get_by_role("form", name="Rollout controls")
    controls.get_by_role("button", name="Pause").click()
    expect(page.get_by_test_id("rollout-state")).to_have_text("paused")
    expect(controls.get_by_role("button", name="Promote", exact=True)).to_be_disabled()
    controls.get_by_role("button", name="Resume").click()
    expect(page.get_by_test_id("rollout-state")).to_have_text("progressing")

    controls.get_by_role("button", name="Promote", exact=True).click()
    expect(canary).to_have_attribute("data-weight-bp", "5000")
    expect(page.locator("ol.steps li[aria-current=step]")).to_contain_text("50%")

    page.get_by_role("form", name="Rollout controls").get_by_role(
        "button", name="Promote", exact=True
    ).click()
    expect(stable).to_have_attribute("data-weight-bp", "10000")
    expect(stable).to_contain_text(f"{MODEL}/versions/2")
    expect(canary).to_contain_text("(no canary)")
    timeline = page.get_by_role("list", name="History, newest first")
    expect(timeline.get_by_role("listitem").first).to_contain_text("succeeded")
    expect(timeline).to_contain_text("longer stories")
    expect(timeline).to_contain_text("paused")
    assert page.evaluate("window.__sameDocument") is True


def test_checking_a_text_shows_the_decision_and_masked_matches(page: Page, console: Console) -> None:
    sign_in(page, console, console.admin_token, "guardrails/kids-safe")
    check = page.get_by_role("form", name="Check a text")
    check.get_by_label("Text to check").fill("Then the monster came back.")
    check.get_by_role("button", name="Check").click()
    expect(page.get_by_test_id("decision")).to_have_text("block")
    found = page.get_by_role("region", name="Violations found")
    expect(found).to_contain_text("scary-words")
    expect(found).to_contain_text("*******")
    expect(found).not_to_contain_text("monster")
    expect(page.get_by_test_id("verdict")).to_contain_text("Once upon a time, everyone was kind.")

    # The revisions diff: revision 2 added the "shouting" rule.
    diff = page.get_by_label("Changes from revision 1 to 2")
    expect(diff.locator("ins").filter(has_text='"id": "shouting"')).to_have_count(1)
    expect(diff.locator("del").filter(has_text='"id"')).to_have_count(0)


def _figures(page: Page, title: str) -> list[list[str]]:
    """The rows of a chart's figures table (opening its disclosure first), without the heading row."""
    chart = page.locator(f'figure[data-chart="{title}"]')
    chart.locator("summary").click()
    rows = chart.get_by_role("region", name=title).get_by_role("row")
    expect(rows.first).to_be_visible()
    return [row.split("\t") for row in rows.evaluate_all("rows => rows.map(r => r.innerText)")[1:]]


def test_charts_read_the_aggregates_of_the_seeded_events(page: Page, console: Console) -> None:
    sign_in(page, console, console.admin_token, "logs")
    # Six hours, so that every seeded event is in range however long the tests before this one took.
    page.get_by_label("Range").select_option(label="last 6 hours")
    expect(page.get_by_test_id("traffic-charts")).to_have_attribute("data-range", "last 6 hours")
    requests = _figures(page, "Requests by model version and slot")
    heading = page.locator('figure[data-chart="Requests by model version and slot"] th').nth(1)
    expect(heading).to_have_text(f"{MODEL}/versions/1 (stable)")
    assert sum(int(row[1].replace(",", "")) for row in requests if row[1] != "—") == 240
    tokens = _figures(page, "Tokens by model version and slot")
    expected_tokens = sum(400 + i % 50 + 150 + i % 30 for i in range(240))
    assert sum(int(row[1].replace(",", "")) for row in tokens if row[1] != "—") == expected_tokens
    # The error rate per bucket, weighted by the bucket's requests, gives back the seeded errors: 1 in 10.
    rates = _figures(page, "Inference error rate by model version and slot")
    assert [row[0] for row in rates] == [row[0] for row in requests]
    errors = sum(
        float(rate[1].removesuffix("%")) / 100 * int(count[1].replace(",", ""))
        for rate, count in zip(rates, requests, strict=True)
    )
    assert abs(errors - 24) < 0.5
    p95 = _figures(page, "p95 latency by model version and slot")
    assert all(100 <= int(row[1].removesuffix(" ms")) <= 460 for row in p95)
    latency = _figures(page, "Latency percentiles")
    assert latency
    assert all(cell.endswith(" ms") for row in latency for cell in row[1:])
    p50, p99 = (int(latency[0][column].removesuffix(" ms")) for column in (1, 3))
    assert 100 <= p50 <= p99 <= 460
    expect(page.locator('figure[data-chart="Latency percentiles"] canvas')).to_have_count(1)


def test_log_query_pages_by_keyset_and_the_tail_shows_new_events_live(page: Page, console: Console) -> None:
    sign_in(page, console, console.admin_token, "logs")
    query = page.get_by_role("search", name="Query log events")
    query.get_by_label("Filter").fill('service = "storyteller"')
    query.get_by_label("Filter").press("Enter")
    events = page.get_by_role("region", name="Log events")
    # The unfiltered first page may still be on screen: wait for the filtered one.
    expect(events.get_by_role("cell", name="modelplane", exact=True)).to_have_count(0)
    expect(events.get_by_role("row")).to_have_count(26)
    first_page = events.inner_text()
    page.get_by_role("button", name="Next page").click()
    expect(page.locator(".page-position")).to_have_text("page 2")
    expect(events.get_by_role("row")).to_have_count(26)
    assert events.inner_text() != first_page
    page.get_by_role("button", name="Previous page").click()
    expect(page.locator(".page-position")).to_have_text("page 1")
    assert events.inner_text() == first_page

    bad = "level >= LOUD"
    status = api_error(console, "/v1/logEvents?" + urllib.parse.urlencode({"filter": bad}))
    assert "position" in json.dumps(status)
    query.get_by_label("Filter").fill(bad)
    query.get_by_label("Filter").press("Enter")
    error = page.locator(".filter-error")
    expect(error).to_be_visible()
    position = int(error.get_attribute("data-position") or "0")
    assert f"position {position}:" in json.dumps(status)

    marker = f"tail-{uuid.uuid4().hex[:8]}"
    query.get_by_label("Filter").fill(f"message:{marker}")
    page.get_by_role("button", name="Start live tail").click()
    expect(page.get_by_test_id("tail-state")).to_contain_text("Tailing")
    live = page.get_by_role("region", name="Live events")
    with grpc.insecure_channel(console.grpc_target) as channel:
        logs = logs_pb2_grpc.LogServiceStub(channel)
        event = logs_pb2.LogEvent(
            event_id=marker,
            service="storyteller",
            level=logs_pb2.LOG_LEVEL_WARNING,
            message=f"{marker} arrived",
        )
        event.event_time.GetCurrentTime()
        logs.WriteLogEvents(
            logs_pb2.WriteLogEventsRequest(batch=logs_pb2.LogBatch(events=[event])),
            metadata=console.metadata(),
            timeout=GRPC_TIMEOUT,
        )
    expect(live).to_contain_text(f"{marker} arrived")
    expect(live.get_by_role("row")).to_have_count(2)
    page.get_by_role("button", name="Stop live tail").click()
    expect(page.get_by_test_id("tail-state")).to_have_text("Stopped.")


def test_a_reader_sees_every_page_without_write_controls(page: Page, console: Console) -> None:
    sign_in(page, console, console.reader_token)
    expect(page.get_by_test_id("access")).to_have_text("read only")
    expect(page.get_by_role("region", name="Model versions").get_by_role("row")).to_have_count(4)
    expect(page.get_by_role("form", name="Move an alias")).to_have_count(0)
    expect(page.get_by_role("region", name="Alias history (newest first)")).to_be_visible()

    page.get_by_role("link", name="Deployments").click()
    expect(page.get_by_test_id("slot-stable")).to_be_visible()
    expect(page.get_by_text("No rollout is active.")).to_be_visible()
    expect(page.get_by_role("form", name="Start a rollout")).to_have_count(0)
    expect(page.get_by_role("button", name="Promote")).to_have_count(0)

    page.get_by_role("link", name="Guardrails").click()
    expect(page.get_by_text("Checking needs an admin, operator or service token.")).to_be_visible()
    expect(page.get_by_role("button", name="Check")).to_have_count(0)
    expect(page.get_by_role("region", name="Latest violations (masked)")).to_be_visible()

    # Hidden controls are a courtesy: the server refuses the reader's write anyway.
    status = page.evaluate(
        """async (token) => (await fetch('./v1/models/chat/aliases/prod:set', {
            method: 'POST', headers: {Authorization: 'Bearer ' + token, 'Content-Type': 'application/json'},
            body: JSON.stringify({version: 'models/chat/versions/3'})})).status""",
        console.reader_token,
    )
    assert status == 403


def _screenshot_folder(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MODELPLANE_CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _start_canary_at_ten_percent(console: Console) -> None:
    """A canary of version 3 at its first step, so the deployment's picture has two bars (unless a rollout
    is active already)."""
    with grpc.insecure_channel(console.grpc_target) as channel:
        stub = deployments_pb2_grpc.DeploymentServiceStub(channel)
        current = stub.GetDeployment(
            deployments_pb2.GetDeploymentRequest(name=DEPLOYMENT),
            metadata=console.metadata(),
            timeout=GRPC_TIMEOUT,
        )
        if current.deployment.active_rollout:
            return
        step = deployments_pb2.RolloutStep(weight_bp=1000, pause_until_promoted=True)
        stub.StartRollout(
            deployments_pb2.StartRolloutRequest(
                parent=DEPLOYMENT,
                rollout=deployments_pb2.Rollout(
                    target_version=f"{MODEL}/versions/3",
                    endpoints=[deployments_pb2.Endpoint(address="10.0.0.11:8000")],
                    strategy=deployments_pb2.ROLLOUT_STRATEGY_CANARY,
                    steps=[step, deployments_pb2.RolloutStep(weight_bp=5000, pause_until_promoted=True)],
                    reason="cheaper tool use",
                ),
            ),
            metadata=console.metadata(),
            timeout=GRPC_TIMEOUT,
        )
        stub.ReportEndpointHealth(
            deployments_pb2.ReportEndpointHealthRequest(
                deployment=DEPLOYMENT, address="10.0.0.11:8000", ready=True
            ),
            metadata=console.metadata(),
            timeout=GRPC_TIMEOUT,
        )
        # Fresh events for the charts' last hour.
        seed_logs(channel, console.metadata())


# Every form control that has no label a screen reader would read.
_UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
    .map(e => e.outerHTML)"""
# Every visible text whose colour has less than WCAG's contrast with the background it sits on: 4.5:1, or
# 3:1 for large text (24 px, or 18.66 px bold).
_LOW_CONTRAST = """() => {
  const parse = (c) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(c);
    if (!m) return null;
    const p = m[1].split(',').map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const luminance = (c) => 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b);
  const background = (element) => {
    for (let e = element; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0.5) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const low = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const element = node.parentElement;
    if (!node.textContent.trim() || !element || element.getClientRects().length === 0) continue;
    const style = getComputedStyle(element);
    if (style.visibility === 'hidden') continue;
    const fore = luminance(parse(style.color));
    const back = luminance(background(element));
    const [light, dark] = fore > back ? [fore, back] : [back, fore];
    const ratio = (light + 0.05) / (dark + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      low.push(`${ratio.toFixed(2)}:1 ${element.tagName} ${node.textContent.trim().slice(0, 30)}`);
    }
  }
  return low;
}"""
# Every control a keyboard user should reach (the ones on screen), and everything Tab stops at.
_FOCUSABLE = "a[href], button:not([disabled]), input, select, textarea, summary"
_CONTROLS = f"() => [...document.querySelectorAll('{_FOCUSABLE}')].filter(e => e.getClientRects().length > 0)"
_TAB_STOPS = f"() => document.querySelectorAll('{_FOCUSABLE}, [tabindex=\"0\"]').length"


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_every_page_at_laptop_and_phone_width(
    browser: Browser, console: Console, viewport: dict[str, int], tmp_path: Path
) -> None:
    if viewport["width"] == LAPTOP["width"]:
        _start_canary_at_ten_percent(console)
    folder = _screenshot_folder(tmp_path)
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    try:
        sign_in(page, console, console.admin_token)
        for name in PAGES:
            page.get_by_role("link", name=name.capitalize()).click()
            expect(page).to_have_title(f"{name.capitalize()} · modelplane")
            if name == "models":
                expect(page.get_by_role("region", name="Model versions").get_by_role("row")).to_have_count(4)
            if name == "deployments":
                expect(page.get_by_test_id("slot-canary")).to_have_attribute("data-weight-bp", "1000")
            if name in ("guardrails", "logs"):
                expect(page.locator("figure.chart canvas").first).to_be_visible()
            assert page.evaluate(_UNLABELLED) == [], f"unlabelled controls on {name}"
            assert page.evaluate(_LOW_CONTRAST) == [], f"text below WCAG AA contrast on {name}"
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"], f"{name} is {width} px wide at {viewport['width']} px"
            # Tab through the whole page: every control takes the focus in turn.
            # Twice round, wherever the focus starts.
            stops = page.evaluate(_TAB_STOPS)
            page.evaluate(
                "window.__reached = new Set();"
                " document.addEventListener('focusin', e => window.__reached.add(e.target))"
            )
            for _ in range(2 * stops + 2):
                page.keyboard.press("Tab")
            unreached = page.evaluate(
                f"({_CONTROLS})().filter(e => !window.__reached.has(e)).map(e => e.outerHTML.slice(0, 80))"
            )
            assert unreached == [], f"not reachable by keyboard on {name}: {unreached}"
            page.evaluate("document.activeElement?.blur(); window.scrollTo(0, 0)")
            page.screenshot(path=str(folder / f"{name}-{viewport['width']}.png"), full_page=True)
    finally:
        context.close()


GATED_DEPLOYMENT = "deployments/chat-stage"


def _start_gated_canary(console: Console) -> str:
    """A deployment of version 1 with a gated canary of version 2 at its first step (held until promoted,
    then a timed step whose end the gates decide), and the events the gates read for both slots: the
    canary fails five times as often as the stable slot, at the same latencies. Returns the rollout."""
    metadata = console.metadata()
    with grpc.insecure_channel(console.grpc_target) as channel:
        stub = deployments_pb2_grpc.DeploymentServiceStub(channel)
        seed_deployment(channel, metadata, GATED_DEPLOYMENT, "staging", "10.0.1.7:8000")
        window = duration_pb2.Duration(seconds=600)
        gates = [
            deployments_pb2.AnalysisGate(
                name="errors",
                signal=deployments_pb2.ANALYSIS_SIGNAL_ERROR_RATE,
                window=window,
                min_samples=200,
                bound=deployments_pb2.GateBound(max_ratio=1.0),
                on_failure=deployments_pb2.GATE_ACTION_PAUSE,
            ),
            deployments_pb2.AnalysisGate(
                name="p95",
                signal=deployments_pb2.ANALYSIS_SIGNAL_LATENCY_P95,
                window=window,
                min_samples=200,
                bound=deployments_pb2.GateBound(max_ratio=1.2, margin=5.0),
                on_failure=deployments_pb2.GATE_ACTION_ROLLBACK,
            ),
        ]
        started = stub.StartRollout(
            deployments_pb2.StartRolloutRequest(
                parent=GATED_DEPLOYMENT,
                rollout=deployments_pb2.Rollout(
                    target_version=f"{MODEL}/versions/2",
                    endpoints=[deployments_pb2.Endpoint(address="10.0.1.11:8000")],
                    strategy=deployments_pb2.ROLLOUT_STRATEGY_CANARY,
                    steps=[
                        deployments_pb2.RolloutStep(weight_bp=1000, pause_until_promoted=True),
                        deployments_pb2.RolloutStep(
                            weight_bp=5000, duration=duration_pb2.Duration(seconds=1)
                        ),
                    ],
                    analysis=deployments_pb2.RolloutAnalysis(
                        gates=gates,
                        max_wait_for_data=duration_pb2.Duration(seconds=120),
                        on_no_data=deployments_pb2.GATE_ACTION_PAUSE,
                        # Every event is stored before the step is due, and the window starts with the
                        # rollout: with the default delay a step due within 2 s of the start reads none.
                        evaluation_delay=duration_pb2.Duration(seconds=0),
                    ),
                    reason="longer context for staging",
                ),
            ),
            metadata=metadata,
            timeout=GRPC_TIMEOUT,
        )
        stub.ReportEndpointHealth(
            deployments_pb2.ReportEndpointHealthRequest(
                deployment=GATED_DEPLOYMENT, address="10.0.1.11:8000", ready=True
            ),
            metadata=metadata,
            timeout=GRPC_TIMEOUT,
        )
        # Written after the rollout started: a gate's window never reaches back before its start.
        for slot, version, errors in (
            (common_pb2.TRAFFIC_SLOT_STABLE, 1, 8),
            (common_pb2.TRAFFIC_SLOT_CANARY, 2, 40),
        ):
            seed_slot_events(
                channel,
                metadata,
                GATED_DEPLOYMENT,
                slot,
                f"{MODEL}/versions/{version}",
                count=400,
                errors=errors,
            )
    return started.rollout.name


def test_a_gated_canary_shows_its_gates_their_verdicts_and_the_decision(
    page: Page, console: Console, tmp_path: Path
) -> None:
    """A real gated canary: the panel shows each gate and that none has decided yet; promoted from the
    console, the timed step's end is decided by the gates (errors fails, so the rollout pauses), and the
    panel shows each gate's figures, sample sizes and verdict while the timeline shows the decision."""
    rollout = _start_gated_canary(console)
    sign_in(page, console, console.admin_token, GATED_DEPLOYMENT)
    expect(page.get_by_test_id("rollout-state")).to_have_text("progressing")
    gates = page.get_by_role("region", name="Analysis gates")
    expect(gates.get_by_role("row")).to_have_count(3)
    expect(gates).to_contain_text("error rate")
    expect(gates).to_contain_text("canary \u2264 1 \u00d7 stable")
    expect(gates).to_contain_text("latency p95")
    expect(gates).to_contain_text("canary \u2264 1.2 \u00d7 stable + 5 ms")
    expect(gates).to_contain_text("rollback")
    expect(page.get_by_test_id("gates-policy")).to_contain_text("2 min for enough events, then: pause")
    verdicts = page.get_by_role("region", name="Latest gate verdicts")
    expect(verdicts).to_contain_text("No gate has been evaluated yet")

    page.get_by_role("button", name="Promote", exact=True).click()
    # The driver decides the timed step's end from the gates; the watch stream brings the pause in.
    expect(page.get_by_test_id("rollout-state")).to_have_text("paused")
    errors = verdicts.get_by_role("row").filter(has_text="errors")
    expect(errors).to_contain_text("fail")
    expect(errors).to_contain_text("10%")
    expect(errors).to_contain_text("2%")
    expect(errors).to_contain_text("400 / 400")
    latency = verdicts.get_by_role("row").filter(has_text="p95")
    expect(latency).to_contain_text("pass")
    expect(latency).to_contain_text("400 / 400")
    decided = (
        page.get_by_role("list", name="History, newest first")
        .get_by_role("listitem")
        .filter(has_text="paused")
        .filter(has=page.get_by_test_id("gate-evaluation"))
    )
    expect(decided).to_have_count(1)
    expect(decided).to_contain_text(f"{rollout} (paused)")
    expect(decided).to_contain_text("gate errors failed")
    expect(decided.get_by_test_id("gate-evaluation").first).to_have_text(
        "errors: fail \u00b7 canary 10%, stable 2% over 400 / 400 events"
    )
    expect(decided.get_by_test_id("gate-evaluation").nth(1)).to_contain_text("p95: pass")
    assert page.evaluate(_LOW_CONTRAST) == [], "text below WCAG AA contrast in the gates or the timeline"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(_screenshot_folder(tmp_path) / "deployments-gates-1280.png"), full_page=True)
    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the gates panel is {width} px wide at {PHONE['width']} px"
