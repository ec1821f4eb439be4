"""The monitoring page as a FastAPI app, mounted by the Airflow API server through ``retention_ui_plugin``.

Pages are server-rendered HTML (Jinja2, autoescaped) from the ledger: the overview (chain
status, pending approvals, what is due but not erased, recent runs per category, erasure
receipts), one run, and the ledger itself, paginated and filterable. Each page reads the chain
status last, so that it covers every entry the page shows (or says how far the check has got).
Every page needs a valid Airflow token (see ``auth``); static files (style, script, icon)
carry no data and are public.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.engine import Engine

from retention.errors import RetentionError
from retention_airflow.ui.auth import Refused, airflow_auth_manager, authorised_user
from retention_airflow.ui.reader import CHAIN_SYNC_LIMIT, ChainCache, CheckedChain, LedgerReader

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


class Unavailable(Exception):
    """The ledger cannot be read now; the message names the cause, never a value."""


@dataclass
class _Site:
    """Everything the pages share: the ledger (opened on first use, not at import), templates, auth."""

    engine_factory: Callable[[], Engine]
    table_name: str
    chain: ChainCache
    templates: Environment
    auth_manager: Callable[[], Any]
    url_prefix: str

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._reader: LedgerReader | None = None

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
        """The chain status up to the ledger's head now: call it after the page's other reads."""
        return self.chain.get(reader)

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

    def close(self) -> None:
        """Dispose of the ledger engine's connections (at the API server's shutdown)."""
        with self._lock:
            if self._reader is not None:
                self._reader.engine.dispose()
                self._reader = None

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

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, _user: User) -> HTMLResponse:
    """Chain status, pending approvals, the backlog, the recent runs per category and the erasure receipts."""
    site = _site(request)

    def load(reader: LedgerReader) -> dict[str, Any]:
        data = {
            "approvals": reader.pending_approvals(),
            "backlog": reader.backlog(),
            "runs": [(run, reader.run_categories(run.run_id)) for run in reader.recent_runs(RECENT_RUNS)],
            "receipts": reader.receipts(),
        }
        return {**data, "chain": site.checked_chain(reader)}

    data = site.read(load)
    if data is None:
        return site.render(request, "message.html", title="No ledger yet", message=NO_LEDGER)
    return site.render(request, "overview.html", **data)


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
    return _site(request).render(
        request, "message.html", status=503, title="Ledger unavailable", message=str(exc)
    )


def create_app(
    *,
    engine_factory: Callable[[], Engine] = default_engine,
    table_name: str = "retention_ledger",
    chain_ttl: float = 60.0,
    chain_sync_limit: int = CHAIN_SYNC_LIMIT,
    auth_manager: Callable[[], Any] = airflow_auth_manager,
    url_prefix: str = URL_PREFIX,
) -> FastAPI:
    """The monitoring app over the ledger that ``engine_factory`` opens (lazily, once)."""
    chain = ChainCache(chain_ttl, sync_limit=chain_sync_limit)
    site = _Site(engine_factory, table_name, chain, _templates(), auth_manager, url_prefix)

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
