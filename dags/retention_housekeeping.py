"""Daily purge of Airflow's own records of the per-customer DAGs (conf, XCom, event log, task logs), and
destruction of the pseudonym keys whose years' proof retention has ended."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag
from airflow.timetables.trigger import CronTriggerTimetable

from retention_airflow.dag_defaults import dag_arguments
from retention_airflow.housekeeping_tasks import destroy_pseudonym_keys, purge_airflow_records

KEEP_PATTERN = r"^P(?=[0-9])([0-9]+Y)?([0-9]+M)?([0-9]+W)?([0-9]+D)?(?!\n)$"

DOC = """
### Retention housekeeping: Airflow's own records

Every run of customer_erasure and customer_access_report leaves the customer id in Airflow's
metadata database (the run's conf, the event log, where refused triggers land too, XCom and
rendered fields) and in its task logs. Every morning at 04:30 (Europe/Copenhagen) this run
removes those records of the runs that ended longer ago than the window, so that Airflow's copy
lives no longer than the policy says. The receipt, the access report and the ledger are the
lasting record; nothing is archived (unlike Airflow's db clean, which archives by default).

**The window** is a policy: `_airflow.yaml` beside the policies, field keep (an ISO period after
a run's end, default P30D) and dags (default customer_erasure and customer_access_report). The
monitoring page shows it. Without the file the defaults apply.

**Flow**: one task, `purge_airflow_records`: for every finished (success or failed) run of those
DAGs that ended before the cutoff, it deletes the run and everything Airflow keeps of it (task
instances and their history, XCom, rendered fields, mapped values, notes, Human-in-the-loop
answers, deadlines and their callbacks, triggers nothing else uses) and its task-log folder
(dag_id=.../run_id=... under the base log folder; links are removed, never followed); event-log
rows of those DAGs older than the cutoff (except those of runs that stay); rows of those DAGs in
archive tables left by an earlier db clean. Queued and running runs, and every other DAG, are
left alone. Then it counts again (it fails if anything is left) and writes one ledger entry
(action housekeeping) with the counts per table and of the log files, never an id. The task's
return value holds the same counts.

It reaches the metadata database through the connection airflow_metadata (Airflow 3 does not
let task code use Airflow's own session), with delete rights on Airflow's tables.

**Pseudonym keys**: a second task, `destroy_pseudonym_keys`, independent of the first. The ledger
and the receipts name a customer only by a keyed pseudonym, made with the key of the run's year.
When pseudonym_keys.keep of `_accountability.yaml` (default P5Y) has passed since a year ended, this
task destroys that year's key for good (crypto-shredding), looks again, and writes one ledger entry
per year (action pseudonym_key, the year in its detail, never key material). From then on no
entry of that year can be linked to a customer id, not even by trying every id. The current
year's key is never destroyed. The monitoring page's *Pseudonym keys* panel lists the years.

**Params**:
- `dry_run`: default false (the scheduled run purges). True only counts, touches nothing, and
  writes a ledger entry with outcome planned (the key task: one per year it would destroy).
- `keep`: a shorter window for this run only, e.g. P7D; P0D removes the records of every
  finished run now. A period longer than the policy's is ignored (the policy is the promise).

**Runbook.**
- *Someone typed personal data into a trigger form* (an e-mail as customer id; the trigger was
  refused, but the event log keeps what was typed): trigger this DAG with `keep` P0D. Every
  finished run of the DAGs loses its Airflow records at once; receipts and the ledger stay.
- *The task failed*: read its log's `SUMMARY` line. "connection airflow_metadata" means the
  connection is missing; "log_filename_template" means the task logs do not use Airflow's
  default layout and cannot be found by run; "symbolic link" means a DAG's log folder is a link
  (never followed: make it a real folder); "found records left" means a count after the purge
  still found some (the ledger entry's detail, left, says where): clear the task. Every step is
  idempotent; a run that stopped half-way is finished by the next one.
- Task logs are purged on the machine that runs this task (all of them with the LocalExecutor).
  With several Celery workers or remote logging, purge their log folders or buckets with the same
  window by the storage's own lifecycle rules.
"""


@dag(
    dag_id="retention_housekeeping",
    schedule=CronTriggerTimetable("30 4 * * *", timezone="Europe/Copenhagen"),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Copenhagen"),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["retention", "gdpr"],
    params={
        "dry_run": Param(False, type="boolean", description="Only count what would be removed."),
        "keep": Param(
            None,
            type=["null", "string"],
            pattern=KEEP_PATTERN,
            description="A shorter window for this run only (ISO period, P0D: every finished run).",
        ),
    },
    **dag_arguments(
        dag_id="retention_housekeeping",
        task_timeout=timedelta(hours=1),
        run_timeout=timedelta(hours=4),
        retries=2,
        retry_delay=timedelta(minutes=5),
        backoff=False,
    ),
)
def retention_housekeeping() -> None:
    purge_airflow_records()
    destroy_pseudonym_keys()


retention_housekeeping()
