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

Two scaling rows follow: the engine's peak RSS on a world of size N and 4 N, and one
customer's erasure (subject mode) on a world of size S and 10 S. Only counts, timings and
ratios are printed and written, never ids, paths or personal data.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import resource
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO / "plugins"))

import boto3  # noqa: E402
import paramiko  # noqa: E402
import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from psycopg import sql  # noqa: E402
from sqlalchemy import orm  # noqa: E402

from harness.services import (  # noqa: E402
    LOOPBACK,
    S3_KEY,
    S3_REGION,
    PostgresServer,
    S3Server,
    SftpServer,
    start_postgres,
    start_s3,
    start_sftp,
)
from harness.world import NOW, Profile, World, WorldSize, generate  # noqa: E402
from harness.world import metadata as world_schema  # noqa: E402
from retention.adapters.database import DatabaseAdapter  # noqa: E402
from retention.adapters.s3 import S3Adapter  # noqa: E402
from retention.adapters.sftp import SftpAdapter  # noqa: E402
from retention.clock import Cutoff, cutoff_for  # noqa: E402
from retention.engine import RunContext, database_pass, execute_step  # noqa: E402
from retention.holds import HoldRegistry  # noqa: E402
from retention.ledger import Ledger  # noqa: E402
from retention.policy import DatabaseLocation, Policy, PolicySet, load_policies  # noqa: E402

POLICY_DIR = REPO / "include" / "retention_policies"
DEFAULT_OUT = REPO / "bench" / "results" / "latest.json"
PSEUDONYM_KEY = b"bench-pseudonym-key-0123456789abcdef"
POLICY_BUCKET = "alleskar-documents"
DOCUMENTS = "translation_documents"
S3_PAGE = 1000
"""Versions per ListObjectVersions page and per DeleteObjects request (the S3 maximum)."""
STORES = ("database", "s3", "sftp")
ENGINE_ORDER = ("s3", "sftp", "database")
"""File stores first: the database rows name the files (as the DAGs run them)."""

NAIVE_DB_SAMPLE = 20_000
NAIVE_S3_SAMPLE = 1_000
NAIVE_SFTP_SAMPLE = 200

TARGETS: dict[str, float] = {
    "database_vs_bound": 1.5,
    "s3_requests_vs_min": 1.1,
    "s3_wall_vs_raw_loop": 1.3,
    "sftp_vs_openssh": 1.2,
    "rss_4n_vs_n": 1.2,
    "customer_10s_vs_s": 1.5,
}
"""Upper bounds on each ratio (ratios, not seconds: these machines are noisy)."""

STORE_FIELDS = ("due_items", "wall_s", "requests", "peak_rss_mb", "ratio_vs_bound", "ratio_vs_naive")


# --------------------------------------------------------------------------- pure helpers


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference`` to three decimals; None if either is missing or the reference is not positive."""
    if value is None or reference is None or reference <= 0:
        return None
    return round(value / reference, 3)


def list_pages(versions: int, page: int = S3_PAGE) -> int:
    """ListObjectVersions requests to list ``versions`` entries (an empty listing still costs one)."""
    return max(1, math.ceil(versions / page))


def s3_min_requests(listed: int, deleted: int, remaining: int, page: int = S3_PAGE) -> int:
    """The fewest S3 requests to locate, erase and verify: list pages, DeleteObjects, verify pages."""
    return list_pages(listed, page) + math.ceil(deleted / page) + list_pages(remaining, page)


def extrapolate(sample_seconds: float, sample_items: int, total_items: int) -> float:
    """Seconds for ``total_items`` at the rate measured on a sample."""
    if sample_items <= 0:
        raise ValueError("a sample needs at least one item")
    return sample_seconds / sample_items * total_items


@dataclass(frozen=True)
class Sizes:
    """How big a world the benchmark builds (the defaults are ``--scale 1``)."""

    correspondence: int = 2_000_000
    documents: int = 10_000
    versions: int = 2
    archive_files: int = 5_000
    customers: int = 20_000

    def scaled(self, factor: float) -> Sizes:
        """Every count times ``factor`` (rows per customer stay the same); small floors keep a world valid."""
        if factor <= 0:
            raise ValueError("the scale must be positive")

        def n(value: int, least: int) -> int:
            return max(least, round(value * factor))

        documents = n(self.documents, 20)
        return Sizes(
            correspondence=n(self.correspondence, 100),
            documents=documents,
            versions=self.versions,
            archive_files=min(documents, n(self.archive_files, 10)),
            customers=n(self.customers, 40),
        )

    def world(self) -> WorldSize:
        """The generator's size for this world."""
        return WorldSize.benchmark(
            correspondence=self.correspondence,
            documents=self.documents,
            versions=self.versions,
            archive_files=self.archive_files,
            customers=self.customers,
        )


