"""The benchmark's figures, pure functions only: sizes, ratios, the per-store rows, verdicts, the table.

Nothing here measures or touches a store; ``tests/unit/test_bench_unit.py`` tests it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.common import S3_PAGE, STORES
from harness.world_size import WorldSize

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


def _engine_row(
    engine: Mapping[str, Any],
    bound: Mapping[str, Any],
    naive: Mapping[str, Any],
    *,
    due_items: int,
    naive_wall_s: float,
    **extra: Any,
) -> dict[str, Any]:
    """``store_result`` from an engine child's figures: ``extra``, then the naive sample (extrapolated)."""
    return store_result(
        due_items=due_items,
        wall_s=engine["wall_s"],
        requests=engine["requests"],
        peak_rss_mb=engine["peak_rss_mb"],
        bound_wall_s=bound["wall_s"],
        naive_wall_s=naive_wall_s,
        **extra,
        naive_sample=naive["sample"],
        naive_extrapolated=True,
    )


def database_row(
    engine: Mapping[str, Any], bound: Mapping[str, Any], naive: Mapping[str, Any]
) -> dict[str, Any]:
    """The database row: rows deleted or anonymised, against the bare statements (and with their verify)."""
    items = engine["erased"] + engine["anonymised"]
    return _engine_row(
        engine,
        bound,
        naive,
        due_items=items,
        naive_wall_s=extrapolate(naive["sample_wall_s"], naive["sample"], items),
        kept=engine["kept"],
        bound_statements=bound["statements"],
        bound_rows=bound["rows"],
        bound_with_verify_wall_s=round(bound["wall_s"] + bound["verify_wall_s"], 3),
        ratio_vs_bound_with_verify=ratio(engine["wall_s"], bound["wall_s"] + bound["verify_wall_s"]),
    )


def s3_row(engine: Mapping[str, Any], bound: Mapping[str, Any], naive: Mapping[str, Any]) -> dict[str, Any]:
    """The S3 row: versions deleted, against the raw loop and its (minimal) request count."""
    minimum = bound["requests"]
    naive_wall = bound["list_and_verify_s"] + extrapolate(
        naive["sample_wall_s"], naive["sample"], engine["erased"]
    )
    return _engine_row(
        engine,
        bound,
        naive,
        due_items=engine["erased"],
        naive_wall_s=naive_wall,
        requests_min=minimum,
        requests_ratio_vs_min=ratio(engine["requests"], minimum),
        located=engine["located"],
        kept=engine["kept"],
        bound_pages={"list": bound["list"], "delete": bound["delete"], "verify": bound["verify"]},
    )


def sftp_row(
    engine: Mapping[str, Any], bound: Mapping[str, Any], naive: Mapping[str, Any], pruned: Mapping[str, Any]
) -> dict[str, Any]:
    """The SFTP row: archive files removed, against ``sftp -b`` (and ``sftp -b`` with the pruning)."""
    return _engine_row(
        engine,
        bound,
        naive,
        due_items=engine["erased"],
        naive_wall_s=extrapolate(naive["sample_wall_s"], naive["sample"], engine["erased"]),
        kept=engine["kept"],
        bound_requests_at_least=2 * bound["files"],
        bound_with_prune_wall_s=round(pruned["wall_s"], 3),
        ratio_vs_bound_with_prune=ratio(engine["wall_s"], pruned["wall_s"]),
    )


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
