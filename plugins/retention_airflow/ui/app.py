"""The monitoring page as a FastAPI app, mounted by the Airflow API server through ``retention_ui_plugin``.

Pages are server-rendered HTML (Jinja2, autoescaped) from the ledger: the overview (chain
status, pending approvals, what is due but not erased, recent runs per category, erasure
receipts), one run, and the ledger itself, paginated and filterable. Each page reads the chain
status last, so that it covers every entry the page shows (or says how far the check has got).
Every page needs a valid Airflow token (see ``auth``); static files (style, script, icon)
carry no data and are public.

*Find a customer* (``/find``) looks up the internal customer id by a value a privacy request
names (an e-mail address, a phone number: the identity types of ``_subject.yaml``) in the
business database, for users who may trigger the customer-erasure DAG. The value is accepted
only in a POST body with the form's CSRF token, is never shown again, logged, stored, put in a
URL or sent to Airflow (see ``find`` and ``retention.identity``).

*Record of processing* (``/ropa``) shows the record of processing activities (GDPR Art. 30,
``retention.ropa``) of the policy set the page loads, Danish first, then English, with the policy
set's hash and since when the ledger shows runs using it (``LedgerReader.policy_set_use``); the
same record downloads as Markdown or JSON (``/ropa/download/...``), as ``make ropa`` writes it.

*Pseudonym keys* (on the overview) lists the years of the pseudonym keys (``retention.keyring``):
linkable while the year's key exists, no longer linkable once ``retention_housekeeping`` destroyed
it, and when the next key is destroyed (``_accountability.yaml``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from retention import ropa
from retention.anchor import Anchor, check_against_anchor
from retention.errors import PolicyError, RetentionError, TerminalError
from retention.identity import MAX_MATCHES, Found, find_subjects
from retention.keyring import KeyPeriod, destruction_due
from retention.policy import PolicySet, load_policies
from retention.subject import SUBJECT_FILE, IdentityType
from retention_airflow.ui import find as finding
from retention_airflow.ui.auth import (
    ERASURE_DAG,
    Refused,
    airflow_auth_manager,
    authorised_user,
    erasure_user,
)
from retention_airflow.ui.reader import CHAIN_SYNC_LIMIT, ChainCache, CheckedChain, LedgerReader, PolicySetUse

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
URL_PREFIX = "/retention"
"""Where the API server mounts the app (``fastapi_apps`` of the plugin)."""

PAGE_SIZES = (25, 50, 100, 200)
RECENT_RUNS = 10
NO_LEDGER = "The ledger has not been created yet: it is written by the first retention run."
NO_RUN = "The ledger has no entry of this run."
SECURITY_HEADERS = {
    # the Airflow UI shows the page in an iframe of the same origin: framing by others is refused
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(value: str | None, n: int = 12) -> str:
    return "" if not value else value[:n] + ("…" if len(value) > n else "")


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["short"] = _short
    env.globals["query"] = urlencode
    return env


def default_engine() -> Engine:
    """The ledger's engine from the Airflow connections (``retention_ledger``, else ``business_db``)."""
    from retention_airflow import clients

    engine: Engine = clients.ledger_engine()
    return engine


def default_anchor() -> Anchor | None:
    """The latest anchor object in the receipts bucket (connection ``docs_s3``, the settings' bucket)."""
    from retention.anchor import AnchorStore
    from retention_airflow import clients

    return AnchorStore(clients.s3_client(), clients.settings().receipts_bucket).latest()


def default_business_engine() -> Engine:
    """The business database's engine from the Airflow connection ``business_db``."""
    from retention_airflow import clients

    engine: Engine = clients.business_engine()
    return engine


def default_policies() -> PolicySet:
    """The deployment's policy set (``RETENTION_POLICY_DIR``, with its ``_subject.yaml``)."""
    from retention_airflow import clients

    return load_policies(clients.settings().policy_dir)


class Unavailable(Exception):
    """What a page reads cannot be read now; the message names the cause, never a value."""

    def __init__(self, message: str, title: str = "Ledger unavailable") -> None:
        super().__init__(message)
        self.title = title