def store_result(
    *,
    due_items: int,
    wall_s: float,
    requests: int,
    peak_rss_mb: float,
    bound_wall_s: float,
    naive_wall_s: float,
    **extra: Any,
) -> dict[str, Any]:
    """One store's row: the engine's figures and its ratios to the bound and the naive baseline."""
    return {
        "due_items": due_items,
        "wall_s": round(wall_s, 3),
        "items_per_s": round(due_items / wall_s) if wall_s > 0 else None,
        "requests": requests,
        "peak_rss_mb": round(peak_rss_mb, 1),
        "ratio_vs_bound": ratio(wall_s, bound_wall_s),
        "ratio_vs_naive": ratio(wall_s, naive_wall_s),
        "bound_wall_s": round(bound_wall_s, 3),
        "naive_wall_s": round(naive_wall_s, 3),
        **extra,
    }


def memory_result(rss_n: Mapping[str, float], rss_4n: Mapping[str, float]) -> dict[str, Any]:
    """Peak RSS of the engine (the largest of its per-store processes) at N and at 4 N."""
    peak_n, peak_4n = max(rss_n.values()), max(rss_4n.values())
    return {
        "peak_rss_mb_n": round(peak_n, 1),
        "peak_rss_mb_4n": round(peak_4n, 1),
        "ratio_4n_vs_n": ratio(peak_4n, peak_n),
        "per_store_mb_n": {k: round(v, 1) for k, v in rss_n.items()},
        "per_store_mb_4n": {k: round(v, 1) for k, v in rss_4n.items()},
    }


def customer_result(at_s: Mapping[str, Any], at_10s: Mapping[str, Any]) -> dict[str, Any]:
    """One customer's erasure at store size S and 10 S: database and SFTP time, S3 reported beside it."""
    return {
        "seconds_s": round(at_s["seconds"], 3),
        "seconds_10s": round(at_10s["seconds"], 3),
        "ratio_10s_vs_s": ratio(at_10s["seconds"], at_s["seconds"]),
        "items_s": at_s["items"],
        "items_10s": at_10s["items"],
        "s3_seconds_s": round(at_s["s3_seconds"], 3),
        "s3_seconds_10s": round(at_10s["s3_seconds"], 3),
        "s3_requests_s": at_s["s3_requests"],
        "s3_requests_10s": at_10s["s3_requests"],
    }


