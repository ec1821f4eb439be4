"""The engine under measurement, each run in a child process of its own (``python -m bench.run --child``).

The parent side builds a job (JSON: mode, stores, where the world is) and starts a fresh
interpreter for it, so that the child's peak RSS is the engine's and not the generator's.
The child side (``child_main``) builds the engine's ``RunContext`` over the stores and runs
either every category's step in one store (``due``) or one customer's erasure as the
customer-erasure DAG does (``subject``), and prints what it measured as JSON.

The context comes from ``harness.context.engine_context``, the builder the tests use too; the
customer erasure runs through ``retention.flow``, the functions the DAG's tasks call.
"""

from __future__ import annotations

import cProfile
import json
import resource
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from bench.common import ENGINE_ORDER, POLICY_DIR, PSEUDONYM_KEY, REPO, say
from bench.worlds import Built, Services
from harness.clients import SftpSpec, s3_client, sftp_session
from harness.context import engine_context, run_id
from harness.world_rules import NOW
from retention import flow
from retention.engine import RunContext, execute_step
from retention.policy import PolicySet, load_policies
from retention.results import StepResult
from retention.stores import FILE_STORES


def run_child(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run the engine in a fresh interpreter (``--child``) and return what it measured.

    The child's progress lines (stderr) are passed on as they come; its last stdout line is the result.
    """
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
        [sys.executable, "-m", "bench.run", "--child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    tail: deque[str] = deque(maxlen=15)

    def relay(stream: IO[str]) -> None:
        for line in stream:
            tail.append(line.rstrip("\n"))
            if line.startswith("bench: "):
                sys.stderr.write(line)
                sys.stderr.flush()

    relaying = threading.Thread(target=relay, args=(proc.stderr,), daemon=True)
    relaying.start()
    # Not ``communicate``: it would read stderr too, racing the relay for its lines.
    with proc.stdin as stdin:  # type: ignore[union-attr]
        stdin.write(json.dumps(job))
    out = proc.stdout.read()  # type: ignore[union-attr]
    proc.wait()
    relaying.join()
    if proc.returncode != 0:
        raise RuntimeError(f"the engine's child process failed ({job['mode']}):\n" + "\n".join(tail))
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _statement_counter(engine: sa.Engine) -> list[int]:
    counter = [0]

    def count(*_: Any) -> None:
        counter[0] += 1

    sa.event.listen(engine, "before_cursor_execute", count)
    return counter


def _context(
    job: Mapping[str, Any], engine: sa.Engine, policies: PolicySet, s3: Any, sftp: Any
) -> RunContext:
    return engine_context(
        engine,
        policies,
        now=NOW,
        pseudonym_key=PSEUDONYM_KEY,
        s3_client=s3,
        sftp_client=sftp,
        bucket=job["bucket"],
        archive_root=job["archive_root"],
        mode=job["mode"],
        subject=job.get("subject"),
        run=run_id("bench"),
    )


def _requests(ctx: RunContext, store: str) -> int:
    return int(getattr(ctx.adapter(store), "requests", 0))


def _erase_store(ctx: RunContext, store: str) -> dict[str, int]:
    """Every category's step in one store, as the nightly run does it; summed counts (progress on stderr)."""
    totals = dict.fromkeys(("located", "erased", "anonymised", "kept", "remaining"), 0)
    began = time.perf_counter()
    for policy in ctx.policies.policies:
        if store not in policy.stores():
            continue
        started = time.perf_counter()
        result = execute_step(policy, store, ctx)
        seconds = time.perf_counter() - started
        done = result.erased + result.anonymised
        so_far = totals["erased"] + totals["anonymised"] + done
        rate = done / max(seconds, 1e-9)
        say(
            f"  {store}: {policy.id}: {done:,} items in {seconds:.1f} s ({rate:,.0f}/s); "
            f"{so_far:,} in {time.perf_counter() - began:.1f} s so far"
        )
        totals["located"] += result.located
        totals["erased"] += result.erased
        totals["anonymised"] += result.anonymised
        totals["kept"] += result.kept_total
        totals["remaining"] += result.remaining
    return totals


def _due_child(job: Mapping[str, Any], engine: sa.Engine, policies: PolicySet) -> dict[str, Any]:
    (store,) = job["stores"]
    statements = _statement_counter(engine)
    spec = SftpSpec(**job["sftp"])
    s3 = s3_client(job["s3_endpoint"]) if store == "s3" else None
    operations: dict[str, int] = {}
    if s3 is not None:
        # Every API call by operation (botocore's retries not included, as in the adapter's count).
        def count(model: Any, **_: Any) -> None:
            operations[model.name] = operations.get(model.name, 0) + 1

        s3.meta.events.register("before-call.s3", count)
    with ExitStack() as stack:
        started = time.perf_counter()
        # The SSH handshake is timed too: OpenSSH's client, the bound, pays for its own.
        sftp = stack.enter_context(sftp_session(spec)) if store == "sftp" else None
        ctx = _context(job, engine, policies, s3, sftp)
        totals = _erase_store(ctx, store)
        wall = time.perf_counter() - started
    requests = statements[0] if store == "database" else _requests(ctx, store)
    result = {**totals, "wall_s": wall, "requests": requests, "adapter_statements": ctx.database.statements}
    if operations:
        result["requests_by_operation"] = dict(sorted(operations.items()))
    return result


def _subject_child(job: Mapping[str, Any], engine: sa.Engine, policies: PolicySet) -> dict[str, Any]:
    """One customer's erasure by the customer-erasure DAG's rules: file stores, then the database pass."""
    seconds = dict.fromkeys(ENGINE_ORDER, 0.0)
    with sftp_session(SftpSpec(**job["sftp"])) as sftp:
        ctx = _context(job, engine, policies, s3_client(job["s3_endpoint"]), sftp)
        run = flow.describe(ctx)
        # The DAG plans every category first; the plans clear the erasure (not timed, as before).
        cleared = flow.clearances(run, {c: flow.plan(ctx, c) for c in run.categories}, {})
        steps: list[StepResult] = []
        for category in run.categories:
            for store in FILE_STORES:
                started = time.perf_counter()
                result = flow.erase_files(ctx, run, category, store, cleared[category])
                if result is not None:
                    steps.append(result)
                    seconds[store] += time.perf_counter() - started
        started = time.perf_counter()
        database = flow.database_pass(ctx, steps, {}, cleared)
        seconds["database"] = time.perf_counter() - started
    if database.skipped:
        raise RuntimeError(f"categories skipped in the customer erasure: {sorted(database.skipped)}")
    erased = sum(r.erased + r.anonymised for r in [*steps, *database.results])
    return {
        "seconds": seconds["database"] + seconds["sftp"],
        "s3_seconds": seconds["s3"],
        "s3_requests": _requests(ctx, "s3"),
        "erased": erased,
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (VmHWM: since its exec, not its parent's)."""
    # ru_maxrss would do, but Linux carries it over exec from the forking parent (the generator).
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main() -> int:
    """Entry of ``--child``: read a job as JSON on stdin, run it, print the measurements as JSON."""
    job = json.loads(sys.stdin.read())
    engine = sa.create_engine(job["db_url"])
    policies = load_policies(POLICY_DIR)
    profile = job.get("profile")
    profiler = cProfile.Profile() if profile else None
    try:
        if profiler is not None:
            profiler.enable()
        if job["mode"] == "due":
            result = _due_child(job, engine, policies)
        else:
            result = _subject_child(job, engine, policies)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        engine.dispose()
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))
    return 0


def engine_job(svc: Services, built: Built, mode: str, stores: Sequence[str], **extra: Any) -> dict[str, Any]:
    """The JSON job of one engine child over a world."""
    return {
        "mode": mode,
        "stores": list(stores),
        "db_url": built.db_url,
        "s3_endpoint": svc.s3.endpoint_url,
        "bucket": built.bucket,
        "archive_root": built.archive_root,
        "sftp": asdict(svc.sftp.spec),
        **extra,
    }


def run_engine(svc: Services, built: Built) -> dict[str, dict[str, Any]]:
    """The nightly erasure of a world, one child process per store, file stores first."""
    out: dict[str, dict[str, Any]] = {}
    for store in ENGINE_ORDER:
        say(f"engine: {store} ({built.name})")
        out[store] = run_child(engine_job(svc, built, "due", [store]))
        if out[store]["remaining"]:
            raise RuntimeError(f"the engine left {out[store]['remaining']} {store} item(s) behind")
    return out
