"""Tasks of the ``retention_sweep`` DAG: translators between Airflow and ``retention.sweep``.

``prepare_sweep`` checks the policies and holds and fixes the sweep's clock and roots; per root
(mapped task group ``root``): ``plan`` counts, ``approve`` asks a human only when more than the cap
would be erased, ``sweep`` finds, erases what the policies allow, verifies and records; then
``finish_sweep`` records the decisions, checks the ledger chain and fails (alerting ops) while any
orphan is reported or anything is unproven. Beside the roots, ``check_coverage`` lists what looks
personal but no policy covers (tables, columns, S3 prefixes, archive and share directories) and
records it as one ledger entry. XCom carries counts and digests only, never keys.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from retention.results import Decision
from retention.serde import from_json, to_json
from retention_airflow.tasks import LEDGER_ASSET, engine_errors

if TYPE_CHECKING:
    from retention.coverage import Finding
    from retention.engine import RunContext
    from retention.ledger_entry import LedgerEntry
    from retention.sweep import SweepPlan, SweepRun

log = logging.getLogger(__name__)

COVERAGE_ACTION = "coverage"
"""The ledger action of the coverage report's entry (outcome ``summary``, count: the findings)."""
COVERAGE_DETAIL_BUDGET = 3500
"""Characters of the entry's findings lines at most (the ledger refuses a detail over 4096)."""
COVERAGE_LINE = 300

GROUP = "root"
"""The mapped task group: one instance per root (map index = position in ``SweepRun.roots``)."""
SWEEP_XCOM = "sweep"


def _store(label: str) -> str:
    return label.split(":", 1)[0]


def _excluded() -> list[tuple[str, str, str]]:
    """What the sweep never lists: the receipts (the proof of erasures, which no record names) and
    the ledger's anchors (write-once, never erased)."""
    from retention.anchor import ANCHOR_PREFIX
    from retention_airflow import clients

    cfg = clients.settings()
    return [("s3", cfg.receipts_bucket, cfg.receipts_prefix), ("s3", cfg.receipts_bucket, ANCHOR_PREFIX)]


@contextmanager
def _context(info: SweepRun, stores: tuple[str, ...] = ()) -> Iterator[RunContext]:
    """The sweep's RunContext over the deployment's connections, under the policies it was planned with."""
    from retention_airflow import clients

    with clients.open_context(
        run_id=info.run_id, mode="due", now=info.now, dry_run=info.dry_run, stores=stores
    ) as ctx:
        if ctx.policies.hash != info.policy_set_hash:
            raise AirflowFailException("the policy files changed during the sweep; start a new one")
        yield ctx


def _info(value: Any) -> SweepRun:
    from retention.sweep import SweepRun

    return from_json(SweepRun, value)


def _pull(task_id: str, map_index: int) -> Any:
    ti = get_current_context()["ti"]
    return ti.xcom_pull(task_ids=f"{GROUP}.{task_id}", map_indexes=map_index, default=None)


def _plan(map_index: int) -> SweepPlan | None:
    from retention.sweep import SweepPlan

    value = _pull("plan", map_index)
    return from_json(SweepPlan, value) if isinstance(value, dict) else None


def _decision(answer: Any) -> Decision | None:
    chosen = answer.get("chosen_options") if isinstance(answer, dict) else None
    if not chosen:
        return None
    return {ApprovalOperator.APPROVE: Decision.APPROVED, ApprovalOperator.REJECT: Decision.REJECTED}.get(
        chosen[0]
    )


