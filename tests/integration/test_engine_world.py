"""The engine end to end on the reference world in real PostgreSQL, S3 (moto server) and OpenSSH SFTP.

Every expectation comes from the generator's ground truth or from looking at the stores
directly, never from the engine's own report.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import sqlalchemy as sa

from harness.world_rules import TABLES
from harness.world_truth import Profile
from retention.adapters.database import REDACTED
from retention.adapters.s3 import S3Adapter
from retention.engine import execute_step, plan_category
from retention.errors import VerificationError
from retention.flow import RunOutcome, run_all
from retention.ledger import Ledger
from retention.results import CategoryPlan, Reason
from tests.integration.conftest import WorldEnv


def table_ids(env: WorldEnv) -> dict[str, set[int]]:
    meta = sa.MetaData()
    meta.reflect(env.engine, only=list(TABLES))
    with env.engine.connect() as c:
        return {t: set(c.execute(sa.select(meta.tables[t].c.id)).scalars()) for t in TABLES}


def rows(env: WorldEnv, table: str) -> dict[int, Any]:
    t = sa.Table(table, sa.MetaData(), autoload_with=env.engine)
    with env.engine.connect() as c:
        return {r.id: r for r in c.execute(sa.select(t))}


def s3_keys(env: WorldEnv) -> dict[str, int]:
    """Key -> number of versions and delete markers, read with a plain paginator."""
    out: dict[str, int] = {}
    for page in env.s3_client.get_paginator("list_object_versions").paginate(Bucket=env.bucket):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            out[v["Key"]] = out.get(v["Key"], 0) + 1
    return out


def archive_files(env: WorldEnv) -> set[str]:
    found = set()
    for dirpath, _dirs, files in os.walk(env.archive_root):
        for f in files:
            found.add(os.path.relpath(os.path.join(dirpath, f), env.archive_root))
    return found


def approve_all(_plan: CategoryPlan) -> bool:
    return True


def test_nightly_erases_exactly_what_is_due_in_all_three_stores(world_env: WorldEnv) -> None:
    env, world = world_env, world_env.world
    before = table_ids(env)
    keys_before, files_before = s3_keys(env), archive_files(env)
    expected = world.expected_after_nightly()
    assert sum(len(e["deleted"]) for e in expected.values()) > 50, "the world must have due data"
    assert sum(len(e["kept_hold"]) for e in expected.values()) > 0, "and held data"

    ctx = env.context()
    results = run_all(ctx, approved=approve_all)

    after = table_ids(env)
    for table in TABLES:
        assert after[table] == before[table] - expected[table]["deleted"], table
    customers = rows(env, "customers")
    for cid in expected["customers"]["anonymised"]:
        row = customers[cid]
        assert row.name == REDACTED and row.email is None and row.phone is None, cid
        assert row.address == REDACTED
    for cid in expected["customers"]["kept_hold"]:
        assert customers[cid].name != REDACTED and customers[cid].email
    interpreting = rows(env, "interpreting_assignments")
    for rid in expected["interpreting_assignments"]["anonymised"]:
        assert interpreting[rid].topic == REDACTED and interpreting[rid].notes is None
    untouched = before["interpreting_assignments"] - expected["interpreting_assignments"]["anonymised"]
    assert all(interpreting[r].topic != REDACTED for r in untouched)

    gone = world.s3_keys_expected_gone()
    keys_after = s3_keys(env)
    assert gone and not (gone & set(keys_after)), "every version and marker of due documents is gone"
    assert {k: v for k, v in keys_before.items() if k not in gone} == keys_after
    assert set(world.unrelated_objects) <= set(keys_after)
    assert archive_files(env) == files_before - world.archive_paths_expected_gone()

    assert results.results and all(r.verified for r in results.results)
    assert results.summary is not None and results.summary.proof.ok
    assert Ledger(env.engine).verify_chain().ok
    by_outcome = Ledger(env.engine).outcomes_for_run(ctx.run_id)
    erased_rows = sum(
        n
        for (cat, store, outcome), n in by_outcome.items()
        if store == "database" and outcome in ("erased", "anonymised")
    )
    assert erased_rows == sum(len(e["deleted"]) + len(e["anonymised"]) for e in expected.values())

    # A second run finds nothing and says so.
    again = env.context()
    second = run_all(again, approved=approve_all)
    assert all(r.erased == 0 and r.anonymised == 0 for r in second.results)
    assert table_ids(env) == after
    assert ("translation_documents", "s3", "verified") in Ledger(env.engine).outcomes_for_run(again.run_id)


def test_dry_run_touches_nothing(world_env: WorldEnv) -> None:
    env = world_env
    before = (table_ids(env), s3_keys(env), archive_files(env))
    ledger_before = Ledger(env.engine).count()
    results = run_all(env.context(dry_run=True), approved=approve_all)
    assert (table_ids(env), s3_keys(env), archive_files(env)) == before
    assert Ledger(env.engine).count() == ledger_before + 1  # only the run summary, as the DAG writes it
    located = {(r.category, r.store): r.located for r in results.results}
    expected = env.world.expected_after_nightly()
    assert located[("correspondence", "database")] == len(expected["correspondence"]["deleted"])


def test_cap_exceeded_waits_for_approval_and_erases_nothing(world_env: WorldEnv) -> None:
    env = world_env
    policy = env.policies.get("correspondence")
    tight = policy.model_copy(update={"cap": policy.cap.model_copy(update={"max_items": 1})})
    ctx = env.context()
    plan = plan_category(tight, ctx)
    assert plan.needs_approval and "exceed the cap of 1" in (plan.approval_reason or "")
    before = table_ids(env)["correspondence"]
    ctx.policies = type(env.policies)(
        tuple(tight if p.id == "correspondence" else p for p in env.policies.policies), env.policies.sources
    )
    results = run_all(ctx, approved=lambda p: False)
    assert results.skipped["correspondence"].reason is Reason.AWAITING_APPROVAL
    assert not any(r.category == "correspondence" for r in results.results)
    assert table_ids(env)["correspondence"] == before
    assert ("correspondence", "*", "approval_requested") in Ledger(env.engine).outcomes_for_run(ctx.run_id)


def test_fraction_cap_counts_the_whole_table_only_for_a_plan_over_it(world_env: WorldEnv) -> None:
    env = world_env
    policy = env.policies.get("correspondence")
    with env.engine.connect() as c:
        stored = c.execute(sa.text("SELECT count(*) FROM correspondence")).scalar_one()
    due = plan_category(policy, env.context()).records
    assert 0 < due < stored

    def with_fraction(fraction: float) -> CategoryPlan:
        cap = policy.cap.model_copy(update={"max_items": stored, "max_fraction": fraction})
        return plan_category(policy.model_copy(update={"cap": cap}), env.context())

    over = with_fraction(due / stored * 0.99)
    assert over.needs_approval and over.total == stored
    assert f"{due} of {stored} records" in (over.approval_reason or "")
    within = with_fraction(due / stored)
    assert not within.needs_approval and within.total is None


def test_customer_erasure_erases_that_customer_only_and_keeps_invoices_by_law(world_env: WorldEnv) -> None:
    env, world = world_env, world_env.world
    cid = next(
        c for c in world.customers_with(Profile.ACTIVE) if world.customer_inventory(c).rows["invoices"]
    )
    inv = world.customer_inventory(cid)
    before = table_ids(env)
    keys_before = s3_keys(env)

    ctx = env.context(mode="subject", subject=str(cid))
    results = run_all(ctx)

    after = table_ids(env)
    erased_tables = (
        "contact_persons",
        "translation_jobs",
        "documents",
        "marketing_consents",
        "third_party_data",
        "correspondence",
    )
    for table in erased_tables:
        assert not (after[table] & inv.rows[table]), table
        assert after[table] == before[table] - inv.rows[table], f"{table}: other customers untouched"
    assert inv.rows["invoices"] <= after["invoices"], "invoices not yet due are kept (Bookkeeping Act)"
    assert inv.rows["privacy_requests"] <= after["privacy_requests"]
    customer = rows(env, "customers")[cid]
    assert customer.name == REDACTED and customer.email is None and customer.phone is None
    assert not (set(inv.s3_objects) & set(s3_keys(env))), "all versions of the customer's documents are gone"
    assert {k: v for k, v in keys_before.items() if k not in inv.s3_objects} == s3_keys(env)
    assert not (inv.archive_paths & archive_files(env))

    kept = next(r.kept_by_law for r in results.results if r.category == "invoices" and r.kept_by_law)
    assert kept.count == len(inv.rows["invoices"]) and "Bogføringsloven" in kept.law
    assert kept.until_earliest > "2026-06-15"


def test_erasure_of_a_held_customer_keeps_everything_and_says_why(world_env: WorldEnv) -> None:
    env, world = world_env, world_env.world
    cid = sorted(world.held_customers)[0]
    inv = world.customer_inventory(cid)
    before = table_ids(env)
    results = run_all(env.context(mode="subject", subject=str(cid)))
    assert table_ids(env) == before
    assert set(inv.s3_objects) <= set(s3_keys(env))
    kept = sum(r.kept.get(Reason.LEGAL_HOLD, 0) for r in results.results)
    assert kept >= len(inv.s3_objects)


def test_no_personal_value_of_the_world_reaches_the_ledger(world_env: WorldEnv) -> None:
    env, world = world_env, world_env.world
    run_all(env.context(), approved=approve_all)
    cid = world.customers_with(Profile.MIXED)[0]
    run_all(env.context(mode="subject", subject=str(cid)))
    ledger = Ledger(env.engine)
    dump = repr(ledger.entries(limit=1000))
    assert ledger.count() > 20
    for c in range(1, world.size.customers + 1):
        can = world.canaries(c)
        for value in (can.name, can.email, can.phone, can.phrase):
            assert value not in dump, f"customer {c}'s personal data in the ledger"
    assert f"'{cid}'" not in dump


def test_a_version_written_between_erase_and_verify_fails_the_step_loudly(world_env: WorldEnv) -> None:
    env = world_env
    key = sorted(env.world.s3_keys_expected_gone())[0]

    class LateWriter(S3Adapter):
        """The real adapter; someone writes the object again just before it looks again."""

        def verify(self, target: Any) -> Any:
            env.s3_client.put_object(Bucket=env.bucket, Key=key, Body=b"written again")
            return super().verify(target)

    ctx = env.context()
    ctx.adapters = {**ctx.adapters, "s3": LateWriter(env.s3_client)}
    with pytest.raises(VerificationError, match="1 item"):
        execute_step(env.policies.get("translation_documents"), "s3", ctx)
    assert ("translation_documents", "s3", "verify_failed") in Ledger(env.engine).outcomes_for_run(ctx.run_id)
    # A retry erases the late version and proves it.
    retry = execute_step(env.policies.get("translation_documents"), "s3", env.context(run_id=ctx.run_id))
    assert retry.erased == 1 and retry.verified


def test_nightly_and_a_customer_erasure_at_the_same_time_do_not_corrupt_each_other(
    world_env: WorldEnv,
) -> None:
    """Both runs touch the same customer's due data concurrently; the result is the union of both, proven."""
    import threading

    env, world = world_env, world_env.world
    cid = next(
        c for c in world.customers_with(Profile.MIXED) if world.customer_inventory(c).rows["documents"]
    )
    inv = world.customer_inventory(cid)
    expected = world.expected_after_nightly()
    before = table_ids(env)
    errors: list[BaseException] = []
    results: dict[str, RunOutcome] = {}

    def run(name: str, **kw: Any) -> None:
        try:
            results[name] = run_all(env.context(**kw), approved=approve_all)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=run, args=("nightly",)),
        threading.Thread(target=run, args=("erasure",), kwargs={"mode": "subject", "subject": str(cid)}),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    after = table_ids(env)
    for table in ("contact_persons", "documents", "translation_jobs", "correspondence", "marketing_consents"):
        assert after[table] == before[table] - expected[table]["deleted"] - inv.rows[table], table
    assert not (set(inv.s3_objects) & set(s3_keys(env)))
    assert Ledger(env.engine).verify_chain().ok
    assert all(r.verified for rs in results.values() for r in rs.results)


