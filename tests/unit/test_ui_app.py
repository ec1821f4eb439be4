"""The monitoring page's FastAPI app on a real ledger in SQLite, written by the engine on the reference world.

Authentication goes through Airflow's real simple auth manager: tokens are signed and
validated by Airflow's own JWT code, so a forged or expired token is refused for real.
Expected numbers come from the engine's own step results, not from the page's queries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from harness.context import engine_context
from harness.world_rules import NOW
from harness.world_size import WorldSize
from harness.world_stores import generate
from harness.world_truth import Profile, World
from retention import flow
from retention.engine import RunContext
from retention.errors import TerminalError
from retention.ledger import Ledger, LedgerEntry
from retention.policy import PolicySet, load_policies
from retention.results import CategoryPlan, Reason, Skip, StepResult
from retention_airflow.ui import create_app
from retention_airflow.ui.reader import ChainCache, LedgerReader

POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "retention_policies"
KEY = b"unit-test-pseudonym-key-0123456789"
NIGHTLY, ERASURE, ANSWERED = "nightly__alpha", "erasure__beta", "nightly__gamma"
HOSTILE_RUN = "manual__<script>alert(1)</script>"


# --- a minimal DOM over html.parser, enough to read the page's tables --------------------------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Any]

    def text(self) -> str:
        return " ".join(
            " ".join((c.text() if isinstance(c, Node) else c).split()) for c in self.children
        ).strip()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and all(
                    child.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items()
                ):
                    found.append(child)
                found.extend(child.find_all(tag, **attrs))
        return found

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]


class _Builder(HTMLParser):
    VOID = {"meta", "link", "input", "br", "img", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.root = Node("root", {}, [])
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, [])
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def dom(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    return builder.root


def run_cells(page: Node, run_id: str) -> dict[str, dict[str, str]]:
    """Category -> field -> text of one run's table."""
    table = page.one("table", data_run=run_id)
    return {
        row.attrs["data-category"]: {
            cell.attrs["data-field"]: cell.text() for cell in row.find_all("td") if "data-field" in cell.attrs
        }
        for row in table.find_all("tr")
        if "data-category" in row.attrs
    }


# --- the ledger: real runs of the engine on the reference world in SQLite ----------------------


@dataclass
class LedgerWorld:
    path: Path
    url: str
    world: World
    nightly: tuple[StepResult, ...]
    """The engine's step results of the nightly run."""
    needs_approval: list[str]
    skipped: dict[str, Skip]
    backlog: dict[str, dict[Reason, int]]
    """What the nightly run left due, per category and reason: its summary's ``backlog``."""
    erasure: tuple[StepResult, ...]
    subject_ref: str
    receipt_digest: str


def _policies() -> PolicySet:
    """The shipped policies but the access reports and the erasure receipts (the system's own
    categories: files only a real run with S3 could prove; the world has none)."""
    shipped = load_policies(POLICY_DIR)
    kept = tuple(p for p in shipped.policies if p.id not in ("access_reports", "erasure_receipts"))
    return dataclasses.replace(shipped, policies=kept, sources={p.id: shipped.sources[p.id] for p in kept})


def _context(engine: sa.Engine, run_id: str, **kw: Any) -> RunContext:
    return engine_context(engine, _policies(), now=NOW, pseudonym_key=KEY, run=run_id, batch_size=20, **kw)