def _failed_tasks() -> list[str]:
    ti = get_current_context()["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
    by_task = states.get(ti.run_id, {}) if isinstance(states, dict) else {}
    return sorted(t for t, state in by_task.items() if state in ("failed", "upstream_failed"))


@task
@engine_errors
def prepare_sweep() -> list[str]:
    """Check the policies against the live schema and the holds in force; fix the clock and the roots.

    Returns the roots' labels (what the ``root`` group is mapped over) and pushes the ``SweepRun`` as
    XCom ``sweep``. The clock is the run's time, never later than now: the grace periods count from it.
    """
    from retention import flow, sweep
    from retention_airflow import clients

    ctx = get_current_context()
    params = ctx["params"]
    now = min(ctx["dag_run"].run_after.astimezone(UTC), datetime.now(UTC))
    with clients.open_context(
        run_id=ctx["run_id"], mode="due", now=now, dry_run=bool(params.get("dry_run"))
    ) as rctx:
        flow.check_policies(rctx)
        categories, subject_format = tuple(rctx.policies.ids), rctx.policies.subject
        clients.check_holds(categories, now, subject_format)
        found = sweep.roots(rctx, _excluded())
        info = sweep.SweepRun(
            run_id=rctx.run_id,
            now=now,
            dry_run=rctx.dry_run,
            cap=int(params.get("max_items") or sweep.DEFAULT_CAP),
            policy_set_hash=rctx.policies.hash,
            roots=tuple(r.label for r in found),
        )
    ctx["ti"].xcom_push(key=SWEEP_XCOM, value=to_json(info))
    log.info(
        "SUMMARY sweep=%s now=%s dry_run=%s roots=%d cap=%d erasing_roots=%d",
        info.run_id,
        info.now.isoformat(),
        info.dry_run,
        len(found),
        info.cap,
        sum(r.may_erase for r in found),
    )
    return list(info.roots)


@task(task_id="plan", map_index_template="{{ root }}")
@engine_errors
def plan_root(run: dict[str, Any], root: str) -> dict[str, Any]:
    """Count the root's orphans (touches nothing); over the cap, the approval asks a human."""
    from retention import sweep as core

    context = get_current_context()
    context["root"] = root  # type: ignore[typeddict-unknown-key]  # names the mapped instance in the UI
    info = _info(run)
    with _context(info, (_store(root),)) as ctx:
        planned = core.plan_root(ctx, core.root_named(ctx, root, _excluded()), info.cap)
    log.info(
        "SUMMARY root=%s orphans=%s erasable=%s reported=%s held=%s needs_approval=%s",
        root,
        planned.orphans,
        planned.erasable,
        planned.reported,
        planned.held,
        planned.needs_approval,
    )
    return to_json(planned)  # type: ignore[no-any-return]


PLAN_FIELD = (
    "{{{{ (ti.xcom_pull(task_ids='"
    + GROUP
    + ".plan', map_indexes=ti.map_index) or {{}}).get('{field}', '') }}}}"
)
"""The approval form shows what the root's plan counted (no keys, no personal data)."""


class SweepApprovalOperator(ApprovalOperator):
    """Asks a human only when the root's plan would erase more than the cap.

    Under the cap (or in a dry run) it approves by itself at once; over it, it parks in
    ``awaiting_input``. *Reject* skips the root's ``sweep``: nothing is erased there this week.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            subject=PLAN_FIELD.format(field="subject"), body=PLAN_FIELD.format(field="body"), **kwargs
        )

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        planned = ti.xcom_pull(task_ids=f"{GROUP}.plan", map_indexes=ti.map_index)
        if not isinstance(planned, dict):
            # Fail closed: a plan task that failed or was marked done by hand cleared nothing.
            raise AirflowFailException("no plan was recorded for this root: nothing is erased")
        if not planned.get("needs_approval") or planned.get("dry_run"):
            log.info("SUMMARY root=%s approval not needed", planned.get("root"))
            return {"chosen_options": [self.APPROVE], "params_input": {}, "automatic": True}
        return super().execute(context)


@task(task_id="sweep", map_index_template="{{ root }}")
@engine_errors
def sweep_root(run: dict[str, Any], root: str) -> dict[str, Any]:
    """Find the root's orphans, erase what the policies allow (at most what was cleared), verify, record."""
    from retention import sweep as core

    context = get_current_context()
    context["root"] = root  # type: ignore[typeddict-unknown-key]
    info = _info(run)
    planned = _plan(context["ti"].map_index or 0)
    if planned is None:
        raise AirflowFailException("no plan was recorded for this root: nothing is erased")
    # Cleared: what a human approved (the plan's count), else the cap.
    budget = planned.erasable if planned.needs_approval else info.cap
    with _context(info, (_store(root),)) as ctx:
        result = core.sweep_root(ctx, core.root_named(ctx, root, _excluded()), budget)
    return to_json(result)  # type: ignore[no-any-return]


@task(trigger_rule="all_done", outlets=[LEDGER_ASSET])
@engine_errors
def finish_sweep(run: dict[str, Any], roots: list[str]) -> dict[str, Any]:
    """Record the approvals, check the ledger chain, sum up; fail while orphans are reported or
    anything is unproven (the failure alerts ops)."""
    from retention import sweep as core

    info = _info(run)
    outcomes: dict[str, core.RootOutcome] = {}
    for i, label in enumerate(info.roots):
        result = _pull("sweep", i)
        outcomes[label] = core.RootOutcome(
            plan=_plan(i),
            decision=_decision(_pull("approve", i)),
            result=from_json(core.SweepResult, result) if isinstance(result, dict) else None,
        )
    with _context(info) as ctx:
        summary = core.finish(ctx, info, outcomes, _failed_tasks())
    for label, o in outcomes.items():
        if o.result is not None:
            log.info(o.result.line())
        elif o.plan is not None:
            log.info("SUMMARY root=%s not swept: erasable=%s", label, o.plan.erasable)
    log.info(
        "SUMMARY sweep=%s roots=%s orphans=%s reported=%s held=%s erased=%s chain_ok=%s",
        summary.run_id,
        summary.roots,
        summary.orphans,
        summary.reported,
        summary.held,
        summary.erased,
        summary.chain_ok,
    )
    if summary.problems:
        shown = "; ".join(summary.problems[:10])
        raise AirflowFailException(f"the orphan sweep needs attention ({len(summary.problems)}): {shown}")
    return to_json(summary)  # type: ignore[no-any-return]


def _shown(finding: Finding) -> str:
    """The finding's line for the ledger and the log: names and counts only; a line that would look
    personal to the ledger's guard (a long digit run, an address, a control character) is not shown."""
    from retention.guard import personal_data_kind

    line = finding.line()
    if not line.isprintable() or personal_data_kind(line) is not None:
        return f"uncovered {finding.kind} (its name is not shown: it looks like personal data)"
    return line if len(line) <= COVERAGE_LINE else f"{line[: COVERAGE_LINE - 3]}..."


def coverage_entry(info: SweepRun, findings: list[Finding]) -> LedgerEntry:
    """The coverage report's one ledger entry: the count per kind and the findings' lines (as many
    as fit the ledger's detail; ``shown`` says how many)."""
    from retention.ledger_entry import LedgerEntry

    kinds = {"table": 0, "column": 0, "prefix": 0, "directory": 0}
    for f in findings:
        kinds[f.kind] += 1
    lines: list[str] = []
    used = 0
    for f in findings:
        line = _shown(f)
        used += len(line) + 3
        if used > COVERAGE_DETAIL_BUDGET:
            break
        lines.append(line)
    detail = {**kinds, "findings": lines, "shown": len(lines), "dry_run": info.dry_run}
    return LedgerEntry(
        run_id=info.run_id,
        action=COVERAGE_ACTION,
        outcome="summary",
        count=len(findings),
        policy_set_hash=info.policy_set_hash,
        detail=detail,
    )


def _store_coverage(ctx: RunContext) -> list[Finding]:
    """Every policy bucket (its real name from ``bucket_map``; the receipts prefix and the ledger's anchors
    skipped in the receipts bucket), the archive and the share, where a policy uses them."""
    from retention import coverage_stores as cs
    from retention.anchor import ANCHOR_PREFIX
    from retention_airflow import clients

    cfg = clients.settings()
    policies = ctx.policies
    findings: list[Finding] = []
    buckets = cs.policy_buckets(policies)
    if buckets:
        client = clients.s3_client()
        for name in buckets:
            real = ctx.bucket_map.get(name, name)
            skip = [cfg.receipts_prefix, ANCHOR_PREFIX] if real == cfg.receipts_bucket else []
            findings += cs.s3_coverage(client, real, name, policies, skip=skip)
    stores = {loc.store for p in policies.policies for loc in p.file_locations()}
    if "sftp" in stores:
        with clients.sftp_client() as sftp:
            findings += cs.tree_coverage(sftp, cfg.archive_root, policies, store="sftp")
    if "filesystem" in stores and cfg.filesystem_root:
        findings += cs.tree_coverage(None, cfg.filesystem_root, policies, store="filesystem")
    return findings


@task
@engine_errors
def check_coverage(run: dict[str, Any]) -> dict[str, Any]:
    """What looks personal but no policy covers: tables and columns of the business database, S3 prefixes,
    archive and share directories. Records one ledger entry (names and counts, never a value) and logs
    one ``SUMMARY`` line per finding; findings alone do not fail the task: they are shown and reported."""
    from retention.coverage import database_coverage

    info = _info(run)
    with _context(info) as ctx:
        findings = [*database_coverage(ctx.database.engine, ctx.policies), *_store_coverage(ctx)]
        entry = coverage_entry(info, findings)
        if ctx.ledger is not None:  # also in a dry run: a report erases nothing
            ctx.ledger.append_many([entry])
    for f in findings:
        log.info("SUMMARY coverage %s", _shown(f))
    detail = dict(entry.detail or {})
    log.info(
        "SUMMARY coverage findings=%d tables=%s columns=%s prefixes=%s directories=%s",
        len(findings),
        detail["table"],
        detail["column"],
        detail["prefix"],
        detail["directory"],
    )
    return detail