@dataclass
class _Site:
    """Everything the pages share: the ledger (opened on first use, not at import), templates, auth."""

    engine_factory: Callable[[], Engine]
    table_name: str
    chain: ChainCache
    templates: Environment
    auth_manager: Callable[[], Any]
    url_prefix: str
    business_engine_factory: Callable[[], Engine] = default_business_engine
    policies_factory: Callable[[], PolicySet] = default_policies
    controller: ropa.Controller = ropa.DEFAULT_CONTROLLER
    anchor_factory: Callable[[], Anchor | None] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._reader: LedgerReader | None = None
        self._business: Engine | None = None

    def read(self, fn: Callable[[LedgerReader], Any]) -> Any:
        """``fn(reader)``, or None if no run has created the ledger yet; Unavailable if it cannot be read."""
        try:
            reader = self._open()
        except Exception as e:  # noqa: BLE001 - any failure to build the engine means: not configured
            log.warning("retention page: cannot open the ledger connection (%s)", type(e).__name__)
            raise Unavailable(f"The ledger connection cannot be opened ({type(e).__name__}).") from None
        try:
            return fn(reader) if reader.exists() else None
        except RetentionError as e:
            log.warning("retention page: %s", e)
            raise Unavailable(str(e)) from None

    def checked_chain(self, reader: LedgerReader) -> CheckedChain:
        """The chain status up to the ledger's head now, compared with the latest anchor if there is an
        ``anchor_factory``: call it after the page's other reads."""
        chain = self.chain.get(reader)
        if self.anchor_factory is None:
            return chain
        try:
            latest = self.anchor_factory()
        except Exception as e:  # noqa: BLE001 - the page says the anchor is unknown, the rest still shows
            log.warning("retention page: cannot read the latest ledger anchor (%s)", type(e).__name__)
            return replace(chain, anchor_unreadable=True)
        if latest is None:
            return chain
        return replace(chain, anchor=latest, anchor_problem=check_against_anchor(reader.ledger, latest))

    def _open(self) -> LedgerReader:
        with self._lock:
            if self._reader is None:
                self._reader = LedgerReader(self.engine_factory(), self.table_name)
            return self._reader

    def warm_up(self) -> None:
        """Verify the chain once before the first page (in a thread at startup; failures are only logged)."""
        try:
            self.read(self.checked_chain)
        except Unavailable:
            pass  # already logged; the first page will say so

    def business_engine(self) -> Engine:
        """The business database's engine (built once, on first use); Unavailable if it cannot be built."""
        with self._lock:
            if self._business is None:
                try:
                    self._business = self.business_engine_factory()
                except Exception as e:  # noqa: BLE001 - any failure to build the engine means: not configured
                    log.warning("retention page: cannot open the business database (%s)", type(e).__name__)
                    raise Unavailable(
                        f"The business database connection cannot be opened ({type(e).__name__}).",
                        title="Business database unavailable",
                    ) from None
            return self._business

    def policies(self) -> PolicySet:
        """The policy set, read again for every request (a changed policy folder counts at once)."""
        try:
            return self.policies_factory()
        except PolicyError as e:
            log.warning("retention page: %s", e)
            raise Unavailable(f"The policies cannot be loaded: {e}", title="Policies unavailable") from None
        except Exception as e:  # noqa: BLE001 - settings or folder not readable
            log.warning("retention page: cannot load the policies (%s)", type(e).__name__)
            raise Unavailable(
                f"The policies cannot be loaded ({type(e).__name__}).", title="Policies unavailable"
            ) from None

    def close(self) -> None:
        """Dispose of the engines' connections (at the API server's shutdown)."""
        with self._lock:
            if self._reader is not None:
                self._reader.engine.dispose()
                self._reader = None
            if self._business is not None:
                self._business.dispose()
                self._business = None

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A template rendered with the links every page needs."""
        base = str(request.scope.get("root_path", "")).rstrip("/")
        airflow = base.removesuffix(self.url_prefix) if base.endswith(self.url_prefix) else ""
        body = self.templates.get_template(name).render(base=base, airflow=airflow, **context)
        return HTMLResponse(body, status_code=status)


def _site(request: Request) -> _Site:
    site: _Site = request.app.state.site
    return site


async def _user(request: Request) -> Any:
    """The dependency of every page: the authorised user, or Refused."""
    return await authorised_user(request, _site(request).auth_manager)


User = Annotated[Any, Depends(_user)]
"""A page parameter that makes the page refuse anonymous and unauthorised callers."""


async def _erasure_user(request: Request) -> Any:
    """The dependency of the customer lookup: an authorised user who may also trigger the erasure DAG."""
    return await erasure_user(request, _site(request).auth_manager)


ErasureUser = Annotated[Any, Depends(_erasure_user)]
"""A page parameter that also refuses users who may not trigger ``customer_erasure``."""

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, _user: User) -> HTMLResponse:
    """Chain status, pending approvals, the backlog, the last sweep, the recent runs per category and the
    erasure receipts."""
    site = _site(request)

    def load(reader: LedgerReader) -> dict[str, Any]:
        data = {
            "approvals": reader.pending_approvals(),
            "backlog": reader.backlog(),
            "last_sweep": reader.last_sweep(),
            "housekeeping": reader.last_housekeeping(),
            "key_periods": reader.pseudonym_keys(),
            "leases": _lease_rows(reader.leases()),
            "runs": [(run, reader.run_categories(run.run_id)) for run in reader.recent_runs(RECENT_RUNS)],
            "receipts": reader.receipts(),
            "approved_policy_set": reader.ledger.approved_policy_set(),
        }
        return {**data, "chain": site.checked_chain(reader)}

    data = site.read(load)
    if data is None:
        return site.render(request, "message.html", title="No ledger yet", message=NO_LEDGER)
    return site.render(
        request,
        "overview.html",
        policy_change=_policy_change(site, data.pop("approved_policy_set")),
        deadlines=_deadlines(site),
        airflow_window=_airflow_window(site),
        pseudonym_keys=_pseudonym_keys(site, data.pop("key_periods")),
        **data,
    )


@dataclass(frozen=True)
class LeaseRow:
    """A run at work on the overview: what it holds (a category, or a customer without naming
    them), since when and until when; ``expired``: the run stopped without giving it back."""

    holds: str
    run_id: str
    step: str
    since: datetime
    until: datetime
    expired: bool


def _lease_rows(leases: list[Any]) -> list[LeaseRow]:
    now = datetime.now(UTC)
    return [
        LeaseRow(
            lease.scope.removeprefix("category:") if lease.scope.startswith("category:") else "a customer",
            lease.owner,
            lease.step,
            lease.acquired_at,
            lease.expires_at,
            lease.expires_at <= now,
        )
        for lease in leases
    ]


def _airflow_window(site: _Site) -> dict[str, Any] | None:
    """How long Airflow keeps its records of per-customer runs (``_airflow.yaml``); None if unknown."""
    try:
        window = site.policies().airflow
    except Unavailable:
        return None
    return {"keep": window.keep, "dags": ", ".join(window.dags)}


@dataclass(frozen=True)
class KeyPeriodRow:
    """One year of the pseudonym keys on the overview: whether its entries still link, and until when."""

    period: str
    destroyed_at: datetime | None
    due: datetime | None
    """When its key is destroyed (None: the policies cannot be read)."""

    @property
    def linkable(self) -> bool:
        return self.destroyed_at is None


def _pseudonym_keys(site: _Site, periods: list[KeyPeriod]) -> dict[str, Any]:
    """The key periods with their destruction dates, and the next destruction (``_accountability.yaml``)."""
    try:
        keep: str | None = site.policies().accountability.pseudonym_keys.keep
    except Unavailable:
        keep = None
    rows = [
        KeyPeriodRow(p.period, p.destroyed_at, destruction_due(p.period, keep) if keep else None)
        for p in periods
    ]
    upcoming = [r.due for r in rows if r.destroyed_at is None and r.due is not None]
    return {"keep": keep, "rows": rows, "next": min(upcoming, default=None)}


@dataclass(frozen=True)
class DeadlineRow:
    """One watched time limit on the overview: counts and the earliest deadline, never record ids."""

    category: str
    kind: str
    within: str
    open: int
    overdue: int
    due_soon: int
    unclear: int
    earliest: str


def _deadlines(site: _Site) -> dict[str, Any]:
    """The policies' deadlines checked now in the business database (open items only), or why not."""
    from retention.watch import check_deadlines

    try:
        policies = site.policies()
        watched = [(p, p.deadline) for p in policies.policies if p.deadline is not None]
        if not watched:
            return {"rows": [], "error": None}
        engine = site.business_engine()
        now = datetime.now(UTC)
        naive_tz = UTC if engine.dialect.name == "sqlite" else None  # SQLite keeps no zone: stored in UTC
        rows = []
        for p, rule in watched:
            report = check_deadlines(engine, p.records.table, p.records.key, rule, now, naive_tz=naive_tz)
            earliest = report.earliest_deadline
            rows.append(
                DeadlineRow(
                    p.id,
                    rule.kind,
                    rule.within,
                    report.open,
                    report.overdue,
                    report.due_soon,
                    report.unclear,
                    _when(earliest.astimezone(UTC) if earliest else None),
                )
            )
        return {"rows": rows, "error": None}
    except Unavailable as e:
        return {"rows": [], "error": str(e)}
    except RetentionError as e:
        log.warning("retention page: deadlines not checked (%s)", type(e).__name__)
        return {"rows": [], "error": f"The deadlines cannot be checked ({type(e).__name__})."}


