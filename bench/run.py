"""The erasure benchmark: the engine per store against a bound and a naive baseline, in one run.

``python -m bench.run [--scale X] [--out PATH]`` starts the harness's real services on loopback
(PostgreSQL with durability on, moto's S3 server, OpenSSH), generates a large reference world
with the harness generator and measures, per store:

- the engine: ``retention.engine.execute_step`` for every category in that store (locate,
  erase, verify, ledger), each store in a child process of its own so that its peak RSS is
  the engine's and not the generator's;
- the bound, on an identical copy of the data: one bare set-based statement per category
  (PostgreSQL), a raw boto3 loop making the minimal number of requests (S3), OpenSSH's own
  ``sftp -b`` with one ``rm`` per file (SFTP);
- the naive baseline, on a sample that is extrapolated (the output says so): row-by-row ORM
  deletes, one DeleteObject call per version, one SFTP connection per file.

Then what users run: ``retention_nightly`` end to end through a real Airflow (scheduler,
LocalExecutor, as the demo starts it) on a copy of the main world, against the engine's own step
times inside it; and the due-constant pair, the nightly DAG on a world storing ten times what
another stores with the same due items. Two scaling rows follow: the engine's peak RSS on a
world of size N and 4 N, and one customer's erasure (subject mode) on a world of size S and
10 S. Only counts, timings and ratios are printed and written, never ids, paths or personal data.

The pieces: ``bench.results`` (sizes, ratios, rows, verdicts, the table: pure functions),
``bench.worlds`` (services, worlds and their copies), ``bench.engine_jobs`` (the engine in a
child process), ``bench.baselines`` (bounds and naive baselines), ``bench.dag_run`` (Airflow
and the DAG runs), ``bench.due_constant`` (the 1x and 10x worlds); this module runs them in
order and is the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack, redirect_stdout
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import DOCUMENTS, ENGINE_ORDER, POLICY_DIR, REPO, say

if str(REPO / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO / "plugins"))

import sqlalchemy as sa  # noqa: E402
from psycopg import sql  # noqa: E402

from bench.baselines import (  # noqa: E402
    database_bound,
    database_naive,
    due_paths,
    openssh_bound,
    s3_naive_sample,
    s3_raw_loop,
    sftp_naive_sample,
)
from bench.dag_run import BenchAirflow  # noqa: E402
from bench.due_constant import (  # noqa: E402
    DagWorld,
    copy_1x,
    copy_10x,
    keys_up_to,
    shrink_1x,
    stored,
    undue_10x,
)
from bench.engine_jobs import child_main, engine_job, run_child, run_engine  # noqa: E402
from bench.results import (  # noqa: E402
    Sizes,
    customer_result,
    database_row,
    due_constant_boundary,
    due_constant_result,
    format_table,
    memory_result,
    ratio,
    s3_row,
    sftp_row,
    shape_problems,
    verdicts,
)
from bench.worlds import Built, Services, build_world, copy_world, pg_connection, start_services  # noqa: E402
from harness.world_schema import metadata as world_schema  # noqa: E402
from harness.world_truth import Profile  # noqa: E402
from retention.policy import PolicySet, load_policies  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "latest.json"

NAIVE_DB_SAMPLE = 20_000
NAIVE_S3_SAMPLE = 1_000
NAIVE_SFTP_SAMPLE = 200


def _customer(built: Built) -> int:
    """An active customer (nothing due) without a hold who has an archived document."""
    active = built.world.customers_with(Profile.ACTIVE, held=False)
    with pg_connection(built.db_url) as conn:
        row = conn.execute(
            "SELECT min(customer_id) FROM documents WHERE archive_path IS NOT NULL AND customer_id = ANY(%s)",
            (active,),
        ).fetchone()
    if row is None or row[0] is None:
        raise RuntimeError(f"world {built.name} has no active customer with an archived document")
    return int(row[0])


CUSTOMER_RUNS = 3
"""One customer's erasure lasts well under a second: the row takes the median of this many runs."""


