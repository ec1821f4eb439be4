"""Pseudonym keys by period, destroyed when their period's proof retention ends (crypto-shredding).

A customer id is short: whoever holds the key of a keyed pseudonym can pseudonymise every
possible id and so re-identify the ledger's entries. One key for ever would keep every entry
linkable for ever, because the ledger is append-only. So each period (a UTC calendar year) has a
key of its own, and each ledger entry names its period (``key_period``); ``keep`` after the
period ends (``_accountability.yaml``, ``pseudonym_keys``), ``retention_housekeeping`` destroys
that key, and from then on no entry of the period can be linked to a customer id again.

A period's key is 32 random bytes, made on its first use and stored in one table of the ledger's
database, wrapped (AES-GCM, the period as associated data) by a key derived from the master key
(the password of connection ``retention_pseudonym``). Only the period keys are random: a key
derived from the master could be derived again, and the master must outlive every period.
Destroying a period sets its wrapped key to NULL and notes when and by which run; the row stays
as the record of the destruction, and a destroyed period is never given a key again.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from retention.clock import shift
from retention.dberrors import db_errors
from retention.dbutil import UtcDateTime, aware_utc, check_table_name, create_tables
from retention.errors import TerminalError
from retention.guard import check_text
from retention.ledger_entry import LedgerEntry
from retention.policy import Period
from retention.pseudonym import MIN_KEY_BYTES

TABLE = "retention_pseudonym_keys"
KEY_BYTES = 32
NONCE_BYTES = 12
_WRAPPING_INFO = b"retention pseudonym key wrapping v1"
_PERIOD = re.compile(r"[0-9]{4}")


def period_of(moment: datetime) -> str:
    """The key period of ``moment``: its UTC calendar year, four digits."""
    return f"{aware_utc('the key period clock', moment).year:04d}"


def check_period(period: str) -> str:
    """``period`` if it is a key period (a four-digit year); TerminalError otherwise."""
    if not isinstance(period, str) or not _PERIOD.fullmatch(period) or period == "0000":
        raise TerminalError("a key period must be a four-digit year")
    return period


def destruction_due(period: str, keep: str) -> datetime:
    """When ``period``'s key is destroyed: ``keep`` (an ISO period) after the period's year ends (UTC)."""
    year_end = datetime(int(check_period(period)) + 1, 1, 1)
    return shift(year_end, Period.parse(keep), +1).replace(tzinfo=UTC)


@dataclass(frozen=True)
class KeyPeriod:
    """One period of the keyring as the monitoring page and housekeeping see it: never key material."""

    period: str
    created_at: datetime
    destroyed_at: datetime | None

    @property
    def linkable(self) -> bool:
        """Whether the period's key still exists: its entries can be linked to a customer id."""
        return self.destroyed_at is None


def _keys_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("period", sa.String(16), primary_key=True, autoincrement=False),
        sa.Column("wrapped", sa.LargeBinary),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("destroyed_at", UtcDateTime),
        sa.Column("destroyed_by", sa.Text),
        sa.CheckConstraint("(wrapped IS NULL) = (destroyed_at IS NOT NULL)", name=f"ck_{name}_destroyed"),
    )


