"""TaskFlow tasks shared by the retention DAGs: translators between Airflow and ``retention.flow``.

Each task reads what it needs from the Airflow context (params, the run's ``RunInfo`` and
earlier results from XCom), opens a ``RunContext`` over the deployment's connections
(``retention_airflow.clients``), calls one function of ``retention.flow`` and returns its
typed result as JSON (``retention.serde``): counts, digests, no personal data. The rules
themselves live in ``retention.flow``, which tests and the benchmark call the same way.

Terminal engine errors become ``AirflowFailException`` (retrying cannot help); transient
ones are re-raised so that the task's retries, with backoff, take over. Every step is
idempotent, so a retry or a cleared task resumes where the last attempt stopped.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Asset, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, DownstreamTasksSkipped

from retention.errors import RetentionError
from retention.params import check_erasure_params
from retention.results import CategoryPlan, DatabasePass, Decision, RunInfo, Skip, StepResult
from retention.serde import from_json, to_json
from retention.stores import FILE_STORES

log = logging.getLogger(__name__)

POOL_DATABASE = "retention_database"
FILE_STORE_POOLS = {"s3": "retention_s3", "sftp": "retention_sftp", "filesystem": "retention_filesystem"}
"""The pool that bounds the connections each file store gets (created by the deployment)."""
POOLS = (POOL_DATABASE, *FILE_STORE_POOLS.values())

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


def erase_task_id(store: str) -> str:
    return f"erase_{store}"


# -- reading the Airflow context ------------------------------------------------------------------


def _subject() -> str | None:
    params = get_current_context()["params"]
    return params.get("customer_id") or None


def _run(value: Any) -> RunInfo:
    return from_json(RunInfo, value)


def _pull_mapped(task_id: str, n: int) -> list[Any]:
    """The return values of ``GROUP.task_id`` for map indexes 0..n-1 (None where it did not run)."""
    ti = get_current_context()["ti"]
    return [ti.xcom_pull(task_ids=f"{GROUP}.{task_id}", map_indexes=i, default=None) for i in range(n)]


def _file_steps(run: RunInfo) -> list[StepResult]:
    n = len(run.categories)
    return [
        from_json(StepResult, value)
        for store in FILE_STORES
        for value in _pull_mapped(erase_task_id(store), n)
        if isinstance(value, dict)
    ]


def _plans_and_answers(run: RunInfo) -> tuple[dict[str, CategoryPlan | None], dict[str, Decision | None]]:
    """Every category's plan (None where its task left none) and the human's answer (None: none given)."""
    n = len(run.categories)
    plans: dict[str, CategoryPlan | None] = {}
    answers: dict[str, Decision | None] = {}
    for category, plan_value, answer in zip(
        run.categories, _pull_mapped("plan", n), _pull_mapped("approve", n), strict=True
    ):
        plans[category] = from_json(CategoryPlan, plan_value) if isinstance(plan_value, dict) else None
        answers[category] = _answer(answer)
    return plans, answers


def _answer(answer: Any) -> Decision | None:
    chosen = answer.get("chosen_options") if isinstance(answer, dict) else None
    return _HITL.get(chosen[0]) if chosen else None


def _decisions(run: RunInfo) -> dict[str, Decision]:
    """Category -> the human's decision, for the categories whose plan needed one."""
    from retention import flow

    return flow.decisions(run, *_plans_and_answers(run))


def _clearances(run: RunInfo) -> dict[str, Any]:
    """Category -> what its erasure was cleared for (plan and decisions), read from this run's XCom."""
    import dataclasses

    from retention import flow

    plans, answers = _plans_and_answers(run)
    policy_set = _policy_set_decision(run)
    return {
        category: dataclasses.replace(clearance, policy_set=policy_set)
        for category, clearance in flow.clearances(run, plans, flow.decisions(run, plans, answers)).items()
    }


def _policy_set_decision(run: RunInfo, ti: Any = None) -> Decision | None:
    """The answer to the run's policy change (None: nothing to approve), from ``approve_policy_set``."""
    from retention import flow

    ti = ti if ti is not None else get_current_context()["ti"]
    answer = ti.xcom_pull(task_ids=POLICY_SET_TASK, default=None)
    return flow.policy_set_decision(run, _answer(answer))


def _not_run(run: RunInfo) -> dict[str, Any]:
    """The categories a human did not let go ahead (over their cap, or under an unapproved policy change)."""
    from retention import flow

    return {**flow.not_run(_decisions(run)), **flow.policy_skips(run, _policy_set_decision(run))}


