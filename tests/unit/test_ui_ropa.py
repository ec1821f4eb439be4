"""The monitoring app's record of processing (``/ropa``): the record from the policies, the policy
set's hash and since when the ledger shows runs using it.

Authentication goes through Airflow's real simple auth manager, as for the other pages
(``test_ui_app``). The ledger is a real one in SQLite; the expected record comes from
``retention.ropa`` over the same policies, not from the page.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from retention.errors import PolicyError
from retention.ledger import Ledger, LedgerEntry
from retention.policy import PolicySet, load_policies
from retention.ropa import Controller, render
from retention_airflow.ui import create_app
from retention_airflow.ui.reader import LedgerReader
from tests.unit.test_ui_app import Node, dom

POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "retention_policies"
OTHER = "b" * 64
FIRST, SECOND, OLDER = "nightly__first_under_it", "erasure__second", "nightly__before"
PAGES = ["/ropa", "/ropa/download/ropa.da.md", "/ropa/download/ropa.json"]


@pytest.fixture(scope="module")
def auth_manager(airflow_db: Path) -> Any:
    from airflow.api_fastapi.app import create_auth_manager

    return create_auth_manager()


def bearer(auth_manager: Any, role: str | None) -> dict[str, str]:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = auth_manager.generate_jwt(SimpleAuthManagerUser(username="dpo", role=role))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def viewer(auth_manager: Any) -> dict[str, str]:
    return bearer(auth_manager, "VIEWER")


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policies(POLICY_DIR)


def summary(ledger: Ledger, run_id: str, policy_set_hash: str | None, action: str = "run") -> None:
    ledger.append(
        LedgerEntry(run_id=run_id, action=action, outcome="summary", policy_set_hash=policy_set_hash)
    )


@pytest.fixture
def ledger_url(tmp_path: Path, policies: PolicySet) -> str:
    """A ledger where a run used another policy set, then two runs the current one."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(sa.create_engine(url))
    ledger.ensure_schema()
    summary(ledger, OLDER, OTHER)
    ledger.append(LedgerEntry(run_id=FIRST, category="invoices", action="delete", outcome="planned"))
    summary(ledger, FIRST, policies.hash)
    summary(ledger, "manual__no_hash", None)
    summary(ledger, SECOND, policies.hash, action="receipt")
    return url


def app(url: str, policies: PolicySet | None = None, **kw: Any) -> Any:
    chosen = policies or load_policies(POLICY_DIR)
    return create_app(engine_factory=lambda: sa.create_engine(url), policies_factory=lambda: chosen, **kw)


@pytest.fixture
def client(ledger_url: str, auth_manager: Any) -> Iterator[TestClient]:
    with TestClient(app(ledger_url)) as c:
        yield c


