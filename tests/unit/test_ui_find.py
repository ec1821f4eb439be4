"""The "Find a customer" page of the monitoring app, over a reference world in SQLite.

Authentication and permissions go through Airflow's real simple auth manager (a VIEWER may
read the runs but not trigger them; a USER may trigger). Expected ids and counts come from
the world's ground truth, never from the page's own queries. The looked-up values are the
world's canaries: they must not come back in a response, a cookie, a header or a log record.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from harness.world_size import WorldSize
from harness.world_stores import generate
from harness.world_truth import World
from retention.ledger import Ledger
from retention.policy import PolicySet, load_policies
from retention_airflow.ui import create_app
from retention_airflow.ui.find import CSRF_COOKIE, CSRF_FIELD, MAX_BODY
from tests.unit.test_ui_app import Node, dom

REPO = Path(__file__).resolve().parents[2]
POLICY_DIR = REPO / "include" / "retention_policies"
CUSTOMER = 7


@dataclass
class FindWorld:
    url: str
    world: World
    policies: PolicySet


@pytest.fixture(scope="module")
def find_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FindWorld]:
    """A small reference world in SQLite (rows only), and the reference policies with identity types."""
    root = tmp_path_factory.mktemp("find")
    url = f"sqlite:///{root / 'business.db'}"
    engine = sa.create_engine(url)
    world = generate(engine, size=WorldSize.small())
    Ledger(engine).ensure_schema()
    engine.dispose()
    folder = root / "policies"
    shutil.copytree(POLICY_DIR, folder)
    yield FindWorld(url, world, load_policies(folder))


@pytest.fixture(scope="module")
def auth_manager(airflow_db: Path) -> Any:
    from airflow.api_fastapi.app import create_auth_manager

    return create_auth_manager()


def bearer(auth_manager: Any, role: str | None, name: str = "ops") -> dict[str, str]:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = auth_manager.generate_jwt(SimpleAuthManagerUser(username=name, role=role))
    return {"Authorization": f"Bearer {token}"}


def app_for(find_world: FindWorld, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "engine_factory": lambda: sa.create_engine(find_world.url),
        "business_engine_factory": lambda: sa.create_engine(find_world.url),
        "policies_factory": lambda: find_world.policies,
    }
    return create_app(**{**options, **kw})


@pytest.fixture
def client(find_world: FindWorld, auth_manager: Any) -> Iterator[TestClient]:
    with TestClient(app_for(find_world)) as c:
        yield c


@pytest.fixture(scope="module")
def ops(auth_manager: Any) -> dict[str, str]:
    """A USER: may read the retention runs and trigger customer_erasure."""
    return bearer(auth_manager, "USER")


def form_of(client: TestClient, headers: dict[str, str]) -> tuple[Node, str]:
    """The form of a GET /find, and its CSRF token."""
    response = client.get("/find", headers=headers)
    assert response.status_code == 200, response.text
    form = dom(response.text).one("form", data_testid="find-form")
    token = form.one("input", name=CSRF_FIELD).attrs["value"]
    return form, token


def post(client: TestClient, headers: dict[str, str], **fields: str) -> Any:
    return client.post("/find", headers=headers, data=fields)


def matches(html: str) -> tuple[Node, dict[str, dict[str, int]]]:
    """The matches section and, per shown customer id, the counts per category."""
    section = dom(html).one("section", data_testid="matches")
    shown = {
        article.attrs["data-subject"]: {
            row.attrs["data-category"]: int(row.one("td", data_field="count").text())
            for row in article.find_all("tr")
            if "data-category" in row.attrs
        }
        for article in section.find_all("article")
    }
    return section, shown


def expected_counts(find_world: FindWorld, customer: int) -> dict[str, int]:
    rows = find_world.world.customer_inventory(customer).rows
    # The access reports are the system's own table: the world made none.
    return {p.id: len(rows.get(p.records.table, ())) for p in find_world.policies.policies}


def assert_not_echoed(response: Any, *values: str) -> None:
    everything = (response.text + repr(dict(response.headers))).lower()
    for value in values:
        assert value.lower() not in everything, "the looked-up value came back"


def test_the_form_posts_the_value_and_never_prefills_it(client: TestClient, ops: dict[str, str]) -> None:
    response = client.get("/find", headers=ops)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    form = dom(response.text).one("form", data_testid="find-form")
    assert form.attrs["method"] == "post" and form.attrs["action"] == "/find"
    assert form.attrs["autocomplete"] == "off"
    options = {o.attrs["value"]: o.text() for o in form.find_all("option")}
    declared = load_policies(POLICY_DIR).subject.identities
    assert options == {i.name: i.description for i in declared} and "email" in options
    value = form.one("input", name="value")
    assert value.attrs["type"] == "text" and value.attrs["value"] == ""
    assert value.attrs["autocomplete"] == "off" and value.attrs["spellcheck"] == "false"
    assert len(form.one("input", name=CSRF_FIELD).attrs["value"]) == 64
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith(f"{CSRF_COOKIE}=") and "httponly" in cookie and "samesite=strict" in cookie


def test_a_canary_email_finds_its_customer_with_counts_and_a_trigger_link(
    client: TestClient, ops: dict[str, str], find_world: FindWorld, caplog: pytest.LogCaptureFixture
) -> None:
    email = find_world.world.canaries(CUSTOMER).email
    _form, token = form_of(client, ops)
    with caplog.at_level(logging.DEBUG):
        response = post(client, ops, **{CSRF_FIELD: token, "identity": "email", "value": email.upper()})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    section, shown = matches(response.text)
    assert section.attrs["data-count"] == "1" and section.attrs["data-more"] == "false"
    assert shown == {str(CUSTOMER): expected_counts(find_world, CUSTOMER)}
    assert sum(shown[str(CUSTOMER)].values()) > 1
    link = section.one("a", data_testid="trigger-link")
    assert link.attrs["href"] == "/dags/customer_erasure" and "data-airflow" in link.attrs
    assert "One customer has this e-mail address" in section.text()
    # the form is there again, empty, with the identity type chosen
    again = dom(response.text).one("form", data_testid="find-form")
    assert again.one("input", name="value").attrs["value"] == ""
    assert "selected" in again.one("option", value="email").attrs
    assert_not_echoed(response, email)
    assert all(email.lower() not in r.getMessage().lower() for r in caplog.records)
    assert any("customer lookup by email: 1 match" in r.getMessage() for r in caplog.records)


def test_a_phone_number_in_another_format_finds_the_same_customer(
    client: TestClient, ops: dict[str, str], find_world: FindWorld
) -> None:
    phone = find_world.world.canaries(CUSTOMER).phone  # stored as "+45 21 23 45 67"
    digits = "".join(c for c in phone if c.isdigit())
    typed = f"(+{digits[:2]}) {digits[2:6]}-{digits[6:]}"
    assert typed != phone
    _form, token = form_of(client, ops)
    response = post(client, ops, **{CSRF_FIELD: token, "identity": "phone", "value": typed})
    _section, shown = matches(response.text)
    assert list(shown) == [str(CUSTOMER)]
    assert_not_echoed(response, phone, typed, digits)


def test_no_match_and_several_matches_are_shown_as_such(
    client: TestClient, ops: dict[str, str], find_world: FindWorld
) -> None:
    _form, token = form_of(client, ops)
    none = post(client, ops, **{CSRF_FIELD: token, "identity": "email", "value": "nobody@example.invalid"})
    section, shown = matches(none.text)
    assert none.status_code == 200 and section.attrs["data-count"] == "0" and shown == {}
    assert "No customer has this e-mail address" in section.text()
    assert not section.find_all("a")

    # two customers who share a phone number (a household, a shared office line)
    a, b = 11, 12
    shared = find_world.world.canaries(a).phone
    engine = sa.create_engine(find_world.url)
    try:
        with engine.begin() as conn:
            old = conn.execute(sa.text("SELECT phone FROM customers WHERE id = :b"), {"b": b}).scalar_one()
            conn.execute(sa.text("UPDATE customers SET phone = :p WHERE id = :b"), {"p": shared, "b": b})
        several = post(client, ops, **{CSRF_FIELD: token, "identity": "phone", "value": shared})
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE customers SET phone = :p WHERE id = :b"), {"p": old, "b": b})
        engine.dispose()
    section, shown = matches(several.text)
    assert section.attrs["data-count"] == "2"
    assert shown == {str(a): expected_counts(find_world, a), str(b): expected_counts(find_world, b)}
    assert "2 customers share this phone number" in section.text()
    assert len(section.find_all("a", data_testid="trigger-link")) == 2


def test_a_value_not_in_the_format_is_refused_without_repeating_it(
    client: TestClient, ops: dict[str, str]
) -> None:
    _form, token = form_of(client, ops)
    response = post(client, ops, **{CSRF_FIELD: token, "identity": "email", "value": "Anna Berg, Aarhus"})
    assert response.status_code == 422
    problem = dom(response.text).one("p", data_testid="find-problem").text()
    assert "not in the declared format" in problem
    assert not dom(response.text).find_all("section", data_testid="matches")
    assert_not_echoed(response, "Anna Berg", "Aarhus")

    unknown = post(client, ops, **{CSRF_FIELD: token, "identity": "name", "value": "Anna Berg"})
    assert unknown.status_code == 422
    assert_not_echoed(unknown, "Anna Berg")


def test_a_post_without_the_sessions_token_is_refused(
    find_world: FindWorld, auth_manager: Any, ops: dict[str, str]
) -> None:
    email = find_world.world.canaries(CUSTOMER).email
    with TestClient(app_for(find_world)) as client:
        # no form opened: neither the cookie nor a token
        refused = post(client, ops, identity="email", value=email)
        assert refused.status_code == 403
        assert_not_echoed(refused, email)
        assert not dom(refused.text).find_all("section", data_testid="matches")

        _form, token = form_of(client, ops)
        assert post(client, ops, identity="email", value=email).status_code == 403  # the field missing
        wrong = token[:-1] + ("0" if token[-1] != "0" else "1")
        assert (
            post(client, ops, **{CSRF_FIELD: wrong, "identity": "email", "value": email}).status_code == 403
        )
        # another user's token in the same browser session is not this user's
        other = bearer(auth_manager, "USER", name="someone-else")
        assert (
            post(client, other, **{CSRF_FIELD: token, "identity": "email", "value": email}).status_code == 403
        )
        # the token without the session's cookie (another browser)
        nonce = client.cookies.get(CSRF_COOKIE)
        client.cookies.clear()
        assert (
            post(client, ops, **{CSRF_FIELD: token, "identity": "email", "value": email}).status_code == 403
        )
        # and the same token with its cookie is accepted: the refusals above are about the token
        assert nonce is not None
        client.cookies.set(CSRF_COOKIE, nonce)
        accepted = post(client, ops, **{CSRF_FIELD: token, "identity": "email", "value": email})
        assert accepted.status_code == 200
        assert matches(accepted.text)[0].attrs["data-count"] == "1"


def test_who_may_find_a_customer(client: TestClient, auth_manager: Any, ops: dict[str, str]) -> None:
    assert client.get("/find").status_code == 401
    assert client.post("/find", data={"identity": "email", "value": "x@y.dk"}).status_code == 401
    browser = client.get("/find", headers={"Accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 303 and browser.headers["location"].startswith("/auth/login?next=")

    viewer = bearer(auth_manager, "VIEWER")
    assert client.get("/", headers=viewer).status_code == 200, "a viewer may read the runs"
    refused = client.get("/find", headers=viewer)
    assert refused.status_code == 403 and "customer_erasure" in refused.text
    _form, token = form_of(client, ops)
    posted = client.post(
        "/find", headers=viewer, data={CSRF_FIELD: token, "identity": "email", "value": "x@y.dk"}
    )
    assert posted.status_code == 403
    assert client.get("/find", headers=bearer(auth_manager, "ADMIN")).status_code == 200


def test_only_a_small_url_encoded_form_with_its_own_fields_is_read(
    client: TestClient, ops: dict[str, str]
) -> None:
    _form, token = form_of(client, ops)
    fields = {CSRF_FIELD: token, "identity": "email", "value": "a@b.dk"}
    multipart = client.post("/find", headers=ops, data=fields, files={"f": ("f.txt", b"x")})
    assert multipart.status_code == 415
    big = client.post("/find", headers=ops, data={**fields, "value": "a" * MAX_BODY + "@b.dk"})
    assert big.status_code == 413
    extra = client.post("/find", headers=ops, data={**fields, "note": "x"})
    assert extra.status_code == 400
    twice = client.post(
        "/find",
        headers={**ops, "Content-Type": "application/x-www-form-urlencoded"},
        content=f"{CSRF_FIELD}={token}&identity=email&value=a%40b.dk&value=c%40d.dk",
    )
    assert twice.status_code == 400
    assert post(client, ops, **fields).status_code == 200


def test_without_identity_types_the_page_says_so(find_world: FindWorld, ops: dict[str, str]) -> None:
    shipped = load_policies(POLICY_DIR)
    bare = shipped.subject.model_copy(update={"identities": []})
    no_identities = dataclasses.replace(shipped, subject=bare)
    with TestClient(app_for(find_world, policies_factory=lambda: no_identities)) as client:
        response = client.get("/find", headers=ops)
        assert response.status_code == 200
        assert "declares no identity types" in dom(response.text).one("p", data_testid="no-identities").text()
        assert not dom(response.text).find_all("form")


def test_a_failing_lookup_names_neither_the_value_nor_the_statement(
    find_world: FindWorld, ops: dict[str, str], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    email = find_world.world.canaries(CUSTOMER).email

    def quoting_engine() -> sa.Engine:
        """A business database whose driver fails with a message that quotes the statement's parameters."""
        engine = sa.create_engine(find_world.url)

        @sa.event.listens_for(engine, "before_cursor_execute")
        def fail(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
            if "DISTINCT" in statement:
                raise RuntimeError(f"driver failure in {statement} with {parameters}")

        return engine

    missing = tmp_path / "empty.db"
    for factory, status, words in [
        (quoting_engine, 503, "The lookup failed (RuntimeError)."),
        (lambda: sa.create_engine(f"sqlite:///{missing}"), 503, "table 'customers' does not exist"),
    ]:
        with TestClient(app_for(find_world, business_engine_factory=factory)) as client:
            _form, token = form_of(client, ops)
            with caplog.at_level(logging.DEBUG):
                response = post(client, ops, **{CSRF_FIELD: token, "identity": "email", "value": email})
        assert response.status_code == status
        assert words in dom(response.text).one("p", data_testid="message").text()
        assert_not_echoed(response, email)
        assert_not_logged(caplog, email)
        caplog.clear()


def assert_not_logged(caplog: pytest.LogCaptureFixture, value: str) -> None:
    assert caplog.records, "the failure was logged"
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        assert value.lower() not in text.lower(), "the value is in a log record"


def test_an_unexpected_failure_while_answering_is_logged_by_its_class_only(
    find_world: FindWorld,
    ops: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a traceback: in some logging set-ups a traceback shows local variables, the value among them."""
    from retention_airflow.ui import find as finding

    email = find_world.world.canaries(CUSTOMER).email

    def broken(_request: Any, form: dict[str, str], _user: Any) -> bool:
        raise RuntimeError(f"cannot check {form}")

    with TestClient(app_for(find_world)) as client:
        _form, token = form_of(client, ops)
        monkeypatch.setattr(finding, "check_token", broken)
        with caplog.at_level(logging.DEBUG):
            response = post(client, ops, **{CSRF_FIELD: token, "identity": "email", "value": email})
    assert response.status_code == 500
    assert "The lookup failed (RuntimeError)." in dom(response.text).one("p", data_testid="message").text()
    assert_not_echoed(response, email)
    assert_not_logged(caplog, email)
    assert not [r for r in caplog.records if r.exc_info], "no traceback was logged"
