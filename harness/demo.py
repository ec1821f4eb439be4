"""The one-command demo: local stores, a reference world, Airflow on loopback and two real runs.

``python -m harness.demo start`` (``make demo``) cleans up any earlier demo, starts the
harness's S3 (moto) and SFTP (OpenSSH) servers and the business database (an embedded
SQLite file by default, ``--business-db postgres`` for the harness's PostgreSQL), generates
the demo-sized reference world, starts Airflow (api-server, scheduler, dag-processor,
triggerer: all on 127.0.0.1, SQLite metadata, LocalExecutor) and runs the nightly
retention DAG, one customer's erasure and the weekly orphan sweep (with the coverage report)
through the REST API. It prints a summary from the ledger (per category and store: erased,
anonymised, kept and why, verified), the erasure receipt, the sweep's counts per root and the
coverage findings, and where to look in the UI, then keeps everything running until Ctrl-C
or ``python -m harness.demo stop`` (``make demo-stop``); ``--once`` stops at once instead.

Categories over their blast-radius cap wait for a human in the UI's *Required actions*;
the demo waits for that answer (``--approval-wait`` seconds) and only with ``--approve``
answers *Approve* itself, through the HITL REST API.

Everything lives in ``.demo/`` of the repository (gitignored): logs, keys, the Airflow home
and ``state.json``, which names every process the demo started (pid and start time, so a
pid reused by another program is never signalled).

This module holds the demo's steps and its command line; the work is done by
``harness.demo_stores`` (stores, world), ``harness.airflow_setup`` (Airflow's environment and
processes), ``harness.airflow_api`` (the REST API: runs, approvals), ``harness.demo_summary``
(what is printed) and ``harness.processes`` (what was started, and stopping it).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from harness.demo_config import DEMO_DIR, ERASURE, NIGHTLY, REPO, SWEEP, say

if str(REPO / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO / "plugins"))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from harness.airflow_api import (  # noqa: E402
    FINISHED,
    AirflowApi,
    ApprovalPolicy,
    follow,
    prepare_dags,
    trigger,
    wait_for_airflow,
    xcom_value,
)
from harness.airflow_setup import db_migrate, make_secrets, setup_airflow, start_airflow, stop_airflow  # noqa: E402
from harness.demo_stores import choose_customer, make_world, start_stores  # noqa: E402
from harness.demo_summary import nightly_summary, receipt_markdown, sweep_summary, where_to_look  # noqa: E402
from harness.processes import ProcessRecord, State, prepare_demo_dir, stop_demo  # noqa: E402
from harness.world_rules import NOW  # noqa: E402

REQUEST_REF = "PR-2026-00042"
POOLS_SQLITE = {"retention_database": 1, "retention_s3": 4, "retention_sftp": 2, "retention_filesystem": 2}
"""SQLite has one writer at a time: one database task at a time avoids lock waits."""
POOLS_POSTGRES = {"retention_database": 4, "retention_s3": 4, "retention_sftp": 2, "retention_filesystem": 2}


class Stopped(Exception):
    """SIGTERM (``demo stop``) or SIGINT (Ctrl-C) arrived."""


@dataclass
class Options:
    """The ``start`` command's choices."""

    business_db: str = "sqlite"
    approve: bool = False
    approval_wait: float = 900.0
    once: bool = False


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def start(options: Options, demo_dir: Path = DEMO_DIR) -> int:
    """Run the whole demo; keep it running until stopped (or stop at once with ``--once``)."""
    began = time.monotonic()
    say("[1/8] cleaning up an earlier demo")
    if stop_demo(demo_dir):
        say("  stopped the demo that was still running")
    prepare_demo_dir(demo_dir)
    state = State(main=ProcessRecord.of("demo", os.getpid(), group=False))
    state.save(demo_dir)
    signal.signal(signal.SIGTERM, _on_signal)
    code = 0
    with ExitStack() as stack:
        stack.callback(_stopped, state, demo_dir)
        try:
            _run(stack, options, state, demo_dir, began)
        except (Stopped, KeyboardInterrupt):
            say("\nstopping the demo")
        except (RuntimeError, OSError, httpx.HTTPError, subprocess.SubprocessError) as e:
            # DemoError and the harness's service errors are RuntimeErrors naming their log.
            say(f"\nthe demo failed: {type(e).__name__}: {e}\nstopping the demo")
            code = 1
        finally:
            # A second Ctrl-C must not interrupt the shutdown half-way.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    say("demo stopped")
    return code


