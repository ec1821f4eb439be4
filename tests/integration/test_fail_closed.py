"""Fail closed (#10, point 5): no plan, no decision or more due than cleared erases nothing.

On the reference world in real PostgreSQL, S3 (moto server) and OpenSSH. Expectations come
from looking at the stores, never from the engine's report.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import sqlalchemy as sa

from retention import flow
from retention.errors import TerminalError
from retention.results import Decision, Reason, Skip
from tests.integration.conftest import WorldEnv
from tests.integration.test_engine_world import archive_files, s3_keys, table_ids


def _cleared(env: WorldEnv) -> tuple[Any, Any, dict[str, flow.Clearance]]:
    ctx = env.context()
    run = flow.prepare(ctx)
    plans = {c: flow.plan(ctx, c) for c in run.categories}
    decided = {c: Decision.APPROVED for c, p in plans.items() if p.needs_approval}
    return ctx, run, flow.clearances(run, plans, decided)


def test_a_category_without_a_plan_erases_nothing_in_any_store(world_env: WorldEnv) -> None:
    env = world_env
    ctx, run, cleared = _cleared(env)
    before = (table_ids(env), s3_keys(env), archive_files(env))
    missing = dataclasses.replace(cleared["translation_documents"], plan=None)

    for store in ("s3", "sftp"):
        with pytest.raises(TerminalError, match="no plan recorded; nothing erased"):
            flow.erase_files(ctx, run, "translation_documents", store, missing)
    assert (s3_keys(env), archive_files(env)) == before[1:]

    # The database pass keeps the rows of a category without a plan; the rest goes ahead.
    passed = flow.database_pass(
        ctx, [], {}, {**cleared, "translation_documents": missing, "correspondence": missing}
    )
    assert passed.skipped["correspondence"] == Skip(Reason.NO_PLAN)
    assert passed.skipped["translation_documents"] == Skip(Reason.FILES_UNVERIFIED, store="s3")
    after = table_ids(env)
    assert after["correspondence"] == before[0]["correspondence"]
    expected = env.world.expected_after_nightly()
    assert after["contact_persons"] == before[0]["contact_persons"] - expected["contact_persons"]["deleted"]
    assert not Skip(Reason.NO_PLAN).accepted({}), "a missing plan fails the run: it is no decision"


def test_an_over_cap_plan_without_an_answer_erases_nothing(world_env: WorldEnv) -> None:
    env = world_env
    ctx, run, cleared = _cleared(env)
    plan = cleared["correspondence"].plan
    assert plan is not None and plan.records > 1
    over = dataclasses.replace(plan, needs_approval=True, approval_reason="over")
    before = table_ids(env)["correspondence"]
    for decision, reason in ((None, Reason.NO_ANSWER), (Decision.REJECTED, Reason.REJECTED)):
        passed = flow.database_pass(ctx, [], {}, {"correspondence": flow.Clearance(over, decision)})
        assert passed.skipped["correspondence"] == Skip(reason)
    assert table_ids(env)["correspondence"] == before


def test_more_due_at_erase_time_than_a_human_approved_erases_nothing(world_env: WorldEnv) -> None:
    """The cap is checked again from a fresh count: an approval covers what it was shown, no more."""
    env = world_env
    ctx, run, cleared = _cleared(env)
    plan = cleared["correspondence"].plan
    assert plan is not None
    shown = dataclasses.replace(plan, records=plan.records - 3, needs_approval=True, approval_reason="over")
    before = table_ids(env)["correspondence"]
    passed = flow.database_pass(ctx, [], {}, {"correspondence": flow.Clearance(shown, Decision.APPROVED)})
    assert passed.skipped["correspondence"] == Skip(Reason.OVER_CAP)
    assert table_ids(env)["correspondence"] == before

    # Under the cap when planned, over it now: the same.
    policy = ctx.policies.get("correspondence")
    tight = policy.model_copy(update={"cap": policy.cap.model_copy(update={"max_items": plan.records - 1})})
    ctx.policies = type(ctx.policies)(
        tuple(tight if p.id == "correspondence" else p for p in ctx.policies.policies), ctx.policies.sources
    )
    small = dataclasses.replace(plan, records=plan.records - 2)
    passed = flow.database_pass(ctx, [], {}, {"correspondence": flow.Clearance(small, None)})
    assert passed.skipped["correspondence"] == Skip(Reason.OVER_CAP)
    assert table_ids(env)["correspondence"] == before

    # What was shown and approved goes ahead.
    passed = flow.database_pass(ctx, [], {}, {"correspondence": flow.Clearance(plan, Decision.APPROVED)})
    assert "correspondence" not in passed.skipped
    with env.engine.connect() as c:
        left = set(c.execute(sa.text("SELECT id FROM correspondence")).scalars())
    assert left == before - env.world.expected_after_nightly()["correspondence"]["deleted"]
