"""The erasure receipt: what a customer's erasure request did, per category, for the reply.

It names the request reference and the pseudonymised customer reference, never the
customer: counts, laws and dates only. Stored as JSON (for systems) and Markdown (for
the person writing the reply).

Rows that must stay are anonymised by their policy's strategies; where one of them is
``pseudonym`` (a keyed hash: still personal data, GDPR recital 26), the receipt says
"pseudonymised", never "anonymised". A receipt of an erasure replayed after a backup was
restored (``replay_erasures``) says so, with the moment the backup was taken.

A receipt is itself kept as proof of how the request was handled, and no longer than that:
``store_receipt`` writes its row to the ``erasure_receipts`` table of the business database
first (the category of the same name, ``include/retention_policies/erasure_receipts.yaml``),
so the nightly run deletes the receipt, every version, when its period ends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from retention.dberrors import db_errors
from retention.errors import PolicyError, TerminalError
from retention.locations import S3Location
from retention.paths import check_relative, placeholders
from retention.policy import Policy, PolicySet
from retention.results import Reason, Skip, StepResult
from retention.scope import why_untouched

RECEIPTS_CATEGORY = "erasure_receipts"
"""The category whose policy keeps (and erases) the erasure receipts themselves."""

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
    replay: Mapping[str, str] | None = None,
    key_period: str | None = None,
) -> dict[str, Any]:
    """Assemble the receipt from the step results (with their statutory keeps) and the skips.

    Categories the request's ``reason`` does not act on (``retention.scope``) are listed under
    ``untouched``, each with why, in Danish and English. ``replay`` (``restored_to``,
    ``original_run_id``) marks an erasure replayed after a backup was restored. ``key_period``
    is the year whose pseudonym key made ``subject_ref`` (``retention.keyring``).
    """
    by_category: dict[str, dict[str, Any]] = {}
    untouched: list[dict[str, Any]] = []
    for policy in policies.policies:
        untouched_why = why_untouched(policy, reason)
        if untouched_why is not None:
            untouched.append(
                {
                    "category": policy.id,
                    "description": policy.description,
                    "personal_data": policy.personal_data.model_dump() if policy.personal_data else None,
                    "legal_basis": policy.legal_basis.model_dump(),
                    "why": untouched_why.model_dump(),
                }
            )
            continue
        by_category[policy.id] = {
            "category": policy.id,
            "description": policy.description,
            "personal_data": policy.personal_data.model_dump() if policy.personal_data else None,
            "legal_basis": policy.legal_basis.model_dump(),
            "erased": 0,
            "anonymised": 0,
            "pseudonymised": False,
            "kept": [],
            "stores": {},
            "verified": True,
        }
    for step in steps:
        entry = by_category[step.category]
        entry["erased"] += step.erased
        entry["anonymised"] += step.anonymised
        entry["pseudonymised"] = entry["pseudonymised"] or (
            step.anonymised > 0 and uses_pseudonym(policies.get(step.category))
        )
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
    doc: dict[str, Any] = {
        "kind": "erasure_receipt",
        "request_ref": request_ref,
        "subject_ref": subject_ref,
        "key_period": key_period,
        "reason": reason,
        "run_id": run_id,
        "evaluated_at": now,
        "dry_run": dry_run,
        "policy_set_hash": policies.hash,
        "totals": {
            "erased": sum(c["erased"] for c in categories),
            "anonymised": sum(c["anonymised"] for c in categories),
            "pseudonymised": sum(c["anonymised"] for c in categories if c["pseudonymised"]),
            "kept": sum(k["count"] for c in categories for k in c["kept"]),
        },
        "verified": all(c["verified"] for c in categories) and not dry_run,
        "categories": categories,
        "untouched": untouched,
    }
    if replay is not None:
        doc["replay_after_restore"] = dict(replay)
    return doc


def uses_pseudonym(policy: Policy) -> bool:
    """Whether the category's rows that stay get a keyed pseudonym: pseudonymised then, not anonymised."""
    return any(
        rule.strategy == "pseudonym" for loc in policy.database_locations() for rule in loc.fields.values()
    )


