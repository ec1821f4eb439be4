"""``retention_nightly`` end to end: a real Airflow runs the nightly DAG on a copy of a world.

Airflow is started as the demo starts it (``harness.airflow_setup``: api-server, scheduler,
dag-processor and triggerer on 127.0.0.1, SQLite metadata, LocalExecutor, the demo's pools for
a PostgreSQL business database), in a home of its own under the benchmark's work directory.
The connections to S3 and SFTP come from the environment as in the demo; the business database
connection and the ``retention_settings`` Variable are set through the REST API before each
run, because each run acts on another world (its database copy, bucket, archive root and a
receipts bucket of its own, so that the ledger anchors of one world are never compared with
another's ledger).

A run is triggered as the demo triggers it (real run, ``as_of`` the world's moment) and
followed with the demo's progress lines; approvals over a category's cap are answered
*Approve* by ``harness.airflow_api.ApprovalPolicy`` (a few seconds after they appear, as a
human would: see ``APPROVE_AFTER``). Afterwards the run, its task instances (mapped ones
included), the DAG's task dependencies, the approval requests and the run summary are read
through the REST API, and the engine's own time inside each task from the file that
``bench/airflow_timing.py`` (installed as the home's ``airflow_local_settings``) writes.
``bench.results.dag_result`` turns them into figures.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.airflow_timing import ENV as TIMINGS_ENV
from bench.airflow_timing import PRELOAD_ENV
from bench.common import REPO, say
from bench.due_constant import DagWorld
from bench.results import dag_result, upstream_of
from bench.worlds import Services
from harness.airflow_api import (
    AirflowApi,
    ApprovalPolicy,
    follow,
    prepare_dags,
    trigger,
    wait_for_airflow,
    xcom_value,
)
from harness.airflow_setup import AirflowSetup, db_migrate, make_secrets, setup_airflow, start_airflow
from harness.demo import POOLS_POSTGRES
from harness.demo_config import DOCUMENTS_BUCKET, NIGHTLY, DemoError
from harness.demo_stores import Stores
from harness.processes import State, terminate
from harness.server_process import LOOPBACK
from harness.world_rules import NOW

RUN_TIMEOUT = 3 * 3600.0
"""A nightly run of the benchmark's worlds ends well within this (seconds)."""

TASK_IMPORTS = (
    "retention_airflow.tasks",
    "retention_airflow.clients",
    "retention.flow",
    "retention.engine",
    "airflow.providers.amazon.aws.hooks.s3",
    "airflow.providers.sftp.hooks.sftp",
    "airflow.providers.postgres.hooks.postgres",
)
"""What a task process imports beyond Airflow itself (the DAG file's modules, the engine, the hooks)."""


def _run_path(run_id: str) -> str:
    return f"/api/v2/dags/{NIGHTLY}/dagRuns/{quote(run_id, safe='')}"


