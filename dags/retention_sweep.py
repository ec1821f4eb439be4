"""Weekly orphan sweep: files and objects that no record names, found, reported or erased."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, XComArg, dag, task_group
from airflow.timetables.trigger import CronTriggerTimetable

from retention_airflow.dag_defaults import APPROVAL, dag_arguments
from retention_airflow.sweep_tasks import (
    GROUP,
    SWEEP_XCOM,
    SweepApprovalOperator,
    check_coverage,
    finish_sweep,
    plan_root,
    prepare_sweep,
    sweep_root,
)

DOC = """
### Orphan sweep

The nightly run finds files through the database: it erases what the rows name. Whatever no row
names is never found by it: an upload whose transaction rolled back, a file left after its row was
removed by hand, a copy someone put in the archive, an S3 prefix a new feature writes to. Every
Sunday at 04:00 (Europe/Copenhagen) this run lists every S3 prefix, archive directory and share
directory the policies' file `locations` use and finds the items that no record of any category
names (exactly, or by prefix for a directory template) and that are older than their grace period
(default seven days, so that an upload in progress is never one). Those are *orphans*.

**Roots.** A location's root is its template's fixed part: `documents/` of
`documents/{customer_id}/{id}.pdf`, the whole bucket or archive of `{s3_key}`. Per location the
policy says what happens to orphans under its root: `orphans: {action: report}` (the default:
counted, and the run fails so that ops are alerted) or `orphans: {action: erase, law: ...}` (erased,
with the legal basis recorded), and `grace: P7D`. An orphan is erased only if every location whose
root covers it says erase. The receipts (`receipts_bucket`, `receipts_prefix`) are never looked at.

**Flow**: `prepare_sweep` checks the policies against the live schema and the legal holds in force,
and fixes the clock and the roots → per root (mapped task group `root`, each named by its root, such
as `s3:alleskar-documents/documents/*`): `plan` (counts; a root that only reports is listed once, by its
`sweep`) → `approve` (asks a human only when more than `max_items` orphans would be erased) →
`sweep`: lists the root, compares each page of 500 items with the index (one indexed query per
naming location), erases what may go through the store's own adapter (every version and delete
marker; legal holds read again before each batch; S3 Object Lock kept; symlinks never followed or
removed), lists again to verify, and records every batch in the ledger (`retention_ledger`: counts
and digests, never keys) → `finish_sweep` records the approvals, checks the ledger's hash chain and
sums up (its return value); it fails, and alerts, while any orphan is reported or anything is
unproven.

**Coverage**: beside the roots, `check_coverage` lists what looks like personal data but no policy
covers (the same report as `make validate ... COVERAGE=1`, and the stores besides): tables no
policy names whose name or columns look personal, personal-looking columns of tables the policies
only anonymise or read (by column name, and by a sample of at most 200 values per text column:
e-mail, phone and CPR patterns), S3 prefixes of the policies' buckets (the real names from
`bucket_map`; `receipts_prefix` in `receipts_bucket` is the system's own) and directories of the
archive (`archive_root`) and the share (`filesystem_root`) that no location's template renders.
It records one ledger entry (action *coverage*: the count per kind and the findings' lines, names
and counts only, never a value; a name that looks personal is not shown) and logs one
`SUMMARY coverage ...` line per finding. Findings do not fail the run: they are shown on the
monitoring page (*Last sweep*) and in the log; the task fails only when a store cannot be read.

**Params**: `dry_run` (find and count only; erase nothing; roots that only report never erase) and
`max_items` (per root, the orphans the sweep erases without asking; default 1000).

**What the counts mean** (XCom of `sweep`, and the `SUMMARY root=...` line of its log): *listed*
(keys or files), *named* (a record names them), *recent* (younger than the grace: not looked up),
*links* (symlinks, never touched), *orphans*, *held* (kept by a legal hold), *reported* (only
reported: the root says report, or the key cannot be used safely, counted again as *unsafe*),
*erasable*, *erased* (items: S3 versions and delete markers, or files) and *kept* by reason:
`legal_hold`, `storage_lock` (S3 Object Lock), `shared_with_not_due` (a record named the item by
the time it was erased) and `over_cap`.