def _hold_law(reason: Reason) -> str | None:
    return {
        Reason.LEGAL_HOLD: "Legal hold (GDPR art. 17, stk. 3, litra e: retskrav)",
        Reason.STORAGE_LOCK: "Storage retention lock (write-once retention set on the stored object)",
    }.get(reason)


REASON_WORDS: dict[str, tuple[str, str]] = {
    "erasure_request": (
        "anmodning om sletning (databeskyttelsesforordningens art. 17)",
        "erasure request (GDPR Art. 17)",
    ),
    "consent_withdrawn": ("tilbagetrukket samtykke (art. 7, stk. 3)", "withdrawn consent (Art. 7(3))"),
    "objection": ("indsigelse (art. 21)", "objection (Art. 21)"),
}
"""A request's reason in words, Danish and English."""

KEPT_WORDS: dict[str, tuple[str, str]] = {
    Reason.LEGAL_HOLD.value: ("retligt krav (art. 17, stk. 3, litra e)", "legal hold (Art. 17(3)(e))"),
    Reason.STORAGE_LOCK.value: (
        "låst mod sletning i lageret til en fast dato",
        "locked against deletion until a date",
    ),
    Reason.SHARED_WITH_NOT_DUE.value: (
        "deles med en anden kunde eller en post, der ikke må slettes",
        "shared with another customer or a record that must stay",
    ),
    Reason.BLOCKED_BY_REFERENCE.value: (
        "andre oplysninger, der bevares, henviser til dem",
        "other data that stays refers to them",
    ),
    Reason.UNSAFE_TARGET.value: (
        "ugyldig sti: rettes og slettes derefter",
        "invalid path: corrected, then erased",
    ),
}
"""Why items were kept, in words, where no law names it (a statutory keep shows its law)."""

_LABELS = {
    "da": {
        "title": "Kvittering for sletning — anmodning",
        "subject": "Kundereference (pseudonymiseret)",
        "key_year": "nøgleår",
        "reason": "Anmodning",
        "carried_out": "Udført",
        "run": "kørsel",
        "dry_run": "Prøvekørsel (intet slettet)",
        "verified": "Alle lagre kontrolleret igen bagefter",
        "yes": "ja",
        "no": "NEJ",
        "no_dry": "nej",
        "head": "| Kategori | Slettet | Anonymiseret | Bevaret | Hvorfor bevaret | Bevaret til |",
        "untouched": "Berøres ikke af denne anmodning",
        "total": "I alt blev {erased} oplysninger slettet, {anonymised} anonymiseret{pseudonymised} og "
        "{kept} bevaret, som loven kræver. Bevarede oplysninger slettes, når deres periode udløber.",
        "total_pseudonymised": ", {n} pseudonymiseret",
        "policies": "Regelsæt",
        "pseudonymised": "pseudonymiseret",
        "pseudonym_note": "Pseudonymiserede oplysninger er erstattet af en nøglebaseret kode; de er stadig "
        "personoplysninger og slettes, når deres periode udløber.",
        "replay": "Gentaget efter gendannelse af en sikkerhedskopi taget {restored_to} "
        "(oprindelig kørsel `{original_run_id}`): de gendannede oplysninger er slettet igen",
    },
    "en": {
        "title": "Erasure receipt — request",
        "subject": "Customer reference (pseudonymised)",
        "key_year": "key year",
        "reason": "Request",
        "carried_out": "Carried out",
        "run": "run",
        "dry_run": "Dry run (nothing erased)",
        "verified": "Every store checked again afterwards",
        "yes": "yes",
        "no": "NO",
        "no_dry": "no",
        "head": "| Category | Erased | Anonymised | Kept | Why kept | Kept until |",
        "untouched": "Not affected by this request",
        "total": "In total {erased} items were erased, {anonymised} anonymised{pseudonymised} and {kept} "
        "kept as the law requires. Kept records are erased when their period ends.",
        "total_pseudonymised": ", {n} pseudonymised",
        "policies": "Policy set",
        "pseudonymised": "pseudonymised",
        "pseudonym_note": "Pseudonymised data was replaced by a keyed code; it is still personal data and is "
        "erased when its period ends.",
        "replay": "Replayed after restoring a backup taken {restored_to} "
        "(original run `{original_run_id}`): the restored data was erased again",
    },
}