@router.get("/run", response_class=HTMLResponse)
def run(
    request: Request, _user: User, run_id: Annotated[str, Query(min_length=1, max_length=250)]
) -> HTMLResponse:
    """One run: per category what was erased, anonymised, kept, failed and verified."""
    site = _site(request)

    def load(reader: LedgerReader) -> dict[str, Any] | None:
        info = reader.run_info(run_id)
        if info is None:
            return None
        rows = reader.run_categories(run_id)
        return {"run": info, "rows": rows, "chain": site.checked_chain(reader)}

    data = site.read(load)
    if data is None:
        return site.render(request, "message.html", status=404, title="No such run", message=NO_RUN)
    return site.render(request, "run.html", **data)


@router.get("/ledger", response_class=HTMLResponse)
def entries(
    request: Request,
    _user: User,
    run: Annotated[str, Query(max_length=250)] = "",
    category: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=1, le=10_000_000)] = 1,
    size: Annotated[int, Query()] = 50,
) -> HTMLResponse:
    """The ledger, newest entry first, a page at a time, optionally of one run and/or category."""
    site = _site(request)
    size = size if size in PAGE_SIZES else 50
    run_id, cat = run.strip() or None, category.strip() or None

    def load(reader: LedgerReader) -> dict[str, Any]:
        data = {
            "categories": reader.categories(),
            "result": reader.page(run_id=run_id, category=cat, page=page, size=size),
        }
        return {**data, "chain": site.checked_chain(reader)}

    data = site.read(load)
    if data is None:
        return site.render(request, "message.html", title="No ledger yet", message=NO_LEDGER)
    filters = {"run": run_id or "", "category": cat or "", "size": size}
    return site.render(request, "ledger.html", filters=filters, page_sizes=PAGE_SIZES, **data)


