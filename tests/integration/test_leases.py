"""Leases on real PostgreSQL (and the demo's SQLite): runs take turns, a crashed holder expires."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from retention.locks import LeaseBusy, Leases

T0 = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def leases(empty_db: Engine) -> tuple[Leases, Clock]:
    clock = Clock()
    store = Leases(empty_db, clock=clock)
    store.ensure_schema()
    store.ensure_schema()  # idempotent
    return store, clock


def test_a_held_scope_is_refused_to_another_run_naming_the_holder(leases: tuple[Leases, Clock]) -> None:
    store, _ = leases
    store.acquire("category:invoices", "scheduled__2026-12-02", "erase_databases", ttl=timedelta(hours=3))
    with pytest.raises(LeaseBusy) as busy:
        store.acquire("category:invoices", "manual__x", "erase_s3", ttl=timedelta(hours=1))
    assert "run scheduled__2026-12-02 (erase_databases)" in str(busy.value)
    assert not busy.value.terminal, "a busy scope is waited for (retried), not a failure a human must fix"
    store.acquire("category:contact_persons", "manual__x", "erase_s3", ttl=timedelta(hours=1))
    assert [lease.scope for lease in store.held()] == ["category:invoices", "category:contact_persons"]


def test_the_same_run_retakes_its_lease_and_an_expired_one_is_free(leases: tuple[Leases, Clock]) -> None:
    store, clock = leases
    store.acquire("subject:psn:1", "run-a", "prepare_run", ttl=timedelta(hours=6))
    store.acquire("subject:psn:1", "run-a", "prepare_run", ttl=timedelta(hours=6))  # its retry
    clock.now = T0 + timedelta(hours=6, seconds=1)
    assert store.held() == []
    taken = store.acquire("subject:psn:1", "run-b", "prepare_run", ttl=timedelta(hours=6))
    assert taken.owner == "run-b"
    assert not store.release("subject:psn:1", "run-a"), "only the holder releases"
    assert store.release("subject:psn:1", "run-b")
    assert store.held() == []


def test_holding_releases_on_error_and_waits_for_a_busy_scope(leases: tuple[Leases, Clock]) -> None:
    store, _ = leases
    with (
        pytest.raises(RuntimeError),
        store.holding(["category:a", "category:b"], "run-a", "x", ttl=timedelta(hours=1)),
    ):
        raise RuntimeError("the step failed")
    assert store.held() == []

    store.acquire("category:b", "run-a", "x", ttl=timedelta(hours=1))
    with pytest.raises(LeaseBusy):
        with store.holding(["category:a", "category:b"], "run-b", "y", ttl=timedelta(hours=1), poll=0.01):
            pass
    assert [lease.owner for lease in store.held()] == ["run-a"], "what the waiting step took, it gave back"

    released = threading.Timer(0.3, store.release, args=("category:b", "run-a"))
    released.start()
    with store.holding(
        ["category:b"], "run-b", "y", ttl=timedelta(hours=1), wait=timedelta(seconds=10), poll=0.05
    ):
        assert [lease.owner for lease in store.held()] == ["run-b"]
    released.join()


def test_two_runs_racing_for_one_free_scope_get_it_once(leases: tuple[Leases, Clock]) -> None:
    store, _ = leases
    won: list[str] = []
    lost: list[str] = []
    start = threading.Barrier(8)

    def take(owner: str) -> None:
        start.wait()
        try:
            store.acquire("subject:psn:race", owner, "prepare_run", ttl=timedelta(hours=1))
            won.append(owner)
        except LeaseBusy:
            lost.append(owner)

    threads = [threading.Thread(target=take, args=(f"run-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7
    assert [lease.owner for lease in store.held()] == won


def test_a_working_step_renews_its_leases_and_a_stopped_one_lets_them_expire(empty_db: Engine) -> None:
    import time

    store = Leases(empty_db)
    store.ensure_schema()
    ttl = timedelta(seconds=0.9)
    with store.holding(["category:a"], "run-a", "x", ttl=ttl):
        time.sleep(2.0)  # more than twice the ttl: only the heartbeat keeps it
        with pytest.raises(LeaseBusy):
            store.acquire("category:a", "run-b", "y", ttl=ttl)
    assert store.held() == []

    store.acquire("category:a", "run-killed", "x", ttl=ttl)  # taken, then never renewed
    time.sleep(1.0)
    store.acquire("category:a", "run-b", "y", ttl=ttl)
