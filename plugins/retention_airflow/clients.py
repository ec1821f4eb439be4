"""Airflow Connections and Variables -> ready clients for the engine.

Every credential comes from an Airflow Connection (``AIRFLOW_CONN_*`` in tests and
the demo), every client is built by the providers' hooks, and heavy imports happen
inside functions so that parsing a DAG file stays cheap.

Connections:
- ``business_db``: the business database (postgres; sqlite for the demo).
- ``retention_ledger``: where the ledger and the legal-hold registry live (optional;
  defaults to ``business_db``).
- ``docs_s3``: S3 (conn_type aws; ``endpoint_url`` in extra for a local server).
- ``archive_sftp``: the SFTP translation archive (host key pinned in extra).
- ``retention_pseudonym``: the master key of the pseudonym keys, in the password field: it wraps
  each year's random key (``retention.keyring``), which is what pseudonyms are made with.
- ``retention_alerts`` (optional): an HTTP webhook for failure alerts.

Variable ``retention_settings`` (JSON, optional): ``bucket_map``, ``archive_root``,
``filesystem_root``, ``receipts_bucket``, ``receipts_prefix``, ``backlog_alert_after`` and the
stores' time limits. The policy folder is not among them: it is part of the deployment
(environment variable ``RETENTION_POLICY_DIR``, default ``include/retention_policies``), so that
whoever may edit Variables in the UI cannot point the runs at other policies.

``open_context`` is the one place that turns these into a ``retention.engine.RunContext``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention.errors import TerminalError
from retention.results import Mode, RunInfo

if TYPE_CHECKING:
    from retention.adapters.base import StoreAdapter
    from retention.engine import RunContext
    from retention.policy import PolicySet
    from retention.subject import SubjectFormat

BUSINESS_DB = "business_db"
LEDGER_DB = "retention_ledger"
DOCS_S3 = "docs_s3"
ARCHIVE_SFTP = "archive_sftp"
PSEUDONYM = "retention_pseudonym"
ALERTS = "retention_alerts"
SETTINGS_VARIABLE = "retention_settings"
POLICY_DIR_ENV = "RETENTION_POLICY_DIR"

DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "retention_policies"


@dataclass(frozen=True)
class Settings:
    """Non-secret configuration of one environment."""

    policy_dir: str = str(DEFAULT_POLICY_DIR)
    """From the deployment (``RETENTION_POLICY_DIR``), never from the Variable."""
    bucket_map: dict[str, str] = field(default_factory=dict)
    archive_root: str = "/srv/archive"
    filesystem_root: str | None = None
    """The mounted share of ``filesystem`` locations (none by default: such a policy then fails)."""
    backlog_alert_after: int = 3
    """Nightly runs in a row that may leave due data behind for a reason other than a lawful keep
    (a hold, a statute, a storage lock) before the run fails and alerts."""
    receipts_bucket: str = "alleskar-privacy-receipts"
    receipts_prefix: str = "receipts/"
    statement_timeout: float = 900.0
    """Seconds a PostgreSQL statement may run (``statement_timeout``); then it is cancelled and
    the step fails as transient (retried). Batches are bounded, so a statement that long is stuck."""
    lock_timeout: float = 60.0
    """Seconds a PostgreSQL statement may wait for a lock (``lock_timeout``), e.g. on a row a
    business transaction holds; then the same."""
    sftp_timeout: float = 60.0
    """Seconds without an answer on the SFTP channel (a stalled server) before the step fails."""
    s3_timeout: float = 120.0
    """Seconds without an answer from S3 (read timeout; connecting: 10 s) before boto3 retries."""

    def __post_init__(self) -> None:
        for name in ("statement_timeout", "lock_timeout", "sftp_timeout", "s3_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value <= 3600:
                raise ValueError(f"{name} must be a number of seconds between 0 and 3600")


def settings() -> Settings:
    """Read ``retention_settings`` (a JSON Variable; missing keys take the defaults) and the
    deployment's policy folder (``RETENTION_POLICY_DIR``)."""
    from airflow.sdk import Variable

    policy_dir = os.environ.get(POLICY_DIR_ENV) or str(DEFAULT_POLICY_DIR)
    raw = Variable.get(SETTINGS_VARIABLE, default=None)
    if raw is None:
        return Settings(policy_dir=policy_dir)
    try:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError) as e:
        raise TerminalError(f"Variable {SETTINGS_VARIABLE} is not valid: {type(e).__name__}") from None
    if "policy_dir" in data:
        raise TerminalError(
            f"Variable {SETTINGS_VARIABLE} may not name the policy folder: it is part of the deployment "
            f"(environment variable {POLICY_DIR_ENV}), so that editing a Variable cannot change the policies"
        )
    try:
        return Settings(**data, policy_dir=policy_dir)
    except (TypeError, ValueError) as e:
        raise TerminalError(f"Variable {SETTINGS_VARIABLE} is not valid: {type(e).__name__}") from None