FIND_TITLE = "Find a customer"
NO_IDENTITIES = (
    f"The policy set declares no identity types ({SUBJECT_FILE}, identities): "
    "there is nothing a customer can be found by."
)
NOT_THIS_FORM = (
    "The form was not sent from this page, or the session it was opened in has ended. "
    "Open Find a customer again."
)


def _find_page(
    request: Request,
    user: Any,
    identities: list[IdentityType],
    *,
    status: int = 200,
    chosen: str = "",
    found: Found | None = None,
    problem: str | None = None,
) -> HTMLResponse:
    """The form (never prefilled with a value), and the answer of a lookup if there is one."""
    site = _site(request)
    nonce, new = finding.session_nonce(request)
    response = site.render(
        request,
        "find.html",
        status=status,
        identities=identities,
        chosen=chosen or (identities[0].name if identities else ""),
        max_length=max((i.max_length for i in identities), default=1),
        csrf_field=finding.CSRF_FIELD,
        csrf_token=finding.form_token(nonce, user),
        found=found,
        descriptions={i.name: i.description for i in identities},
        problem=problem,
        limit=MAX_MATCHES,
        erasure_dag=ERASURE_DAG,
        no_identities=NO_IDENTITIES,
    )
    if new:
        finding.set_nonce(request, response, nonce)
    return response


@router.get("/find", response_class=HTMLResponse)
def find_form(request: Request, user: ErasureUser) -> HTMLResponse:
    """The lookup form: an identity type of ``_subject.yaml`` and a field for the value (POST only)."""
    return _find_page(request, user, list(_site(request).policies().subject.identities))


