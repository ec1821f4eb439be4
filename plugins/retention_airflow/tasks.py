"""TaskFlow tasks shared by the retention DAGs.

Each task reads what it needs from the Airflow context, calls ``retention_airflow.runner``
and returns a small summary (counts, digests, no personal data) for XCom. Terminal engine
errors become ``AirflowFailException`` (retrying cannot help); transient ones are re-raised
so that the task's retries, with backoff, take over. Every step is idempotent, so a retry
or a cleared task resumes where the last attempt stopped.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Asset, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from retention.errors import RetentionError
from retention.params import check_erasure_params

log = logging.getLogger(__name__)

POOL_DATABASE = "retention_database"
POOL_S3 = "retention_s3"
POOL_SFTP = "retention_sftp"

GROUP = "category"
"""The mapped task group: one instance per category (map index = position in the policy order)."""

LEDGER_ASSET = Asset(name="retention_ledger", uri="x-retention://alleskar/ledger", group="retention")
"""Updated by every run, so reporting DAGs can be scheduled on it."""

F = TypeVar("F", bound=Callable[..., Any])


def engine_errors(fn: F) -> F:
    """Map terminal engine errors to AirflowFailException; let transient ones retry."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RetentionError as e:
            if e.terminal:
                raise AirflowFailException(f"{type(e).__name__}: {e}") from e
            raise

    return wrapper  # type: ignore[return-value]


def _subject() -> str | None:
    params = get_current_context()["params"]
    return params.get("customer_id") or None


def _summary_line(result: Mapping[str, Any]) -> None:
    kept = sum((result.get("kept") or {}).values())
    log.info(
        "SUMMARY category=%s store=%s erased=%s anonymised=%s kept=%s failed=%s verified=%s dry_run=%s",
        result.get("category"),
        result.get("store"),
        result.get("erased"),
        result.get("anonymised"),
        kept,
        result.get("failed"),
        result.get("verified"),
        result.get("dry_run"),
    )


@task
@engine_errors
def prepare_run(mode: str) -> list[str]:
    """Validate the policies against the live schema and fix the run's clock.

    Returns the categories (what the per-category task group is mapped over) and
    pushes the run's settings as XCom ``run`` for every later task.
    """
    from retention_airflow import runner

    ctx = get_current_context()
    params = ctx["params"]
    if mode == "subject":
        check_erasure_params(params)
    now = runner.parse_now(params.get("as_of"), ctx["dag_run"].run_after)
    run = runner.prepare(run_id=ctx["run_id"], mode=mode, now=now, dry_run=bool(params.get("dry_run")))
    ctx["ti"].xcom_push(key="run", value=run)
    log.info(
        "SUMMARY run=%s mode=%s now=%s dry_run=%s categories=%d policy_set=%s",
        run["run_id"],
        mode,
        run["now"],
        run["dry_run"],
        len(run["categories"]),
        run["policy_set_hash"][:16],
    )
    return list(run["categories"])


@task(pool=POOL_DATABASE)
@engine_errors
def plan(run: dict[str, Any], category: str) -> dict[str, Any]:
    """Count what the category's run would touch and whether it needs approval (touches nothing)."""
    from retention_airflow import runner

    return runner.plan(run, category, _subject())


PLAN_FIELD = (
    "{{{{ (ti.xcom_pull(task_ids='category.plan', map_indexes=ti.map_index) or {{}}).get('{field}', '') }}}}"
)
"""The approval form shows what this category's plan task counted (no personal data)."""