def customer_erasure(svc: Services, built: Built, runs: int = CUSTOMER_RUNS) -> dict[str, Any]:
    """Erase one customer (subject mode) in every store of a world; time database + SFTP, and S3 beside it.

    Each run acts on its own identical copy of the world's database and archive (the world itself
    is left as it was); ``seconds`` is their median. The bucket has no copies: the first run's S3
    figures are reported (later runs find the customer's objects gone).
    """
    customer = _customer(built)
    items = 1  # the customer's own row
    with pg_connection(built.db_url) as conn:
        for table in world_schema.tables:
            if table != "customers":
                query = sql.SQL("SELECT count(*) FROM {} WHERE customer_id = %s").format(
                    sql.Identifier(table)
                )
                row = conn.execute(query, (customer,)).fetchone()
                items += int(row[0]) if row else 0
    results = []
    for n in range(runs):
        url, root = copy_world(svc, built, f"customer{n}")
        _settle(svc)
        say(f"customer erasure ({built.name}, run {n + 1} of {runs})")
        copy = dataclasses.replace(built, db_url=url, archive_root=root)
        results.append(run_child(engine_job(svc, copy, "subject", list(ENGINE_ORDER), subject=str(customer))))
    seconds = sorted(float(r["seconds"]) for r in results)
    return {**results[0], "seconds": statistics.median(seconds), "runs_seconds": seconds, "items": items}


class Stages:
    """Progress: which stage of how many, and the time since the start."""

    def __init__(self, total: int) -> None:
        self.total, self.n, self.began = total, 0, time.monotonic()

    def __call__(self, name: str) -> None:
        self.n += 1
        say(f"[{self.n}/{self.total}, {time.monotonic() - self.began:.0f} s] {name}")


STAGES = Stages(11)


@dataclasses.dataclass
class DagWorlds:
    """The copies of the main world the DAG runs act on."""

    main: DagWorld
    dc1: DagWorld
    dc10: DagWorld


def _dag_copies(svc: Services, main: Built, boundary: int) -> DagWorlds:
    """Copies of the main world for the DAG runs: the main world's, and the due-constant 1x and 10x ones."""
    url, root = copy_world(svc, main, "dag")
    return DagWorlds(
        DagWorld("main", url, main.mirrors["dag"], root), copy_1x(svc, main, boundary), copy_10x(svc, main)
    )


def _due_constant_worlds(svc: Services, worlds: DagWorlds, boundary: int) -> DagWorlds:
    """Rewrite the due-constant copies into the 1x and 10x worlds; note what each stores."""
    shrink_1x(worlds.dc1, boundary)
    undue_10x(worlds.dc10, boundary)
    policies = load_policies(POLICY_DIR)
    dc1, dc10 = (
        dataclasses.replace(w, stored=stored(svc, w), database_bound=_bound_on_copy(svc, w, policies))
        for w in (worlds.dc1, worlds.dc10)
    )
    say(f"  due-constant worlds store {dc1.stored} (1x) and {dc10.stored} (10x)")
    return DagWorlds(worlds.main, dc1, dc10)


def _bound_on_copy(svc: Services, world: DagWorld, policies: PolicySet) -> dict[str, Any]:
    """The bare statements on a copy of ``world``'s database: how much PostgreSQL's own work grows
    with the stored rows at the same due rows, beside what the engine's database step grows by."""
    source = sa.make_url(world.db_url).database or ""
    copy = f"{source}_bound"
    svc.pg.admin(
        sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(copy), sql.Identifier(source)
        )
    )
    _settle(svc)
    return database_bound(svc.pg.url_for(copy), policies)


def _settle(svc: Services) -> None:
    """Write out what the copies left dirty (PostgreSQL's buffers, the page cache) before measuring."""
    svc.pg.admin(sql.SQL("CHECKPOINT"))
    os.sync()


