""" "Find a customer" in a real Chromium, inside a real Airflow UI, over the reference world in PostgreSQL.

Ops log in, open the page from the UI's navigation, choose the e-mail identity, type a canary
e-mail of the world (in another case than stored), and see the customer's internal id, what
each category holds about them (from the world's ground truth, not the page's queries) and the
way to the erasure DAG. A viewer (may read the runs, not trigger them) is refused, and so is a
POST without the form's CSRF token. Afterwards the canary is searched for everywhere it must
not be: every file of the API server's ``AIRFLOW_HOME`` (its log, the metadata database), every
table of the metadata database read row by row, every URL the browser requested or showed,
every request body but the form's own POST, the cookies and the pages' HTML.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from retention.policy import load_policies
from tests.browser.conftest import REPO, ledger_conn_json
from tests.integration.api_server import ApiServer
from tests.integration.conftest import POLICY_DIR, WorldEnv

ARTIFACTS = REPO / "test-artifacts"
TIMEOUT_MS = 30_000
CUSTOMER = 5
VIEWER = "watcher"


def _log_in(page: Any, user: str, password: str) -> None:
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def _forms(value: str) -> list[str]:
    """The value as it could be found: as typed, case-folded, URL-encoded (both ways), JSON-escaped."""
    forms = {value, value.lower(), quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    return sorted({f.lower() for f in forms})


def _files_with(root: Path, value: str) -> list[str]:
    """Files under ``root`` whose bytes hold ``value`` in any of its forms (ASCII case ignored)."""
    needles = [f.encode() for f in _forms(value)]
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and any(n in p.read_bytes().lower() for n in needles)
    )


def _metadata_dump(db: Path) -> dict[str, str]:
    """Every table of the SQLite metadata database -> the text of all its rows."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        dump = {}
        for table in tables:
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()  # noqa: S608 - names from sqlite_master
            dump[table] = "\n".join(
                " | ".join(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row)
                for row in rows
            )
        return dump
    finally:
        conn.close()