class CapApprovalOperator(ApprovalOperator):
    """Asks a human only when the category's plan exceeds its blast-radius cap.

    Under the cap (or in a dry run) it approves by itself at once; over it, it parks in
    ``awaiting_input`` like any ApprovalOperator. *Reject* skips this category's erase tasks.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            subject=PLAN_FIELD.format(field="approval_subject"),
            body=PLAN_FIELD.format(field="approval_body"),
            **kwargs,
        )

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        plan = ti.xcom_pull(task_ids=f"{GROUP}.plan", map_indexes=ti.map_index) or {}
        if not plan.get("needs_approval") or plan.get("dry_run"):
            log.info("SUMMARY category=%s approval not needed", plan.get("category"))
            return {"chosen_options": [self.APPROVE], "params_input": {}, "automatic": True}
        return super().execute(context)


@task
@engine_errors
def erase_store(run: dict[str, Any], category: str, store: str) -> dict[str, Any]:
    """Locate, erase and verify one category in one store (the task's pool bounds connections)."""
    from retention_airflow import runner

    result = runner.erase(run, category, store, _subject())
    if result.get("applicable", True):
        _summary_line(result)
    else:
        log.info("SUMMARY category=%s store=%s not used by this category", category, store)
    return result


def _pull_mapped(task: str, n: int) -> list[Any]:
    """The return values of ``GROUP.task`` for map indexes 0..n-1 (None where it did not run)."""
    ti = get_current_context()["ti"]
    return [ti.xcom_pull(task_ids=f"{GROUP}.{task}", map_indexes=i, default=None) for i in range(n)]


def _file_steps(n: int) -> list[dict[str, Any]]:
    return [
        r
        for store in ("erase_s3", "erase_sftp")
        for r in _pull_mapped(store, n)
        if isinstance(r, dict) and r.get("applicable", True)
    ]


def _decisions(run: dict[str, Any], categories: list[str]) -> dict[str, str]:
    """Category -> "Approve" / "Reject" / "no answer", for the categories that needed approval."""
    n = len(categories)
    plans, answers = _pull_mapped("plan", n), _pull_mapped("approve", n)
    out: dict[str, str] = {}
    for i, category in enumerate(categories):
        if (plans[i] or {}).get("needs_approval") and not run["dry_run"]:
            chosen = answers[i].get("chosen_options") if isinstance(answers[i], dict) else None
            out[category] = chosen[0] if chosen else "no answer"
    return out


def _not_run(decisions: dict[str, str]) -> dict[str, str]:
    return {c: ("rejected" if d == "Reject" else d) for c, d in decisions.items() if d != "Approve"}


def _failed_tasks() -> list[str]:
    """Task instances of this run that failed (the final task runs anyway and must say so)."""
    ctx = get_current_context()
    ti = ctx["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
    by_task = states.get(ti.run_id, {}) if isinstance(states, dict) else {}
    return sorted(t for t, state in by_task.items() if state in ("failed", "upstream_failed"))


@task(pool=POOL_DATABASE, trigger_rule="all_done")
@engine_errors
def erase_databases(run: dict[str, Any], categories: list[str]) -> dict[str, Any]:
    """Every category's database rows, in policy order, once its files are proven gone.

    One ordered task, not one per category: a category's rows may be referenced by
    rows of a category that runs before it (documents -> translation jobs).
    """
    from retention_airflow import runner

    n = len(categories)
    out = runner.database_pass(run, _file_steps(n), _not_run(_decisions(run, categories)), _subject())
    for r in out["results"]:
        _summary_line(r)
    for category, why in out["skipped"].items():
        log.info("SUMMARY category=%s store=database not erased now: %s", category, why)
    return out


def _database_pass() -> dict[str, Any]:
    """The output of ``erase_databases`` ({} if it did not finish: its failure is reported separately)."""
    out = get_current_context()["ti"].xcom_pull(task_ids="erase_databases", default=None)
    return out if isinstance(out, dict) else {}


def _all_results(n: int, database: dict[str, Any]) -> list[dict[str, Any]]:
    return _file_steps(n) + list(database.get("results") or [])


@task(trigger_rule="all_done", outlets=[LEDGER_ASSET])
@engine_errors
def finish_nightly(run: dict[str, Any], categories: list[str]) -> dict[str, Any]:
    """Record approvals, verify the ledger chain, write the run summary; fail if anything is unproven."""
    from retention_airflow import runner

    database = _database_pass()
    decisions = _decisions(run, categories)
    skipped = {**_not_run(decisions), **(database.get("skipped") or {})}
    summary = runner.finish(run, decisions, _all_results(len(categories), database), skipped, _failed_tasks())
    log.info(
        "SUMMARY run=%s erased=%s anonymised=%s kept=%s failed=%s chain_ok=%s",
        summary["run_id"],
        summary["erased"],
        summary["anonymised"],
        summary["kept"],
        summary["failed"],
        summary["chain_ok"],
    )
    return summary


@task(trigger_rule="all_done", outlets=[LEDGER_ASSET])
@engine_errors
def write_receipt(run: dict[str, Any], categories: list[str]) -> dict[str, Any]:
    """Build the erasure receipt, store it (JSON + Markdown) in S3 and reference it from the ledger."""
    from retention_airflow import runner

    params = get_current_context()["params"]
    check_erasure_params(params)
    database = _database_pass()
    skipped = dict(database.get("skipped") or {})
    receipt = runner.receipt(
        run, params["customer_id"], params, _all_results(len(categories), database), skipped, _failed_tasks()
    )
    log.info(
        "SUMMARY request=%s erased=%s anonymised=%s kept=%s verified=%s",
        params["request_ref"],
        receipt["totals"]["erased"],
        receipt["totals"]["anonymised"],
        receipt["totals"]["kept"],
        receipt["verified"],
    )
    return receipt
