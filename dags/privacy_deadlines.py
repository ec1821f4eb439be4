"""Daily watch of the privacy policy's time limits: the 10-day notice and the one-month answer."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag
from airflow.timetables.trigger import CronTriggerTimetable

from retention.params import AS_OF_SCHEMA
from retention_airflow.dag_defaults import dag_arguments
from retention_airflow.deadline_tasks import deadline_categories, watch_deadline

DOC = """
### Privacy deadlines

Every morning at 07:00 (Europe/Copenhagen) this run checks the time limits the policies declare
(a `deadline` block in a policy of `include/retention_policies/`):

- **third_party_data** (kind notice): data about a customer obtained from a third party is
  announced to the customer at the latest 10 days after it arrived (the privacy policy,
  "senest 10 dage efter"; GDPR Art. 14). Open while *customer_notified_at* is empty.
- **privacy_requests** (kind answer): a privacy request is answered within one month of
  receipt (GDPR Art. 12(3)); up to two further months when *extended_at* records that the
  customer was told so, with a reason in *extension_reason*, within the first month. Open while
  *completed_at* is empty.

Periods are counted as EU law counts them (Regulation 1182/71) in Danish time: the day of
receipt does not count, a month ends on the same day number (or the month's last day), and a
last day on a Saturday, Sunday or Danish public holiday moves to the next working day.

**Flow**: `deadline_categories` (the categories with a deadline) → `watch_deadline`, mapped per
category: counts of open, overdue, due within `warn_before` days (default 3) and unclear items,
the earliest deadline, and the internal keys (record ids) of the overdue, soon-due and unclear
ones (at most 50 each) in its XCom *report*. It reads only the key and the date columns.

**Params**: `as_of` (check at this past moment, ISO 8601; default: the run's time).

**Runbook.** A red `watch_deadline` means a promise is broken or about to be, and an alert
went out. Open the task's XCom *report*:
- `overdue_keys`: answer the request or notify the customer today, then fill in the done column
  (*completed_at* or *customer_notified_at*) in the business system; record in the request's
  case why it was late. The next run turns green once nothing is overdue.
- `unclear_keys`: the received time is missing or has no time zone; correct the record.
- `due_soon_keys` (the task stays green): due within `warn_before` days; plan the answer.
An extension counts only when *extended_at* lies before the original deadline and
*extension_reason* is not empty; a late one is counted as `extensions_ignored`.
Retrying the task does not help with an overdue item; clear it after the data is fixed.
"""


@dag(
    dag_id="privacy_deadlines",
    schedule=CronTriggerTimetable("0 7 * * *", timezone="Europe/Copenhagen"),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Copenhagen"),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["retention", "gdpr"],
    params={
        "as_of": Param(
            None, **AS_OF_SCHEMA, description="Check the deadlines at this past moment (ISO 8601)."
        ),
    },
    **dag_arguments(
        dag_id="privacy_deadlines",
        task_timeout=timedelta(minutes=30),
        run_timeout=timedelta(hours=2),
        retries=2,
        backoff=False,
    ),
)
def privacy_deadlines() -> None:
    watch_deadline.expand(category=deadline_categories())


privacy_deadlines()