def render_markdown(receipt: Mapping[str, Any]) -> str:
    """A readable version of the receipt for the reply to the customer: Danish first, then English."""
    return "\n".join([*_section(receipt, "da"), "---", "", *_section(receipt, "en")])


def _section(receipt: Mapping[str, Any], lang: str) -> list[str]:
    words = _LABELS[lang]
    i = 0 if lang == "da" else 1
    yes_no = words["yes"] if receipt["verified"] else words["no"]
    reason = REASON_WORDS.get(receipt["reason"], (receipt["reason"], receipt["reason"]))[i]
    lines = [
        f"# {words['title']} {receipt['request_ref']}",
        "",
        f"- {words['subject']}: `{receipt['subject_ref']}`"
        + (f" ({words['key_year']} {receipt['key_period']})" if receipt.get("key_period") else ""),
        f"- {words['reason']}: {reason}",
        f"- {words['carried_out']}: {receipt['evaluated_at']} ({words['run']} `{receipt['run_id']}`)",
        f"- {words['dry_run']}: {words['yes'] if receipt['dry_run'] else words['no_dry']}",
        f"- {words['verified']}: {yes_no}",
        *(
            [f"- {words['replay'].format(**receipt['replay_after_restore'])}"]
            if "replay_after_restore" in receipt
            else []
        ),
        "",
        words["head"],
        "|---|---:|---:|---:|---|---|",
    ]
    for c in receipt["categories"]:
        kept = sum(k["count"] for k in c["kept"])
        reasons = {k["law"] or KEPT_WORDS.get(k["reason"], (k["reason"], k["reason"]))[i] for k in c["kept"]}
        if c.get("not_erased_now"):
            reasons.add(c["not_erased_now"])
        why = "; ".join(sorted(reasons)) or "—"
        until = max((k["until"] for k in c["kept"] if k.get("until")), default="—")
        anonymised = (
            f"{c['anonymised']} ({words['pseudonymised']})" if c.get("pseudonymised") else c["anonymised"]
        )
        lines.append(f"| {_title(c, lang)} | {c['erased']} | {anonymised} | {kept} | {why} | {until} |")
    if receipt.get("untouched"):
        lines += ["", f"**{words['untouched']}:**", ""]
        lines += [f"- {_title(c, lang)}: {c['why'][lang]}" for c in receipt["untouched"]]
    totals = receipt["totals"]
    lines += [
        "",
        _total_line(totals, words),
        *(
            ["", words["pseudonym_note"]]
            if any(c.get("pseudonymised") for c in receipt["categories"])
            else []
        ),
        "",
        f"{words['policies']}: `{receipt['policy_set_hash'][:16]}`",
        "",
    ]
    return lines


def _total_line(totals: Mapping[str, Any], words: Mapping[str, str]) -> str:
    """The totals in words; pseudonymised rows are named as such, not counted as anonymised."""
    pseudonymised = int(totals.get("pseudonymised", 0))
    return words["total"].format(
        erased=totals["erased"],
        anonymised=totals["anonymised"] - pseudonymised,
        pseudonymised=words["total_pseudonymised"].format(n=pseudonymised) if pseudonymised else "",
        kept=totals["kept"],
    )


def _title(category: Mapping[str, Any], lang: str) -> str:
    """A category as a person reads it: the kinds of data in the language, else its description."""
    data = category.get("personal_data")
    return f"{category['category']}: {data[lang]}" if data else str(category["description"])


def receipt_keys(prefix: str, request_ref: str, run_id: str) -> tuple[str, str]:
    """The S3 keys of a receipt's JSON and Markdown, checked to stay under the prefix."""
    safe_run = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)
    base = check_relative(f"{prefix.strip('/')}/{request_ref}/{safe_run}", "receipt key")
    return f"{base}.json", f"{base}.md"


