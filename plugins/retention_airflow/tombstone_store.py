"""The tombstone store over the deployment's connections (``retention.tombstones``).

Connection ``retention_tombstone_key``: the secret the tombstones' AES key is derived from, in the
password field (at least 16 bytes). It is a connection of its own, apart from the pseudonym key,
so that whoever may read the ledger's pseudonyms cannot read a tombstone's customer id. The
tombstones live in the ledger's database (connection ``retention_ledger``, else ``business_db``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from retention.errors import TerminalError

if TYPE_CHECKING:
    from retention.tombstones import Tombstones

TOMBSTONE_KEY = "retention_tombstone_key"


def tombstone_secret() -> bytes:
    """The secret from connection ``retention_tombstone_key`` (password field)."""
    from airflow.sdk import BaseHook

    try:
        password = BaseHook.get_connection(TOMBSTONE_KEY).password
    except Exception:  # noqa: BLE001 - the SDK raises different types per backend
        raise TerminalError(f"connection {TOMBSTONE_KEY} (the tombstone key) is not configured") from None
    if not password:
        raise TerminalError(f"connection {TOMBSTONE_KEY} has no password (the tombstone key)")
    return str(password).encode()


@contextmanager
def tombstones(*, with_key: bool) -> Iterator[Tombstones]:
    """The tombstones in the ledger's database, their table created if missing; with the key to write
    and read customer ids only when ``with_key`` (listing and purging need none)."""
    from retention.tombstones import Tombstones
    from retention_airflow import clients

    key = tombstone_secret() if with_key else None
    engine = clients.ledger_engine()
    try:
        store = Tombstones(engine, key)
        store.ensure_schema()
        yield store
    finally:
        engine.dispose()