def roots(cfg: Settings) -> dict[str, str]:
    """Store -> the root directory its policy paths are relative to."""
    out = {"sftp": cfg.archive_root}
    if cfg.filesystem_root:
        out["filesystem"] = cfg.filesystem_root
    return out


def _connection_exists(conn_id: str) -> bool:
    if os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}"):
        return True
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except Exception:  # noqa: BLE001 - the SDK raises different types per backend
        return False
    return True


def sql_engine(conn_id: str) -> Any:
    """A SQLAlchemy Engine built by the connection's own hook (PostgresHook, SqliteHook).

    On PostgreSQL every session starts with the settings' ``statement_timeout`` and
    ``lock_timeout`` (and an idle-in-transaction limit), so a statement stuck on a lock or a
    hung server is cancelled and the step fails (transient, retried) instead of holding the run.
    """
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection(conn_id).get_hook()  # type: ignore[no-untyped-call]
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if hook.conn_type == "postgres":
        engine_kwargs["connect_args"] = {"options": postgres_session_options(settings())}
    engine = hook.get_sqlalchemy_engine(engine_kwargs=engine_kwargs)
    if engine.dialect.name == "sqlite":
        _enable_sqlite_foreign_keys(engine)
    return engine


def postgres_session_options(cfg: Settings) -> str:
    """libpq ``options`` that set the session's time limits (milliseconds)."""
    limits = {
        "statement_timeout": cfg.statement_timeout,
        "lock_timeout": cfg.lock_timeout,
        "idle_in_transaction_session_timeout": max(cfg.statement_timeout, 600.0),
    }
    return " ".join(f"-c {name}={round(seconds * 1000)}" for name, seconds in limits.items())