def _own_clearance(run: RunInfo, category: str) -> Any:
    """The clearance of this mapped task's own category (its plan and approval, same map index)."""
    from retention import flow

    ti = get_current_context()["ti"]
    plan_value = ti.xcom_pull(task_ids=f"{GROUP}.plan", map_indexes=ti.map_index, default=None)
    plan = from_json(CategoryPlan, plan_value) if isinstance(plan_value, dict) else None
    answer = ti.xcom_pull(task_ids=f"{GROUP}.approve", map_indexes=ti.map_index, default=None)
    decided = flow.decisions(run, {category: plan}, {category: _answer(answer)})
    return flow.Clearance(plan, decided.get(category), _policy_set_decision(run))


def _database_pass() -> DatabasePass:
    """The output of ``erase_databases`` (empty if it did not finish: its failure is reported separately)."""
    value = get_current_context()["ti"].xcom_pull(task_ids="erase_databases", default=None)
    return from_json(DatabasePass, value) if isinstance(value, dict) else DatabasePass()


def _failed_tasks() -> list[str]:
    """Task instances of this run that failed (the final task runs anyway and must say so)."""
    ti = get_current_context()["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
    by_task = states.get(ti.run_id, {}) if isinstance(states, dict) else {}
    return sorted(t for t, state in by_task.items() if state in ("failed", "upstream_failed"))


def _skipped(run: RunInfo, database: DatabasePass) -> dict[str, Skip]:
    return {**_not_run(run), **database.skipped}


def _summary_line(result: StepResult) -> None:
    kept = ",".join(f"{reason.value}={n}" for reason, n in sorted(result.kept.items())) or "0"
    log.info(
        "SUMMARY category=%s store=%s erased=%s anonymised=%s kept=%s failed=%s verified=%s dry_run=%s",
        result.category,
        result.store,
        result.erased,
        result.anonymised,
        kept,
        result.failed,
        result.verified,
        result.dry_run,
    )


@contextlib.contextmanager
def _erasing(info: RunInfo, categories: Sequence[str]) -> Iterator[None]:
    """This task's leases on the categories it erases (``retention.locks``): while another run's
    task erases one of them, this one waits its turn, then fails as transient and is retried. A dry
    run erases nothing and takes none."""
    from retention_airflow import clients

    if info.dry_run:
        yield
        return
    ti = get_current_context()["ti"]
    scopes = [f"category:{c}" for c in categories]
    with clients.leases(scopes, owner=info.run_id, step=ti.task_id):
        yield


# -- the tasks ------------------------------------------------------------------------------------


@task
@engine_errors
def prepare_run(mode: str) -> list[str]:
    """Validate the policies against the live schema and the legal holds in force; fix the run's clock.

    Returns the categories (what the per-category task group is mapped over) and
    pushes the run's ``RunInfo`` as XCom ``run`` for every later task.
    """
    from retention import flow
    from retention.params import parse_as_of
    from retention_airflow import clients

    ctx = get_current_context()
    params = ctx["params"]
    subject = reason = None
    if mode == "subject":
        # The trigger form only knew the generic id alphabet: the deployment's format is checked here.
        check_erasure_params(params, clients.policy_set().subject)
        subject, reason = params["customer_id"], params["reason"]
    now = parse_as_of(params.get("as_of"), ctx["dag_run"].run_after)
    with clients.open_context(
        run_id=ctx["run_id"],
        mode="subject" if mode == "subject" else "due",
        now=now,
        dry_run=bool(params.get("dry_run")),
        subject=subject,
        reason=reason,
    ) as rctx:
        categories, subject_format = tuple(rctx.policies.ids), rctx.policies.subject
        run = flow.prepare(rctx, holds_check=lambda: clients.check_holds(categories, now, subject_format))
        if mode == "subject" and not run.dry_run and rctx.subject_ref:
            clients.subject_lease(rctx.subject_ref, owner=run.run_id, take=True)
    ctx["ti"].xcom_push(key="run", value=to_json(run))
    log.info(
        "SUMMARY run=%s mode=%s now=%s dry_run=%s categories=%d policy_set=%s",
        run.run_id,
        run.mode,
        run.now.isoformat(),
        run.dry_run,
        len(run.categories),
        run.policy_set_hash[:16],
    )
    return list(run.categories)


def _skipping_unused_stores(
    ti: Any, downstream: Collection[str], run: RunInfo, category: str, value: dict[str, Any]
) -> dict[str, Any]:
    """Return ``value``; first skip the erase tasks of file stores the category does not use among a
    task's direct ``downstream``, this map index's only, so that none starts a process for nothing.

    In a mapped group ``SkipMixin.skip`` only records the skipped ids for a dependency that looks
    them up under map index -1 (Airflow 3.3.2), so the instances are named here,
    ``(task_id, map_index)``, as ``DownstreamTasksSkipped`` allows; ``value`` is pushed first
    because the exception ends the task before its return value would be.
    """
    unused = {f"{GROUP}.{erase_task_id(s)}" for s in FILE_STORES if not run.uses(category, s)}
    tasks = sorted(unused & set(downstream))
    if not tasks or ti.map_index is None or ti.map_index < 0:
        return value
    log.info("SUMMARY category=%s not in: %s (skipped)", category, ", ".join(tasks))
    ti.xcom_push(key="return_value", value=value)
    raise DownstreamTasksSkipped(tasks=[(task_id, ti.map_index) for task_id in tasks])  # type: ignore[no-untyped-call]


@task(pool=POOL_DATABASE)
@engine_errors
def plan(run: dict[str, Any], category: str) -> dict[str, Any]:
    """Count what the category's run would touch and whether it needs approval (touches nothing)."""
    from retention import flow
    from retention_airflow import clients

    info = _run(run)
    with clients.run_context(info, subject=_subject()) as ctx:
        return to_json(flow.plan(ctx, category))  # type: ignore[no-any-return]


PLAN_FIELD = (
    "{{{{ ((ti.xcom_pull(task_ids='category.plan', map_indexes=ti.map_index) or {{}}).get('approval') "
    "or {{}}).get('{field}', '') }}}}"
)
"""The approval form shows what this category's plan task counted (no personal data)."""


class CapApprovalOperator(ApprovalOperator):
    """Asks a human only when the category's plan exceeds its blast-radius cap.

    Under the cap (or in a dry run) it approves by itself at once; over it, it parks in
    ``awaiting_input`` like any ApprovalOperator. *Reject* skips this category's erase tasks.
    On approval the erase tasks of file stores the category does not use are skipped without
    starting a process for each (most categories live in the database only).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            subject=PLAN_FIELD.format(field="subject"),
            body=PLAN_FIELD.format(field="body"),
            **kwargs,
        )

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        plan, run = self._inputs(ti)
        if _policy_set_decision(run, ti) not in (None, Decision.APPROVED):
            raise AirflowSkipException("the changed policy set was not approved: nothing is erased")
        if not plan.get("needs_approval") or plan.get("dry_run"):
            log.info("SUMMARY category=%s approval not needed", plan.get("category"))
            answer = {"chosen_options": [self.APPROVE], "params_input": {}, "automatic": True}
            return self._proceed(ti, run, str(plan.get("category")), answer)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """A human's answer: *Approve* proceeds as an automatic one; *Reject* skips (ApprovalOperator)."""
        answer = super().execute_complete(context=context, event=event)
        if answer["chosen_options"][0] != self.APPROVE:
            return answer
        ti = context["ti"]
        plan, run = self._inputs(ti)
        return self._proceed(ti, run, str(plan.get("category")), answer)

    @staticmethod
    def _inputs(ti: Any) -> tuple[dict[str, Any], RunInfo]:
        """This category's plan and the run (failing closed when either is missing)."""
        plan = ti.xcom_pull(task_ids=f"{GROUP}.plan", map_indexes=ti.map_index)
        if not isinstance(plan, dict):
            # Fail closed: a plan task that failed or was marked done by hand cleared nothing.
            raise AirflowFailException("no plan was recorded for this category: nothing is erased")
        run = ti.xcom_pull(task_ids="prepare_run", key="run")
        if not isinstance(run, dict):
            raise AirflowFailException("no run was prepared: nothing is erased")
        return plan, _run(run)

    def _proceed(self, ti: Any, run: RunInfo, category: str, answer: dict[str, Any]) -> dict[str, Any]:
        return _skipping_unused_stores(ti, self.downstream_task_ids, run, category, answer)


POLICY_SET_TASK = "approve_policy_set"
RUN_FIELD = "{{{{ (ti.xcom_pull(task_ids='prepare_run', key='run') or {{}}).get('{field}') or '' }}}}"


class PolicySetApprovalOperator(ApprovalOperator):
    """Asks a human before a nightly run erases under a policy set that differs from the last one
    approved (the ledger's newest ``policy_set`` approval).

    The same set (or the first one, or a dry run) approves by itself at once; a changed one parks
    in ``awaiting_input``. *Reject* skips every category's steps: nothing is erased under the new
    set, ``finish_nightly`` records the rejection, and the next run asks again.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            subject="Approve the changed retention policies before tonight's erasure?",
            body=(
                "The deployed policy set differs from the one last approved for erasing runs.\n\n"
                "| | policy set hash |\n|---|---|\n"
                f"| last approved | `{RUN_FIELD.format(field='approved_policy_set')}` |\n"
                f"| deployed now | `{RUN_FIELD.format(field='policy_set_hash')}` |\n\n"
                "Compare the two in the policy repository (`make validate`, the record of processing). "
                "*Approve* puts the deployed set in force: this run goes on and erases under it (each "
                "category still under its own cap). *Reject* erases nothing tonight; the rejection is "
                "recorded and the next run asks again."
            ),
            **kwargs,
        )

    def execute(self, context: Any) -> Any:
        from retention import flow

        value = context["ti"].xcom_pull(task_ids="prepare_run", key="run")
        if not isinstance(value, dict):
            raise AirflowFailException("no run was prepared: nothing is erased")
        run = _run(value)
        if flow.policy_set_decision(run, None) is None:
            log.info("SUMMARY policy set %s approval not needed", run.policy_set_hash[:16])
            return {"chosen_options": [self.APPROVE], "params_input": {}, "automatic": True}
        log.info(
            "SUMMARY policy set changed: approved=%s deployed=%s; waiting for a human",
            (run.approved_policy_set or "")[:16],
            run.policy_set_hash[:16],
        )
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """The answer, as this task's XCom, also for *Reject*: every category's ``approve`` reads it and
        skips (ApprovalOperator's own skipping would push no XCom and skip the final tasks too)."""
        return HITLOperator.execute_complete(self, context=context, event=event)


_HITL = {CapApprovalOperator.APPROVE: Decision.APPROVED, CapApprovalOperator.REJECT: Decision.REJECTED}
"""The approval form's options -> the engine's decisions."""


@task
@engine_errors
def erase_store(run: dict[str, Any], category: str, store: str) -> dict[str, Any] | None:
    """Locate, erase and verify one category in one file store (the task's pool bounds connections)."""
    from retention import flow
    from retention_airflow import clients

    info = _run(run)
    if not info.uses(category, store):
        log.info("SUMMARY category=%s store=%s not used by this category", category, store)
        return None
    clearance = _own_clearance(info, category)
    with _erasing(info, [category]), clients.run_context(info, subject=_subject(), stores=(store,)) as ctx:
        result = flow.erase_files(ctx, info, category, store, clearance)
    if result is None:
        return None
    _summary_line(result)
    return to_json(result)  # type: ignore[no-any-return]


@task(pool=POOL_DATABASE, trigger_rule="all_done")
@engine_errors
def erase_databases(run: dict[str, Any], categories: list[str]) -> dict[str, Any]:
    """Every category's database rows, in policy order, once its files are proven gone.

    One ordered task, not one per category: a category's rows may be referenced by
    rows of a category that runs before it (documents -> translation jobs).
    """
    from retention import flow
    from retention_airflow import clients

    info = _run(run)
    with _erasing(info, info.categories), clients.run_context(info, subject=_subject()) as ctx:
        out = flow.database_pass(ctx, _file_steps(info), _not_run(info), _clearances(info))
    for r in out.results:
        _summary_line(r)
    for category, skip in out.skipped.items():
        log.info("SUMMARY category=%s store=database not erased now: %s", category, skip.words())
    return to_json(out)  # type: ignore[no-any-return]


@task(trigger_rule="all_done", inlets=[LEDGER_ASSET], outlets=[LEDGER_ASSET])
@engine_errors
def finish_nightly(run: dict[str, Any], categories: list[str]) -> dict[str, Any]:
    """Record approvals, verify the ledger chain against its latest anchors, delete expired tombstones,
    write the run summary; fail if anything is unproven; a real run anchors the new head."""
    from retention import anchor, flow
    from retention_airflow import clients
    from retention_airflow.tombstone_store import tombstones

    info = _run(run)
    database = _database_pass()
    plans, _answers = _plans_and_answers(info)
    af = get_current_context()
    anchors = anchor.AnchorStore(clients.s3_client(), clients.settings().receipts_bucket)
    events = af["inlet_events"][LEDGER_ASSET].ascending(False).limit(anchor.EVENT_LIMIT)
    latest = anchor.latest_anchors(anchors, [e.extra for e in events])
    with tombstones(with_key=False) as graves, clients.run_context(info) as ctx:
        summary = flow.finish(
            ctx,
            info,
            _decisions(info),
            [*_file_steps(info), *database.results],
            _skipped(info, database),
            _failed_tasks(),
            plans=plans,
            backlog_runs=clients.settings().backlog_alert_after,
            tombstones=graves,
            anchors=latest,
            policy_set=_policy_set_decision(info),
        )
        if not info.dry_run and ctx.ledger is not None:
            published = anchor.publish(anchors, ctx.ledger, info.run_id)
            if published is not None:
                af["outlet_events"][LEDGER_ASSET].extra = {"anchor": published.document()}
                log.info("SUMMARY ledger anchored at entry %d", published.seq)
    for category, reasons in summary.backlog.items():
        left = " ".join(f"{reason.value}={n}" for reason, n in reasons.items())
        log.info("SUMMARY category=%s due but not erased: %s", category, left)
    for category, n in summary.undated.items():
        log.info("SUMMARY category=%s never due by age: %s records without a date to count from", category, n)
    log.info(
        "SUMMARY run=%s erased=%s anonymised=%s kept=%s failed=%s chain_ok=%s",
        summary.run_id,
        summary.totals.erased,
        summary.totals.anonymised,
        summary.totals.kept,
        summary.totals.failed,
        summary.proof.chain_ok,
    )
    return to_json(summary)  # type: ignore[no-any-return]


@task(trigger_rule="all_done", inlets=[LEDGER_ASSET], outlets=[LEDGER_ASSET])
@engine_errors
def write_receipt(run: dict[str, Any], categories: list[str]) -> dict[str, Any]:
    """Build the erasure receipt, store it (its row first, then JSON + Markdown in S3) and reference it
    from the ledger; a real, proven erasure also leaves its tombstone (for a replay after a restore).
    The chain is checked against its latest anchors; a real run anchors the new head."""
    from retention import anchor, flow
    from retention_airflow import clients
    from retention_airflow.tombstone_store import tombstones

    af = get_current_context()
    params = af["params"]
    check_erasure_params(params, clients.policy_set().subject)
    info = _run(run)
    database = _database_pass()
    anchors = anchor.AnchorStore(clients.s3_client(), clients.settings().receipts_bucket)
    events = af["inlet_events"][LEDGER_ASSET].ascending(False).limit(anchor.EVENT_LIMIT)
    latest = anchor.latest_anchors(anchors, [e.extra for e in events])
    # The key is read before anything is stored: a run that cannot leave its tombstone fails first.
    with (
        tombstones(with_key=not info.dry_run) as graves,
        clients.run_context(info, subject=params["customer_id"]) as ctx,
    ):
        try:
            receipt = flow.finish_request(
                ctx,
                info,
                flow.ReceiptRequest(request_ref=params["request_ref"], reason=params["reason"]),
                [*_file_steps(info), *database.results],
                dict(database.skipped),
                _failed_tasks(),
                sink=receipt_sink(ctx, params["customer_id"]),
                tombstones=graves,
                anchors=latest,
            )
        finally:
            if not info.dry_run and ctx.subject_ref:
                clients.subject_lease(ctx.subject_ref, owner=info.run_id, take=False)
        if not info.dry_run and ctx.ledger is not None:
            published = anchor.publish(anchors, ctx.ledger, info.run_id)
            if published is not None:
                af["outlet_events"][LEDGER_ASSET].extra = {"anchor": published.document()}
                log.info("SUMMARY ledger anchored at entry %d", published.seq)
    log.info(
        "SUMMARY request=%s erased=%s anonymised=%s kept=%s verified=%s",
        params["request_ref"],
        receipt["totals"]["erased"],
        receipt["totals"]["anonymised"],
        receipt["totals"]["kept"],
        receipt["verified"],
    )
    return receipt


def receipt_sink(ctx: Any, subject: str) -> Callable[[Any], dict[str, str]]:
    """Stores a receipt in the receipts bucket, its row (policy ``erasure_receipts``) written first."""
    from retention.receipt import RECEIPTS_CATEGORY, receipts_policy, register_receipt, store_receipt
    from retention_airflow import clients

    cfg = clients.settings()
    receipts = receipts_policy(ctx.policies, ctx.bucket_map, cfg.receipts_bucket, cfg.receipts_prefix)
    if receipts is None:
        log.warning(
            "the policy set has no %s category: the receipt is stored without a retention", RECEIPTS_CATEGORY
        )

    def sink(doc: Any) -> dict[str, str]:
        register = (lambda d: register_receipt(ctx.database, receipts, subject, d)) if receipts else None
        return store_receipt(clients.s3_client(), cfg.receipts_bucket, cfg.receipts_prefix, doc, register)

    return sink
