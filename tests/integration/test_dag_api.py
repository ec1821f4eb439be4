"""The DAGs through Airflow's public REST API: approvals (HITL) of the nightly run, refused triggers.

``dag.test()`` runs the nightly DAG in the test thread; a second thread plays the operator
and answers ``category.approve`` through the HITL endpoint of a real ``airflow api-server``
sharing the session's metadata DB. Every wait is bounded: if no answer was given in time, the
parked task is failed so that ``dag.test()`` returns and the test fails with the reason.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.world_rules import NOW, TABLES
from retention.adapters.database import REDACTED
from retention.ledger import Ledger
from retention.policy import load_policies
from tests.integration.api_server import ApiServer, api_server, fail_parked_tasks, serialize_dags
from tests.integration.conftest import WorldEnv
from tests.integration.test_dags import (  # noqa: F401 - the wired-up world fixture
    _xcom,
    airflow_world,
    assert_unused_stores_skipped,
    dag,
)
from tests.integration.test_engine_world import archive_files, rows, s3_keys, table_ids
from tests.ledger_entries import policy_set_approved

NIGHTLY = "retention_nightly"
ERASURE = "customer_erasure"
APPROVE_TASK = "category.approve"
POLICY_SET_TASK = "approve_policy_set"
TIGHT = "correspondence"
"""The one category whose cap is tightened below its due count; every other cap is relaxed."""
BLOCKED = "customer_master_data"
"""Runs ``after`` TIGHT (its policy), so a rejection of TIGHT also holds back its anonymisation."""
REDACTED_COLUMN = {"customers": "address", "interpreting_assignments": "topic"}
"""Per table with anonymised rows, a column the anonymisation sets to REDACTED."""
ANSWER_TIMEOUT = 240.0
POLL_INTERVAL = 0.5


@pytest.fixture(scope="module")
def api(airflow_db: Path) -> Iterator[ApiServer]:
    """One API server for this module, on the session's migrated metadata DB."""
    with api_server(airflow_db) as server:
        yield server


@pytest.fixture
def one_category_over_cap(airflow_world: WorldEnv) -> Iterator[tuple[WorldEnv, int]]:  # noqa: F811
    """The wired world with ``TIGHT``'s cap one below its due count; yields it and its map index."""
    policy_dir = Path(os.environ["RETENTION_POLICY_DIR"])
    due = len(airflow_world.world.expected_after_nightly()[TIGHT]["deleted"])
    assert due >= 2, f"the reference world has too few due {TIGHT} rows ({due}) to exceed a cap"
    path = policy_dir / f"{TIGHT}.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["cap"] = {"max_items": due - 1, "max_fraction": 1.0}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    yield airflow_world, load_policies(policy_dir).ids.index(TIGHT)


@dataclass
class Answerer:
    """The operator in another thread: answers the one expected approval, rejects any other."""

    api: ApiServer
    map_index: int
    choice: str
    task_id: str = APPROVE_TASK
    done: threading.Event = field(default_factory=threading.Event)
    answered: list[dict[str, Any]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)

    def run(self) -> None:
        """Poll the pending HITL requests of the nightly DAG until the run is over or time is up."""
        deadline = time.monotonic() + ANSWER_TIMEOUT
        try:
            with self.api.client() as client:
                while not self.done.is_set() and time.monotonic() < deadline:
                    self._answer_pending(client)
                    self.done.wait(POLL_INTERVAL)
            if not self.done.is_set():
                self.problems.append(f"dag.test() still running after {ANSWER_TIMEOUT:.0f} s")
        except Exception as e:  # noqa: BLE001 - reported to the test thread, which fails
            self.problems.append(f"{type(e).__name__}: {e}")
        finally:
            if not self.done.is_set():
                self.aborted = fail_parked_tasks(NIGHTLY)

    def _answer_pending(self, client: Any) -> None:
        listing = client.get(f"/dags/{NIGHTLY}/dagRuns/~/hitlDetails", params={"response_received": False})
        listing.raise_for_status()
        for detail in listing.json()["hitl_details"]:
            ti = detail["task_instance"]
            if ti["state"] != "awaiting_input":
                continue
            expected = ti["task_id"] == self.task_id and ti["map_index"] == self.map_index
            choice = self.choice if expected else "Reject"
            if not expected:
                self.unexpected.append(f"{ti['task_id']}[{ti['map_index']}]")
            response = client.patch(
                f"/dags/{NIGHTLY}/dagRuns/{ti['dag_run_id']}/taskInstances/"
                f"{ti['task_id']}/{ti['map_index']}/hitlDetails",
                json={"chosen_options": [choice], "params_input": {}},
            )
            if expected:
                self.answered.append(
                    {
                        "status": response.status_code,
                        "chosen": response.json().get("chosen_options"),
                        "subject": detail["subject"],
                        "run_id": ti["dag_run_id"],
                    }
                )


