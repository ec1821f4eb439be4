"""Nightly retention run: erase what is due in every category, verify it, record it."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, XComArg, dag, task_group
from airflow.timetables.trigger import CronTriggerTimetable

from retention.params import AS_OF_SCHEMA
from retention.stores import FILE_STORES
from retention_airflow.dag_defaults import APPROVAL, dag_arguments
from retention_airflow.tasks import (
    FILE_STORE_POOLS,
    GROUP,
    CapApprovalOperator,
    PolicySetApprovalOperator,
    erase_databases,
    erase_store,
    erase_task_id,
    finish_nightly,
    plan,
    prepare_run,
)

DOC = """
### Nightly retention run

Every night at 02:00 (Europe/Copenhagen) this run erases the personal data whose retention
period has ended, in every category of `include/retention_policies/`, from the business
database, S3 (every version and delete marker) and the SFTP archive; then it looks again to
prove the data is gone, and records every decision in the ledger (`retention_ledger`).

**Flow**: `prepare_run` validates the policies against the live schema (an invalid set fails
here, before anything is touched) and fixes the run's clock → `approve_policy_set` (asks a
human only when the deployed policy set differs from the one last approved; every category's
`approve` and erasure wait for it, its `plan` does not) → per category (mapped task group
`category`): `plan` (counts only) → `approve` (asks a human only when the plan is over the
category's blast-radius cap) → `erase_s3`, `erase_sftp`, `erase_filesystem`
(one task per file store; `approve` skips those of stores the category does not use) →
`erase_databases`: every category's
rows in policy order (`after`), each only once its files are verified gone (the row is the
index of the files) → `finish_nightly` records the approvals, verifies the ledger's hash
chain, deletes the erasure tombstones older than tombstones.keep of `_accountability.yaml`
(default 90 days: as long as a backup may be restored), writes the run summary (its return
value, in XCom) and fails if any step is unproven.

**Params**: `dry_run` (plan and count only; nothing is erased or recorded) and `as_of`
(evaluate retention at an earlier moment; a time in the future is refused).

**Runbook: a failed run.** Open the failed task's log; its last line is a `SUMMARY`.
- `TransientError` (timeout, throttling, lost connection) was already retried with backoff.
  Fix the store, then *Clear* the failed task (with downstream): every step is idempotent
  and resumes where it stopped.
- `EraseFailedError` / `VerificationError`: a store refused or kept items. Nothing is lost;
  the ledger has the counts and error codes. Fix the cause (permissions, object lock) and clear.
- `PolicyError` / `UnknownLocationError`: a policy names something that does not exist.
  Fix the policy file (the message names file and field) and trigger a new run.
- `erase_databases` says "SUMMARY ... not erased now: s3 step not verified" for a category:
  its S3 or SFTP step failed first, so its rows stay as the index of its files. Fix that step
  and clear it with downstream; other categories' rows were erased as usual (those that run
  `after` it wait with it).

**Runbook: due data left behind.** `finish_nightly`'s log has a line
`SUMMARY category=... due but not erased: reason=count` per category, and its return value a
`backlog`. Holds, statutes and storage locks are expected to last. Any other reason three
nights in a row fails `finish_nightly` naming `category:reason`:
- `unsafe_target`: a stored key or path is empty, absolute, padded or climbs out of its root;
  correct the value in the business data (the engine never normalises it).
- `shared_with_not_due`: another record, not due yet, names the same object or a prefix of it;
  expected until that record is due, unless the data is wrong.
- `blocked_by_reference`: rows that stay (for their own reason) reference these.
- `rejected`, `no_answer`: answer the approval, or change the cap.
- `no_plan`, `over_cap`, `files_unverified`, `failed`: see the failed task's log.

Records with no date to count from are never due by age and are counted apart, in the run
summary's `undated` and a line `SUMMARY category=... never due by age`: an event that has not
happened yet (an open job, an active consent) is expected; an orphaned row (a NULL reference
on the anchor's path) or a missing date is a data error to correct in the business system.

**Runbook: a changed policy set.** When the policy files (or `_subject.yaml`, `_airflow.yaml`,
`_accountability.yaml`) differ from the set last approved, `approve_policy_set` waits for an
answer (Required actions) before anything is erased; the form shows both hashes, and the monitoring
page says *awaiting approval*. Check that the deployed change is the reviewed one (`make validate`,
`make ropa`, the policy repository's history). *Approve* puts it in force: the run goes on, each
category still under its own cap, and later runs under the same set do not ask. *Reject* erases
nothing tonight (every category is reported as `policy_change_not_approved`) and the next run
asks again; deploy the set you want and let it ask. The first real run of a new installation puts
its set in force without asking, and the ledger records that.

**Runbook: an approval.** A category over its cap (`cap` in its policy) waits in
`category.approve` (Required actions / the task's *Approve or reject* form). The form
shows counts per location. *Approve* erases it now; *Reject* erases nothing tonight and is
recorded in the ledger; categories that run `after` it wait for the next night too; the next
run asks again. If the volume is expected (a new policy, a backlog), approve; if not, reject
and investigate the data before the next night. Unanswered requests time out after 12 hours
(nothing erased). While a request waits, `erase_databases` waits too (for every category:
files are erased, rows follow after the answer), so answer it the same morning.
"""


@dag(
    dag_id="retention_nightly",
    schedule=CronTriggerTimetable("0 2 * * *", timezone="Europe/Copenhagen"),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Copenhagen"),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["retention", "gdpr"],
    params={
        "dry_run": Param(False, type="boolean", description="Plan and count only; erase nothing."),
        "as_of": Param(
            None, **AS_OF_SCHEMA, description="Evaluate retention at this past moment (ISO 8601)."
        ),
    },
    # An approval waits at most 12 hours; the run as a whole at most 20, before the next night's.
    **dag_arguments(
        dag_id="retention_nightly", task_timeout=timedelta(hours=3), run_timeout=timedelta(hours=20)
    ),
)
def retention_nightly() -> None:
    categories = prepare_run(mode="due")
    run = XComArg(categories.operator, key="run")
    policy_set = PolicySetApprovalOperator(
        task_id="approve_policy_set", response_timeout=timedelta(hours=12), **APPROVAL
    )

    @task_group(group_id=GROUP)
    def per_category(category: str) -> None:
        approve = CapApprovalOperator(task_id="approve", response_timeout=timedelta(hours=12), **APPROVAL)
        erase = [
            erase_store.override(task_id=erase_task_id(store), pool=FILE_STORE_POOLS[store])(
                run, category, store
            )
            for store in FILE_STORES
        ]
        # The category's plan counts meanwhile; its erasure waits for the policy set's approval too.
        [plan(run, category), policy_set] >> approve >> erase

    files = per_category.expand(category=categories)
    categories >> policy_set
    files >> erase_databases(run, categories) >> finish_nightly(run, categories)


retention_nightly()
