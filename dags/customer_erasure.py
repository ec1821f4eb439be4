"""One customer's erasure request (GDPR Art. 17), answered with a receipt."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, XComArg, dag, task_group

from retention.params import REASON_SCHEMA, REQUEST_REF_SCHEMA
from retention.stores import FILE_STORES
from retention.subject import SAFE_SUBJECT_SCHEMA
from retention_airflow.dag_defaults import dag_arguments
from retention_airflow.tasks import (
    FILE_STORE_POOLS,
    GROUP,
    erase_databases,
    erase_store,
    erase_task_id,
    plan,
    prepare_run,
    write_receipt,
)

DOC = """
### Customer erasure (GDPR Art. 17)

Triggered by hand for one customer's request to be forgotten (or a withdrawn consent, or an
objection). Finds everything about the customer through the policies (database rows by the
customer id, S3 objects with all versions, SFTP archive files), erases what may be erased,
anonymises records that must stay, keeps what the law requires (invoices under the
Bookkeeping Act, the privacy-request records themselves) with the law and the until-date,
verifies every store, records everything in the ledger, and writes an **erasure receipt**
(JSON and Markdown, in S3 under the receipts prefix; the return value of `write_receipt`).

**Flow**: `prepare_run` re-checks the params (the customer id against the deployment's
customer-id format, `_subject.yaml` beside the policies) and validates the policies against the live
schema → per category (mapped task group `category`): `plan` (what would be erased, and what
the law keeps) → `erase_s3`, `erase_sftp`, `erase_filesystem`
(one task per file store; a category's task for a store it does not use does nothing) →
`erase_databases`: every category's rows in policy
order, each once its files are verified gone → `write_receipt` builds the receipt from the
steps' results, stores it in S3 and references it from the ledger. No cap, no approval: the
request itself is the decision.

**Params** (checked before a run is created; an invalid value is refused by the form and the API):
- `customer_id`: the internal customer id. Never an e-mail or a name. The form and the API accept
  only ASCII letters, digits, `.`, `_` and `-` (at most 64); the deployment's own format (e.g.
  digits only, no leading zero) is checked by `prepare_run`, which fails without touching anything.
- `request_ref`: the privacy request's reference, e.g. `PR-2026-00042`.
- `reason`: `erasure_request` (every category), `consent_withdrawn` (only the categories
  processed under consent, by their `legal_basis`) or `objection` (those processed under
  legitimate interests, and every `direct_marketing` one). The receipt lists the categories a
  reason leaves untouched, and why ("processed under a contract, not consent").
- `dry_run`: default **true**: shows what would happen and writes a dry-run receipt. Run it
  again with `dry_run: false` to erase.

**Runbook.** A failed task's log ends with a `SUMMARY` line. Transient errors were retried;
fix the store and *Clear* the failed task with downstream: every step is idempotent. A
verification failure means data is still present: do not answer the customer until a
cleared run has a receipt with `verified: true`. If the customer is under a legal hold, the
receipt says so (kept: legal hold) and nothing of theirs is erased until the hold is released.
A real, proven run also leaves a tombstone (the customer id, encrypted with connection
retention_tombstone_key, in the ledger's database): if a backup is restored later, trigger
`replay_erasures` with the moment the backup was taken, and it erases this customer again from
the tombstone, with its own receipt. A red `prepare_run` saying the run id already names another
run: the run was triggered with an id another DAG's run (or an old, purged run) used; trigger it
again under a new run id (nothing was touched).
"""


@dag(
    dag_id="customer_erasure",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Copenhagen"),
    catchup=False,
    doc_md=DOC,
    tags=["retention", "gdpr"],
    params={
        "customer_id": Param(
            **SAFE_SUBJECT_SCHEMA,
            description=(
                "Internal customer id (letters, digits, '.', '_', '-'). "
                "The deployment's format is checked in the first task."
            ),
        ),
        "request_ref": Param(
            **REQUEST_REF_SCHEMA, description="Privacy request reference, e.g. PR-2026-00042."
        ),
        "reason": Param("erasure_request", **REASON_SCHEMA, description="Why the data is erased."),
        "dry_run": Param(
            True, type="boolean", description="Show the plan and a dry-run receipt; erase nothing."
        ),
    },
    **dag_arguments(
        dag_id="customer_erasure",
        task_timeout=timedelta(hours=1),
        run_timeout=timedelta(hours=6),
        retry_delay=timedelta(minutes=1),
        run_alert=False,
    ),
)
def customer_erasure() -> None:
    categories = prepare_run(mode="subject")
    run = XComArg(categories.operator, key="run")

    @task_group(group_id=GROUP)
    def per_category(category: str) -> None:
        erase = [
            erase_store.override(task_id=erase_task_id(store), pool=FILE_STORE_POOLS[store])(
                run, category, store
            )
            for store in FILE_STORES
        ]
        plan(run, category) >> erase

    files = per_category.expand(category=categories)
    files >> erase_databases(run, categories) >> write_receipt(run, categories)


customer_erasure()