@router.post("/find", response_class=HTMLResponse)
async def find(request: Request, user: ErasureUser) -> HTMLResponse:
    """The customers the posted value belongs to, with their counts per category; the form again, empty.

    Every failure is answered here and logged by its class only: a traceback in the server's log
    may show the frames' local variables (structlog's rich tracebacks do, with ``DEV`` set), and
    the value is one of them.
    """
    try:
        return await _find(request, user)
    except Unavailable:
        raise  # its message names the cause, never the value; rendered by its handler, not logged
    except Exception as e:  # noqa: BLE001 - see above
        log.error("retention page: customer lookup failed (%s)", type(e).__name__)
        message = f"The lookup failed ({type(e).__name__})."
        return _site(request).render(request, "message.html", status=500, title=FIND_TITLE, message=message)


async def _find(request: Request, user: Any) -> HTMLResponse:
    site = _site(request)
    try:
        form = await finding.read_form(request)
    except finding.BadForm as e:
        return site.render(request, "message.html", status=e.status, title=FIND_TITLE, message=e.reason)
    if not finding.check_token(request, form, user):
        log.info("retention page: customer lookup refused: missing or wrong CSRF token")
        return site.render(request, "message.html", status=403, title=FIND_TITLE, message=NOT_THIS_FORM)
    policies = await run_in_threadpool(site.policies)
    identities = list(policies.subject.identities)
    by_name = {i.name: i for i in identities}
    identity = by_name.get(form.get("identity", ""))
    if identity is None:
        problem = "Choose one of the identity types." if identities else None
        return _find_page(request, user, identities, status=422, problem=problem)
    try:
        identity.check(form.get("value", ""))
    except TerminalError as e:  # says what is wrong, never the value
        return _find_page(request, user, identities, status=422, chosen=identity.name, problem=str(e))
    found = await run_in_threadpool(_lookup, site, policies, identity.name, form.get("value", ""))
    log.info("retention page: customer lookup by %s: %d match(es)", identity.name, len(found.matches))
    return _find_page(request, user, identities, chosen=identity.name, found=found)


def _lookup(site: _Site, policies: PolicySet, identity: str, value: str) -> Found:
    """``find_subjects`` in the business database; Unavailable (never naming the value) if it fails."""
    engine = site.business_engine()
    try:
        return find_subjects(engine, policies, identity, value)
    except RetentionError as e:  # its messages name tables, columns and error classes, never the value
        log.warning("retention page: customer lookup failed: %s", e)
        raise Unavailable(f"The lookup failed: {e}", title=FIND_TITLE) from None
    except Exception as e:  # noqa: BLE001 - an unexpected error's text or traceback might quote the value
        log.error("retention page: customer lookup failed (%s)", type(e).__name__)
        raise Unavailable(f"The lookup failed ({type(e).__name__}).", title=FIND_TITLE) from None


ROPA_DOWNLOADS = {
    "ropa.da.md": "text/markdown; charset=utf-8",
    "ropa.en.md": "text/markdown; charset=utf-8",
    "ropa.json": "application/json",
}
"""The record's downloads, named as ``make ropa`` writes them."""


@router.get("/ropa", response_class=HTMLResponse)
def record_of_processing(request: Request, _user: User) -> HTMLResponse:
    """The record of processing activities of the policy set, Danish and English, with its hash and
    since when the ledger shows runs using it."""
    site = _site(request)
    policies = site.policies()
    doc = ropa.document(policies, controller=site.controller)
    use, ledger_problem = _policy_set_use(site, policies.hash)
    return site.render(
        request,
        "ropa.html",
        doc=doc,
        views=[ropa.view(doc, lang) for lang in ropa.LANGS],
        use=use,
        ledger_problem=ledger_problem,
        downloads=list(ROPA_DOWNLOADS),
    )


def _policy_change(site: _Site, approved: str | None) -> dict[str, str] | None:
    """The deployed policy set and the one last approved, when they differ (the next nightly run waits
    for a human); None when they agree, no set was approved yet, or the policies cannot be loaded."""
    try:
        deployed = site.policies().hash
    except Unavailable:
        return None
    if approved is None or approved == deployed:
        return None
    return {"deployed": deployed, "approved": approved}