def verdicts(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured ratio and whether it is met (None when not measured)."""
    stores, memory, customer = result["stores"], result["memory"], result["customer_erasure"]
    measured = {
        "database_vs_bound": stores["database"]["ratio_vs_bound"],
        "s3_requests_vs_min": stores["s3"]["requests_ratio_vs_min"],
        "s3_wall_vs_raw_loop": stores["s3"]["ratio_vs_bound"],
        "sftp_vs_openssh": stores["sftp"]["ratio_vs_bound"],
        "rss_4n_vs_n": memory["ratio_4n_vs_n"],
        "customer_10s_vs_s": customer["ratio_10s_vs_s"],
    }
    return [
        {"target": name, "ratio": value, "max": limit, "met": None if value is None else value <= limit}
        for name, (value, limit) in ((n, (measured[n], TARGETS[n])) for n in TARGETS)
    ]


def shape_problems(result: Mapping[str, Any]) -> list[str]:
    """What the result JSON lacks of its documented shape (empty when it is complete)."""
    problems: list[str] = []
    stores = result.get("stores")
    if not isinstance(stores, Mapping):
        return ["stores is missing"]
    for store in STORES:
        row = stores.get(store)
        if not isinstance(row, Mapping):
            problems.append(f"stores.{store} is missing")
            continue
        wanted = (*STORE_FIELDS, "requests_ratio_vs_min") if store == "s3" else STORE_FIELDS
        problems += [f"stores.{store}.{k} is missing" for k in wanted if k not in row]
    sections = {
        "memory": ("peak_rss_mb_n", "peak_rss_mb_4n", "ratio_4n_vs_n"),
        "customer_erasure": ("seconds_s", "seconds_10s", "ratio_10s_vs_s"),
    }
    for section, keys in sections.items():
        part = result.get(section)
        if not isinstance(part, Mapping):
            problems.append(f"{section} is missing")
            continue
        problems += [f"{section}.{k} is missing" for k in keys if k not in part]
    return problems


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(result: Mapping[str, Any]) -> str:
    """The result as a Markdown table, then the scaling rows and each target's verdict."""
    header = (
        "| store | due items | wall s | items/s | requests or statements | peak RSS MB "
        "| ratio vs bound | ratio vs naive |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for store in STORES:
        row = result["stores"][store]
        cells = [row.get(k) for k in ("due_items", "wall_s", "items_per_s", "requests", "peak_rss_mb")]
        cells += [row.get("ratio_vs_bound"), row.get("ratio_vs_naive")]
        lines.append("| " + " | ".join([store, *(_cell(c) for c in cells)]) + " |")
    memory, customer = result["memory"], result["customer_erasure"]
    lines.append("")
    lines.append(
        f"peak RSS: {_cell(memory['peak_rss_mb_n'])} MB at N, {_cell(memory['peak_rss_mb_4n'])} MB at 4N "
        f"(ratio {_cell(memory['ratio_4n_vs_n'])})"
    )
    lines.append(
        f"one customer's erasure (database + SFTP): {_cell(customer['seconds_s'])} s at S, "
        f"{_cell(customer['seconds_10s'])} s at 10 S (ratio {_cell(customer['ratio_10s_vs_s'])})"
    )
    lines.append("")
    for v in result.get("verdicts", verdicts(result)):
        state = {True: "met", False: "MISSED", None: "not measured"}[v["met"]]
        lines.append(f"{v['target']}: {_cell(v['ratio'])} (target <= {v['max']}) {state}")
    return "\n".join(lines)


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- services and worlds


@dataclass(frozen=True)
class SftpSpec:
    """How to reach the SFTP server with its host key pinned (picklable, for child processes)."""

    host: str
    port: int
    user: str
    key_file: str
    host_key_line: str


@contextmanager
def sftp_session(spec: SftpSpec) -> Iterator[paramiko.SFTPClient]:
    """A paramiko SFTP session that accepts only the server's known host key."""
    ssh = paramiko.SSHClient()
    kind, blob = spec.host_key_line.split()[:2]
    key = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
    ssh.get_host_keys().add(f"[{spec.host}]:{spec.port}", kind, key)
    ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        ssh.connect(
            spec.host,
            port=spec.port,
            username=spec.user,
            key_filename=spec.key_file,
            look_for_keys=False,
            allow_agent=False,
        )
        yield ssh.open_sftp()
    finally:
        ssh.close()


def s3_client(endpoint: str) -> Any:
    """A plain boto3 client for the bench's S3 server."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_KEY,
        region_name=S3_REGION,
    )


class _Mirrored:
    """A boto3 client for the generator that writes every object to a second bucket as well."""

    def __init__(self, client: Any, bucket: str, mirror: str) -> None:
        self._client = client
        self._bucket = bucket
        self._mirror = mirror

    def put_object(self, **params: Any) -> Any:
        response = self._client.put_object(**params)
        if params.get("Bucket") == self._bucket:
            self._client.put_object(**{**params, "Bucket": self._mirror})
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclass
class Services:
    """The three real servers the benchmark runs against."""

    pg: PostgresServer
    s3: S3Server
    sftp: SftpServer

    @property
    def sftp_spec(self) -> SftpSpec:
        return SftpSpec(
            LOOPBACK, self.sftp.port, self.sftp.login, str(self.sftp.client_key_path), self.sftp.host_key_line
        )

    def admin(self, statement: sql.Composable) -> None:
        conninfo = f"host={LOOPBACK} port={self.pg.port} user=postgres dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(statement)


@dataclass(frozen=True)
class Built:
    """One generated world: its database, bucket and archive directory (and the bound's copies)."""

    name: str
    db_url: str
    bucket: str
    archive_root: str
    world: World
    bound_bucket: str | None = None


def build_world(svc: Services, name: str, sizes: Sizes, *, mirror: bool = False) -> Built:
    """Generate a world into a new database, bucket and archive directory (``mirror``: a second bucket)."""
    url = svc.pg.create_database(f"world_{name}")
    bucket = svc.s3.create_bucket(f"bench-{name}")
    bound_bucket = svc.s3.create_bucket(f"bench-{name}-bound") if mirror else None
    root = svc.sftp.archive_root / name
    root.mkdir()
    client = s3_client(svc.s3.endpoint_url)
    writer = _Mirrored(client, bucket, bound_bucket) if bound_bucket else client
    engine = sa.create_engine(url)
    try:
        with sftp_session(svc.sftp_spec) as sftp:
            world = generate(
                engine,
                s3_client=writer,
                bucket=bucket,
                sftp_client=sftp,
                archive_root=str(root),
                size=sizes.world(),
                keep_truth=False,
            )
        Ledger(engine).ensure_schema()
    finally:
        engine.dispose()
    return Built(name, url, bucket, str(root), world, bound_bucket)


def copy_world(svc: Services, built: Built, suffix: str) -> tuple[str, str]:
    """An identical copy of a world's database and archive directory; returns (database URL, archive root)."""
    source, target = f"world_{built.name}", f"world_{built.name}_{suffix}"
    svc.admin(
        sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(target), sql.Identifier(source)
        )
    )
    root = f"{built.archive_root}_{suffix}"
    shutil.copytree(built.archive_root, root, symlinks=True)
    return svc.pg.url_for(target), root


# --------------------------------------------------------------------------- the engine, in a child process


def run_child(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run the engine in a fresh interpreter (``--child``) and return what it measured."""
    proc = subprocess.run(  # noqa: S603 - our own interpreter and module, no shell
        [sys.executable, "-m", "bench.run", "--child"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        raise RuntimeError(f"the engine's child process failed ({job['mode']}):\n{tail}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _run_id() -> str:
    # letters only: the ledger refuses long digit runs (they look like phone numbers)
    return "bench_" + "".join(random.choices(string.ascii_lowercase, k=12))  # noqa: S311 - not a secret


def _statement_counter(engine: sa.Engine) -> list[int]:
    counter = [0]

    def count(*_: Any) -> None:
        counter[0] += 1

    sa.event.listen(engine, "before_cursor_execute", count)
    return counter


def _context(
    job: Mapping[str, Any], engine: sa.Engine, policies: PolicySet, s3: Any, sftp: Any
) -> RunContext:
    return RunContext(
        run_id=_run_id(),
        now=NOW,
        policies=policies,
        database=DatabaseAdapter(engine),
        pseudonym_key=PSEUDONYM_KEY,
        ledger=Ledger(engine),
        holds=HoldRegistry(engine).current,
        s3=S3Adapter(s3) if s3 is not None else None,
        sftp=SftpAdapter(sftp) if sftp is not None else None,
        bucket_map={POLICY_BUCKET: job["bucket"]},
        archive_root=job["archive_root"],
        mode=job["mode"],
        subject=job.get("subject"),
    )


def _erase_store(ctx: RunContext, store: str) -> dict[str, int]:
    """Every category's step in one store, as the nightly run does it; summed counts."""
    totals = dict.fromkeys(("located", "erased", "anonymised", "kept", "remaining"), 0)
    for policy in ctx.policies.policies:
        if store not in policy.stores():
            continue
        summary = execute_step(policy, store, ctx)
        totals["located"] += summary.located
        totals["erased"] += summary.erased
        totals["anonymised"] += summary.anonymised
        totals["kept"] += sum(summary.kept.values())
        totals["remaining"] += summary.remaining
    return totals


def _due_child(job: Mapping[str, Any], engine: sa.Engine, policies: PolicySet) -> dict[str, Any]:
    (store,) = job["stores"]
    statements = _statement_counter(engine)
    spec = SftpSpec(**job["sftp"])
    s3 = s3_client(job["s3_endpoint"]) if store == "s3" else None
    with ExitStack() as stack:
        started = time.perf_counter()
        # The SSH handshake is timed too: OpenSSH's client, the bound, pays for its own.
        sftp = stack.enter_context(sftp_session(spec)) if store == "sftp" else None
        ctx = _context(job, engine, policies, s3, sftp)
        totals = _erase_store(ctx, store)
        wall = time.perf_counter() - started
    requests = {
        "database": statements[0],
        "s3": ctx.s3.requests if ctx.s3 else 0,
        "sftp": ctx.sftp.requests if ctx.sftp else 0,
    }[store]
    return {**totals, "wall_s": wall, "requests": requests, "adapter_statements": ctx.database.statements}


def _subject_child(job: Mapping[str, Any], engine: sa.Engine, policies: PolicySet) -> dict[str, Any]:
    """One customer's erasure as the customer-erasure DAG runs it: file stores, then the database pass."""
    seconds = dict.fromkeys(ENGINE_ORDER, 0.0)
    erased = 0
    with sftp_session(SftpSpec(**job["sftp"])) as sftp:
        ctx = _context(job, engine, policies, s3_client(job["s3_endpoint"]), sftp)
        steps: list[dict[str, Any]] = []
        for policy in policies.policies:
            for store in policy.stores():
                if store == "database":
                    continue
                started = time.perf_counter()
                steps.append(execute_step(policy, store, ctx).to_dict())
                seconds[store] += time.perf_counter() - started
        started = time.perf_counter()
        results, skipped = database_pass(ctx, steps, {})
        seconds["database"] = time.perf_counter() - started
    if skipped:
        raise RuntimeError(f"categories skipped in the customer erasure: {sorted(skipped)}")
    for step in [*steps, *results]:
        erased += int(step["erased"]) + int(step["anonymised"])
    return {
        "seconds": seconds["database"] + seconds["sftp"],
        "s3_seconds": seconds["s3"],
        "s3_requests": ctx.s3.requests if ctx.s3 else 0,
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
    try:
        if job["mode"] == "due":
            result = _due_child(job, engine, policies)
        else:
            result = _subject_child(job, engine, policies)
    finally:
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
        "sftp": asdict(svc.sftp_spec),
        **extra,
    }


def run_engine(svc: Services, built: Built) -> dict[str, dict[str, Any]]:
    """The nightly erasure of a world, one child process per store, file stores first."""
    out: dict[str, dict[str, Any]] = {}
    for store in ENGINE_ORDER:
        _say(f"engine: {store} ({built.name})")
        out[store] = run_child(engine_job(svc, built, "due", [store]))
        if out[store]["remaining"]:
            raise RuntimeError(f"the engine left {out[store]['remaining']} {store} item(s) behind")
    return out


# --------------------------------------------------------------------------- what is due (for bounds)


def _held(engine: sa.Engine, category: str) -> list[int]:
    holds = HoldRegistry(engine).current(category, NOW)
    return sorted(int(s) for s in holds.subjects if s.isdigit())


def _due_clause(policy: Policy) -> tuple[sql.Composable, dict[str, Any]]:
    """``anchor < cutoff AND subject not held`` for a policy's records table, as the engine selects them."""
    cutoff: Cutoff = cutoff_for(policy.retention, NOW)
    table = world_schema.tables[policy.records.table]
    anchor = table.c[policy.retention.anchor]
    is_date = anchor.type.python_type is not datetime
    op = "<" if is_date or not cutoff.inclusive else "<="
    bound: Any = cutoff.date_bound if is_date else cutoff.instant
    clause = sql.SQL("{} " + op + " %(cutoff)s AND {} <> ALL(%(held)s::bigint[])").format(
        sql.Identifier(anchor.name), sql.Identifier(policy.records.subject)
    )
    return clause, {"cutoff": bound}


def due_paths(db_url: str, policy: Policy, column: str) -> list[str]:
    """The file keys or paths (``column`` of the records) of a category's due, not held records."""
    engine = sa.create_engine(db_url)
    try:
        held = _held(engine, policy.id)
    finally:
        engine.dispose()
    clause, params = _due_clause(policy)
    query = sql.SQL("SELECT {} FROM {} WHERE {} IS NOT NULL AND ").format(
        sql.Identifier(column), sql.Identifier(policy.records.table), sql.Identifier(column)
    )
    with _pg(db_url) as conn:
        rows = conn.execute(query + clause, {**params, "held": held}).fetchall()
    return [str(r[0]) for r in rows]


@contextmanager
def _pg(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    url = sa.make_url(db_url)
    conninfo = f"host={url.host} port={url.port} user={url.username} dbname={url.database}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        yield conn


# --------------------------------------------------------------------------- PostgreSQL: bound and naive


def _set_clause(policy: Policy, loc: DatabaseLocation) -> tuple[sql.Composable, dict[str, Any]]:
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {"key": PSEUDONYM_KEY}
    for i, (name, rule) in enumerate(loc.fields.items()):
        col = sql.Identifier(name)
        if rule.strategy == "null":
            parts.append(sql.SQL("{} = NULL").format(col))
        elif rule.strategy == "pseudonym":
            # The same keyed pseudonym as retention.pseudonym, computed by pgcrypto in the server.
            params[f"ns{i}"] = f"{loc.table}.{name}"
            parts.append(
                sql.SQL(
                    "{} = 'psn:' || left(encode(hmac(convert_to({}, 'UTF8') || '\\x00'::bytea "
                    "|| convert_to({}, 'UTF8'), %(key)s, 'sha256'), 'hex'), 32)"
                ).format(col, sql.Placeholder(f"ns{i}"), col)
            )
        else:
            params[f"v{i}"] = "[slettet]" if rule.strategy == "redact" else rule.value
            parts.append(sql.SQL("{} = {}").format(col, sql.Placeholder(f"v{i}")))
    return sql.SQL(", ").join(parts), params


def database_bound(db_url: str, policies: PolicySet) -> dict[str, Any]:
    """One bare set-based DELETE or UPDATE per category and table, on the rows the engine erases."""
    engine = sa.create_engine(db_url)
    try:
        held = {p.id: _held(engine, p.id) for p in policies.policies}
    finally:
        engine.dispose()
    wall = verify = 0.0
    statements = rows = 0
    with _pg(db_url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        for policy in policies.policies:
            for loc in policy.locations:
                if not isinstance(loc, DatabaseLocation):
                    continue
                if loc.table != policy.records.table:
                    raise RuntimeError(f"{policy.id}: the bound knows only locations on the records table")
                clause, params = _due_clause(policy)
                table = sql.Identifier(loc.table)
                if loc.action == "delete":
                    statement = sql.SQL("DELETE FROM {} WHERE ").format(table) + clause
                else:
                    sets, extra = _set_clause(policy, loc)
                    statement = sql.SQL("UPDATE {} SET {} WHERE ").format(table, sets) + clause
                    params.update(extra)
                started = time.perf_counter()
                cursor = conn.execute(statement, {**params, "held": held[policy.id]})
                wall += time.perf_counter() - started
                statements += 1
                rows += cursor.rowcount
                # Looking again, as the engine's verification does; timed apart from the bound.
                look = sql.SQL("SELECT count(*) FROM {} WHERE ").format(table) + clause
                if loc.action == "anonymise":
                    look = look + sql.SQL(" AND {} IS NOT NULL").format(sql.Identifier(_changed(loc)))
                started = time.perf_counter()
                conn.execute(look, {**params, "held": held[policy.id]}).fetchone()
                verify += time.perf_counter() - started
    return {"wall_s": wall, "statements": statements, "rows": rows, "verify_wall_s": verify}


def _changed(loc: DatabaseLocation) -> str:
    """A field the anonymisation sets to NULL, or else the first one (its count is what is timed)."""
    return next((n for n, r in loc.fields.items() if r.strategy == "null"), next(iter(loc.fields)))


def database_naive(db_url: str, policies: PolicySet, sample: int) -> dict[str, Any]:
    """Row-by-row ORM deletes (load, ``session.delete``, flush each) of a sample of due correspondence."""
    policy = policies.get("correspondence")
    table = world_schema.tables[policy.records.table]
    cutoff = cutoff_for(policy.retention, NOW)
    row_class = type("NaiveRow", (), {})
    orm.registry().map_imperatively(row_class, table)
    engine = sa.create_engine(db_url)
    try:
        held = _held(engine, policy.id)
        anchor = getattr(row_class, policy.retention.anchor)
        subject = getattr(row_class, policy.records.subject)
        due = anchor <= cutoff.instant if cutoff.inclusive else anchor < cutoff.instant
        query = sa.select(row_class).where(due, subject.not_in(held)).limit(sample)
        with orm.Session(engine) as session:
            started = time.perf_counter()
            objects = session.scalars(query).all()
            for obj in objects:
                session.delete(obj)
                session.flush()
            session.commit()
            wall = time.perf_counter() - started
    finally:
        engine.dispose()
    return {"sample": len(objects), "sample_wall_s": wall}


# --------------------------------------------------------------------------- S3: raw loop and naive


def _entries(page: Mapping[str, Any]) -> list[dict[str, str]]:
    found = [*(page.get("Versions") or ()), *(page.get("DeleteMarkers") or ())]
    return [{"Key": e["Key"], "VersionId": e["VersionId"]} for e in found]


def _list_due(
    client: Any, bucket: str, prefix: str, due: set[str]
) -> Iterator[tuple[list[dict[str, str]], bool]]:
    """Pages of (due versions, whether more pages follow), following the server's markers."""
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": S3_PAGE}
    while True:
        page = client.list_object_versions(**params)
        more = bool(page.get("IsTruncated"))
        yield [e for e in _entries(page) if e["Key"] in due], more
        if not more:
            return
        params.update(KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"])


def s3_raw_loop(client: Any, bucket: str, prefix: str, due: set[str]) -> dict[str, Any]:
    """The bound: list the prefix, DeleteObjects per 1,000 due versions, list again to verify."""
    counts = {"list": 0, "delete": 0, "verify": 0, "deleted": 0, "remaining": 0}
    pending: list[dict[str, str]] = []
    previous: list[dict[str, str]] = []

    def delete(chunk: list[dict[str, str]]) -> None:
        client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
        counts["delete"] += 1
        counts["deleted"] += len(chunk)

    started = time.perf_counter()
    for versions, _more in _list_due(client, bucket, prefix, due):
        counts["list"] += 1
        # A page's last version is the marker of the next request: delete a page only after the next arrived.
        pending += previous
        previous = versions
        while len(pending) >= S3_PAGE:
            delete(pending[:S3_PAGE])
            pending = pending[S3_PAGE:]
    pending += previous
    for start in range(0, len(pending), S3_PAGE):
        delete(pending[start : start + S3_PAGE])
    erased_at = time.perf_counter()
    for versions, _more in _list_due(client, bucket, prefix, due):
        counts["verify"] += 1
        counts["remaining"] += len(versions)
    done = time.perf_counter()
    return {
        **counts,
        "requests": counts["list"] + counts["delete"] + counts["verify"],
        "wall_s": done - started,
        "list_and_verify_s": done - started - _delete_share(counts, erased_at - started),
    }


def _delete_share(counts: Mapping[str, int], erase_seconds: float) -> float:
    # The erase phase interleaves listing and deleting; its listing share is estimated per request.
    requests = counts["list"] + counts["delete"]
    return erase_seconds * counts["delete"] / requests if requests else 0.0


def s3_naive_sample(client: Any, bucket: str, objects: int, versions: int) -> dict[str, Any]:
    """One DeleteObject call per version, timed on a sample bucket of ``objects`` x ``versions``."""
    for i in range(objects):
        for v in range(versions):
            client.put_object(Bucket=bucket, Key=f"documents/sample/{i}.txt", Body=f"v{v}".encode())
    found: list[dict[str, str]] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix="documents/"):
        found += _entries(page)
    started = time.perf_counter()
    for entry in found:
        client.delete_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])
    wall = time.perf_counter() - started
    return {"sample": len(found), "sample_wall_s": wall}


# --------------------------------------------------------------------------- SFTP: OpenSSH and naive


def openssh_bound(
    spec: SftpSpec, root: str, paths: Sequence[str], workdir: Path, *, prune: bool = False
) -> dict[str, Any]:
    """OpenSSH's ``sftp -b`` removing the same files, one ``rm`` a file, host key pinned.

    With ``prune`` it also removes the directories left empty, as the engine does (an ``rmdir``
    per parent directory, deepest first, a failure ignored: the directory still holds files).
    """
    sftp = shutil.which("sftp")
    if sftp is None:
        raise RuntimeError("OpenSSH's sftp client is not installed")
    lines = [f'rm "{root}/{p}"\n' for p in paths]
    if prune:
        parents = {"/".join(p.split("/")[:n]) for p in paths for n in range(1, p.count("/") + 1)}
        lines += [f'-rmdir "{root}/{d}"\n' for d in sorted(parents, key=lambda d: (-d.count("/"), d))]
    batch = workdir / "sftp-bound.batch"
    batch.write_text("".join(lines))
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[{spec.host}]:{spec.port} {spec.host_key_line}\n")
    argv = [sftp, "-b", str(batch), "-i", spec.key_file, "-P", str(spec.port)]
    argv += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    argv += ["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{spec.user}@{spec.host}"]
    started = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)  # noqa: S603
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"sftp -b exited with code {proc.returncode}")
    left = sum(1 for p in paths if os.path.lexists(f"{root}/{p}"))
    if left:
        raise RuntimeError(f"sftp -b left {left} file(s)")
    return {"wall_s": wall, "files": len(paths), "commands": len(lines)}


def sftp_naive_sample(spec: SftpSpec, root: str, paths: Sequence[str]) -> dict[str, Any]:
    """One SFTP connection (handshake, authentication, remove, close) per file, on a sample."""
    started = time.perf_counter()
    for p in paths:
        with sftp_session(spec) as sftp:
            sftp.remove(f"{root}/{p}")
    return {"sample": len(paths), "sample_wall_s": time.perf_counter() - started}


# --------------------------------------------------------------------------- one customer's erasure


def _customer(built: Built) -> int:
    """An active customer (nothing due) without a hold who has an archived document."""
    active = built.world.customers_with(Profile.ACTIVE, held=False)
    with _pg(built.db_url) as conn:
        row = conn.execute(
            "SELECT min(customer_id) FROM documents WHERE archive_path IS NOT NULL AND customer_id = ANY(%s)",
            (active,),
        ).fetchone()
    if row is None or row[0] is None:
        raise RuntimeError(f"world {built.name} has no active customer with an archived document")
    return int(row[0])


def customer_erasure(svc: Services, built: Built) -> dict[str, Any]:
    """Erase one customer (subject mode) in every store of a world; time database + SFTP, and S3 beside it."""
    customer = _customer(built)
    items = 1  # the customer's own row
    with _pg(built.db_url) as conn:
        for table in world_schema.tables:
            if table != "customers":
                query = sql.SQL("SELECT count(*) FROM {} WHERE customer_id = %s").format(
                    sql.Identifier(table)
                )
                row = conn.execute(query, (customer,)).fetchone()
                items += int(row[0]) if row else 0
    _say(f"customer erasure ({built.name})")
    result = run_child(engine_job(svc, built, "subject", list(ENGINE_ORDER), subject=str(customer)))
    return {**result, "items": items}


# --------------------------------------------------------------------------- the whole run


def _database_row(
    engine: Mapping[str, Any], bound: Mapping[str, Any], naive: Mapping[str, Any]
) -> dict[str, Any]:
    items = engine["erased"] + engine["anonymised"]
    return store_result(
        due_items=items,
        wall_s=engine["wall_s"],
        requests=engine["requests"],
        peak_rss_mb=engine["peak_rss_mb"],
        bound_wall_s=bound["wall_s"],
        naive_wall_s=extrapolate(naive["sample_wall_s"], naive["sample"], items),
        kept=engine["kept"],
        bound_statements=bound["statements"],
        bound_rows=bound["rows"],
        bound_with_verify_wall_s=round(bound["wall_s"] + bound["verify_wall_s"], 3),
        ratio_vs_bound_with_verify=ratio(engine["wall_s"], bound["wall_s"] + bound["verify_wall_s"]),
        naive_sample=naive["sample"],
        naive_extrapolated=True,
    )


def _s3_row(engine: Mapping[str, Any], bound: Mapping[str, Any], naive: Mapping[str, Any]) -> dict[str, Any]:
    minimum = bound["requests"]
    naive_wall = bound["list_and_verify_s"] + extrapolate(
        naive["sample_wall_s"], naive["sample"], engine["erased"]
    )
    return store_result(
        due_items=engine["erased"],
        wall_s=engine["wall_s"],
        requests=engine["requests"],
        peak_rss_mb=engine["peak_rss_mb"],
        bound_wall_s=bound["wall_s"],
        naive_wall_s=naive_wall,
        requests_min=minimum,
        requests_ratio_vs_min=ratio(engine["requests"], minimum),
        located=engine["located"],
        kept=engine["kept"],
        bound_pages={"list": bound["list"], "delete": bound["delete"], "verify": bound["verify"]},
        naive_sample=naive["sample"],
        naive_extrapolated=True,
    )


def _sftp_row(
    engine: Mapping[str, Any], bound: Mapping[str, Any], naive: Mapping[str, Any], pruned: Mapping[str, Any]
) -> dict[str, Any]:
    return store_result(
        due_items=engine["erased"],
        wall_s=engine["wall_s"],
        requests=engine["requests"],
        peak_rss_mb=engine["peak_rss_mb"],
        bound_wall_s=bound["wall_s"],
        naive_wall_s=extrapolate(naive["sample_wall_s"], naive["sample"], engine["erased"]),
        kept=engine["kept"],
        bound_requests_at_least=2 * bound["files"],
        bound_with_prune_wall_s=round(pruned["wall_s"], 3),
        ratio_vs_bound_with_prune=ratio(engine["wall_s"], pruned["wall_s"]),
        naive_sample=naive["sample"],
        naive_extrapolated=True,
    )


def start_services(workdir: Path, stack: ExitStack) -> Services:
    """PostgreSQL (durable: ``fast=False``), moto S3 and OpenSSH on loopback, stopped with ``stack``."""
    pg = stack.enter_context(start_postgres(workdir, fast=False))
    s3 = stack.enter_context(start_s3(workdir))
    sftp = stack.enter_context(start_sftp(workdir))
    return Services(pg, s3, sftp)


def measure_stores(
    svc: Services, sizes: Sizes, workdir: Path
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """The main world: customer erasure at 10 S, the engine per store, bounds and naive baselines."""
    policies = load_policies(POLICY_DIR)
    documents = policies.get(DOCUMENTS)
    _say(f"generating the main world ({sizes})")
    main = build_world(svc, "main", sizes, mirror=True)
    bound_url, bound_root = copy_world(svc, main, "bound")
    naive_url, naive_root = copy_world(svc, main, "naive")
    prune_root = f"{main.archive_root}_prune"
    shutil.copytree(main.archive_root, prune_root, symlinks=True)
    s3_keys = set(due_paths(bound_url, documents, "s3_key"))
    archive = due_paths(bound_url, documents, "archive_path")
    # The customer is active (nothing of theirs is due), so the nightly run below erases the same items.
    at_10s = customer_erasure(svc, main)
    engine = run_engine(svc, main)
    _say("bounds")
    client = s3_client(svc.s3.endpoint_url)
    bound = {
        "database": database_bound(bound_url, policies),
        "s3": s3_raw_loop(client, main.bound_bucket or "", "documents/", s3_keys),
        "sftp": openssh_bound(svc.sftp_spec, bound_root, archive, workdir),
        "sftp_prune": openssh_bound(svc.sftp_spec, prune_root, archive, workdir, prune=True),
    }
    _say("naive baselines (samples)")
    naive = {
        "database": database_naive(naive_url, policies, NAIVE_DB_SAMPLE),
        "s3": s3_naive_sample(client, svc.s3.create_bucket("bench-naive"), NAIVE_S3_SAMPLE // 2, 2),
        "sftp": sftp_naive_sample(svc.sftp_spec, naive_root, archive[:NAIVE_SFTP_SAMPLE]),
    }
    stores = {
        "database": _database_row(engine["database"], bound["database"], naive["database"]),
        "s3": _s3_row(engine["s3"], bound["s3"], naive["s3"]),
        "sftp": _sftp_row(engine["sftp"], bound["sftp"], naive["sftp"], bound["sftp_prune"]),
    }
    rss = {store: float(engine[store]["peak_rss_mb"]) for store in ENGINE_ORDER}
    return stores, at_10s, rss


def run_benchmark(scale: float, workdir: Path) -> dict[str, Any]:
    """Build the worlds, measure everything, return the result (the JSON written to ``--out``)."""
    started = time.perf_counter()
    sizes = Sizes().scaled(scale)
    with ExitStack() as stack:
        svc = start_services(workdir, stack)
        stores, at_10s, rss_4n = measure_stores(svc, sizes, workdir)
        _say("memory: the engine on a world a quarter the size (N; the main world is 4 N)")
        quarter = build_world(svc, "quarter", sizes.scaled(0.25))
        engine_n = run_engine(svc, quarter)
        rss_n = {store: float(engine_n[store]["peak_rss_mb"]) for store in ENGINE_ORDER}
        _say("customer erasure on a world a tenth the size (S; the main world is 10 S)")
        tenth = build_world(svc, "tenth", sizes.scaled(0.1))
        at_s = customer_erasure(svc, tenth)
    result: dict[str, Any] = {
        "stores": stores,
        "memory": memory_result(rss_n, rss_4n),
        "customer_erasure": customer_result(at_s, at_10s),
        "meta": {
            "scale": scale,
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
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main()
    if args.scale <= 0:
        parser.error("--scale must be positive")
    # Stopped with `kill`, unwind as for Ctrl-C: the services and the work directory go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="alleskar-bench-"))
    try:
        result = run_benchmark(args.scale, workdir)
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