def run_nightly_answering(
    api: ApiServer, map_index: int, choice: str, task_id: str = APPROVE_TASK
) -> tuple[Any, Answerer]:
    """``dag.test()`` of the nightly DAG here, with the answering operator in another thread; it
    answers ``task_id`` (``map_index``) with ``choice`` and must be asked nothing else."""
    answerer = Answerer(api, map_index, choice, task_id)
    thread = threading.Thread(target=answerer.run, name="hitl-answerer", daemon=True)
    thread.start()
    try:
        run = dag(NIGHTLY).test(run_conf={"dry_run": False, "as_of": NOW.isoformat()})
    finally:
        answerer.done.set()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the answering thread did not stop"
    assert not answerer.problems, f"{answerer.problems}; parked tasks failed to end it: {answerer.aborted}"
    assert not answerer.unexpected, f"approval requested by other tasks than {task_id}: {answerer.unexpected}"
    assert len(answerer.answered) == 1, answerer.answered
    answer = answerer.answered[0]
    assert answer["status"] == 200, answer
    assert answer["chosen"] == [choice], answer
    assert answer["run_id"] == run.run_id
    if task_id == APPROVE_TASK:
        assert answer["subject"].startswith(f"Approve erasure in {TIGHT} ("), answer["subject"]
    return run, answerer


def _approval_outcomes(env: WorldEnv, run_id: str) -> list[str]:
    entries = Ledger(env.engine).entries(run_id=run_id, category=TIGHT, limit=1000)
    return sorted(e["outcome"] for e in entries if e["action"] == "approval")


def _redacted(env: WorldEnv) -> dict[str, set[int]]:
    return {
        table: {rid for rid, row in rows(env, table).items() if getattr(row, column) == REDACTED}
        for table, column in REDACTED_COLUMN.items()
    }


def test_approved_category_over_its_cap_is_erased(
    api: ApiServer, one_category_over_cap: tuple[WorldEnv, int]
) -> None:
    env, index = one_category_over_cap
    before = table_ids(env)
    expected = env.world.expected_after_nightly()

    run, _ = run_nightly_answering(api, index, "Approve")

    assert run.state == "success", run.state
    after = table_ids(env)
    assert expected[TIGHT]["deleted"], "nothing due: the test would prove nothing"
    for table in TABLES:
        assert after[table] == before[table] - expected[table]["deleted"], table
    assert not (env.world.s3_keys_expected_gone() & set(s3_keys(env)))
    assert not (env.world.archive_paths_expected_gone() & archive_files(env))
    anonymised = {t: e["anonymised"] for t, e in expected.items() if e["anonymised"]}
    assert set(anonymised) == set(REDACTED_COLUMN)
    assert _redacted(env) == anonymised
    assert _approval_outcomes(env, run.run_id) == ["approval_requested", "approved"]
    assert Ledger(env.engine).verify_chain().ok
    assert_unused_stores_skipped(run)  # the human's approval skips them as an automatic one does