@pytest.mark.parametrize("path", PAGES)
def test_the_record_needs_a_login_like_every_page(client: TestClient, auth_manager: Any, path: str) -> None:
    api = client.get(path)
    assert api.status_code == 401 and api.headers["www-authenticate"] == "Bearer"
    assert "Alles-klar" not in api.text

    browser = client.get(path, headers={"Accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 303
    assert browser.headers["location"].startswith("/auth/login?next=")

    forged = client.get(path, headers={"Authorization": "Bearer forged.token.here"})
    assert forged.status_code == 401

    no_role = client.get(path, headers=bearer(auth_manager, None))
    assert no_role.status_code == 403 and "Alles-klar" not in no_role.text


def _in_force(page: Node) -> Node:
    return page.one("section", data_testid="policy-set").one("p", data_testid="in-force")


def test_the_record_in_danish_then_english_with_the_hash(
    client: TestClient, viewer: dict[str, str], policies: PolicySet
) -> None:
    response = client.get("/ropa", headers=viewer)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'self'" in response.headers["content-security-policy"]
    page = dom(response.text)

    header_link = page.one("header").one("a", href="/ropa")
    assert header_link.attrs["aria-current"] == "page" and header_link.text() == "Record of processing"

    policy_set = page.one("section", data_testid="policy-set")
    assert policy_set.attrs["data-hash"] == policies.hash
    assert policy_set.one("code", data_field="hash").text() == policies.hash

    assert response.text.index('data-testid="ropa-da"') < response.text.index('data-testid="ropa-en"')
    for lang, title in (("da", "Fortegnelse over behandlingsaktiviteter"), ("en", "Record of processing")):
        section = page.one("section", data_testid=f"ropa-{lang}")
        assert section.attrs["lang"] == lang and title in section.one("h2").text()
        assert policies.hash in section.one("dl", data_testid="ropa-header").text()
        articles = section.find_all("article")
        assert [a.attrs["data-category"] for a in articles] == policies.ids
        expected = render(policies, lang)
        for policy, article in zip(policies.policies, articles, strict=True):
            assert policy.purpose is not None
            text = article.text()
            assert getattr(policy.purpose, lang) in text
            for loc in policy.locations:
                assert loc.label() in text
        # every fact the Markdown states, the page states (the same rows)
        for line in expected.splitlines():
            fact = line.split(":**", 1)[-1].strip().removeprefix("- ").strip("`")
            if fact and not line.startswith("#") and fact not in ("---",):
                assert " ".join(fact.split()) in section.text(), fact
    downloads = [a.attrs["href"] for a in policy_set.find_all("a") if "download" in a.attrs]
    assert downloads == ["/ropa/download/ropa.da.md", "/ropa/download/ropa.en.md", "/ropa/download/ropa.json"]


def test_in_force_since_the_first_run_under_the_hash(client: TestClient, viewer: dict[str, str]) -> None:
    page = dom(client.get("/ropa", headers=viewer).text)
    in_force = _in_force(page)
    assert in_force.attrs["data-state"] == "in-force" and in_force.attrs["data-run"] == FIRST
    assert "2 run summaries since" in in_force.text()
    assert in_force.one("code", title=OTHER).text() == OTHER[:16] + "…"
    assert in_force.one("a").attrs["href"] == f"/run?run_id={FIRST}"


def test_a_policy_set_no_run_has_used_yet(ledger_url: str, viewer: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "changed"
    shutil.copytree(POLICY_DIR, folder)
    invoices = folder / "invoices.yaml"
    invoices.write_text(invoices.read_text(encoding="utf-8").replace("period: P5Y", "period: P6Y"))
    changed = load_policies(folder)
    current = load_policies(POLICY_DIR)
    with TestClient(app(ledger_url, changed)) as c:
        page = dom(c.get("/ropa", headers=viewer).text)
    in_force = _in_force(page)
    assert in_force.attrs["data-state"] == "not-run"
    assert "No run has used this policy set yet" in in_force.text()
    assert in_force.one("code", title=current.hash).text() == current.hash[:16] + "…"
    assert page.one("section", data_testid="policy-set").attrs["data-hash"] == changed.hash
    assert "6 år regnet fra udgangen af det regnskabsår" in page.one("section", data_testid="ropa-da").text()


def test_the_record_without_a_ledger_or_without_its_connection(
    viewer: dict[str, str], tmp_path: Path
) -> None:
    with TestClient(app(f"sqlite:///{tmp_path / 'empty.db'}")) as c:
        response = c.get("/ropa", headers=viewer)
    assert response.status_code == 200
    assert _in_force(dom(response.text)).attrs["data-state"] == "no-ledger"

    def unconfigured() -> sa.Engine:
        raise LookupError("The conn_id `retention_ledger` isn't defined")

    policies = load_policies(POLICY_DIR)
    with TestClient(create_app(engine_factory=unconfigured, policies_factory=lambda: policies)) as c:
        response = c.get("/ropa", headers=viewer)
    assert response.status_code == 200  # the record does not need the ledger
    in_force = _in_force(dom(response.text))
    assert in_force.attrs["data-state"] == "unknown" and "cannot be opened (LookupError)" in in_force.text()
    assert len(dom(response.text).one("section", data_testid="ropa-en").find_all("article")) == len(
        policies.policies
    )


def test_unloadable_policies_are_said_so(ledger_url: str, viewer: dict[str, str]) -> None:
    def broken() -> PolicySet:
        raise PolicyError("invoices.yaml", "retention.period", "not a duration")

    with TestClient(
        create_app(engine_factory=lambda: sa.create_engine(ledger_url), policies_factory=broken)
    ) as c:
        response = c.get("/ropa", headers=viewer)
    assert response.status_code == 503
    assert "invoices.yaml: retention.period" in response.text


def test_policy_texts_are_escaped(ledger_url: str, viewer: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "hostile"
    shutil.copytree(POLICY_DIR, folder)
    path = folder / "invoices.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(_hostile(text), encoding="utf-8")
    with TestClient(app(ledger_url, load_policies(folder))) as c:
        html = c.get("/ropa", headers=viewer).text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def _hostile(policy_yaml: str) -> str:
    """The policy with a script tag in its description."""
    lines = policy_yaml.splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if line.startswith("description:"))
    lines[i] = 'description: "<script>alert(1)</script> invoices and their records"\n'
    return "".join(lines)


def test_the_downloads_are_what_make_ropa_writes(
    client: TestClient, viewer: dict[str, str], policies: PolicySet
) -> None:
    da = client.get("/ropa/download/ropa.da.md", headers=viewer)
    assert da.status_code == 200 and da.headers["content-type"] == "text/markdown; charset=utf-8"
    assert da.headers["content-disposition"] == 'attachment; filename="ropa.da.md"'
    stamp = next(line for line in da.text.splitlines() if line.startswith("- **Dannet:** "))
    generated = stamp.removeprefix("- **Dannet:** ")
    controller = client.app.state.site.controller  # type: ignore[attr-defined]
    assert da.text == render(policies, "da", controller=controller, generated_at=generated)

    en = client.get("/ropa/download/ropa.en.md", headers=viewer).text
    assert en.startswith("# Record of processing activities\n")

    doc = client.get("/ropa/download/ropa.json", headers=viewer)
    assert doc.headers["content-type"] == "application/json"
    parsed = json.loads(doc.text)
    assert parsed["policy_set_hash"] == policies.hash and parsed["generated_at"]
    assert [c["id"] for c in parsed["categories"]] == policies.ids

    missing = client.get("/ropa/download/passwords.txt", headers=viewer)
    assert missing.status_code == 404 and "ropa.da.md" in missing.text


def test_the_controller_the_app_is_given(ledger_url: str, viewer: dict[str, str]) -> None:
    controller = Controller(address="Vestergade 1, 8000 Aarhus C")
    with TestClient(app(ledger_url, controller=controller)) as c:
        header = dom(c.get("/ropa", headers=viewer).text).one("section", data_testid="ropa-da")
    facts = header.one("dl", data_testid="ropa-header")
    assert "Vestergade 1, 8000 Aarhus C" in facts.text()
    undeclared = [dd.text() for dd in facts.find_all("dd") if dd.attrs.get("data-declared") == "false"]
    assert undeclared == ["ikke angivet (sættes af driften med RETENTION_CONTROLLER_DPO)"]


# --- since when, from the ledger ------------------------------------------------------------------


def test_in_force_since_counts_from_the_last_change(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger = Ledger(engine)
    ledger.ensure_schema()
    a, b = "a" * 64, OTHER
    for run, policy_set in (("r1", a), ("r2", a), ("r3", b), ("r4", a), ("r5", a)):
        summary(ledger, run, policy_set)
    reader = LedgerReader(engine)
    use = reader.policy_set_use(a)
    assert (use.first_run, use.runs, use.previous_hash, use.at_least) == ("r4", 2, b, False)
    times = {e["run_id"]: e["recorded_at"] for e in ledger.entries(limit=10)}
    assert use.since == times["r4"] and use.previous_at == times["r3"]

    back = reader.policy_set_use(b)  # used once, then replaced: not in force now
    assert back.since is None and back.runs == 0 and back.previous_hash == a

    never = reader.policy_set_use("c" * 64)
    assert never.since is None and never.previous_hash == a

    # Only the newest entries are read: beyond them, "at least since".
    narrow = LedgerReader(engine, window=2)
    assert (narrow.policy_set_use(a).first_run, narrow.policy_set_use(a).at_least) == ("r4", True)
    assert LedgerReader(engine, window=5).policy_set_use(a).at_least is False