**Runbook: what to do with each finding.** Nothing here names a key: to see which items are
orphans, list the root yourself and compare (or run the sweep with `dry_run` after a fix).
- *reported* orphans (the run is red): decide per item. A file that belongs to a record whose
  row is missing or wrong: restore or correct the row (the item is then named and the nightly run
  erases it when due). A copy nobody needs: delete it by hand, or, if such items should always go,
  set `action: erase` with its *law* on the location (a policy change for the data-protection lead).
  Items that must stay although no record names them (templates, a manual archive): add a prefix
  legal hold with the reason (`python -m retention.cli hold add --prefix ...`); held orphans keep
  the run green.
- *unsafe* (part of *reported*): the key is empty, absolute, has `..`, control characters or
  values padded with whitespace. The sweep never erases it; rename or delete it by hand.
- *held*: a legal hold covers the prefix, or a held customer the key names (only where a template
  names the customer column itself, e.g. `documents/{customer_id}/...`; for `{s3_key}` only prefix
  holds can keep an orphan). Expected while the hold lasts.
- *recent*: younger than the grace; the next weeks' sweeps look again.
- *links*: symlinks in the archive or share are never followed or removed; remove a stray link by
  hand if it should not be there.
- `storage_lock`: S3 Object Lock keeps the version until its date; the next sweep after it erases it.
- An approval in `root.approve`: more than `max_items` orphans would be erased in one root. Approve
  if the volume is expected (a known incident, a new *erase* policy); reject and investigate
  otherwise (a mass of orphans usually means rows were lost: restore them first). Reject erases
  nothing and is recorded; unanswered requests time out after 24 hours and the run fails.
- *Coverage findings* (`check_coverage`): an uncovered table or column: add it to the policy of
  its category (a `locations` entry of the table with `action: delete`, or its column in an
  anonymising location's *fields*), or, if it must be kept (our staff's names, a decision for the
  data-protection lead), accept it on purpose with `--coverage-skip table.column` of
  `python -m retention.cli validate`; this weekly report keeps listing it until a policy covers
  it. An uncovered S3 prefix or directory: find the feature that writes there and give it a policy
  location (its template), or move the files under a covered root; files nobody needs are deleted
  by hand.
- A red `sweep`: `EraseFailedError` (the store refused items: permissions, a symlink on the way),
  `VerificationError` (listing again found orphans that should be gone), or `over_cap` (more orphans
  at erase time than cleared: the rest is untouched). Fix the cause, then trigger the DAG again:
  every step only acts on what is still there.
"""


@dag(
    dag_id="retention_sweep",
    schedule=CronTriggerTimetable("0 4 * * 0", timezone="Europe/Copenhagen"),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Copenhagen"),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["retention", "gdpr"],
    params={
        "dry_run": Param(False, type="boolean", description="Find and count only; erase nothing."),
        "max_items": Param(
            1000,
            type="integer",
            minimum=1,
            maximum=1_000_000,
            description="Per root, the orphans erased without asking a human.",
        ),
    },
    # An approval waits at most 24 hours; the run as a whole at most 36.
    **dag_arguments(
        dag_id="retention_sweep", task_timeout=timedelta(hours=3), run_timeout=timedelta(hours=36)
    ),
)
def retention_sweep() -> None:
    roots = prepare_sweep()
    run = XComArg(roots.operator, key=SWEEP_XCOM)

    @task_group(group_id=GROUP)
    def per_root(root: str) -> None:
        approve = SweepApprovalOperator(task_id="approve", response_timeout=timedelta(hours=24), **APPROVAL)
        plan_root(run, root) >> approve >> sweep_root(run, root)

    [per_root.expand(root=roots), check_coverage(run)] >> finish_sweep(run, roots)


retention_sweep()