def test_rejected_category_keeps_all_its_rows_and_the_rest_is_erased(
    api: ApiServer, one_category_over_cap: tuple[WorldEnv, int]
) -> None:
    env, index = one_category_over_cap
    before = table_ids(env)
    expected = env.world.expected_after_nightly()

    run, _ = run_nightly_answering(api, index, "Reject")

    # A rejection is a decision, not a failure: the run ends successfully.
    assert run.state == "success", run.state
    after = table_ids(env)
    assert after[TIGHT] == before[TIGHT], "rows of the rejected category were erased"
    for table in TABLES:
        if table != TIGHT:
            assert after[table] == before[table] - expected[table]["deleted"], table
    assert not (env.world.s3_keys_expected_gone() & set(s3_keys(env)))
    assert not (env.world.archive_paths_expected_gone() & archive_files(env))
    # The category that runs after the rejected one waits for the next night; the others are done.
    redacted = _redacted(env)
    assert redacted["customers"] == set(), "customers anonymised although correspondence was rejected"
    assert redacted["interpreting_assignments"] == expected["interpreting_assignments"]["anonymised"]
    skips = Ledger(env.engine).entries(run_id=run.run_id, category=BLOCKED, limit=1000)
    assert [(e["reason"], e["detail"]) for e in skips if e["outcome"] == "skipped"] == [
        ("blocked_by_dependency", {"blocked_by": TIGHT})
    ]
    assert _approval_outcomes(env, run.run_id) == ["approval_requested", "rejected"]
    outcomes = Ledger(env.engine).outcomes_for_run(run.run_id)
    assert not [k for k in outcomes if k[0] == TIGHT and k[2] in ("erased", "anonymised")], outcomes
    assert Ledger(env.engine).verify_chain().ok


VALID = {"customer_id": "42", "request_ref": "PR-2026-00042", "reason": "erasure_request", "dry_run": True}

HOSTILE_CUSTOMER_IDS: list[Any] = [
    # Outside the generic id alphabet of every deployment (retention.subject.SAFE_SUBJECT_SCHEMA).
    # Ids inside it but not of the deployment's format ("0123", "1.5") pass the form and are
    # refused by the first task (tests/unit/test_params.py).
    "1 OR 1=1",
    "1; DROP TABLE customers",
    "1' OR '1'='1",
    "../",
    "../../etc",
    "*",
    "%",
    "",
    "   ",
    " 1",
    "1 ",
    "1\n",
    "1\t",
    "1\u0000",
    "9" * 65,
    "١٢٣",  # Arabic-Indic digits
    "１２３",  # full-width digits
    "kunde@example.com",
    "a@b.dk",
    "Jens Hansen",
    "-1",
    ".1",
    "_1",
    "K-00042 ",
    "K–00042",  # an en dash
    "a/b",
    1.5,
    42,
    -1,
    True,
    [42],
    ["42"],
    {"id": "42"},
    None,
]

HOSTILE_OTHER: dict[str, dict[str, Any]] = {
    "customer_id missing": {k: v for k, v in VALID.items() if k != "customer_id"},
    "request_ref missing": {k: v for k, v in VALID.items() if k != "request_ref"},
    "request_ref short year": {**VALID, "request_ref": "PR-26-00042"},
    "request_ref with SQL": {**VALID, "request_ref": "PR-2026-00042; DROP TABLE customers"},
    "request_ref trailing newline": {**VALID, "request_ref": "PR-2026-00042\n"},
    "request_ref lower case": {**VALID, "request_ref": "pr-2026-00042"},
    "request_ref null": {**VALID, "request_ref": None},
    "reason unknown": {**VALID, "reason": "because"},
    "reason empty": {**VALID, "reason": ""},
    "reason upper case": {**VALID, "reason": "ERASURE_REQUEST"},
    "reason list": {**VALID, "reason": ["erasure_request"]},
    "dry_run as string false": {**VALID, "dry_run": "false"},
    "dry_run as string true": {**VALID, "dry_run": "true"},
    "dry_run as number": {**VALID, "dry_run": 0},
    "dry_run null": {**VALID, "dry_run": None},
}


def _run_ids(client: Any) -> set[str]:
    response = client.get(f"/dags/{ERASURE}/dagRuns", params={"limit": 100})
    response.raise_for_status()
    body = response.json()
    assert body["total_entries"] <= 100, "too many runs to compare by one page"
    return {r["dag_run_id"] for r in body["dag_runs"]}