def measure_stores(
    svc: Services, sizes: Sizes, workdir: Path
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]], DagWorlds]:
    """The main world: customer erasure at 10 S, the engine per store, bounds and naive baselines.

    Also returns the engine's figures per store and the copies the DAG runs act on.
    """
    policies = load_policies(POLICY_DIR)
    documents = policies.get(DOCUMENTS)
    boundary = due_constant_boundary(sizes.customers)
    STAGES(
        f"generating the main world ({sizes}); S3 mirrors: bound, dag, dc10, dc1 (customers 1..{boundary})"
    )
    mirrors = {"bound": None, "dag": None, "dc10": None, "dc1": keys_up_to(boundary)}
    main = build_world(svc, "main", sizes, mirrors=mirrors)
    STAGES("copies of the main world: bounds, naive, DAG, due-constant 1x and 10x")
    bound_url, bound_root = copy_world(svc, main, "bound")
    naive_url, naive_root = copy_world(svc, main, "naive")
    prune_root = f"{main.archive_root}_prune"
    shutil.copytree(main.archive_root, prune_root, symlinks=True)
    dag_worlds = _dag_copies(svc, main, boundary)
    s3_keys = set(due_paths(bound_url, documents, "s3_key"))
    archive = due_paths(bound_url, documents, "archive_path")
    _settle(svc)
    STAGES("the engine on the main world: one customer's erasure, then each store's nightly steps")
    # The customer is active (nothing of theirs is due), so the nightly run below erases the same items.
    at_10s = customer_erasure(svc, main)
    engine = run_engine(svc, main)
    STAGES("bounds")
    client = svc.s3.client()
    bound = {
        "database": database_bound(bound_url, policies),
        "s3": s3_raw_loop(client, main.bound_bucket or "", "documents/", s3_keys),
        "sftp": openssh_bound(svc.sftp.spec, bound_root, archive, workdir),
        "sftp_prune": openssh_bound(svc.sftp.spec, prune_root, archive, workdir, prune=True),
    }
    STAGES("naive baselines (samples)")
    naive = {
        "database": database_naive(naive_url, policies, NAIVE_DB_SAMPLE),
        "s3": s3_naive_sample(client, svc.s3.create_bucket("bench-naive"), NAIVE_S3_SAMPLE // 2, 2),
        "sftp": sftp_naive_sample(svc.sftp.spec, naive_root, archive[:NAIVE_SFTP_SAMPLE]),
    }
    stores = {
        "database": database_row(engine["database"], bound["database"], naive["database"]),
        "s3": s3_row(engine["s3"], bound["s3"], naive["s3"]),
        "sftp": sftp_row(engine["sftp"], bound["sftp"], naive["sftp"], bound["sftp_prune"]),
    }
    stores["s3"]["requests_by_operation"] = engine["s3"].get("requests_by_operation")
    STAGES("the due-constant 1x and 10x worlds (from their copies of the main world)")
    return stores, at_10s, engine, _due_constant_worlds(svc, dag_worlds, boundary)


def measure_dags(
    svc: Services,
    workdir: Path,
    worlds: DagWorlds,
    engine: dict[str, dict[str, Any]],
    *,
    preload: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The nightly DAG through a real Airflow: on the main world's copy, then on the due-constant pair.

    Airflow runs only for this stage (it would disturb the other measurements). A dry run on the
    1x world comes first, so that the measured runs find a warm Airflow, as a nightly run does.
    """
    STAGES("the nightly DAG end to end: starting Airflow (LocalExecutor, SQLite metadata)")
    with ExitStack() as stack, redirect_stdout(sys.stderr):
        airflow = BenchAirflow(svc, workdir, stack, preload=preload)
        imports = airflow.task_import_s()
        warmup = airflow.nightly(worlds.dc1, dry_run=True)
        STAGES("the nightly DAG on the main world")
        dag = airflow.nightly(worlds.main)
        STAGES("due-constant: the nightly DAG at 1x and at 10x stored data, the same due items")
        at_1x, at_10x = (
            {**airflow.nightly(w), "stored": w.stored, "bound": w.database_bound}
            for w in (worlds.dc1, worlds.dc10)
        )
        startup = airflow.startup_s
    engine_rows = sum(float(engine[store]["wall_s"]) for store in ENGINE_ORDER)
    dag.update(
        engine_rows_s=round(engine_rows, 2),
        engine_s_vs_engine_rows=ratio(dag["engine_s"], engine_rows),
        airflow_startup_s=round(startup, 1),
        task_import_s=imports,
        warmup_dry_run_wall_s=warmup["wall_s"],
        preloaded_task_imports=preload,
    )
    return dag, due_constant_result(at_1x, at_10x)


def run_benchmark(
    scale: float, workdir: Path, *, files_scale: float | None = None, preload: bool = False
) -> dict[str, Any]:
    """Build the worlds, measure everything, return the result (the JSON written to ``--out``)."""
    started = time.perf_counter()
    sizes = Sizes().scaled(scale, files=files_scale)
    with ExitStack() as stack:
        svc = start_services(workdir, stack)
        stores, at_10s, engine, dag_worlds = measure_stores(svc, sizes, workdir)
        rss_4n = {store: float(engine[store]["peak_rss_mb"]) for store in ENGINE_ORDER}
        dag, due_constant = measure_dags(svc, workdir, dag_worlds, engine, preload=preload)
        STAGES("memory: the engine on a world a quarter the size (N; the main world is 4 N)")
        quarter = build_world(svc, "quarter", sizes.scaled(0.25))
        engine_n = run_engine(svc, quarter)
        rss_n = {store: float(engine_n[store]["peak_rss_mb"]) for store in ENGINE_ORDER}
        STAGES("customer erasure on a world a tenth the size (S; the main world is 10 S)")
        tenth = build_world(svc, "tenth", sizes.scaled(0.1))
        at_s = customer_erasure(svc, tenth)
    result: dict[str, Any] = {
        "stores": stores,
        "memory": memory_result(rss_n, rss_4n),
        "customer_erasure": customer_result(at_s, at_10s),
        "dag": dag,
        "due_constant": due_constant,
        "meta": {
            "scale": scale,
            "files_scale": scale if files_scale is None else files_scale,
            "sizes": asdict(sizes),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.perf_counter() - started, 1),
            "cpus": os.cpu_count(),
            "naive_samples": {
                "database": f"{NAIVE_DB_SAMPLE:,} correspondence rows deleted row by row, extrapolated",
                "s3": f"{NAIVE_S3_SAMPLE:,} DeleteObject calls on a sample bucket, extrapolated; "
                "listing time taken from the raw loop",
                "sftp": f"{NAIVE_SFTP_SAMPLE:,} files, one connection each, extrapolated",
            },
        },
    }
    result["verdicts"] = verdicts(result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark, print the table, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every world size (default 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON result (default {DEFAULT_OUT})")
    parser.add_argument(
        "--files-scale",
        type=float,
        default=None,
        help="scale the documents (S3 versions, archive files) by this instead of --scale "
        "(moto lists a bucket in time proportional to its size: --scale 5 --files-scale 1)",
    )
    parser.add_argument(
        "--airflow-preload",
        action="store_true",
        help="experiment: the DAG stage's scheduler imports what tasks import before forking its workers",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main()
    if args.scale <= 0 or (args.files_scale is not None and args.files_scale <= 0):
        parser.error("--scale and --files-scale must be positive")
    # Stopped with `kill`, unwind as for Ctrl-C: the services and the work directory go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="alleskar-bench-"))
    try:
        result = run_benchmark(
            args.scale, workdir, files_scale=args.files_scale, preload=args.airflow_preload
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    problems = shape_problems(result)
    if problems:
        raise RuntimeError(f"the result is incomplete: {problems}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
