"""The demo's Airflow through its public REST API, as the admin user: readiness, runs, approvals, results.

``AirflowApi`` logs in (again when the token expired); the functions around it wait for the
components and the DAGs, trigger a run and follow it with progress lines, answer or wait for
the human-in-the-loop approvals (``ApprovalPolicy``) and read a task's return value (XCom).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from harness.airflow_setup import AirflowSetup
from harness.demo_config import ADMIN, ERASURE, NIGHTLY, DemoError, policy_stores, say
from harness.processes import State
from harness.server_process import log_tail

AIRFLOW_READY_TIMEOUT = 240.0
RUN_TIMEOUT = 900.0
POLL = 2.0
FINISHED = ("success", "failed")
APPROVE_AFTER = 5.0
"""Seconds ``--approve`` lets pass between seeing an approval request and answering it."""


class AirflowApi:
    """The REST API of the demo's Airflow, as the admin user."""

    def __init__(self, url: str, password: str) -> None:
        self.url = url
        self._password = password
        self._client = httpx.Client(base_url=url, timeout=30)
        self._token: str | None = None

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the API (logging in first, again when the token expired); the JSON answer."""
        for _attempt in range(2):
            if self._token is None:
                answer = self._client.post(
                    "/auth/token", json={"username": ADMIN, "password": self._password}
                )
                answer.raise_for_status()
                self._token = str(answer.json()["access_token"])
            response = self._client.request(
                method, path, headers={"Authorization": f"Bearer {self._token}"}, **kwargs
            )
            if response.status_code != 401:
                break
            self._token = None
        if response.status_code >= 400:
            raise DemoError(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    def healthy(self) -> dict[str, str]:
        """Component -> status from ``/api/v2/monitor/health`` ({} while the API server is not up)."""
        try:
            data = self._client.get("/api/v2/monitor/health").json()
        except (httpx.HTTPError, ValueError):
            return {}
        return {k: str(v.get("status")) for k, v in data.items() if isinstance(v, dict)}


def wait_for_airflow(api: AirflowApi, state: State, setup: AirflowSetup) -> None:
    """Wait until every component is healthy and both DAGs are parsed; fail early if one exits."""
    deadline = time.monotonic() + AIRFLOW_READY_TIMEOUT
    last = ""
    while True:
        for record in state.processes:
            if record.name.startswith("airflow ") and not record.alive():
                log = setup.logs / f"{record.name.removeprefix('airflow ')}.log"
                raise DemoError(f"{record.name} exited; last lines of {log}:\n{log_tail(log)}")
        health = api.healthy()
        status = ", ".join(f"{k} {v}" for k, v in sorted(health.items())) or "api-server starting"
        if status != last:
            say(f"  {status}")
            last = status
        if health and all(v == "healthy" for v in health.values()) and _dags_parsed(api):
            return
        if time.monotonic() > deadline:
            raise DemoError(
                f"Airflow was not ready within {AIRFLOW_READY_TIMEOUT:.0f} s (logs in {setup.logs})"
            )
        time.sleep(POLL)


def _dags_parsed(api: AirflowApi) -> bool:
    errors = api.request("GET", "/api/v2/importErrors")
    if errors.get("total_entries"):
        first = errors["import_errors"][0]
        raise DemoError(f"a DAG file does not import: {first.get('filename')}:\n{first.get('stack_trace')}")
    found = {d["dag_id"] for d in api.request("GET", "/api/v2/dags", params={"limit": 100})["dags"]}
    return {NIGHTLY, ERASURE} <= found


def prepare_dags(api: AirflowApi, pools: Mapping[str, int]) -> None:
    """Create the pools and unpause both DAGs."""
    for name, slots in pools.items():
        body = {"name": name, "slots": slots, "description": "retention demo", "include_deferred": False}
        try:
            api.request("POST", "/api/v2/pools", json=body)
        except DemoError:
            api.request("PATCH", f"/api/v2/pools/{name}", json=body)
    for dag_id in (NIGHTLY, ERASURE):
        api.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})


@dataclass
class RunOutcome:
    """How a run ended for the demo: its id, its state, the approvals still waiting."""

    dag_id: str
    run_id: str
    state: str
    waiting: list[str] = field(default_factory=list)


def trigger(api: AirflowApi, dag_id: str, conf: Mapping[str, Any]) -> str:
    """Trigger a run now with ``conf``; its run id."""
    run = api.request(
        "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf)}
    )
    return str(run["dag_run_id"])


def _run_path(dag_id: str, run_id: str) -> str:
    return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"


def task_states(api: AirflowApi, dag_id: str, run_id: str) -> tuple[dict[str, int], list[str]]:
    """How many task instances of the run are in each state, and the names of the running ones."""
    data = api.request("GET", f"{_run_path(dag_id, run_id)}/taskInstances", params={"limit": 1000})
    counts: dict[str, int] = {}
    running: list[str] = []
    categories = list(policy_stores())
    for ti in data["task_instances"]:
        state = ti.get("state") or "waiting"
        counts[state] = counts.get(state, 0) + 1
        if state == "running":
            index = int(ti.get("map_index", -1))
            # The mapped instance's own name where the task renders one (a sweep's root, a
            # request's category); else the nightly's category at that index.
            name = ti.get("rendered_map_index") or (categories[index] if 0 <= index < len(categories) else "")
            where = f"[{name}]" if index >= 0 and name else ""
            running.append(f"{ti['task_id']}{where}")
    return counts, sorted(running)


def pending_approvals(api: AirflowApi, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The run's human-in-the-loop requests that have no answer yet."""
    data = api.request("GET", f"{_run_path(dag_id, run_id)}/hitlDetails", params={"limit": 100})
    return [d for d in data.get("hitl_details", []) if not d.get("response_received")]