def store_receipt(
    client: Any,
    bucket: str,
    prefix: str,
    receipt: Mapping[str, Any],
    register: Callable[[Mapping[str, Any]], object] | None = None,
) -> dict[str, str]:
    """Write the receipt to S3 as JSON and Markdown; return where, with the JSON's SHA-256.

    ``register`` (``register_receipt``, bound to the business database) writes the receipt's row
    first: whatever reaches the bucket from then on is named by it and expires with it.
    """
    json_key, md_key = receipt_keys(prefix, receipt["request_ref"], receipt["run_id"])
    if register is not None:
        register(receipt)
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


# -- the receipts' own retention --------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptsPolicy:
    """The policy that keeps the erasure receipts, and the records column its S3 key names."""

    policy: Policy
    ref_column: str
    """The column holding the request reference: a receipt's objects are ``<prefix>/<request_ref>/...``."""


def receipts_policy(
    policies: PolicySet, bucket_map: Mapping[str, str], bucket: str, prefix: str
) -> ReceiptsPolicy | None:
    """The ``erasure_receipts`` policy, checked to erase what ``store_receipt`` writes to ``bucket`` under
    ``prefix``; None if the policy set has no such category (the receipts then have no retention).

    A policy that would not reach the receipts (another bucket, another prefix, a key that is not the
    request's folder) is refused: its rows would expire and leave the receipts behind.
    """
    try:
        policy = policies.get(RECEIPTS_CATEGORY)
    except PolicyError:
        return None
    found = [loc for loc in policy.file_locations() if isinstance(loc, S3Location)]
    if len(found) != 1 or found[0].via or len(policy.file_locations()) != 1:
        raise TerminalError(f"{RECEIPTS_CATEGORY}: needs exactly one file location, in S3 (no via)")
    loc = found[0]
    names = placeholders(loc.key)
    root = prefix.strip("/")
    if len(names) != 1 or loc.key != f"{root}/{{{names[0]}}}/":
        raise TerminalError(
            f"{RECEIPTS_CATEGORY}: the S3 key must be the receipts prefix, a column and a slash, "
            f"e.g. {root}/{{request_ref}}/"
        )
    if bucket_map.get(loc.bucket, loc.bucket) != bucket:
        raise TerminalError(
            f"{RECEIPTS_CATEGORY}: its bucket {loc.bucket!r} is not mapped to the receipts bucket {bucket!r} "
            "(setting bucket_map): the receipts would never be erased"
        )
    if policy.retention.anchor is None or policy.retention.anchor_via:
        raise TerminalError(f"{RECEIPTS_CATEGORY}: the anchor must be a column of its records table")
    return ReceiptsPolicy(policy, names[0])


def register_receipt(
    database: Any, receipts: ReceiptsPolicy, subject: str, receipt: Mapping[str, Any]
) -> bool:
    """The receipt's row in the business database (``database``: a ``DatabaseAdapter``): whose, when made,
    the request and the run. False if the run's receipt has its row already (a retried task)."""
    rec = receipts.policy.records
    table = database.table(rec.table)
    value: Any = subject
    if database.column(rec.table, rec.subject).type.python_type is int:
        value = int(subject)
    ref = table.c[receipts.ref_column] == receipt["request_ref"]
    same = sa.and_(ref, table.c.run_id == receipt["run_id"]) if "run_id" in table.c else None
    values: dict[str, Any] = {
        rec.subject: value,
        receipts.policy.retention.anchor or "": datetime.fromisoformat(receipt["evaluated_at"]),
        receipts.ref_column: receipt["request_ref"],
    }
    if same is not None:
        values["run_id"] = receipt["run_id"]
    with db_errors("recording the erasure receipt"), database.engine.begin() as conn:
        if same is not None and conn.execute(sa.select(table).where(same)).first() is not None:
            return False
        conn.execute(table.insert().values(**values))
    return True