def _trigger(client: Any, conf: Any) -> Any:
    return client.post(f"/dags/{ERASURE}/dagRuns", json={"logical_date": None, "conf": conf})


def test_customer_erasure_refuses_hostile_trigger_parameters(api: ApiServer) -> None:
    serialize_dags()
    cases: dict[str, Any] = {
        f"customer_id={value!r}": {**VALID, "customer_id": value} for value in HOSTILE_CUSTOMER_IDS
    }
    cases.update(HOSTILE_OTHER)
    with api.client() as client:
        before = _run_ids(client)
        accepted = {}
        for name, conf in cases.items():
            response = _trigger(client, conf)
            if response.status_code != 400:
                accepted[name] = (response.status_code, response.text[:200])
        # A conf that is not a JSON object fails the request-body schema (FastAPI's 422), not the params.
        not_objects = {
            name: _trigger(client, conf).status_code
            for name, conf in {"conf list": [VALID], "conf string": "42", "conf number": 42}.items()
        }
        valid = _trigger(client, VALID)
        after = _run_ids(client)
        try:
            assert not accepted, f"{len(accepted)} of {len(cases)} hostile confs not refused: {accepted}"
            assert not_objects == dict.fromkeys(not_objects, 422), not_objects
            assert valid.status_code == 200, (valid.status_code, valid.text[:300])
            created = valid.json()["dag_run_id"]
            assert after - before == {created}, f"runs besides the valid one: {after - before - {created}}"
            assert valid.json()["conf"] == VALID
        finally:
            for run_id in after - before:
                client.delete(f"/dags/{ERASURE}/dagRuns/{run_id}")
        assert len(cases) >= 20


def test_a_changed_policy_set_is_erased_under_only_once_a_human_approves_it(
    api: ApiServer,
    airflow_world: WorldEnv,  # noqa: F811 - the fixture imported above
) -> None:
    env = airflow_world
    ledger = Ledger(env.engine)
    ledger.ensure_schema()
    # The ledger of earlier nights: another policy set was the one approved.
    earlier = "ab" * 32
    ledger.append(policy_set_approved(earlier))
    deployed = load_policies(Path(os.environ["RETENTION_POLICY_DIR"])).hash
    before = (table_ids(env), s3_keys(env), archive_files(env))

    rejected, answerer = run_nightly_answering(api, -1, "Reject", task_id=POLICY_SET_TASK)

    assert rejected.state == "success", "a rejection is a decision, not a failure"
    assert "retention policies" in answerer.answered[0]["subject"]
    assert (table_ids(env), s3_keys(env), archive_files(env)) == before, "nothing erased under the new set"
    decided = [e for e in ledger.entries(run_id=rejected.run_id, limit=1000) if e["action"] == "policy_set"]
    assert [(e["outcome"], e["policy_set_hash"], e["detail"]) for e in decided] == [
        ("rejected", deployed, {"previous": earlier})
    ]
    summary = next(e for e in ledger.entries(run_id=rejected.run_id, limit=1000) if e["outcome"] == "summary")
    assert summary["detail"]["not_erased"] == len(load_policies(Path(os.environ["RETENTION_POLICY_DIR"])).ids)
    backlog = _xcom(rejected, "finish_nightly")["backlog"]
    assert backlog and all(set(reasons) == {"policy_change_not_approved"} for reasons in backlog.values()), (
        "what is due and left behind is counted under its reason"
    )
    assert ledger.approved_policy_set() == earlier

    approved, _ = run_nightly_answering(api, -1, "Approve", task_id=POLICY_SET_TASK)

    assert approved.state == "success"
    assert ledger.approved_policy_set() == deployed
    expected = env.world.expected_after_nightly()
    after = table_ids(env)
    for table in TABLES:
        assert after[table] == before[0][table] - expected[table]["deleted"], table
    assert not (env.world.s3_keys_expected_gone() & set(s3_keys(env)))
    assert not (env.world.archive_paths_expected_gone() & archive_files(env))
    assert ledger.verify_chain().ok