def _policy_set_use(site: _Site, policy_set_hash: str) -> tuple[PolicySetUse | None, str | None]:
    """Since when runs use the policy set (None: no ledger yet), or why the ledger cannot tell."""
    try:
        use: PolicySetUse | None = site.read(lambda reader: reader.policy_set_use(policy_set_hash))
    except Unavailable as e:
        return None, str(e)
    return use, None


@router.get("/ropa/download/{name}")
def record_download(request: Request, _user: User, name: str) -> Response:
    """The record as ``make ropa`` writes it (Markdown per language, or JSON), generated now."""
    site = _site(request)
    media = ROPA_DOWNLOADS.get(name)
    if media is None:
        return site.render(request, "message.html", status=404, title="No such file", message=NO_DOWNLOAD)
    policies = site.policies()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if name.endswith(".json"):
        doc = ropa.document(policies, controller=site.controller, generated_at=now)
        body = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    else:
        lang: ropa.Lang = "da" if name == "ropa.da.md" else "en"
        body = ropa.render(policies, lang, controller=site.controller, generated_at=now)
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(body.encode(), media_type=media, headers=disposition)


NO_DOWNLOAD = f"The record downloads as {', '.join(ROPA_DOWNLOADS)}."


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    # read before the call: mounting the static files rewrites the scope's root_path
    static = request.url.path.startswith(f"{request.scope.get('root_path', '')}/static/")
    response = await call_next(request)
    response.headers.update(SECURITY_HEADERS)
    if not static:
        response.headers["Cache-Control"] = "no-store"
    return response


async def _refused(request: Request, exc: Exception) -> Response:
    """A browser without a valid login goes to Airflow's login page; any other caller gets 401/403."""
    if not isinstance(exc, Refused):
        raise exc
    wants_html = "text/html" in request.headers.get("accept", "")
    if exc.status == 401 and wants_html and request.method == "GET":
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login: str = _site(request).auth_manager().get_url_login(next_url=here)
        return RedirectResponse(login, status_code=303)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    return JSONResponse({"detail": exc.reason}, status_code=exc.status, headers=headers)


async def _unavailable(request: Request, exc: Exception) -> Response:
    title = exc.title if isinstance(exc, Unavailable) else "Unavailable"
    return _site(request).render(request, "message.html", status=503, title=title, message=str(exc))


def create_app(
    *,
    engine_factory: Callable[[], Engine] = default_engine,
    table_name: str = "retention_ledger",
    chain_ttl: float = 60.0,
    chain_sync_limit: int = CHAIN_SYNC_LIMIT,
    auth_manager: Callable[[], Any] = airflow_auth_manager,
    url_prefix: str = URL_PREFIX,
    business_engine_factory: Callable[[], Engine] = default_business_engine,
    policies_factory: Callable[[], PolicySet] = default_policies,
    controller: ropa.Controller | None = None,
    anchor_factory: Callable[[], Anchor | None] | None = None,
) -> FastAPI:
    """The monitoring app over the ledger that ``engine_factory`` opens (lazily, once).

    The customer lookup searches the business database of ``business_engine_factory`` (opened
    lazily, once) by the identity types of the policy set ``policies_factory`` loads (per request).
    The record of processing names ``controller`` (default: Alles-klar's, with the deployment's
    ``RETENTION_CONTROLLER_*`` environment variables). With ``anchor_factory`` (``default_anchor`` in
    Airflow), the chain status also says where the ledger was last anchored, or how it disagrees.
    """
    chain = ChainCache(chain_ttl, sync_limit=chain_sync_limit)
    site = _Site(
        engine_factory,
        table_name,
        chain,
        _templates(),
        auth_manager,
        url_prefix,
        business_engine_factory,
        policies_factory,
        controller or ropa.Controller.from_env(os.environ),
        anchor_factory,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=site.warm_up, name="retention-chain-warm-up", daemon=True).start()
        yield
        site.chain.wait(timeout=5)
        site.close()

    app = FastAPI(
        title="Alles-klar retention monitoring",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.site = site
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.middleware("http")(_security_headers)
    app.add_exception_handler(Refused, _refused)
    app.add_exception_handler(Unavailable, _unavailable)
    return app
