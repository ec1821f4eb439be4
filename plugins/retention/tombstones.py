"""Tombstones: whom to erase again after a backup is restored.

The ledger names a customer only by a keyed pseudonym, and a restored business database has
lost the request records made after its backup, so neither can say whose erasure to replay.
A tombstone can: written when a customer's erasure completes proven, it holds the customer id
encrypted (AES-256-GCM, a fresh 96-bit nonce per row, the key derived with HKDF-SHA256 from
the secret of a connection of its own), the request's reference and reason, the run and the
time. The associated data binds the ciphertext to its row (run, request, reason, time), so a
ciphertext copied into another row does not decrypt.

Tombstones live in the ledger's database (not the business database, which a restore
rewinds), but not in the ledger: the ledger is append-only and a tombstone must go when its
own retention ends (``_accountability.yaml``, ``tombstones.keep``). The ledger records that a
tombstone was written or purged, counts only. Reading a tombstone's customer id needs the key;
listing them (``since``) does not, and returns no customer id.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from retention.dberrors import db_errors
from retention.dbutil import UtcDateTime, aware_utc, check_table_name, create_tables
from retention.errors import TerminalError
from retention.guard import check_text

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MIN_SECRET_BYTES = 16
_NONCE_BYTES = 12
_HKDF_INFO = b"alles-klar retention tombstones v1"
_SEP = "\x1f"
"""Separates the fields of the associated data (a unit separator: refused in every field)."""


def expired_before(now: datetime, keep: str) -> datetime:
    """The moment before which a tombstone's retention (``keep`` after the erasure) has ended at ``now``.

    Counted in Copenhagen wall-clock time like every retention period, and the earliest instant that
    wall-clock time can mean: a tombstone is rather kept a little longer than purged early.
    """
    from retention.clock import local_naive, shift, to_utc_earliest
    from retention.policy import Period

    return to_utc_earliest(shift(local_naive(now), Period.parse(keep), -1))


def tombstone_key(secret: bytes) -> bytes:
    """The 32-byte AES key derived from the connection's secret (HKDF-SHA256); refuse a short secret."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise TerminalError(f"the tombstone key must be at least {MIN_SECRET_BYTES} bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret)


@dataclass(frozen=True)
class TombstoneRef:
    """A tombstone without its customer id: what may be listed, logged and passed between tasks."""

    id: int
    run_id: str
    request_ref: str
    reason: str
    completed_at: datetime


@dataclass(frozen=True)
class Tombstone:
    """A tombstone with its customer id, decrypted: only for the replay of that customer's erasure."""

    ref: TombstoneRef
    subject: str


def _table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, nullable=False, unique=True),
        sa.Column("request_ref", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("completed_at", UtcDateTime, nullable=False),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Index(f"ix_{name}_completed_at", "completed_at"),
    )


def _aad(table: str, run_id: str, request_ref: str, reason: str, completed_at: datetime) -> bytes:
    stamp = aware_utc("completed_at", completed_at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return _SEP.join((table, run_id, request_ref, reason, stamp)).encode()


def _checked(run_id: str, request_ref: str, reason: str) -> tuple[str, str, str]:
    """A tombstone's clear-text fields: a run id without personal data, a request reference and a reason."""
    from retention.params import REASONS, REQUEST_REF_PATTERN

    run = check_text("run_id", run_id)
    if not run or _SEP in run:
        raise TerminalError("run_id must be non-empty text")
    if not isinstance(request_ref, str) or not re.match(REQUEST_REF_PATTERN, request_ref):
        raise TerminalError("request_ref must look like PR-2026-00042")
    if reason not in REASONS:
        raise TerminalError(f"reason must be one of {', '.join(REASONS)}")
    return run, request_ref, reason


class Tombstones:
    """The tombstones in one table of ``engine``'s database (the ledger's); ``key`` is needed to write
    or read a customer id, not to list or purge."""

    def __init__(self, engine: Engine, key: bytes | None = None, table_name: str = "retention_tombstones"):
        self._engine = engine
        self._key = tombstone_key(key) if key is not None else None
        self._name = check_table_name(table_name)
        self._table = _table(sa.MetaData(), self._name)

    def ensure_schema(self) -> None:
        """Create the table if it is missing; idempotent."""
        with db_errors("tombstones schema"), self._engine.begin() as conn:
            create_tables(conn, [self._table])

    def _aead(self) -> AESGCM:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if self._key is None:
            raise TerminalError("the tombstone key is not configured (connection retention_tombstone_key)")
        return AESGCM(self._key)

    def record(
        self, *, run_id: str, request_ref: str, reason: str, subject: str, completed_at: datetime
    ) -> bool:
        """Write the tombstone of the erasure run ``run_id``; False if that run already has one (a retry)."""
        aead = self._aead()
        run_id, request_ref, reason = _checked(run_id, request_ref, reason)
        at = aware_utc("completed_at", completed_at)
        if not isinstance(subject, str) or not subject:
            raise TerminalError("a tombstone needs the customer id")
        values = {"run_id": run_id, "request_ref": request_ref, "reason": reason, "completed_at": at}
        nonce = os.urandom(_NONCE_BYTES)
        aad = _aad(self._name, run_id, request_ref, reason, at)
        sealed = aead.encrypt(nonce, subject.encode(), aad)
        t = self._table
        with db_errors("tombstone write"), self._engine.begin() as conn:
            if conn.execute(sa.select(t.c.id).where(t.c.run_id == values["run_id"])).first() is not None:
                return False
            conn.execute(sa.insert(t).values(**values, nonce=nonce, sealed=sealed))
        return True

    def since(self, moment: datetime) -> list[TombstoneRef]:
        """The tombstones of erasures completed after ``moment``, oldest first (no customer id)."""
        t = self._table
        query = (
            sa.select(t.c.id, t.c.run_id, t.c.request_ref, t.c.reason, t.c.completed_at)
            .where(t.c.completed_at > aware_utc("moment", moment))
            .order_by(t.c.completed_at, t.c.id)
        )
        with db_errors("tombstones read"), self._engine.connect() as conn:
            return [TombstoneRef(**row._mapping) for row in conn.execute(query)]

    def open(self, tombstone_id: int) -> Tombstone:
        """The tombstone ``tombstone_id`` with its customer id; TerminalError if it is gone or does not
        decrypt (another key, or a ciphertext that is not this row's)."""
        from cryptography.exceptions import InvalidTag

        aead = self._aead()
        t = self._table
        with db_errors("tombstones read"), self._engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == tombstone_id)).first()
        if row is None:
            raise TerminalError(f"tombstone {tombstone_id} does not exist (purged?)")
        ref = TombstoneRef(row.id, row.run_id, row.request_ref, row.reason, row.completed_at)
        aad = _aad(self._name, ref.run_id, ref.request_ref, ref.reason, ref.completed_at)
        try:
            subject = aead.decrypt(bytes(row.nonce), bytes(row.sealed), aad).decode()
        except (InvalidTag, UnicodeDecodeError):
            raise TerminalError(
                f"tombstone {tombstone_id} does not decrypt: another key, or the row was altered"
            ) from None
        return Tombstone(ref, subject)

    def purge(self, before: datetime) -> int:
        """Delete the tombstones of erasures completed before ``before``; return how many."""
        t = self._table
        with db_errors("tombstones purge"), self._engine.begin() as conn:
            result = conn.execute(sa.delete(t).where(t.c.completed_at < aware_utc("before", before)))
        return int(result.rowcount or 0)

    def count(self) -> int:
        """How many tombstones there are."""
        with db_errors("tombstones read"), self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self._table)).scalar_one())