class Keyring:
    """The period keys in one table of ``engine``'s database; ``master`` unwraps them (None: list and
    destroy only, as housekeeping and the monitoring page do)."""

    def __init__(self, engine: Engine, master: bytes | None = None, table_name: str = TABLE) -> None:
        self._engine = engine
        self._table = _keys_table(check_table_name(table_name))
        self._aead: AESGCM | None = None
        if master is not None:
            if not isinstance(master, bytes) or len(master) < MIN_KEY_BYTES:
                raise TerminalError(f"the pseudonym master key must be at least {MIN_KEY_BYTES} bytes")
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_WRAPPING_INFO)
            wrapping = hkdf.derive(master)
            self._aead = AESGCM(wrapping)

    def ensure_schema(self) -> None:
        """Create the keys table if missing; idempotent and safe against concurrent callers."""
        with db_errors("pseudonym keys schema"), self._engine.begin() as conn:
            create_tables(conn, (self._table,))

    def exists(self) -> bool:
        """Whether the keys table has been created (by the first run)."""
        with db_errors("pseudonym keys read"):
            return sa.inspect(self._engine).has_table(self._table.name)

    def key(self, period: str) -> bytes:
        """The key of ``period``, made on first use (one key however many processes ask at once);
        TerminalError if the period's key was destroyed or the master key does not open it."""
        check_period(period)
        row = self._row(period)
        if row is None:
            self._create(period)
            row = self._row(period)
        if row is None or row.wrapped is None:
            raise TerminalError(
                f"the pseudonym key of period {period} was destroyed: nothing may be pseudonymised with it"
            )
        return self._unwrap(period, bytes(row.wrapped))

    def periods(self) -> list[KeyPeriod]:
        """Every period the keyring knows, oldest first: linkable or destroyed (and when)."""
        t = self._table
        query = sa.select(t.c.period, t.c.created_at, t.c.destroyed_at).order_by(t.c.period)
        with db_errors("pseudonym keys read"), self._engine.connect() as conn:
            return [KeyPeriod(str(p), created, destroyed) for p, created, destroyed in conn.execute(query)]

    def expired(self, now: datetime, keep: str) -> list[str]:
        """The linkable periods whose key is due for destruction at ``now`` (``keep`` after their year)."""
        return [p.period for p in self.periods() if p.linkable and destruction_due(p.period, keep) <= now]

    def destroy(self, period: str, *, now: datetime, keep: str, run_id: str) -> bool:
        """Destroy ``period``'s key for good; False if it was destroyed already (or never made).

        Refuses the current period and any period not yet due: a run of this period would make a
        new key and split one year's entries between two keys.
        """
        check_period(period)
        if period >= period_of(now):
            raise TerminalError(f"the pseudonym key of the current period {period} may not be destroyed")
        if destruction_due(period, keep) > now:
            raise TerminalError(f"the pseudonym key of period {period} is not due for destruction yet")
        t = self._table
        stmt = (
            sa.update(t)
            .where(t.c.period == period, t.c.destroyed_at.is_(None))
            .values(wrapped=None, destroyed_at=now, destroyed_by=check_text("run_id", run_id))
        )
        with db_errors("pseudonym key destroy"), self._engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    def destroyed(self, period: str) -> bool:
        """Whether looking again finds ``period``'s key gone (its row says destroyed, no wrapped key)."""
        row = self._row(check_period(period))
        return row is not None and row.wrapped is None and row.destroyed_at is not None

    def destroyed_by(self, run_id: str) -> list[str]:
        """The periods whose key the run ``run_id`` destroyed (a retried task records them again)."""
        t = self._table
        query = sa.select(t.c.period).where(t.c.destroyed_by == run_id).order_by(t.c.period)
        with db_errors("pseudonym keys read"), self._engine.connect() as conn:
            return [str(p) for p in conn.execute(query).scalars()]

    def _row(self, period: str) -> Any:
        """The period's row (``wrapped``, ``destroyed_at``), or None if it has none."""
        t = self._table
        query = sa.select(t.c.wrapped, t.c.destroyed_at).where(t.c.period == period)
        with db_errors("pseudonym keys read"), self._engine.connect() as conn:
            return conn.execute(query).first()

    def _create(self, period: str) -> None:
        """Insert a new random key for ``period``, unless another process just did (its key wins)."""
        wrapped = self._wrap(period, secrets.token_bytes(KEY_BYTES))
        values = {"period": period, "wrapped": wrapped, "created_at": datetime.now(UTC)}
        with db_errors("pseudonym key create"):
            try:
                with self._engine.begin() as conn:
                    conn.execute(sa.insert(self._table).values(**values))
            except IntegrityError:
                pass  # the period exists now: made by a concurrent caller, or destroyed; the caller reads it

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            raise TerminalError("the keyring was opened without the master key: keys cannot be read")
        return self._aead

    def _wrap(self, period: str, key: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._cipher().encrypt(nonce, key, _associated(period))

    def _unwrap(self, period: str, wrapped: bytes) -> bytes:
        cipher = self._cipher()
        try:
            return cipher.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _associated(period))
        except InvalidTag:
            raise TerminalError(
                f"the master key does not open the pseudonym key of period {period}: "
                "is connection retention_pseudonym the one the keys were made with?"
            ) from None


def _associated(period: str) -> bytes:
    """The associated data that binds a wrapped key to its period (a key moved to another row fails)."""
    return b"retention pseudonym key\x00" + period.encode()


# -- destruction ----------------------------------------------------------------------------------

DESTROY_ACTION = "pseudonym_key"
"""The ledger action of a key's destruction (``retention_housekeeping``)."""


@dataclass(frozen=True)
class Shredding:
    """What one destruction pass found due, destroyed and, looking again, still found: periods only."""

    keep: str
    dry_run: bool
    due: tuple[str, ...]
    """The linkable periods due for destruction when the pass began."""
    destroyed: tuple[str, ...] = ()
    """The periods this run destroyed (an earlier try of the same run included)."""
    left: tuple[str, ...] = ()
    """Periods whose key looking again still found: the pass failed for them."""

    def entries(self, run_id: str, policy_set_hash: str) -> list[LedgerEntry]:
        """One ledger entry per period: planned (a dry run), erased, or verify_failed; never key material."""
        if self.dry_run:
            outcomes = {period: "planned" for period in self.due}
        else:
            outcomes = {period: "erased" for period in self.destroyed}
            outcomes.update({period: "verify_failed" for period in self.left})
        return [
            LedgerEntry(
                run_id=run_id,
                action=DESTROY_ACTION,
                outcome=outcome,
                store="ledger",
                count=1,
                policy_set_hash=policy_set_hash,
                detail={"destroyed_period": period, "keep": self.keep, "dry_run": self.dry_run},
            )
            for period, outcome in sorted(outcomes.items())
        ]

    def detail(self) -> dict[str, Any]:
        """The task's return value: periods and counts."""
        return {
            "keep": self.keep,
            "dry_run": self.dry_run,
            "due": list(self.due),
            "destroyed": list(self.destroyed),
            "left": list(self.left),
        }


def shred_expired(keyring: Keyring, *, now: datetime, keep: str, run_id: str, dry_run: bool) -> Shredding:
    """Destroy every key due at ``now`` (``keep`` after its year), then look again; a dry run only lists.

    Idempotent: a retry of the same run destroys nothing twice and still reports what the run destroyed.
    """
    due = tuple(keyring.expired(now, keep))
    if dry_run:
        return Shredding(keep, True, due)
    for period in due:
        keyring.destroy(period, now=now, keep=keep, run_id=run_id)
    destroyed = tuple(keyring.destroyed_by(run_id))
    left = tuple(p for p in sorted(set(due) | set(destroyed)) if not keyring.destroyed(p))
    return Shredding(keep, False, due, tuple(p for p in destroyed if p not in left), left)