def approve(api: AirflowApi, dag_id: str, run_id: str, detail: Mapping[str, Any]) -> None:
    """Answer one approval request with *Approve* (only with ``--approve``)."""
    ti = detail["task_instance"]
    path = f"{_run_path(dag_id, run_id)}/taskInstances/{ti['task_id']}/{ti['map_index']}/hitlDetails"
    api.request("PATCH", path, json={"chosen_options": ["Approve"], "params_input": {}})


def progress_line(
    label: str, run_state: str, states: tuple[Mapping[str, int], Sequence[str]], elapsed: float
) -> str:
    """One progress line: the run's state, finished of total tasks, what the others do, what runs."""
    counts, running = states
    total = sum(counts.values())
    done = sum(
        n for s, n in counts.items() if s in ("success", "failed", "skipped", "upstream_failed", "removed")
    )
    others = ", ".join(
        f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()) if s not in ("success", "skipped")
    )
    detail = f" ({others})" if others else ""
    now = f"; running: {', '.join(running)}" if 0 < len(running) <= 3 else ""
    return f"  {label} {run_state}: {done}/{total} tasks finished{detail}, {elapsed:.0f} s{now}"


def follow(
    api: AirflowApi,
    dag_id: str,
    run_id: str,
    *,
    label: str,
    on_approvals: Callable[[list[dict[str, Any]]], bool] | None = None,
    timeout: float | None = RUN_TIMEOUT,
    quiet: bool = False,
) -> RunOutcome:
    """Poll the run until it ends, printing progress (none when ``quiet``).

    ``on_approvals`` gets the unanswered approval requests of each poll; when it returns False
    the wait ends and the run goes on in Airflow without the demo watching.
    """
    start = last_print = time.monotonic()
    last = ""
    while True:
        run = api.request("GET", _run_path(dag_id, run_id))
        line = progress_line(label, run["state"], task_states(api, dag_id, run_id), time.monotonic() - start)
        if run["state"] in FINISHED:
            say(line)
            return RunOutcome(dag_id, run_id, run["state"])
        if not quiet and (_without_time(line) != _without_time(last) or time.monotonic() - last_print > 15):
            say(line)
            last, last_print = line, time.monotonic()
        waiting = pending_approvals(api, dag_id, run_id) if on_approvals else []
        if on_approvals and waiting and not on_approvals(waiting):
            return RunOutcome(dag_id, run_id, run["state"], [str(d.get("subject")) for d in waiting])
        if timeout is not None and time.monotonic() - start > timeout:
            raise DemoError(f"{label} did not finish within {timeout:.0f} s")
        time.sleep(POLL if not quiet else 5 * POLL)


def _without_time(line: str) -> str:
    return re.sub(r", \d+ s", "", line)


def _ti_key(detail: Mapping[str, Any]) -> tuple[str, int]:
    return str(detail["task_instance"]["task_id"]), int(detail["task_instance"]["map_index"])


class ApprovalPolicy:
    """What the demo does when categories wait for approval: answer (``--approve``) or wait for a human."""

    def __init__(self, api: AirflowApi, run_id: str, *, auto: bool, wait: float, password: str) -> None:
        self.api, self.run_id, self.auto, self.wait = api, run_id, auto, wait
        self._password = password
        self._first_seen: dict[tuple[str, int], float] = {}
        self._answered: set[tuple[str, int]] = set()

    def __call__(self, waiting: list[dict[str, Any]]) -> bool:
        """Handle the unanswered requests; False once a human had ``wait`` seconds and did not answer."""
        now = time.monotonic()
        for detail in waiting:
            key = _ti_key(detail)
            if key not in self._first_seen:
                self._first_seen[key] = now
                what = "approval requested" if self.auto else "waits for a human"
                say(f"  {what}: {detail.get('subject')}")
                if not self.auto and len(self._first_seen) == 1:
                    self._explain()
            # Answered like a human, a few seconds later: an answer within moments of the task
            # parking races Airflow 3.3.2's executor event for it, and the scheduler fails the task.
            if self.auto and key not in self._answered and now - self._first_seen[key] >= APPROVE_AFTER:
                approve(self.api, NIGHTLY, self.run_id, detail)
                self._answered.add(key)
                say(f"  approved automatically (--approve): {detail.get('subject')}")
        return self.auto or now - min(self._first_seen.values()) < self.wait

    def _explain(self) -> None:
        say(
            "  A category over its blast-radius cap waits for a human: open "
            f"{self.api.url}/required_actions\n"
            f"  (login {ADMIN} / {self._password}) and choose Approve or Reject. The demo waits up to "
            f"{self.wait:.0f} s,\n  then goes on; `make demo DEMO_ARGS=--approve` approves by itself."
        )


def xcom_value(api: AirflowApi, dag_id: str, run_id: str, task_id: str) -> Any:
    """The return value of a task of the run (None if it has none)."""
    try:
        data = api.request(
            "GET", f"{_run_path(dag_id, run_id)}/taskInstances/{task_id}/xcomEntries/return_value"
        )
    except DemoError:
        return None
    return data.get("value")
