"""Run ids on real PostgreSQL (and the demo's SQLite): one id names one run.

Airflow's run ids are unique only within a DAG, and only while the run exists; the ledger, the
leases and the erase journal key a run by its id alone. A run's first task claims its id
(``retention.runs``): the same run again (a retry, a cleared run) is fine, any other run is refused.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from retention.errors import TerminalError
from retention.runs import RunIds, RunIdTaken, owner_of

AT = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)
NIGHTLY = owner_of("retention_nightly", AT)
ERASURE = owner_of("customer_erasure", AT)


@pytest.fixture
def run_ids(empty_db: Engine) -> RunIds:
    store = RunIds(empty_db)
    store.ensure_schema()
    store.ensure_schema()  # idempotent
    return store


def test_a_run_claims_its_id_again_and_another_run_is_refused_naming_the_owner(run_ids: RunIds) -> None:
    run_ids.claim("PR-2026-00042", ERASURE, now=AT)
    run_ids.claim("PR-2026-00042", ERASURE, now=AT + timedelta(hours=1))  # its retry, or the run cleared
    for other in (NIGHTLY, owner_of("customer_erasure", AT + timedelta(days=400))):
        with pytest.raises(RunIdTaken) as taken:
            run_ids.claim("PR-2026-00042", other)
        assert taken.value.terminal, "a taken id is refused for good: the run needs a new id"
        assert "customer_erasure@2026-12-03T01:00:00+00:00" in str(taken.value)
        assert "since 2026-12-03T01:00:00" in str(taken.value)
    assert run_ids.owner("PR-2026-00042") == ERASURE
    assert run_ids.owner("PR-2026-00043") is None
    run_ids.claim("PR-2026-00043", NIGHTLY)
    assert run_ids.owner("PR-2026-00043") == NIGHTLY


def test_the_owner_is_the_dag_and_the_moment_in_utc() -> None:
    local = datetime(2026, 12, 3, 2, 0, tzinfo=UTC).astimezone()
    assert owner_of("retention_nightly", local) == "retention_nightly@2026-12-03T02:00:00+00:00"
    with pytest.raises(TerminalError):
        owner_of("retention_nightly", datetime(2026, 12, 3, 2, 0))  # naive: no moment at all


def test_an_empty_or_overlong_id_is_refused(run_ids: RunIds) -> None:
    for bad in ("", "x" * 251):
        with pytest.raises(ValueError, match="1 to 250"):
            run_ids.claim(bad, NIGHTLY)
    run_ids.claim("x" * 250, NIGHTLY)


def test_two_runs_racing_for_one_id_get_it_once(run_ids: RunIds) -> None:
    won: list[str] = []
    lost: list[str] = []
    start = threading.Barrier(8)

    def claim(owner: str) -> None:
        start.wait()
        try:
            run_ids.claim("manual__2026-12-03T01:00:00+00:00", owner)
            won.append(owner)
        except RunIdTaken:
            lost.append(owner)

    owners = [owner_of(f"dag_{i}", AT) for i in range(8)]
    threads = [threading.Thread(target=claim, args=(owner,)) for owner in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7
    assert run_ids.owner("manual__2026-12-03T01:00:00+00:00") == won[0]