@pytest.fixture(scope="module")
def ledger_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerWorld]:
    """A small world in SQLite; a nightly run (database pass), a customer erasure with a receipt, and more."""
    path = tmp_path_factory.mktemp("ui") / "business.db"
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    world = generate(engine, size=WorldSize.small())
    ledger = Ledger(engine)
    ledger.ensure_schema()

    # The nightly run, as run_all does it, but with the database only: categories over their
    # cap wait for approval, categories whose files were not erased are skipped by the engine.
    ctx = _context(engine, NIGHTLY)
    run = flow.describe(ctx)
    plans = {c: flow.plan(ctx, c) for c in run.categories}
    waiting = [c for c, p in plans.items() if p.needs_approval]
    nightly_pass = flow.database_pass(
        ctx, [], {c: Skip(Reason.AWAITING_APPROVAL) for c in waiting}, flow.clearances(run, plans, {})
    )
    nightly, skipped = nightly_pass.results, dict(nightly_pass.skipped)
    assert waiting and nightly, "the small world must have both work and a category over its cap"
    # Its end, as finish_nightly does it: the run summary, with its backlog, goes into the ledger.
    backlog = {
        c: dict(r) for c, r in flow.finish(ctx, run, {}, nightly, skipped, plans=plans).backlog.items()
    }

    subject = world.customers_with(Profile.ACTIVE)[0]
    erasure_ctx = _context(engine, ERASURE, mode="subject", subject=str(subject))
    erasure_run = flow.describe(erasure_ctx)
    erasure_plans = {c: flow.plan(erasure_ctx, c) for c in erasure_run.categories}
    erasure = flow.database_pass(erasure_ctx, [], {}, flow.clearances(erasure_run, erasure_plans, {})).results
    subject_ref = erasure_ctx.subject_ref or ""
    digest = hashlib.sha256(b"receipt document").hexdigest()
    ledger.append(
        LedgerEntry(
            run_id=ERASURE,
            action="receipt",
            outcome="summary",
            store="s3",
            location="s3:alleskar-privacy-receipts/receipts/",
            subject_ref=subject_ref,
            count=sum(r.erased + r.anonymised for r in erasure),
            items_digest=digest,
            detail={"kept": 3, "verified": True},
        )
    )
    # A run whose approval was requested and answered: nothing is pending there.
    for outcome in ("approval_requested", "approved"):
        ledger.append(
            LedgerEntry(
                run_id=ANSWERED,
                category="correspondence",
                store="*",
                location="*",
                action="approval",
                outcome=outcome,
                count=5,
            )
        )
    ledger.append(LedgerEntry(run_id=HOSTILE_RUN, action="run", outcome="summary", count=0))
    engine.dispose()
    yield LedgerWorld(path, url, world, nightly, waiting, skipped, backlog, erasure, subject_ref, digest)


# --- authentication through Airflow's auth manager ---------------------------------------------


@pytest.fixture(scope="module")
def auth_manager(airflow_db: Path) -> Any:
    """Airflow's configured auth manager (the simple one), as the API server initialises it."""
    from airflow.api_fastapi.app import create_auth_manager

    return create_auth_manager()


def token(auth_manager: Any, role: str | None = "VIEWER", name: str = "ops") -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return str(auth_manager.generate_jwt(SimpleAuthManagerUser(username=name, role=role)))


@pytest.fixture(scope="module")
def viewer(auth_manager: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(auth_manager)}"}


@pytest.fixture(scope="module")
def client(ledger_world: LedgerWorld, auth_manager: Any) -> Iterator[TestClient]:
    app = create_app(engine_factory=lambda: sa.create_engine(ledger_world.url))
    with TestClient(app) as c:
        yield c


