"""A DAG run in a process of its own: the worker the fault suite kills, or runs beside another.

``python -m tests.integration.faults.worker <dag_id> <logical_date> <conf as JSON>`` runs the DAG
under ``dag.test()`` with retries off, as the suite's in-process runs do, and prints the run's
state and id as JSON. The environment is the test's (connections, settings, policy folder,
``AIRFLOW_HOME``); ``RETENTION_KILL_AT`` in it kills the process at that point
(``retention.failpoints``). Leases expire after ``LEASE_TTL_SECONDS`` without a heartbeat, as the
suite's in-process runs have them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
LEASE_TTL_SECONDS = 3


def start(dag_id: str, logical_date: datetime, conf: dict[str, Any], **env: str) -> subprocess.Popen[str]:
    """Start the DAG run in a child process (the test's environment plus ``env``)."""
    child_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.faults.worker",
            dag_id,
            logical_date.isoformat(),
            json.dumps(conf),
        ],
        cwd=REPO,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, dict[str, Any] | None, str]:
    """Wait for the child: its exit code, the run it printed (None if it printed none) and its output."""
    out, _ = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith('{"run_id"')]
    return proc.returncode, (json.loads(lines[-1]) if lines else None), out


def main(argv: list[str]) -> int:
    from retention_airflow import clients
    from tests.integration.test_dags import dag

    dag_id, logical_date, conf = argv[0], datetime.fromisoformat(argv[1]), json.loads(argv[2])
    clients.LEASE_TTL = timedelta(seconds=LEASE_TTL_SECONDS)
    the_dag = dag(dag_id)
    for t in the_dag.tasks:
        t.retries = 0
    run = the_dag.test(run_after=logical_date, logical_date=logical_date, run_conf=conf)
    print(json.dumps({"run_id": run.run_id, "state": str(run.state)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