def _run(stack: ExitStack, options: Options, state: State, demo_dir: Path, began: float) -> None:
    say("[2/8] starting the stores on loopback")
    stores = start_stores(stack, demo_dir, options.business_db, state)
    state.save(demo_dir)
    say(f"[3/8] generating the reference world (demo size, business clock {NOW:%Y-%m-%d %H:%M %Z})")
    step = time.monotonic()
    world = make_world(stores)
    customer = choose_customer(world)
    say(f"  world ready in {time.monotonic() - step:.0f} s")
    keys = make_secrets(demo_dir)
    setup = setup_airflow(demo_dir, stores, keys)
    say(f"[4/8] preparing Airflow in {setup.home.relative_to(REPO)} (airflow db migrate)")
    step = time.monotonic()
    db_migrate(setup.env, setup.logs / "db-migrate.log")
    say(f"  metadata database ready in {time.monotonic() - step:.0f} s")
    say(f"[5/8] starting Airflow on {setup.url} (api-server, scheduler, dag-processor, triggerer)")
    # Registered after the stores: the ExitStack stops Airflow first, then the stores.
    stack.callback(stop_airflow, state, demo_dir)
    start_airflow(setup, state, demo_dir)
    state.url = setup.url
    state.save(demo_dir)
    api = AirflowApi(setup.url, keys["admin_password"])
    stack.callback(api.close)
    wait_for_airflow(api, state, setup)
    prepare_dags(api, POOLS_SQLITE if options.business_db == "sqlite" else POOLS_POSTGRES)
    say(f"[6/8] nightly retention run (dry_run false, as_of {NOW.isoformat()})")
    run_id = trigger(api, NIGHTLY, {"dry_run": False, "as_of": NOW.isoformat()})
    policy = ApprovalPolicy(
        api, run_id, auto=options.approve, wait=options.approval_wait, password=keys["admin_password"]
    )
    nightly = follow(api, NIGHTLY, run_id, label="nightly", on_approvals=policy)
    say(f"[7/8] customer erasure of customer {customer} (request {REQUEST_REF})")
    conf = {
        "customer_id": str(customer),
        "request_ref": REQUEST_REF,
        "reason": "erasure_request",
        "dry_run": False,
    }
    erasure = follow(api, ERASURE, trigger(api, ERASURE, conf), label="erasure")
    say("[8/8] weekly orphan sweep and coverage report (stray archive files, a table no policy names)")
    api.request("PATCH", f"/api/v2/dags/{SWEEP}", json={"is_paused": False})
    sweep = follow(api, SWEEP, trigger(api, SWEEP, {"dry_run": False}), label="sweep")
    engine = sa.create_engine(stores.business_url)
    stack.callback(engine.dispose)
    final = xcom_value(api, NIGHTLY, nightly.run_id, "finish_nightly") if nightly.state in FINISHED else None
    receipt = xcom_value(api, ERASURE, erasure.run_id, "write_receipt")
    say("\n" + "=" * 100)
    say(nightly_summary(engine, nightly, final))
    say("\n" + "=" * 100)
    say(f"Customer erasure {erasure.run_id}: {erasure.state}; the receipt:\n")
    say(receipt_markdown(stores, receipt))
    say("=" * 100)
    say(sweep_summary(engine, sweep))
    say("=" * 100)
    say(where_to_look(setup.url, keys["admin_password"], nightly, erasure, sweep))
    say(f"\nlogs: {setup.logs.relative_to(REPO)}/   ready after {time.monotonic() - began:.0f} s")
    state.phase = "running"
    state.save(demo_dir)
    if options.once:
        return
    say("The UI stays up until Ctrl-C or `make demo-stop`.")
    if nightly.waiting:
        say("The nightly run's summary follows here once it is answered in Required actions.\n")
        nightly = follow(api, NIGHTLY, nightly.run_id, label="nightly", timeout=None, quiet=True)
        final = xcom_value(api, NIGHTLY, nightly.run_id, "finish_nightly")
        say(nightly_summary(engine, nightly, final))
    while True:
        time.sleep(3600)


def _stopped(state: State, demo_dir: Path) -> None:
    state.phase = "stopped"
    state.save(demo_dir)


def status(demo_dir: Path = DEMO_DIR) -> int:
    """Print which of the demo's processes run; 0 if the demo runs, 3 if not."""
    state = State.load(demo_dir)
    if state is None or state.main is None:
        say("no demo here")
        return 3
    running = state.main.alive()
    where = f", UI {state.url}/" if running and state.url else ""
    say(f"demo: {'running' if running else 'not running'} (phase {state.phase}){where}")
    for p in state.processes:
        say(f"  {p.name:<22} pid {p.pid:<8} {'running' if p.alive() else 'stopped'}")
    return 0 if running else 3


def parse_args(argv: Sequence[str]) -> tuple[str, Options]:
    """The command and the start options."""
    parser = argparse.ArgumentParser(prog="python -m harness.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--business-db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--approve", action="store_true", help="answer every cap approval with Approve")
    parser.add_argument(
        "--approval-wait", type=float, default=900.0, help="seconds to wait for a human's approval"
    )
    parser.add_argument("--once", action="store_true", help="stop everything after the summary")
    args = parser.parse_args(argv)
    return args.command, Options(args.business_db, args.approve, args.approval_wait, args.once)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m harness.demo``."""
    command, options = parse_args(sys.argv[1:] if argv is None else argv)
    if command == "start":
        return start(options)
    if command == "stop":
        say("stopped the demo" if stop_demo() else "no demo was running")
        return 0
    return status()


if __name__ == "__main__":
    sys.exit(main())