PAGES = ["/", "/ledger", f"/run?run_id={NIGHTLY}", "/ledger?page=2&size=25"]


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_requests_are_refused(client: TestClient, path: str) -> None:
    api = client.get(path)
    assert api.status_code == 401
    assert api.headers["www-authenticate"] == "Bearer"
    assert NIGHTLY not in api.text

    browser = client.get(path, headers={"Accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 303
    assert browser.headers["location"].startswith("/auth/login?next=")
    assert NIGHTLY not in browser.text


def _jwt(secret: str, valid_for: float) -> str:
    from airflow.api_fastapi.auth.tokens import JWTGenerator

    claims = {"sub": "admin", "role": "ADMIN"}
    return str(
        JWTGenerator(secret_key=secret, valid_for=valid_for, audience="apache-airflow").generate(claims)
    )


def test_forged_expired_and_malformed_tokens_are_refused(client: TestClient, auth_manager: Any) -> None:
    from airflow.api_fastapi.auth.tokens import get_signing_args

    real_key = get_signing_args()["secret_key"]
    # The same generator with the real key is accepted: the refusals below are about the key and the time.
    assert client.get("/", headers={"Authorization": f"Bearer {_jwt(real_key, 600)}"}).status_code == 200

    forged = _jwt("not-the-airflow-secret-" + "x" * 40, 600)
    expired = _jwt(real_key, -3600)
    header, payload, _sig = forged.split(".")
    unsigned = f"{header}.{payload}."
    for bad in (forged, expired, unsigned, "not-a-jwt"):
        assert client.get("/", headers={"Authorization": f"Bearer {bad}"}).status_code == 401, bad[:20]
        client.cookies.set("_token", bad)
        try:
            assert client.get("/").status_code == 401
        finally:
            client.cookies.clear()


def test_an_explicit_bearer_token_wins_over_the_cookie(client: TestClient, auth_manager: Any) -> None:
    client.cookies.set("_token", token(auth_manager))
    try:
        assert client.get("/").status_code == 200
        assert client.get("/", headers={"Authorization": "Bearer forged.token.here"}).status_code == 401
    finally:
        client.cookies.clear()


def test_a_user_without_read_access_to_the_runs_is_forbidden(client: TestClient, auth_manager: Any) -> None:
    response = client.get("/", headers={"Authorization": f"Bearer {token(auth_manager, role=None)}"})
    assert response.status_code == 403
    assert NIGHTLY not in response.text


def test_overview_shows_each_category_as_the_engine_reported_it(
    client: TestClient, viewer: dict[str, str], ledger_world: LedgerWorld
) -> None:
    response = client.get("/", headers=viewer)
    assert response.status_code == 200
    cells = run_cells(dom(response.text), NIGHTLY)

    for step in ledger_world.nightly:
        shown = cells[step.category]
        assert int(shown["erased"]) == step.erased, step.category
        assert int(shown["anonymised"]) == step.anonymised, step.category
        assert int(shown["kept"]) == step.kept_total, step.category
        assert shown["failed"] == "0"
        assert shown["verified"] == "✓ database"
    assert sum(int(c["erased"]) for c in cells.values()) == sum(s.erased for s in ledger_world.nightly) > 0
    for category in ledger_world.needs_approval:
        assert cells[category]["status"] == "awaiting approval"
        assert cells[category]["erased"] == "0"
    blocked = {c: why for c, why in ledger_world.skipped.items() if c not in ledger_world.needs_approval}
    for category, why in blocked.items():
        assert cells[category]["status"] == f"skipped: {why.words()}"


def test_overview_lists_pending_approvals_with_links_and_not_answered_ones(
    client: TestClient, viewer: dict[str, str], ledger_world: LedgerWorld
) -> None:
    section = dom(client.get("/", headers=viewer).text).one("section", data_testid="approvals")
    rows = [r for r in section.find_all("tr") if "data-run" in r.attrs]
    assert sorted((r.attrs["data-run"], r.attrs["data-category"]) for r in rows) == sorted(
        (NIGHTLY, c) for c in ledger_world.needs_approval
    )
    links = [a.attrs["href"] for a in rows[0].find_all("a")]
    assert links == [
        f"/dags/retention_nightly/runs/{NIGHTLY}/required_actions",
        f"/dags/retention_nightly/runs/{NIGHTLY}/tasks/category.approve/mapped",
    ]
    assert all("data-airflow" in a.attrs for a in rows[0].find_all("a"))


def test_overview_lists_the_receipt_with_location_digest_and_counts(
    client: TestClient, viewer: dict[str, str], ledger_world: LedgerWorld
) -> None:
    section = dom(client.get("/", headers=viewer).text).one("section", data_testid="receipts")
    row = section.one("tr", data_run=ERASURE)
    text = row.text()
    assert ledger_world.subject_ref in text
    assert "s3:alleskar-privacy-receipts/receipts/" in text
    assert row.one("code", title=ledger_world.receipt_digest).text() == ledger_world.receipt_digest[:16] + "…"
    erased = sum(r.erased + r.anonymised for r in ledger_world.erasure)
    assert row.one("td", data_field="erased").text() == str(erased)
    assert row.one("td", data_field="kept").text() == "3"
    assert "yes" in text


def test_run_page_and_the_chain_status(
    client: TestClient, viewer: dict[str, str], ledger_world: LedgerWorld
) -> None:
    page = dom(client.get(f"/run?run_id={ERASURE}", headers=viewer).text)
    cells = run_cells(page, ERASURE)
    for step in ledger_world.erasure:
        assert int(cells[step.category]["erased"]) == step.erased
    assert ledger_world.subject_ref in page.text()
    chain = page.one("section", data_testid="chain-status")
    total = Ledger(sa.create_engine(ledger_world.url)).count()
    assert chain.attrs["data-ok"] == "true"
    assert f"{total} entries verified" in chain.text()

    missing = client.get("/run?run_id=no_such_run", headers=viewer)
    assert missing.status_code == 404


def _seqs(html: str) -> list[int]:
    return [
        int(r.attrs["data-seq"])
        for r in dom(html).one("table", data_testid="ledger").find_all("tr")
        if "data-seq" in r.attrs
    ]


def test_ledger_pages_follow_the_ledger_newest_first(
    client: TestClient, viewer: dict[str, str], ledger_world: LedgerWorld
) -> None:
    ledger = Ledger(sa.create_engine(ledger_world.url))
    total = ledger.count()
    assert total > 50
    expected = [e["seq"] for e in ledger.entries(offset=25, limit=25)]
    assert _seqs(client.get("/ledger?page=2&size=25", headers=viewer).text) == expected

    last = -(-total // 25)
    beyond = client.get("/ledger?page=999&size=25", headers=viewer).text
    assert _seqs(beyond) == [e["seq"] for e in ledger.entries(offset=(last - 1) * 25, limit=25)]
    assert f"page {last} of {last}" in dom(beyond).one("nav", data_testid="pagination").text()

    assert len(_seqs(client.get("/ledger?size=7", headers=viewer).text)) == 50  # not an offered size
    assert client.get("/ledger?page=0", headers=viewer).status_code == 422


def test_ledger_filters_by_run_and_category(
    client: TestClient, viewer: dict[str, str], ledger_world: LedgerWorld
) -> None:
    ledger = Ledger(sa.create_engine(ledger_world.url))
    by_run = client.get(f"/ledger?run={ERASURE}&size=200", headers=viewer).text
    assert dom(by_run).one("p", data_testid="ledger-total").attrs["data-total"] == str(ledger.count(ERASURE))
    assert _seqs(by_run) == [e["seq"] for e in ledger.entries(run_id=ERASURE, limit=200)]

    both = client.get(f"/ledger?run={NIGHTLY}&category=correspondence&size=200", headers=viewer).text
    assert _seqs(both) == [
        e["seq"] for e in ledger.entries(run_id=NIGHTLY, category="correspondence", limit=200)
    ]
    assert _seqs(both)
    options = [o.attrs["value"] for o in dom(both).find_all("option") if o.attrs.get("value")]
    assert "correspondence" in options and "selected" in dom(both).one("option", value="correspondence").attrs

    assert _seqs(client.get("/ledger?run=no_such_run", headers=viewer).text) == []


def test_pages_hold_no_personal_data_and_escape_what_they_show(
    client: TestClient, viewer: dict[str, str], ledger_world: LedgerWorld
) -> None:
    pages = [
        client.get(p, headers=viewer).text for p in ("/", f"/run?run_id={ERASURE}", f"/run?run_id={NIGHTLY}")
    ]
    total = Ledger(sa.create_engine(ledger_world.url)).count()
    pages += [
        client.get(f"/ledger?size=200&page={n}", headers=viewer).text for n in range(1, -(-total // 200) + 1)
    ]
    everything = "\n".join(pages)
    world = ledger_world.world
    for customer in range(1, world.size.customers + 1):
        canaries = world.canaries(customer)
        for value in (canaries.name, canaries.email, canaries.phone, canaries.phrase):
            assert value not in everything, f"customer {customer}'s data is on a page"
    assert "<script>alert(1)</script>" not in everything
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]


def test_security_headers_allow_framing_by_the_airflow_ui_only(
    client: TestClient, viewer: dict[str, str]
) -> None:
    response = client.get("/", headers=viewer)
    assert "frame-ancestors 'self'" in response.headers["content-security-policy"]
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    static = client.get("/static/retention.css")
    assert static.status_code == 200 and "cache-control" not in static.headers


def test_a_broken_chain_is_shown_as_broken(
    ledger_world: LedgerWorld, viewer: dict[str, str], tmp_path: Path
) -> None:
    copy = tmp_path / "tampered.db"
    shutil.copy(ledger_world.path, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE retention_ledger SET count = count + 1 WHERE seq = 3")
    app = create_app(engine_factory=lambda: sa.create_engine(f"sqlite:///{copy}"), chain_ttl=0)
    with TestClient(app) as c:
        chain = dom(c.get("/", headers=viewer).text).one("section", data_testid="chain-status")
    assert chain.attrs["data-ok"] == "false"
    assert "BROKEN at entry 3" in chain.text()


def test_no_ledger_yet_and_no_ledger_connection(viewer: dict[str, str], tmp_path: Path) -> None:
    empty = create_app(engine_factory=lambda: sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}"))
    with TestClient(empty) as c:
        response = c.get("/", headers=viewer)
    assert response.status_code == 200
    assert "No ledger yet" in response.text

    def unconfigured() -> sa.Engine:
        raise LookupError("The conn_id `business_db` isn't defined")

    with TestClient(create_app(engine_factory=unconfigured)) as c:
        response = c.get("/ledger", headers=viewer)
    assert response.status_code == 503
    assert "cannot be opened (LookupError)" in response.text


def test_chain_checks_are_cached_and_refreshed_in_the_background(
    ledger_world: LedgerWorld, tmp_path: Path
) -> None:
    copy = tmp_path / "ledger.db"
    shutil.copy(ledger_world.path, copy)
    now = [100.0]
    cache = ChainCache(ttl=60, clock=lambda: now[0])
    reader = LedgerReader(sa.create_engine(f"sqlite:///{copy}"))
    first = cache.get(reader)
    assert first.status.ok
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE retention_ledger SET count = count + 1 WHERE seq = 2")
    now[0] += 59
    assert cache.get(reader) is first  # within the ttl: not walked again
    now[0] += 2
    assert cache.get(reader) is first  # stale: still shown while the background walk runs
    cache.wait(timeout=30)
    fresh = cache.get(reader)
    assert not fresh.status.ok and fresh.status.first_bad_seq == 2


def test_the_plugin_mounts_the_app_and_adds_a_navigation_entry() -> None:
    import retention_ui_plugin
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse
    from fastapi import FastAPI

    plugin = retention_ui_plugin.RetentionUiPlugin
    (mounted,) = plugin.fastapi_apps
    assert isinstance(mounted["app"], FastAPI)
    assert not any(mounted["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)
    (view,) = plugin.external_views
    parsed = ExternalViewResponse.model_validate(view)
    assert parsed.destination == "nav" and parsed.href == mounted["url_prefix"] + "/"


# --- the chain status covers what the page shows -----------------------------------------------


def _run_entries(ledger: Ledger, run_id: str, n: int) -> None:
    ledger.append_many(
        [
            LedgerEntry(run_id=run_id, category="invoices", action="delete", outcome="planned")
            for _ in range(n)
        ]
    )


def _banner(client: TestClient, headers: dict[str, str], path: str = "/") -> Node:
    return dom(client.get(path, headers=headers).text).one("section", data_testid="chain-status")


def _shown_entries(client: TestClient, headers: dict[str, str]) -> int:
    """The ledger entries of the runs the overview shows, added up from their headings."""
    page = dom(client.get("/", headers=headers).text)
    metas = [p.text() for p in page.one("section", data_testid="runs").find_all("p", **{"class": "meta"})]
    return sum(int(m.split(" ledger entries")[0].split()[-1]) for m in metas)


def test_the_chain_status_covers_every_entry_the_page_shows(viewer: dict[str, str], tmp_path: Path) -> None:
    # The issue: verified after the first run (1 entry), then a second run wrote 78 more, and the
    # page showed "Hash chain intact: 1 entries verified" above runs with 79 entries.
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger = Ledger(engine)
    ledger.ensure_schema()
    ledger.append(LedgerEntry(run_id="nightly__first", action="run", outcome="summary"))
    app = create_app(engine_factory=lambda: engine, chain_ttl=3600)
    with TestClient(app) as c:
        first = _banner(c, viewer)
        assert first.attrs["data-ok"] == "true" and "1 entries verified" in first.text()

        _run_entries(ledger, "nightly__second", 78)
        assert _shown_entries(c, viewer) == 79
        banner = _banner(c, viewer)
        assert banner.attrs["data-ok"] == "true" and "79 entries verified" in banner.text(), banner.text()
        head = ledger.verify_chain().head_hash
        assert banner.one("code").attrs["title"] == head

        # Verified from the last verified entry on: an edited new entry is found without a full walk.
        _run_entries(ledger, "nightly__third", 5)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE retention_ledger SET count = 7 WHERE seq = 82"))
        broken = _banner(c, viewer)
        assert broken.attrs["data-ok"] == "false"
        assert "BROKEN at entry 82" in broken.text() and "81 entries before it are intact" in broken.text()


def test_a_large_growth_is_shown_as_still_being_checked(viewer: dict[str, str], tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger = Ledger(engine)
    ledger.ensure_schema()
    _run_entries(ledger, "nightly__first", 3)
    app = create_app(engine_factory=lambda: engine, chain_ttl=3600, chain_sync_limit=10)
    with TestClient(app) as c:
        assert "3 entries verified" in _banner(c, viewer).text()
        _run_entries(ledger, "nightly__second", 40)  # more than the page verifies itself
        page = dom(c.get("/ledger?size=200", headers=viewer).text)
        assert len(_seqs_of(page)) == 43
        banner = page.one("section", data_testid="chain-status")
        assert banner.attrs["data-ok"] == "pending" and banner.attrs["data-state"] == "checking"
        assert "still being checked (3 of 43 entries verified)" in banner.text()
        assert "intact" not in banner.text()

        app.state.site.chain.wait(timeout=30)  # verified meanwhile, from entry 3 on
        done = _banner(c, viewer)
        assert done.attrs["data-ok"] == "true" and "43 entries verified" in done.text()


def _seqs_of(page: Node) -> list[int]:
    rows = page.one("table", data_testid="ledger").find_all("tr")
    return [int(r.attrs["data-seq"]) for r in rows if "data-seq" in r.attrs]


def test_a_head_that_went_back_is_walked_again_before_anything_is_claimed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    ledger = Ledger(engine)
    ledger.ensure_schema()
    _run_entries(ledger, "nightly__first", 10)
    cache = ChainCache(ttl=3600, clock=lambda: 0.0)
    reader = LedgerReader(engine)
    assert cache.get(reader).status.checked == 10
    # The last four entries deleted and the head set back to entry 6: a consistent, shorter chain.
    sixth = ledger.entries(offset=4, limit=1)[0]
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM retention_ledger WHERE seq > 6")
        conn.execute("UPDATE retention_ledger_head SET last_seq = 6, last_hash = ?", (sixth["entry_hash"],))
    pending = cache.get(reader)
    assert pending.state == "checking" and pending.status.checked == 0 and pending.total == 6
    cache.wait(timeout=30)
    walked = cache.get(reader)
    assert walked.state == "intact" and walked.status.checked == 6


# --- due but not erased ------------------------------------------------------------------------


def backlog_rows(page: Node) -> dict[tuple[str, str], dict[str, str]]:
    """(category, reason) -> field -> text of the backlog panel, plus its data attributes."""
    section = page.one("section", data_testid="backlog")
    return {
        (row.attrs["data-category"], row.attrs["data-reason"]): {
            **{
                cell.attrs["data-field"]: cell.text()
                for cell in row.find_all("td")
                if "data-field" in cell.attrs
            },
            "lawful": row.attrs["data-lawful"],
            "nights": row.attrs["data-nights"],
        }
        for row in section.find_all("tr")
        if "data-category" in row.attrs
    }


def test_the_backlog_panel_shows_the_newest_nightly_summary(
    client: TestClient, viewer: dict[str, str], ledger_world: LedgerWorld
) -> None:
    ledger = Ledger(sa.create_engine(ledger_world.url))
    (summary,) = [e for e in ledger.entries(run_id=NIGHTLY, limit=5) if e["action"] == "run"]
    recorded = summary["detail"]["backlog"]
    expected = {(c, r.value): n for c, reasons in ledger_world.backlog.items() for r, n in reasons.items()}
    assert {(c, r): n for c, reasons in recorded.items() for r, n in reasons.items()} == expected
    assert any(r is Reason.AWAITING_APPROVAL for reasons in ledger_world.backlog.values() for r in reasons)

    rows = backlog_rows(dom(client.get("/", headers=viewer).text))
    assert {key: int(row["count"]) for key, row in rows.items()} == expected
    for (_category, reason), row in rows.items():
        known = Reason(reason)
        words = "blocked by a category it runs after" if known is Reason.BLOCKED_BY_DEPENDENCY else None
        assert row["reason"] == (words or Skip(known).words())
        assert row["kind"] == ("lawful keep" if known.lawful_keep else "needs action")
        assert row["lawful"] == ("true" if known.lawful_keep else "false")
        assert row["age"] == "for 1 night" and row["nights"] == "1"
    for category in ledger_world.needs_approval:
        assert rows[(category, "awaiting_approval")]["kind"] == "needs action"


def _night(
    engine: sa.Engine,
    run_id: str,
    skipped: dict[str, Skip],
    planned: dict[str, int],
    kept: dict[str, dict[Reason, int]] | None = None,
    dry_run: bool = False,
) -> None:
    """A nightly run's end (``flow.finish``) with the given skips, planned records and kept items."""
    ctx = _context(engine, run_id, dry_run=dry_run)
    run = flow.describe(ctx)
    results = [
        StepResult(run_id=run_id, category=c, store="database", mode="due", dry_run=dry_run, kept=k)
        for c, k in (kept or {}).items()
    ]
    plans = {
        c: CategoryPlan(c, ("database",), n, n, 0, {}, needs_approval=False, approval_reason=None)
        for c, n in planned.items()
    }
    if dry_run:
        flow.finish(ctx, run, {}, results, skipped, plans=plans)
    else:
        with pytest.raises(TerminalError):  # unproven: nothing was erased here
            flow.finish(ctx, run, {}, results, skipped, plans=plans)


def test_the_backlog_age_counts_consecutive_real_nightly_runs(
    ledger_world: LedgerWorld, viewer: dict[str, str], tmp_path: Path
) -> None:
    copy = tmp_path / "nights.db"
    shutil.copy(ledger_world.path, copy)
    engine = sa.create_engine(f"sqlite:///{copy}")
    a, b, c = sorted(ledger_world.backlog)[:3]
    night_zero = {r for reasons in ledger_world.backlog.values() for r in reasons}
    new_reasons = {Reason.FAILED, Reason.REJECTED, Reason.NO_PLAN, Reason.STATUTORY, Reason.OVER_CAP}
    assert not night_zero & new_reasons, "the reasons of the nights below are new after the fixture's run"

    failed = Skip(Reason.FAILED, error="OperationalError")
    rejected, no_plan = Skip(Reason.REJECTED), Skip(Reason.NO_PLAN)
    _night(engine, "nightly__one", {a: failed, b: rejected, c: no_plan}, {a: 4, b: 2, c: 1})
    _night(engine, "nightly__two", {a: failed, b: rejected}, {a: 5, b: 2}, kept={b: {Reason.STATUTORY: 3}})
    # A dry run is no night: it neither continues nor ends a run of nights, nor is it the newest.
    _night(engine, "nightly__dry", {c: no_plan}, {c: 1}, dry_run=True)
    _night(engine, "nightly__three", {a: failed, c: no_plan}, {a: 6, c: 1}, kept={b: {Reason.STATUTORY: 4}})
    _night(engine, "nightly__dry_after", {a: Skip(Reason.OVER_CAP)}, {a: 9}, dry_run=True)

    app = create_app(engine_factory=lambda: engine)
    with TestClient(app) as client:
        rows = backlog_rows(dom(client.get("/", headers=viewer).text))
    assert set(rows) == {(a, "failed"), (b, "statutory"), (c, "no_plan")}
    assert rows[(a, "failed")]["count"] == "6" and rows[(a, "failed")]["age"] == "for 3 nights"
    assert rows[(a, "failed")]["kind"] == "needs action"
    assert rows[(a, "failed")]["reason"] == "failed"
    assert rows[(b, "statutory")]["count"] == "4" and rows[(b, "statutory")]["age"] == "for 2 nights"
    assert rows[(b, "statutory")]["kind"] == "lawful keep"
    assert rows[(c, "no_plan")]["age"] == "for 1 night"

    # Counted over the newest nights only: a run of nights as long as those read may be longer.
    backlog = LedgerReader(engine).backlog(nights=2)
    assert backlog is not None and backlog.nights_read == 2
    ages = {(i.category, i.reason): (i.nights, i.at_least) for i in backlog.items}
    assert ages == {(a, "failed"): (2, True), (b, "statutory"): (2, True), (c, "no_plan"): (1, False)}
    assert backlog.needs_action == 2


def test_the_backlog_panel_without_a_real_nightly_run(viewer: dict[str, str], tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger = Ledger(engine)
    ledger.ensure_schema()
    dry = {"mode": "due", "dry_run": True, "backlog": {"invoices": {"failed": 3}}}
    ledger.append(LedgerEntry(run_id="nightly__dry", action="run", outcome="summary", detail=dry))
    with TestClient(create_app(engine_factory=lambda: engine)) as client:
        section = dom(client.get("/", headers=viewer).text).one("section", data_testid="backlog")
    assert "No nightly run (other than a dry run)" in section.text()
    assert not section.find_all("tr")
