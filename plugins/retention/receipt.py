"""The erasure receipt: what a customer's erasure request did, per category, for the reply.

It names the request reference and the pseudonymised customer reference, never the
customer: counts, laws and dates only. Stored as JSON (for systems) and Markdown (for
the person writing the reply).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from retention.paths import check_relative
from retention.policy import PolicySet
from retention.results import Reason, Skip, StepResult

STORE_NAMES = {
    "database": "business database",
    "s3": "document storage (all versions)",
    "sftp": "translation archive",
}


def build_receipt(
    *,
    request_ref: str,
    subject_ref: str,
    reason: str,
    run_id: str,
    now: str,
    dry_run: bool,
    policies: PolicySet,
    steps: Iterable[StepResult],
    not_erased: Mapping[str, Skip] | None = None,
) -> dict[str, Any]:
    """Assemble the receipt from the step results (with their statutory keeps) and the skips."""
    by_category: dict[str, dict[str, Any]] = {}
    for policy in policies.policies:
        by_category[policy.id] = {
            "category": policy.id,
            "description": policy.description,
            "legal_basis": policy.legal_basis.model_dump(),
            "erased": 0,
            "anonymised": 0,
            "kept": [],
            "stores": {},
            "verified": True,
        }
    for step in steps:
        entry = by_category[step.category]
        entry["erased"] += step.erased
        entry["anonymised"] += step.anonymised
        entry["verified"] = entry["verified"] and step.verified and not step.dry_run
        entry["stores"][step.store] = {
            "located": step.located,
            "erased": step.erased,
            "anonymised": step.anonymised,
            "failed": step.failed,
            "remaining": step.remaining,
        }
        for why, n in step.kept.items():
            entry["kept"].append(
                {"count": n, "reason": why.value, "law": _hold_law(why), "until": step.kept_until.get(why)}
            )
        if step.kept_by_law is not None:
            kept = step.kept_by_law
            entry["kept"].append(
                {
                    "count": kept.count,
                    "reason": Reason.STATUTORY.value,
                    "law": kept.law,
                    "until": kept.until_latest,
                    "until_earliest": kept.until_earliest,
                }
            )
    for category, skip in (not_erased or {}).items():
        if category in by_category:
            by_category[category]["not_erased_now"] = skip.words()
    categories = [
        c
        for c in by_category.values()
        if c["erased"] or c["anonymised"] or c["kept"] or c["stores"] or c.get("not_erased_now")
    ]
    return {
        "kind": "erasure_receipt",
        "request_ref": request_ref,
        "subject_ref": subject_ref,
        "reason": reason,
        "run_id": run_id,
        "evaluated_at": now,
        "dry_run": dry_run,
        "policy_set_hash": policies.hash,
        "totals": {
            "erased": sum(c["erased"] for c in categories),
            "anonymised": sum(c["anonymised"] for c in categories),
            "kept": sum(k["count"] for c in categories for k in c["kept"]),
        },
        "verified": all(c["verified"] for c in categories) and not dry_run,
        "categories": categories,
    }


def _hold_law(reason: Reason) -> str | None:
    return {
        Reason.LEGAL_HOLD: "Legal hold (GDPR art. 17, stk. 3, litra e: retskrav)",
        Reason.STORAGE_LOCK: "Storage retention lock (write-once retention set on the stored object)",
    }.get(reason)


def render_markdown(receipt: Mapping[str, Any]) -> str:
    """A readable version of the receipt for the reply to the customer."""
    lines = [
        f"# Erasure receipt — request {receipt['request_ref']}",
        "",
        f"- Customer reference (pseudonymised): `{receipt['subject_ref']}`",
        f"- Reason: {receipt['reason'].replace('_', ' ')}",
        f"- Carried out: {receipt['evaluated_at']} (run `{receipt['run_id']}`)",
        f"- Dry run (nothing erased): {'yes' if receipt['dry_run'] else 'no'}",
        f"- Every store checked again afterwards: {'yes' if receipt['verified'] else 'NO'}",
        "",
        "| Category | Erased | Anonymised | Kept | Why kept | Kept until |",
        "|---|---:|---:|---:|---|---|",
    ]
    for c in receipt["categories"]:
        kept = sum(k["count"] for k in c["kept"])
        reasons = {k["law"] or k["reason"] for k in c["kept"]} | (
            {c["not_erased_now"]} if c.get("not_erased_now") else set()
        )
        why = "; ".join(sorted(reasons)) or "—"
        until = max((k["until"] for k in c["kept"] if k.get("until")), default="—")
        lines.append(f"| {c['description']} | {c['erased']} | {c['anonymised']} | {kept} | {why} | {until} |")
    totals = receipt["totals"]
    lines += [
        "",
        f"In total {totals['erased']} items were erased, {totals['anonymised']} anonymised and "
        f"{totals['kept']} kept as the law requires. Kept records are erased when their period ends.",
        "",
        f"Policy set: `{receipt['policy_set_hash'][:16]}`",
        "",
    ]
    return "\n".join(lines)


def receipt_keys(prefix: str, request_ref: str, run_id: str) -> tuple[str, str]:
    """The S3 keys of a receipt's JSON and Markdown, checked to stay under the prefix."""
    safe_run = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)
    base = check_relative(f"{prefix.strip('/')}/{request_ref}/{safe_run}", "receipt key")
    return f"{base}.json", f"{base}.md"


def store_receipt(client: Any, bucket: str, prefix: str, receipt: Mapping[str, Any]) -> dict[str, str]:
    """Write the receipt to S3 as JSON and Markdown; return where, with the JSON's SHA-256."""
    json_key, md_key = receipt_keys(prefix, receipt["request_ref"], receipt["run_id"])
    body = json.dumps(receipt, indent=2, sort_keys=True, ensure_ascii=False).encode()
    client.put_object(Bucket=bucket, Key=json_key, Body=body, ContentType="application/json")
    client.put_object(
        Bucket=bucket,
        Key=md_key,
        Body=render_markdown(receipt).encode(),
        ContentType="text/markdown; charset=utf-8",
    )
    return {
        "bucket": bucket,
        "prefix": prefix,
        "json_key": json_key,
        "markdown_key": md_key,
        "sha256": hashlib.sha256(body).hexdigest(),
    }
