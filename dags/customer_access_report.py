"""One customer's access report (GDPR Art. 15), with a machine-readable copy (Art. 20)."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag

from retention.params import REQUEST_REF_SCHEMA
from retention.subject import SAFE_SUBJECT_SCHEMA
from retention_airflow.access_tasks import check_access_request, write_access_report
from retention_airflow.dag_defaults import dag_arguments

DOC = """
### Customer access report (GDPR Art. 15 and 20)

Triggered by hand when a customer asks what we hold about them. For every category of the
policies the report says what it is for (`purpose`), which data it holds (`personal_data`), where
the data comes from (`sources`; "not declared" where a policy does not say), the lawful basis
(`legal_basis`), how long it is kept (`retention`, in words) and, for this customer: the database
rows (every column, held records included), the S3 object versions their records name (key,
version, size, date; delete markers noted) and the archive files (path, size, date). A row or file
that another customer's data names too is listed and marked shared. Nothing is changed.

**Flow**: `check_access_request` re-checks the params (the customer id against the deployment's
format, `_subject.yaml` beside the policies), checks the policies against the live schema and
that the policy access_reports will erase the report (its bucket must map to `receipts_bucket`
through `bucket_map`), and reads nothing of the customer → `write_access_report` writes
report.json (machine-readable), rapport.md (Danish) and report.md (English), and with
`include_contents` also files.zip, to the receipts bucket (`receipts_bucket`) under
access-reports/ and a random id (never the customer id), adds the report's row to the business
table access_reports and records in the ledger that a report was made (counts per category and
store and the JSON's SHA-256; no personal data). Its return value (XCom) holds the counts and the
report's bucket and prefix.

**Params** (checked before a run is created):
- `customer_id`: the internal customer id (find it with "Find a customer" on the Retention page;
  never an e-mail or a name). `check_access_request` checks the deployment's format and fails
  without reading anything.
- `request_ref`: the privacy request's reference, e.g. `PR-2026-00042`.
- `include_contents`: default false. True adds files.zip: the current version of every S3 object
  and every archive file the report lists (not the customer's earlier reports). It can be large.

**Retention of the report.** The report is personal data itself. The policy access_reports
deletes it, all stored versions included, 30 days after it was made available
(made_available_at in its row): the nightly run does so like any other category, and so does an
erasure of the customer. Send it within those 30 days.

**Runbook.**
- *What to send the customer*: download rapport.md and report.md (and files.zip if asked for)
  from the receipts bucket at the prefix in the return value of `write_access_report`, and send
  them through the secure channel the request came by, with report.json as the portable copy.
  Never attach them to an unencrypted e-mail. Note the sending date in the privacy request's case;
  the answer is due within one month of receipt (the privacy_deadlines run watches it).
- *A failed run*: the failed task's log ends with a `SUMMARY` line or the reason. A refused
  param or a policy problem (a missing access_reports policy, its bucket not mapped to the receipts
  bucket) fails `check_access_request` before anything is read: fix and trigger again.
  Transient store errors were retried. A failed `write_access_report` may have left a partial
  report behind: it expires with its row like a complete one. Trigger a new run (a new report
  gets a new prefix); never send files from a failed run.
"""


@dag(
    dag_id="customer_access_report",
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
        "include_contents": Param(
            False,
            type="boolean",
            description="Add files.zip with the documents' current versions and the archive files.",
        ),
    },
    **dag_arguments(
        dag_id="customer_access_report",
        task_timeout=timedelta(hours=1),
        run_timeout=timedelta(hours=4),
        retry_delay=timedelta(minutes=1),
        run_alert=False,
    ),
)
def customer_access_report() -> None:
    write_access_report(check_access_request())


customer_access_report()
