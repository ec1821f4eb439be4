"""Each request reason acts on exactly the categories the GDPR scopes it to (#12), on the real stores.

A withdrawn consent (Art. 7(3)) acts on what is processed under consent: the marketing consents,
whose record stays as proof until two years after the withdrawal (the policy's override). An
objection (Art. 21) acts on what is processed under legitimate interests (contact persons) and
on direct marketing (the consents, erased at once). Everything else, kept under a contract or a
legal obligation, must be exactly as it was: every row's every value, every S3 version and
every archive file. The expectations come from the stores and the reference world's inventory,
never from the engine's report.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from harness.world_rules import NOW, TABLES
from harness.world_truth import Profile
from retention.flow import ReceiptRequest, run_all
from retention.receipt import render_markdown
from tests.integration.conftest import WorldEnv
from tests.integration.test_dags import airflow_world  # noqa: F401 - the fixture

ALL = set(TABLES)


def snapshot(env: WorldEnv) -> dict[str, Any]:
    """Every row of every business table (all values), every S3 version and marker, every archive file."""
    meta = sa.MetaData()
    meta.reflect(env.engine, only=list(TABLES))
    with env.engine.connect() as c:
        state: dict[str, Any] = {
            t: {r.id: tuple(r) for r in c.execute(sa.select(meta.tables[t]))} for t in TABLES
        }
    versions = []
    for page in env.s3_client.get_paginator("list_object_versions").paginate(Bucket=env.bucket):
        versions += [
            (v["Key"], v["VersionId"]) for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
    state["s3"] = sorted(versions)
    files = set()
    for dirpath, _dirs, names in os.walk(env.archive_root):
        files |= {os.path.relpath(os.path.join(dirpath, n), env.archive_root) for n in names}
    state["archive"] = files
    return state


def customer_with(env: WorldEnv, *tables: str) -> int:
    """An active customer holding rows in every one of ``tables`` and documents in both file stores."""
    world = env.world
    return next(
        c
        for c in world.customers_with(Profile.ACTIVE)
        if all(world.customer_inventory(c).rows[t] for t in tables)
        and world.customer_inventory(c).s3_objects
        and world.customer_inventory(c).archive_paths
    )


def request(env: WorldEnv, cid: int, reason: str) -> dict[str, Any]:
    outcome = run_all(
        env.context(mode="subject", subject=str(cid)), request=ReceiptRequest("PR-2026-00501", reason)
    )
    assert outcome.receipt is not None and outcome.receipt["verified"]
    assert outcome.run.reason == reason
    return outcome.receipt


def test_withdrawing_consent_touches_only_consent_data_and_keeps_the_proof(world_env: WorldEnv) -> None:
    env = world_env
    cid = customer_with(env, "marketing_consents", "translation_jobs", "invoices", "contact_persons")
    before = snapshot(env)
    consents = {i: r for i, r in before["marketing_consents"].items() if r[1] == cid}
    withdrawn_col = 5  # id, customer_id, email, channel, given_at, withdrawn_at
    proof_ended = {
        i for i, r in consents.items() if r[withdrawn_col] and r[withdrawn_col] <= NOW - timedelta(days=731)
    }

    receipt = request(env, cid, "consent_withdrawn")

    after = snapshot(env)
    for table in ALL - {"marketing_consents"}:
        assert after[table] == before[table], f"{table}: not processed under consent, must be untouched"
    assert after["s3"] == before["s3"] and after["archive"] == before["archive"]
    assert after["marketing_consents"] == {
        i: r for i, r in before["marketing_consents"].items() if i not in proof_ended
    }, "a consent record stays as proof until two years after its withdrawal"
    assert [c["category"] for c in receipt["categories"]] == ["marketing_consents"]
    untouched = {c["category"]: c["why"] for c in receipt["untouched"]}
    assert set(untouched) == {p.id for p in env.policies.policies} - {"marketing_consents"}
    assert untouched["translation_jobs"]["en"] == (
        "processed under a contract, not consent: not affected by withdrawing consent"
    )
    assert "behandles på grundlag af en retlig forpligtelse, ikke samtykke" in untouched["invoices"]["da"]


def test_an_objection_ends_legitimate_interest_and_direct_marketing_processing_only(
    world_env: WorldEnv,
) -> None:
    env = world_env
    cid = customer_with(env, "marketing_consents", "contact_persons", "translation_jobs", "correspondence")
    before = snapshot(env)

    receipt = request(env, cid, "objection")

    after = snapshot(env)
    acted_on = {"contact_persons", "marketing_consents"}
    for table in ALL - acted_on:
        assert after[table] == before[table], f"{table}: not based on legitimate interests, must be untouched"
    assert after["s3"] == before["s3"] and after["archive"] == before["archive"]
    for table in acted_on:
        mine = {i for i, r in before[table].items() if r[1] == cid}
        assert mine, table
        assert set(after[table]) == set(before[table]) - mine, f"{table}: exactly the customer's rows erased"
    assert {c["category"] for c in receipt["categories"]} == acted_on
    assert {c["category"] for c in receipt["untouched"]} == {p.id for p in env.policies.policies} - acted_on

    markdown = render_markdown(receipt)
    danish, english = markdown.split("\n---\n")
    assert danish.startswith("# Kvittering for sletning") and "indsigelse (art. 21)" in danish
    assert "Berøres ikke af denne anmodning" in danish and "not affected by an objection" in english


def test_an_erasure_request_acts_on_every_category(world_env: WorldEnv) -> None:
    env = world_env
    cid = customer_with(env, "marketing_consents", "contact_persons")
    receipt = request(env, cid, "erasure_request")
    assert receipt["untouched"] == []
    assert {"marketing_consents", "contact_persons", "translation_documents"} <= {
        c["category"] for c in receipt["categories"]
    }


def test_the_erasure_dag_carries_the_reason_from_its_params_to_every_task(
    airflow_world: WorldEnv,  # noqa: F811 - the fixture imported above
) -> None:
    from tests.integration.test_dags import _xcom, dag

    env = airflow_world
    cid = customer_with(env, "marketing_consents", "contact_persons", "translation_jobs")
    before = snapshot(env)
    conf = {"customer_id": str(cid), "request_ref": "PR-2026-00502", "reason": "objection", "dry_run": False}

    run = dag("customer_erasure").test(run_conf=conf)

    assert run.state == "success"
    after = snapshot(env)
    changed = {t for t in ALL if after[t] != before[t]}
    assert changed == {"contact_persons", "marketing_consents"}
    assert after["s3"] == before["s3"] and after["archive"] == before["archive"]
    receipt = _xcom(run, "write_receipt")
    assert receipt["reason"] == "objection" and receipt["verified"]
    assert {c["category"] for c in receipt["categories"]} == {"contact_persons", "marketing_consents"}


def test_a_dry_run_of_a_withdrawal_shows_the_same_scope_and_touches_nothing(world_env: WorldEnv) -> None:
    env = world_env
    cid = customer_with(env, "marketing_consents", "translation_jobs")
    before = snapshot(env)
    outcome = run_all(
        env.context(mode="subject", subject=str(cid), dry_run=True),
        request=ReceiptRequest("PR-2026-00503", "consent_withdrawn"),
    )
    assert snapshot(env) == before
    receipt = outcome.receipt
    assert receipt is not None and receipt["dry_run"]
    assert outcome.run.categories == ("marketing_consents",)
    assert {c["category"] for c in receipt["untouched"]} == {p.id for p in env.policies.policies} - {
        "marketing_consents"
    }