def test_ops_find_a_customer_by_email_and_the_value_leaves_no_trace(
    world_env: WorldEnv, airflow_server_for: Any, browser: Any, tmp_path: Path
) -> None:
    env = world_env
    canary = env.world.canaries(CUSTOMER).email
    typed = canary.upper()
    assert typed != canary
    folder = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, folder)
    policies = load_policies(folder)
    rows = env.world.customer_inventory(CUSTOMER).rows
    # The access reports are the system's own table: the world made none.
    expected = {p.id: str(len(rows.get(p.records.table, ()))) for p in policies.policies}

    database = ledger_conn_json(env.engine)
    server: ApiServer = airflow_server_for(
        database,
        {
            "AIRFLOW_CONN_BUSINESS_DB": database,
            "RETENTION_POLICY_DIR": str(folder),
        },
        {VIEWER: "viewer"},
    )
    home = server.log.parent

    ARTIFACTS.mkdir(exist_ok=True)
    requests: list[tuple[str, str, str]] = []
    shown_urls: list[str] = []
    pages: list[str] = []
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    context.on("request", lambda r: requests.append((r.method, r.url, r.post_data or "")))
    try:
        page = context.new_page()
        page.on("framenavigated", lambda frame: shown_urls.append(frame.url))
        # Opened directly while logged out: Airflow's login, then back to the page.
        page.goto(f"{server.url}/retention/find")
        page.wait_for_url("**/auth/login**")
        _log_in(page, "admin", server.password)
        page.wait_for_url(f"{server.url}/retention/find")
        page.locator("[data-testid=find-form]").wait_for()
        page.goto(f"{server.url}/")

        # From the Airflow UI's navigation into the page, then to Find a customer inside the frame.
        page.get_by_role("link", name="Retention").first.click()
        page.wait_for_url("**/plugin/retention**")
        frame = page.frame_locator("iframe[title=Retention]")
        frame.get_by_role("link", name="Find a customer").click()
        form = frame.locator("[data-testid=find-form]")
        form.wait_for()
        form.locator("select[name=identity]").select_option("email")
        form.locator("input[name=value]").fill(typed)
        form.get_by_role("button", name="Find").click()

        matches = frame.locator("[data-testid=matches]")
        matches.wait_for()
        assert matches.get_attribute("data-count") == "1"
        match = matches.locator("article[data-subject]")
        assert match.get_attribute("data-subject") == str(CUSTOMER)
        assert match.locator("[data-field=subject]").inner_text() == str(CUSTOMER)
        counts = match.locator("tr[data-category]").evaluate_all(
            "rows => Object.fromEntries(rows.map(r => [r.dataset.category,"
            " r.querySelector('[data-field=count]').textContent]))"
        )
        assert counts == expected
        # the form is empty again: the value is not on the answer page
        assert form.locator("input[name=value]").input_value() == ""
        pages.append(frame.locator("html").inner_html())
        page.screenshot(path=str(ARTIFACTS / "retention-find-customer.png"), timeout=TIMEOUT_MS)

        # The way to the erasure: Airflow's page of customer_erasure (the top window, not the frame).
        match.locator("[data-testid=trigger-link]").click()
        page.wait_for_url("**/dags/customer_erasure")

        # A POST without the form's token, with the session's login and CSRF cookies, is refused.
        refused = context.request.post(
            f"{server.url}/retention/find",
            form={"identity": "email", "value": typed},
            fail_on_status_code=False,
        )
        assert refused.status == 403
        assert all(f not in refused.text().lower() for f in _forms(canary))
        pages.append(page.content())
        cookies = json.dumps(context.cookies())
    finally:
        context.close()

    # A viewer may see the runs but not look customers up.
    viewer = browser.new_context()
    viewer.set_default_timeout(TIMEOUT_MS)
    try:
        page = viewer.new_page()
        page.goto(f"{server.url}/retention/find")
        page.wait_for_url("**/auth/login**")
        _log_in(page, VIEWER, server.passwords[VIEWER])
        page.wait_for_url("**/retention/find")
        response = page.goto(f"{server.url}/retention/find")
        assert response is not None and response.status == 403
        assert "not allowed to trigger customer_erasure" in page.content()
        overview = page.goto(f"{server.url}/retention/")
        assert overview is not None and overview.status == 200
    finally:
        viewer.close()

    # The form's own POST carried the value, and only it; nothing else did.
    posts = [body for method, url, body in requests if method == "POST" and url.endswith("/retention/find")]
    assert any(f in body.lower() for body in posts for f in _forms(typed)), "the recorder sees request bodies"
    others = [(m, u, b) for m, u, b in requests if not (m == "POST" and u.endswith("/retention/find"))]
    assert any("/api/v2/" in u for _m, u, _b in others), "the Airflow UI's own API calls were recorded"
    for forms_of in (_forms(canary), _forms(typed)):
        for needle in forms_of:
            assert not [u for _m, u, _b in requests if needle in u.lower()], "the value in a requested URL"
            assert not [u for u in shown_urls if needle in u.lower()], "the value in a shown URL"
            assert not [u for _m, u, b in others if needle in b.lower()], "the value sent elsewhere"
            assert needle not in cookies.lower()
            assert all(needle not in html.lower() for html in pages), "the value on a page"

    # Nothing under the API server's AIRFLOW_HOME holds it: its log, the metadata DB, anything else.
    server_log = server.log.read_text()
    assert "/retention/find" in server_log, "the access log was written (the path only)"
    assert "Traceback" not in server_log, "the API server logged an error"
    assert _files_with(home, canary) == [] and _files_with(home, typed) == []
    dump = _metadata_dump(home / "airflow.db")
    assert dump and any(dump.values()), "the metadata DB was read"
    for table, text in dump.items():
        for needle in _forms(canary) + _forms(typed):
            assert needle not in text.lower(), f"the value is in the metadata table {table}"