class BenchAirflow:
    """The benchmark's own Airflow, started once and stopped with ``stack``."""

    def __init__(self, svc: Services, workdir: Path, stack: ExitStack, *, preload: bool = False) -> None:
        """Start Airflow; ``preload``: the experiment of ``bench/airflow_timing.py`` (``BENCH_PRELOAD``):
        the scheduler imports ``TASK_IMPORTS`` before its LocalExecutor forks the workers."""
        self.svc = svc
        self._buckets: set[str] = set()
        home_dir = workdir / ("airflow-bench-preload" if preload else "airflow-bench")
        home_dir.mkdir()
        self.keys = make_secrets(home_dir)
        stores = Stores(
            business_url=svc.pg.url,
            business_conn=json.loads(svc.pg.airflow_conn_json()),
            s3=svc.s3,
            sftp=svc.sftp,
            archive_root=str(svc.sftp.archive_root),
        )
        setup = setup_airflow(home_dir, stores, self.keys)
        env = dict(setup.env)
        # Set per run through the REST API (an environment variable would win over it).
        env.pop("AIRFLOW_VAR_RETENTION_SETTINGS", None)
        env.pop("AIRFLOW_CONN_BUSINESS_DB", None)
        self.timings = home_dir / "engine-timings.jsonl"
        env[TIMINGS_ENV] = str(self.timings)
        if preload:
            env[PRELOAD_ENV] = ",".join(TASK_IMPORTS)
        self.setup: AirflowSetup = dataclasses.replace(setup, env=env)
        config = setup.home / "config"
        config.mkdir()
        shutil.copyfile(REPO / "bench" / "airflow_timing.py", config / "airflow_local_settings.py")
        started = time.monotonic()
        db_migrate(env, setup.logs / "db-migrate.log")
        self.state = State()
        stack.callback(self._stop)
        start_airflow(self.setup, self.state, home_dir)
        self.api = AirflowApi(self.setup.url, self.keys["admin_password"])
        stack.callback(self.api.close)
        wait_for_airflow(self.api, self.state, self.setup)
        prepare_dags(self.api, POOLS_POSTGRES)
        self.startup_s = time.monotonic() - started
        say(f"Airflow ready in {self.startup_s:.0f} s (logs in {setup.logs})")

    def _stop(self) -> None:
        hard = terminate(self.state.processes)
        if hard:
            say(f"Airflow components killed after the grace period: {', '.join(hard)}")

    def _put(self, kind: str, key: str, body: dict[str, Any]) -> None:
        try:
            self.api.request("POST", f"/api/v2/{kind}", json=body)
        except DemoError:
            self.api.request("PATCH", f"/api/v2/{kind}/{quote(key, safe='')}", json=body)

    def _configure(self, world: DagWorld) -> None:
        """The business database connection and the settings of ``world``, through the REST API."""
        database = world.db_url.rsplit("/", 1)[-1]
        self._put(
            "connections",
            "business_db",
            {
                "connection_id": "business_db",
                "conn_type": "postgres",
                "host": LOOPBACK,
                "port": self.svc.pg.port,
                "login": "postgres",
                "schema": database,
            },
        )
        receipts = f"bench-receipts-{world.name}"
        if receipts not in self._buckets:
            self._buckets.add(self.svc.s3.create_bucket(receipts))
        settings = {
            "bucket_map": {DOCUMENTS_BUCKET: world.bucket},
            "archive_root": world.archive_root,
            "receipts_bucket": receipts,
        }
        self._put(
            "variables", "retention_settings", {"key": "retention_settings", "value": json.dumps(settings)}
        )

    def nightly(self, world: DagWorld, *, dry_run: bool = False) -> dict[str, Any]:
        """Trigger ``retention_nightly`` on ``world``, approve what waits, wait for the end; its figures."""
        self._configure(world)
        label = f"nightly on {world.name}{' (dry run)' if dry_run else ''}"
        say(f"DAG: {label}")
        run_id = trigger(self.api, NIGHTLY, {"dry_run": dry_run, "as_of": NOW.isoformat()})
        policy = ApprovalPolicy(
            self.api, run_id, auto=True, wait=RUN_TIMEOUT, password=self.keys["admin_password"]
        )
        outcome = follow(self.api, NIGHTLY, run_id, label=label, on_approvals=policy, timeout=RUN_TIMEOUT)
        tis = self._get(f"{_run_path(run_id)}/taskInstances", {"limit": 1000})["task_instances"]
        if outcome.state != "success":
            failed = sorted({t["task_id"] for t in tis if t.get("state") in ("failed", "upstream_failed")})
            raise RuntimeError(f"{label} ended {outcome.state} (failed: {failed}); logs in {self.setup.logs}")
        result = dag_result(
            run=self._get(_run_path(run_id)),
            task_instances=tis,
            upstream=upstream_of(self._get(f"/api/v2/dags/{NIGHTLY}/tasks")["tasks"]),
            approvals=self._get(f"{_run_path(run_id)}/hitlDetails", {"limit": 1000})["hitl_details"],
            timings=self._timings(run_id),
            summary=xcom_value(self.api, NIGHTLY, run_id, "finish_nightly"),
        )
        result["xcom"] = self._xcom_sizes(run_id)
        say(
            f"DAG: {label}: {result['wall_s']:.1f} s wall, {result['engine_s']:.1f} s engine steps, "
            f"{result['task_instances']} task instances, "
            f"{(result['erased'] or 0) + (result['anonymised'] or 0):,} items erased or anonymised"
        )
        return result

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.api.request("GET", path, params=params)

    def _timings(self, run_id: str) -> list[dict[str, Any]]:
        if not self.timings.exists():
            return []
        lines = (json.loads(line) for line in self.timings.read_text().splitlines() if line.strip())
        return [t for t in lines if t.get("run_id") == run_id]

    def _xcom_sizes(self, run_id: str) -> dict[str, Any] | None:
        """How much the run wrote to XCom (bytes of the stored values), read from the metadata database."""
        try:
            with sqlite3.connect(f"file:{self.setup.home / 'airflow.db'}?mode=ro", uri=True) as db:
                rows = db.execute(
                    "SELECT task_id, length(value) FROM xcom WHERE run_id = ? AND dag_id = ?",
                    (run_id, NIGHTLY),
                ).fetchall()
        except sqlite3.Error as e:
            return {"error": type(e).__name__}
        sizes = [int(n or 0) for _task, n in rows]
        by_task: dict[str, int] = {}
        for task, n in rows:
            by_task[str(task)] = by_task.get(str(task), 0) + int(n or 0)
        return {
            "entries": len(rows),
            "bytes": sum(sizes),
            "max_bytes": max(sizes, default=0),
            "by_task": by_task,
        }

    def task_import_s(self) -> float | None:
        """Seconds a fresh interpreter that has imported Airflow takes to import what a task imports
        (the DAG's modules, the engine, the providers' hooks): paid again by every task process."""
        code = (
            "import time, airflow; t = time.perf_counter(); "
            f"import {', '.join(TASK_IMPORTS)}; print(time.perf_counter() - t)"
        )
        proc = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-c", code], env=self.setup.env, capture_output=True, text=True, check=False
        )
        try:
            return round(float(proc.stdout.strip().splitlines()[-1]), 2)
        except (ValueError, IndexError):
            return None
