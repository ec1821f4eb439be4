"""After a backup is restored: erase again everyone erased since the backup was taken."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag

from retention.params import AS_OF_SCHEMA
from retention_airflow.dag_defaults import dag_arguments
from retention_airflow.replay_tasks import RESTORED_TO_SCHEMA, find_tombstones, replay_erasure, replay_nightly

DOC = """
### Replay erasures after a restore

A restored backup brings back the personal data of every customer erased after it was taken,
and rewinds the business database's own request records, so nobody could say whom to erase
again. Every completed erasure (**customer_erasure**, not a dry run, proven) leaves a
**tombstone** in the ledger's database: the customer id encrypted with the key of connection
**retention_tombstone_key**, the request reference, the reason and the time. This DAG erases
everyone again whose tombstone is newer than the backup.

**Flow**: `find_tombstones` checks the params and the key and lists the tombstones of erasures
completed after `restored_to` (ids only) → `replay_erasure`, one mapped instance per
tombstone: opens it and runs that customer's erasure with the same reason, by the rules of
**customer_erasure**, writing a receipt marked "replay after restore" (the request's folder in
the receipts bucket; the ledger as usual; no new tombstone, the original one stays) →
`replay_nightly`: the nightly retention run in one process, so that what fell due since the
backup goes too. Over a category's cap it erases nothing in that category and fails.

**Params** (checked by the form and again by `find_tombstones`, before anything runs):
- `restored_to` (required): the moment the restored backup was taken, ISO 8601 with its zone,
  e.g. `2026-06-14T02:00:00+02:00`. Empty, in the future or without a zone, it is refused.
  When unsure, give an earlier moment: replaying an erasure twice is harmless.
- `dry_run`: default **true**: shows per customer what would be erased again (dry-run
  receipts) and what the nightly run would erase; nothing is erased. Run it again with
  `dry_run: false`.
- `as_of`: evaluate retention at an earlier moment (as **retention_nightly**); empty: now.

**Runbook.** Restore the business database, the document buckets (every version) and the
archive from the same backup, before the scheduler runs anything against them. Then trigger
this DAG with `restored_to` and `dry_run: true`, check the number of tombstones in
`find_tombstones`'s `SUMMARY` line, and trigger it again with `dry_run: false`. A failed
`replay_erasure` is cleared like a task of **customer_erasure** (every step is idempotent).
If `replay_nightly` fails naming categories over their cap, or because the deployed policy set
is not the one last approved, the replays are done: trigger **retention_nightly** and approve
those categories (or the policy set) there. Tombstones are deleted by the nightly
run when *tombstones.keep* of _accountability.yaml (default 90 days: as long as backups are
kept) has passed since the erasure; a backup older than that must not be restored.
"""


@dag(
    dag_id="replay_erasures",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Copenhagen"),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["retention", "gdpr"],
    params={
        "restored_to": Param(
            None,
            **RESTORED_TO_SCHEMA,
            description="When the restored backup was taken (ISO 8601 with zone).",
        ),
        "dry_run": Param(True, type="boolean", description="Show what would be erased again; erase nothing."),
        "as_of": Param(
            None, **AS_OF_SCHEMA, description="Evaluate retention at this past moment (ISO 8601)."
        ),
    },
    **dag_arguments(
        dag_id="replay_erasures", task_timeout=timedelta(hours=3), run_timeout=timedelta(hours=20)
    ),
)
def replay_erasures() -> None:
    replays = replay_erasure.expand(tombstone_id=find_tombstones())
    replays >> replay_nightly()


replay_erasures()