def test_each_range_is_announced_before_it_is_erased_and_outcomes_survive_a_failure(
    world_env: WorldEnv,
) -> None:
    """A real run's database batches are key ranges: intent, then outcome; a failure keeps the record."""
    from retention.adapters.database import DatabaseAdapter
    from retention.errors import TransientError

    env = world_env
    policy = env.policies.get("correspondence")
    due = env.world.expected_after_nightly()["correspondence"]["deleted"]

    class FailsOnThirdRange(DatabaseAdapter):
        calls = 0

        def erase(self, target: Any, batch: Any) -> Any:
            self.calls += 1
            if self.calls == 3:
                raise TransientError("database connection lost")
            return super().erase(target, batch)

    ctx = env.context()
    ctx.database = FailsOnThirdRange(env.engine, batch_size=5)
    with pytest.raises(TransientError):
        execute_step(policy, "database", ctx)
    ledger = Ledger(env.engine)
    entries = sorted(ledger.entries(run_id=ctx.run_id, limit=1000), key=lambda e: e["seq"])
    outcomes = [e["outcome"] for e in entries]
    assert outcomes == ["planned", "erased", "planned", "erased", "planned"], outcomes
    assert all(e["detail"] == {"named_by": "key_range"} for e in entries if e["outcome"] == "planned")
    erased_first = sum(e["count"] for e in entries if e["outcome"] == "erased")
    assert erased_first == len(due - table_ids(env)["correspondence"]) > 0
    assert ledger.verify_chain().ok

    retry = execute_step(policy, "database", env.context(run_id=ctx.run_id))
    assert retry.verified and retry.erased + erased_first == len(due)
    assert not due & table_ids(env)["correspondence"]
