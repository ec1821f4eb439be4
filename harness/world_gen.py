"""Deterministic generation of the reference world: the plan and its pure per-table row streams.

``Plan`` decides everything up front (customer profiles, legal holds, cutoffs) from the seed and
the size, then yields the rows of each table one at a time, each with its customer and the
*fate* it was given: due, not due (each at least ``MARGIN`` away from its rule's cutoff at
``now``), or a NULL anchor (never due). Nothing here touches a store: ``harness.world_stores``
writes the streams. A fixed seed gives an identical world.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from harness import world_text as words
from harness.world_personas import NAME_SPACE, Persona, Personas
from harness.world_rules import COPENHAGEN, MARGIN, RULE_BY_TABLE, RULES, Rule, as_utc
from harness.world_size import WorldSize
from harness.world_truth import DocFiles, Fate, Profile

# Anchors are placed a few hours further out than promised so that any reasonable reading
# of "anchor + P5Y" (UTC or Danish wall clock, across DST changes) keeps the promised margin.
_PLACEMENT_MARGIN = MARGIN + timedelta(hours=3)
_DUE_SPREAD = timedelta(days=4 * 365)
_LATEST = timedelta(hours=1)
"""Nothing happens in the last hour before ``now``."""
_PURE_PROFILE_SHARE = 0.4
"""Share of customers that are wholly dormant or wholly active (split by due_fraction)."""


class Spec(NamedTuple):
    """One row of a table (a tuple in column order), its customer and its fate."""

    row: tuple[Any, ...]
    customer_id: int
    fate: Fate


class DocSpec(NamedTuple):
    """One ``documents`` row, with the texts of its S3 versions and where its files go."""

    row: tuple[Any, ...]
    customer_id: int
    fate: Fate
    bodies: list[bytes]
    files: DocFiles


class _Job(NamedTuple):
    id: int
    customer_id: int
    fate: Fate
    docs_fate: Fate
    kind: str
    source_lang: str
    target_lang: str
    ordered_at: datetime
    delivered_at: datetime | None
    persona: Persona


def _block(owner: int, n_rows: int, n_owners: int) -> range:
    """The row ids (of 1..n_rows) owned by ``owner`` (of 1..n_owners): contiguous, near-equal blocks."""
    return range((owner - 1) * n_rows // n_owners + 1, owner * n_rows // n_owners + 1)


class Plan:
    """Everything decided up front (profiles, holds, cutoffs) and the pure per-table row streams."""

    def __init__(self, seed: int, size: WorldSize, now: datetime) -> None:
        if size.customers > NAME_SPACE:
            raise ValueError(f"at most {NAME_SPACE} customers have unique names")
        self.seed = seed
        self.size = size
        self.now = as_utc(now)
        self.cutoffs = {r.table: c for r in RULES if isinstance(c := r.cutoff(now), datetime)}
        """Timestamp rules only: anchors at or before the cutoff are due."""
        self._invoice_years = _invoice_years(RULE_BY_TABLE["invoices"], self.now)
        self.personas = Personas(seed)
        self.profiles = self._choose_profiles()
        self.held = self._choose_held()
        self._interpreters = self._choose_interpreters()

    def _rng(self, purpose: str) -> random.Random:
        # Reproducible test data, not secrets: a seeded PRNG is exactly what is wanted.
        return random.Random(f"{self.seed}:{purpose}")  # noqa: S311

    def _choose_profiles(self) -> bytes:
        n, df = self.size.customers, self.size.due_fraction
        dormant = round(n * df * _PURE_PROFILE_SHARE)
        active = round(n * (1 - df) * _PURE_PROFILE_SHARE)
        profiles = (
            [Profile.DORMANT] * dormant + [Profile.ACTIVE] * active + [Profile.MIXED] * (n - dormant - active)
        )
        self._rng("profiles").shuffle(profiles)
        return bytes(profiles)

    def _choose_held(self) -> frozenset[int]:
        """Half the holds on dormant customers (so every table has held due rows), the rest on mixed ones."""
        rng = self._rng("holds")
        wanted = round(self.size.customers * self.size.held_fraction)
        held: list[int] = []
        for profile, share in (
            (Profile.DORMANT, math.ceil(wanted / 2)),
            (Profile.MIXED, wanted),
            (Profile.ACTIVE, wanted),
        ):
            pool = [cid for cid, p in enumerate(self.profiles, 1) if p == profile]
            held += rng.sample(pool, min(len(pool), share, wanted - len(held)))
        return frozenset(held)

    def _choose_interpreters(self) -> list[str]:
        rng = self._rng("interpreters")
        return [f"{rng.choice(words.FIRST_NAMES)} {rng.choice(words.LAST_NAMES)}" for _ in range(12)]

    # fates and anchors

    def _fate(self, rng: random.Random, customer_id: int, nullable: bool = False) -> Fate:
        profile = self.profiles[customer_id - 1]
        if profile == Profile.DORMANT:
            return Fate.DUE
        if nullable and rng.random() < self.size.null_fraction:
            return Fate.NULL
        if profile == Profile.ACTIVE:
            return Fate.NOT_DUE
        return Fate.DUE if rng.random() < self.size.due_fraction else Fate.NOT_DUE

    def _anchor(self, rng: random.Random, table: str, fate: Fate) -> datetime | None:
        return None if fate is Fate.NULL else self._instant(rng, table, fate is Fate.DUE)

    def _instant(self, rng: random.Random, table: str, due: bool) -> datetime:
        """A timestamp clearly before (due) or after (not due) the table's cutoff, never after now."""
        cutoff = self.cutoffs[table]
        if due:
            return _between(rng, cutoff - _PLACEMENT_MARGIN - _DUE_SPREAD, cutoff - _PLACEMENT_MARGIN)
        return _between(rng, cutoff + _PLACEMENT_MARGIN, self.now - _LATEST)

    def _invoice_date(self, rng: random.Random, fate: Fate) -> date:
        last_due, first_open = self._invoice_years
        if fate is Fate.DUE:
            first = date(last_due - 3, 1, 1)
            return first + timedelta(days=rng.randrange((date(last_due + 1, 1, 1) - first).days))
        first = date(first_open, 1, 1)
        last = (self.now - _LATEST).astimezone(COPENHAGEN).date()
        return first + timedelta(days=rng.randrange((last - first).days + 1))

    def _rows_per_customer(self, table: str) -> Iterator[tuple[int, int, Persona]]:
        n_rows = self.size.rows(table)
        for cid in range(1, self.size.customers + 1):
            ids = _block(cid, n_rows, self.size.customers)
            if not ids:
                continue
            persona = self.personas.customer(cid)
            for row_id in ids:
                yield row_id, cid, persona

    # per-table row streams; each row tuple follows its table's column order

    def specs(self, table: str) -> Iterator[Spec]:
        """The rows of one table (not ``documents``), in id order, each with its customer and fate."""
        streams: dict[str, Callable[[], Iterator[Spec]]] = {
            "customers": self._customers,
            "contact_persons": self._contact_persons,
            "translation_jobs": self._translation_jobs,
            "interpreting_assignments": self._interpreting_assignments,
            "invoices": self._invoices,
            "marketing_consents": self._marketing_consents,
            "third_party_data": self._third_party_data,
            "correspondence": self._correspondence,
            "privacy_requests": self._privacy_requests,
        }
        return streams[table]()

    def _customers(self) -> Iterator[Spec]:
        rng = self._rng("customers")
        for cid in range(1, self.size.customers + 1):
            p = self.personas.customer(cid)
            fate = self._fate(rng, cid)
            last = self._instant(rng, "customers", fate is Fate.DUE)
            created = last - timedelta(seconds=rng.randrange(8 * 365 * 86400))
            yield Spec((cid, f"AK-{cid:06d}", p.name, p.email, p.phone, p.address, created, last), cid, fate)

    def _contact_persons(self) -> Iterator[Spec]:
        rng = self._rng("contact_persons")
        for row_id, cid, _ in self._rows_per_customer("contact_persons"):
            name, email, phone = self.personas.contact(row_id)
            fate = self._fate(rng, cid)
            last = self._instant(rng, "contact_persons", fate is Fate.DUE)
            created = last - timedelta(seconds=rng.randrange(5 * 365 * 86400))
            yield Spec((row_id, cid, name, email, phone, rng.choice(words.ROLES), created, last), cid, fate)

    def jobs(self) -> Iterator[_Job]:
        """The translation jobs, identical on every call (the documents pass walks them again)."""
        rng = self._rng("translation_jobs")
        doc_cutoff, job_cutoff = self.cutoffs["documents"], self.cutoffs["translation_jobs"]
        for job_id, cid, persona in self._rows_per_customer("translation_jobs"):
            fate = self._fate(rng, cid, nullable=True)
            docs_fate = fate
            if fate is Fate.DUE:
                delivered = self._anchor(rng, "translation_jobs", fate)
            elif (
                fate is Fate.NOT_DUE
                and self.profiles[cid - 1] == Profile.MIXED
                and rng.random() < self.size.due_fraction
            ):
                docs_fate = Fate.DUE
                delivered = _between(rng, job_cutoff + _PLACEMENT_MARGIN, doc_cutoff - _PLACEMENT_MARGIN)
            else:
                delivered = self._anchor(rng, "documents", fate)
            ordered = (delivered or self.now) - timedelta(seconds=rng.randrange(86400, 30 * 86400))
            kind, src, tgt = rng.choice(words.DOCUMENT_KINDS), *rng.sample(words.LANGUAGES, 2)
            yield _Job(job_id, cid, fate, docs_fate, kind, src, tgt, ordered, delivered, persona)

    def _translation_jobs(self) -> Iterator[Spec]:
        for j in self.jobs():
            title = f"Oversættelse af {j.kind} ({j.source_lang} → {j.target_lang})"
            notes = f"Bestilt af {j.persona.name} pr. e-mail; levering til {j.persona.email}."
            row = (
                j.id,
                j.customer_id,
                title,
                j.source_lang,
                j.target_lang,
                j.ordered_at,
                j.delivered_at,
                notes,
            )
            yield Spec(row, j.customer_id, j.fate)

    def documents(self) -> Iterator[DocSpec]:
        """The documents with their version texts and archive choice, in job order."""
        rng = self._rng("documents")
        n_docs = self.size.documents
        to_archive = round(n_docs * self.size.archive_fraction)
        for job in self.jobs() if n_docs else ():
            for doc_id in _block(job.id, n_docs, self.size.jobs):
                # Selection sampling: exactly ``to_archive`` documents, each equally likely.
                archived = rng.random() * (n_docs - doc_id + 1) < to_archive
                to_archive -= archived
                yield self._document(rng, doc_id, job, archived)

    def _document(self, rng: random.Random, doc_id: int, job: _Job, archived: bool) -> DocSpec:
        rel = f"{job.customer_id}/{job.id}/{doc_id}.txt"
        n_versions = rng.randint(self.size.min_versions, self.size.max_versions)
        sentences = rng.sample(words.DOCUMENT_SENTENCES, 3)
        bodies = [
            _document_text(job, doc_id, v, n_versions, sentences).encode() for v in range(1, n_versions + 1)
        ]
        created = _between(rng, job.ordered_at, job.delivered_at or self.now - _LATEST)
        files = DocFiles(f"documents/{rel}", n_versions, rel if archived else None)
        row = (
            doc_id,
            job.id,
            job.customer_id,
            f"{job.kind}_{job.target_lang}.txt",
            files.key,
            files.archive_path,
            hashlib.sha256(bodies[-1]).hexdigest(),
            created,
            job.delivered_at,
        )
        return DocSpec(row, job.customer_id, job.docs_fate, bodies, files)

    def _interpreting_assignments(self) -> Iterator[Spec]:
        rng = self._rng("interpreting_assignments")
        for row_id, cid, p in self._rows_per_customer("interpreting_assignments"):
            fate = self._fate(rng, cid)
            src, tgt = rng.sample(words.LANGUAGES, 2)
            notes = f"Bestilt af {p.name}, tlf. {p.phone}. Tolkning {src}-{tgt}."
            row = (
                row_id,
                cid,
                rng.choice(self._interpreters),
                rng.choice(words.INTERPRETER_VENUES),
                rng.choice(words.INTERPRETER_TOPICS),
                self._instant(rng, "interpreting_assignments", fate is Fate.DUE),
                notes,
            )
            yield Spec(row, cid, fate)

    def _invoices(self) -> Iterator[Spec]:
        rng = self._rng("invoices")
        for row_id, cid, p in self._rows_per_customer("invoices"):
            fate = self._fate(rng, cid)
            day = self._invoice_date(rng, fate)
            amount = Decimal(rng.randrange(40_000, 4_000_000)).scaleb(-2)
            yield Spec((row_id, cid, f"F{day.year}-{row_id:07d}", day, amount, p.name, p.address), cid, fate)

    def _marketing_consents(self) -> Iterator[Spec]:
        rng = self._rng("marketing_consents")
        for row_id, cid, p in self._rows_per_customer("marketing_consents"):
            fate = self._fate(rng, cid, nullable=True)
            withdrawn = self._anchor(rng, "marketing_consents", fate)
            given = (withdrawn or self.now) - timedelta(seconds=rng.randrange(86400, 6 * 365 * 86400))
            yield Spec(
                (row_id, cid, p.email, rng.choice(words.CONSENT_CHANNELS), given, withdrawn), cid, fate
            )

    def _third_party_data(self) -> Iterator[Spec]:
        rng = self._rng("third_party_data")
        for row_id, cid, p in self._rows_per_customer("third_party_data"):
            fate = self._fate(rng, cid)
            received = self._instant(rng, "third_party_data", fate is Fate.DUE)
            # Nearly always told within the 10 days the privacy policy promises; a few late, a few
            # never: the deadline watch (retention.watch) has something to find.
            late = rng.random()
            days = rng.randint(1, 9) if late < 0.97 else rng.randint(12, 30)
            notified = received + timedelta(days=days) if late < 0.985 else None
            if notified is not None and notified > self.now - _LATEST:
                notified = None
            description = f"{rng.choice(words.THIRD_PARTY_FACTS).capitalize()} om {p.name}."
            yield Spec(
                (row_id, cid, rng.choice(words.THIRD_PARTY_SOURCES), description, received, notified),
                cid,
                fate,
            )

    def _correspondence(self) -> Iterator[Spec]:
        rng = self._rng("correspondence")
        for row_id, cid, p in self._rows_per_customer("correspondence"):
            fate = self._fate(rng, cid)
            body = rng.choice(words.CORRESPONDENCE_BODIES).format(
                name=p.name,
                phone=p.phone,
                email=p.email,
                kind=rng.choice(words.DOCUMENT_KINDS),
                lang=rng.choice(words.LANGUAGES),
                topic=rng.choice(words.INTERPRETER_TOPICS),
            )
            row = (
                row_id,
                cid,
                rng.choice(words.CORRESPONDENCE_SUBJECTS),
                body,
                self._instant(rng, "correspondence", fate is Fate.DUE),
                rng.choice(("ind", "ud")),
            )
            yield Spec(row, cid, fate)

    def _privacy_requests(self) -> Iterator[Spec]:
        rng = self._rng("privacy_requests")
        for row_id, cid, _ in self._rows_per_customer("privacy_requests"):
            fate = self._fate(rng, cid, nullable=True)
            completed = self._anchor(rng, "privacy_requests", fate)
            received = (completed or self.now) - timedelta(seconds=rng.randrange(3600, 30 * 86400))
            row = (
                row_id,
                cid,
                f"PR-{row_id:07d}",
                rng.choice(words.PRIVACY_REQUEST_KINDS),
                received,
                completed,
                None,  # extended_at: no generated request was extended (GDPR Art. 12(3))
                None,  # extension_reason
            )
            yield Spec(row, cid, fate)