def _enable_sqlite_foreign_keys(engine: Any) -> None:
    import sqlalchemy as sa

    @sa.event.listens_for(engine, "connect")
    def _fk_on(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


LEASE_WAIT = timedelta(minutes=10)
"""How long an erasing task waits for a category another run is erasing, before it fails as
transient (retried with backoff): overlapping runs take turns, they never interleave."""
LEASE_TTL = timedelta(minutes=5)
"""How long a task's leases outlive its last heartbeat (renewed every third of it while it works):
a killed worker's categories are free again at most this long after it died."""


@contextmanager
def leases(scopes: Sequence[str], *, owner: str, step: str) -> Iterator[None]:
    """Hold the leases of ``scopes`` (``retention.locks``) in the ledger's database for the block."""
    from retention.locks import Leases

    engine = ledger_engine()
    try:
        with Leases(engine).holding(list(scopes), owner, step, ttl=LEASE_TTL, wait=LEASE_WAIT):
            yield
    finally:
        engine.dispose()


def subject_lease(subject_ref: str, *, owner: str, take: bool, ttl: timedelta = timedelta(hours=6)) -> None:
    """Take (``take``) or give back one customer's lease for a whole erasure run.

    A second erasure of a customer whose erasure is running is refused (TerminalError, no retry)
    before it touches anything: only one run answers a customer's request with a receipt.
    """
    from retention.locks import LeaseBusy, Leases

    engine = ledger_engine()
    try:
        store = Leases(engine)
        if not take:
            store.release(f"subject:{subject_ref}", owner)
            return
        try:
            store.acquire(f"subject:{subject_ref}", owner, "prepare_run", ttl=ttl)
        except LeaseBusy as busy:
            raise TerminalError(
                f"another erasure of this customer is running (run {busy.holder.owner}, since "
                f"{busy.holder.acquired_at.isoformat(timespec='seconds')}): this run stops without "
                "touching anything; that run's receipt answers the request"
            ) from None
    finally:
        engine.dispose()


def business_engine() -> Any:
    return sql_engine(BUSINESS_DB)


def ledger_engine() -> Any:
    return sql_engine(LEDGER_DB if _connection_exists(LEDGER_DB) else BUSINESS_DB)


def policy_set() -> PolicySet:
    """The deployment's policy set (``RETENTION_POLICY_DIR``) with its customer-id format."""
    from retention.policy import load_policies

    return load_policies(settings().policy_dir)


def check_holds(categories: Collection[str], now: datetime, subject_format: SubjectFormat) -> int:
    """Check the legal holds in force at ``now`` against ``categories`` and the deployment's
    customer-id format; return how many there are.

    ``TerminalError`` names the first hold no store could match (``HoldRegistry.check_stored``).
    """
    from retention.holds import HoldRegistry

    engine = ledger_engine()
    try:
        return HoldRegistry(engine, subject_format=subject_format).check_stored(categories, now)
    finally:
        engine.dispose()


def s3_client() -> Any:
    """The boto3 S3 client of connection ``docs_s3``, built by the amazon provider's S3Hook.

    Its time limits come from the settings (connect 10 s, read ``s3_timeout``), and boto3's
    standard retry mode retries throttling (``SlowDown``) and 5xx answers up to 5 attempts.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    config = Config(
        connect_timeout=10,
        read_timeout=settings().s3_timeout,
        retries={"mode": "standard", "max_attempts": 5},
    )
    return S3Hook(aws_conn_id=DOCS_S3, config=config).get_conn()


def host_key_problem(hook: Any) -> str | None:
    """Why an SSH hook would not verify the server against one pinned key; None if it would.

    The SSH hook accepts any key when ``no_host_key_check`` is true, and also when
    ``allow_host_key_change`` is true (paramiko's ``MissingHostKeyPolicy``); without
    ``host_key`` it falls back to the machine's known_hosts. Only a pinned key with neither
    switch leaves paramiko's reject policy in force.
    """
    if getattr(hook, "no_host_key_check", True):
        return "must check the server's host key (no_host_key_check: false)"
    if getattr(hook, "host_key", None) is None:
        return "must pin the server's host key (host_key in the connection's extra)"
    if getattr(hook, "allow_host_key_change", True):
        return "must not allow a changed host key (remove allow_host_key_change)"
    return None


@contextmanager
def sftp_client() -> Iterator[Any]:
    """A paramiko SFTPClient of connection ``archive_sftp``: the server must present the pinned host
    key (anything else is refused before the first request); the channel times out after the
    settings' ``sftp_timeout``, so a stalled server fails the step."""
    import paramiko
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    try:
        hook = SFTPHook(ssh_conn_id=ARCHIVE_SFTP)
    except ValueError as e:  # the provider's own checks of the connection, e.g. a malformed host key
        raise TerminalError(f"connection {ARCHIVE_SFTP} is not valid: {e}") from None
    problem = host_key_problem(hook)
    if problem:
        raise TerminalError(f"connection {ARCHIVE_SFTP} {problem}")
    try:
        with hook.get_managed_conn() as client:
            channel = client.get_channel()
            if channel is not None:
                channel.settimeout(settings().sftp_timeout)
            yield client
    except paramiko.BadHostKeyException:
        # Not transient: retrying would talk to the same server. A human must find out why.
        raise TerminalError(
            f"connection {ARCHIVE_SFTP}: the server presented another host key than the pinned one "
            "(a replaced server or a man in the middle): check the server before anything else"
        ) from None


def pseudonym_key() -> bytes:
    """The pseudonym master key from connection ``retention_pseudonym`` (password field): it only wraps
    the period keys (``retention.keyring``), nothing is pseudonymised with it."""
    from airflow.sdk import BaseHook

    try:
        password = BaseHook.get_connection(PSEUDONYM).password
    except Exception:  # noqa: BLE001
        raise TerminalError(f"connection {PSEUDONYM} (the pseudonym key) is not configured") from None
    if not password:
        raise TerminalError(f"connection {PSEUDONYM} has no password (the pseudonym key)")
    return str(password).encode()


def _s3_adapter(_stack: ExitStack, _cfg: Settings) -> StoreAdapter[Any]:
    from retention.adapters.s3 import S3Adapter

    return S3Adapter(s3_client())


def _sftp_adapter(stack: ExitStack, _cfg: Settings) -> StoreAdapter[Any]:
    from retention.adapters.sftp import SftpAdapter

    return SftpAdapter(stack.enter_context(sftp_client()))


def _filesystem_adapter(_stack: ExitStack, _cfg: Settings) -> StoreAdapter[Any]:
    from retention.adapters.filesystem import FilesystemAdapter

    return FilesystemAdapter()


ADAPTERS: dict[str, Callable[[ExitStack, Settings], StoreAdapter[Any]]] = {
    "s3": _s3_adapter,
    "sftp": _sftp_adapter,
    "filesystem": _filesystem_adapter,
}
"""File store -> how this deployment builds its adapter from the connections."""


@contextmanager
def open_context(
    *,
    run_id: str,
    mode: Mode,
    now: datetime,
    dry_run: bool,
    subject: str | None = None,
    reason: str | None = None,
    stores: Sequence[str] = (),
    run: RunInfo | None = None,
) -> Iterator[RunContext]:
    """A RunContext over this deployment's connections, with adapters for ``stores``; all closed afterwards.

    With ``run``, the policy set must still be the one the run was planned with. Without it (a
    run's first task) the run id is claimed for this DAG run (``retention.runs``): an id that
    already names another run is refused before anything is touched.
    """
    from retention.access import bucket_map_with_receipts
    from retention.adapters.database import DatabaseAdapter
    from retention.engine import RunContext
    from retention.flow import check_same_policies
    from retention.holds import HoldRegistry
    from retention.intents import IntentItems
    from retention.journal import EraseJournal
    from retention.keeps import KeptRecords
    from retention.keyring import Keyring, period_of
    from retention.ledger import Ledger
    from retention.locks import Leases
    from retention.policy import load_policies

    cfg = settings()
    policies = load_policies(cfg.policy_dir)
    with ExitStack() as stack:
        business = business_engine()
        stack.callback(business.dispose)
        ledger_db = ledger_engine()
        stack.callback(ledger_db.dispose)
        registry = HoldRegistry(ledger_db, subject_format=policies.subject)
        period = period_of(now)
        keyring = Keyring(ledger_db, pseudonym_key())
        ledger = Ledger(ledger_db, key_period=period)
        keeps = KeptRecords(ledger_db)
        intents = IntentItems(ledger_db)
        journal = EraseJournal(business)
        if run is None:
            journal.ensure_schema()
            Leases(ledger_db).ensure_schema()
            ledger.ensure_schema()
            registry.ensure_schema()
            keeps.ensure_schema()
            intents.ensure_schema()
            keyring.ensure_schema()
            claim_run_id(ledger_db, run_id)
        ctx = RunContext(
            run_id=run_id,
            now=now,
            policies=policies,
            database=DatabaseAdapter(business, journal=journal),
            pseudonym_key=keyring.key(period),
            key_period=period,
            ledger=ledger,
            keeps=keeps,
            intents=intents,
            holds=registry.current,
            adapters={store: ADAPTERS[store](stack, cfg) for store in stores},
            # The access reports' policy bucket is the receipts bucket (unless bucket_map says otherwise).
            bucket_map=bucket_map_with_receipts(cfg.bucket_map, cfg.receipts_bucket),
            roots=roots(cfg),
            mode=mode,
            subject=subject,
            dry_run=dry_run,
            reason=reason or "erasure_request",
        )
        if run is not None:
            check_same_policies(ctx, run)
        yield ctx


def claim_run_id(ledger_db: Any, run_id: str) -> None:
    """Claim ``run_id`` for the Airflow run this task belongs to (``retention.runs``): an id
    that already names another run (another DAG's, or a purged one's) is refused, terminally."""
    from airflow.sdk import get_current_context

    from retention.runs import RunIds, owner_of

    context = get_current_context()
    run_ids = RunIds(ledger_db)
    run_ids.ensure_schema()
    run_ids.claim(run_id, owner_of(context["dag"].dag_id, context["dag_run"].run_after))


@contextmanager
def run_context(
    run: RunInfo, *, subject: str | None = None, stores: Sequence[str] = ()
) -> Iterator[RunContext]:
    """The context of a later step of ``run``."""
    with open_context(
        run_id=run.run_id,
        mode=run.mode,
        now=run.now,
        dry_run=run.dry_run,
        subject=subject,
        reason=run.reason,
        stores=stores,
        run=run,
    ) as ctx:
        yield ctx
