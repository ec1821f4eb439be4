"""The monitoring page in a real Chromium, inside a real Airflow UI, over a real nightly run of the engine.

The run erases the reference world's due data in PostgreSQL, S3 and SFTP; Airflow reads the
ledger through ``AIRFLOW_CONN_RETENTION_LEDGER``. The numbers the page must show are read
from the ledger and the engine's results directly, never from the page's own queries.
Screenshots are kept in ``test-artifacts/``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import httpx

from retention.flow import run_all
from retention.ledger import Ledger
from tests.browser.conftest import REPO, ledger_conn_json
from tests.integration.api_server import ApiServer
from tests.integration.conftest import WorldEnv

ARTIFACTS = REPO / "test-artifacts"
TIMEOUT_MS = 30_000
APPROVED = "translation_documents"


def _status(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """Status and Location of one GET, without following redirects."""
    response = httpx.get(url, headers=headers, follow_redirects=False, timeout=30)
    return response.status_code, response.headers.get("location", "")


def _signed(secret: str) -> str:
    from airflow.api_fastapi.auth.tokens import JWTGenerator

    generator = JWTGenerator(secret_key=secret, valid_for=600, audience="apache-airflow")
    return str(generator.generate({"sub": "admin", "role": "ADMIN"}))


def _log_in(page: Any, server: ApiServer) -> None:
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", server.password)
    page.click("button[type=submit]")


def test_ops_see_the_run_in_the_airflow_ui(
    world_env: WorldEnv, airflow_server_for: Any, browser: Any
) -> None:
    env = world_env
    ctx = env.context()
    # One category over its cap is approved (its S3 and SFTP files are erased and verified), one waits.
    results = run_all(ctx, approved=lambda plan: plan.category == APPROVED)
    ledger = Ledger(env.engine)
    outcomes = ledger.outcomes_for_run(ctx.run_id)
    erased: dict[str, int] = defaultdict(int)
    for (category, _store, outcome), total in outcomes.items():
        if category and outcome == "erased":
            erased[category] += total
    from_engine: dict[str, int] = defaultdict(int)
    for step in results.results:
        from_engine[step.category] += step.erased
    assert {c: n for c, n in erased.items() if n} == {c: n for c, n in from_engine.items() if n}
    assert sum(erased.values()) > 0, "the reference world has due data"
    # Asked and not answered; the approved category's decision is in the ledger, as the DAG writes it.
    waiting = sorted(
        c for (c, s, o) in outcomes if o == "approval_requested" and (c, s, "approved") not in outcomes
    )
    assert APPROVED not in waiting
    assert waiting, "the small world has a category over its cap"
    chain = ledger.verify_chain()
    assert chain.ok

    server = airflow_server_for(ledger_conn_json(env.engine))
    page_url = f"{server.url}/retention/"

    # Without a valid token the app refuses: 401 for API clients, Airflow's login page for browsers.
    assert _status(page_url, {})[0] == 401
    assert _status(page_url, {"Authorization": f"Bearer {_signed('x' * 64)}"})[0] == 401
    assert _status(page_url, {"Authorization": f"Bearer {_signed(server.jwt_secret)}"})[0] == 200
    status, location = _status(page_url, {"Accept": "text/html"})
    assert status == 303 and location.startswith("/auth/login?next=")
    assert _status(page_url, {"Authorization": f"Bearer {server.token()}"})[0] == 200

    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        # Opened directly while logged out: Airflow's login, then back to the page.
        page.goto(page_url)
        page.wait_for_url("**/auth/login**")
        _log_in(page, server)
        page.wait_for_url(page_url)
        assert page.locator("h1").inner_text() == "Retention monitoring"

        # From the Airflow UI's navigation, as ops find it.
        page.goto(f"{server.url}/")
        page.get_by_role("link", name="Retention").first.click()
        page.wait_for_url("**/plugin/retention**")
        frame = page.frame_locator("iframe[title=Retention]")
        banner = frame.locator("[data-testid=chain-status]")
        banner.wait_for()
        assert banner.get_attribute("data-ok") == "true"
        assert f"{chain.checked} entries verified" in banner.inner_text()

        table = frame.locator(f"table[data-run='{ctx.run_id}']")
        for category, total in erased.items():
            cell = table.locator(f"tr[data-category='{category}'] td[data-field='erased']")
            assert int(cell.inner_text()) == total, category
        assert int(table.locator("tfoot [data-field='erased']").inner_text()) == sum(erased.values())
        verified = table.locator(f"tr[data-category='{APPROVED}'] td[data-field='verified']").inner_text()
        assert verified.split() == ["✓", "database", "✓", "s3", "✓", "sftp"]
        approvals = frame.locator("[data-testid=approvals] tr[data-run]")
        assert sorted(approvals.evaluate_all("rows => rows.map(r => r.dataset.category)")) == waiting
        # Due but not erased: the run summary's backlog, per category and reason, on its first night.
        backlog = frame.locator("[data-testid=backlog] tr[data-category]").evaluate_all(
            "rows => rows.map(r => [r.dataset.category, r.dataset.reason,"
            " r.querySelector('[data-field=count]').textContent, r.dataset.nights])"
        )
        assert results.summary is not None
        expected = [
            [c, r.value, str(n), "1"]
            for c, reasons in results.summary.backlog.items()
            for r, n in reasons.items()
        ]
        assert sorted(backlog) == sorted(expected)
        assert any(c in waiting for c, *_rest in backlog), "the waiting category's plan is due and not erased"
        page.screenshot(path=str(ARTIFACTS / "retention-in-airflow-ui.png"), timeout=TIMEOUT_MS)

        # The approval link opens Airflow's own page for the run (the top window, not the iframe).
        approvals.first.get_by_role("link", name="Required actions").click()
        page.wait_for_url(f"**/dags/retention_nightly/runs/{ctx.run_id}/required_actions")

        # The page alone, full length, and the ledger filtered by the run.
        alone = context.new_page()
        alone.goto(page_url)
        alone.screenshot(path=str(ARTIFACTS / "retention-overview.png"), full_page=True, timeout=TIMEOUT_MS)
        overview_html = alone.content()
        alone.goto(f"{server.url}/retention/ledger?run={ctx.run_id}&size=200")
        shown_total = alone.locator("[data-testid=ledger-total]").get_attribute("data-total")
        assert shown_total == str(ledger.count(run_id=ctx.run_id))
        alone.screenshot(path=str(ARTIFACTS / "retention-ledger.png"), timeout=TIMEOUT_MS)
        texts = [overview_html, alone.content()]
    finally:
        context.close()

    everything = "\n".join(texts)
    for customer in range(1, env.world.size.customers + 1):
        canaries = env.world.canaries(customer)
        for value in (canaries.name, canaries.email, canaries.phone, canaries.phrase):
            assert value not in everything, f"customer {customer}'s data is on the page"
    assert "Traceback" not in server.log.read_text(), "the API server logged an error"