def _invoice_years(rule: Rule, now: datetime) -> tuple[int, int]:
    """The latest invoice year clearly due and the earliest clearly not due at ``now``."""
    last_due = now.astimezone(COPENHAGEN).year - rule.years - 1
    while not rule.is_due(date(last_due, 1, 1), now - _PLACEMENT_MARGIN):
        last_due -= 1
    first_open = last_due + 1
    while rule.is_due(date(first_open, 1, 1), now + _PLACEMENT_MARGIN):
        first_open += 1
    return last_due, first_open


def _between(rng: random.Random, lo: datetime, hi: datetime) -> datetime:
    """A whole-second instant in [lo, hi]."""
    span = int((hi - lo).total_seconds())
    if span < 0:
        raise ValueError("empty time window")
    return lo + timedelta(seconds=rng.randrange(span + 1))


def _document_text(job: _Job, doc_id: int, version: int, n_versions: int, sentences: Sequence[str]) -> str:
    p = job.persona
    notes = words.REVISION_NOTES
    note = notes[-1] if version == n_versions else notes[min(version - 1, len(notes) - 2)]
    return (
        f"Alles-klar Oversættelser\n{job.kind.capitalize()} ({job.source_lang} → {job.target_lang})\n"
        f"Dokument {doc_id}, version {version} af {n_versions}\n\n"
        f"Kunde: {p.name}\nAdresse: {p.address}\nTelefon: {p.phone}\n\n"
        + " ".join(sentences)
        + f"\n\nBilag: kundens {p.phrase}.\n{note}\n"
    )
