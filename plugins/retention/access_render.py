"""The access report's items and its three documents: JSON (portability) and Markdown in Danish and English.

The walk (``retention.access``) hands every writer the same events in the same order: a category,
its locations one after the other, each location's items, then the totals. Every writer writes
straight to its file, so the report's size costs disk, not memory. The JSON writer hashes what it
writes (the digest the ledger records); the Markdown writers say the same in two languages,
Danish first, and write "not declared" where a policy leaves a text out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import IO, Any, Literal, Protocol

from retention.policy import Policy, Retention, Texts
from retention.ropa import NOT_DECLARED, period_words
from retention.scope import BASIS_WORDS

Lang = Literal["da", "en"]

FORMAT_VERSION = 1

# -- the items -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of the business database that the customer's records reach, every column as stored."""

    columns: Mapping[str, Any]
    shared: bool = False
    """Another customer's row (or another table) references it too: it is theirs as well."""

    def record(self) -> dict[str, Any]:
        return {"columns": {k: plain(v) for k, v in self.columns.items()}, "shared": self.shared}


@dataclass(frozen=True)
class ObjectVersion:
    """One version (or delete marker) of an object in S3."""

    key: str
    version_id: str
    size: int | None
    last_modified: datetime | None
    latest: bool
    delete_marker: bool
    shared: bool = False

    def record(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "version_id": self.version_id,
            "size": self.size,
            "last_modified": plain(self.last_modified),
            "latest": self.latest,
            "delete_marker": self.delete_marker,
            "shared": self.shared,
        }


@dataclass(frozen=True)
class TreeFile:
    """One file in the archive (or on the share), by its path relative to the root."""

    path: str
    size: int | None
    modified: datetime | None
    link: bool = False
    """A symbolic link: listed, never followed (its contents are not in the ZIP)."""
    shared: bool = False

    def record(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "modified": plain(self.modified),
            "link": self.link,
            "shared": self.shared,
        }


Item = Row | ObjectVersion | TreeFile


@dataclass(frozen=True)
class Place:
    """One location of a category as the report names it: its store and the policy's label."""

    store: str
    label: str
    """The policy's template (``table:customers``, ``s3:bucket/{s3_key}``), never a rendered key."""
    table: str | None = None


@dataclass
class Tally:
    """What one location held for the customer."""

    count: int = 0
    shared: int = 0
    not_listed: int = 0
    """Records whose key or path cannot be used safely (empty, absolute, ``..``): nothing was looked up."""

    def add(self, item: Item) -> None:
        self.count += 1
        self.shared += item.shared


@dataclass(frozen=True)
class Header:
    """What the report is: for whom, for which request, when, until when it is available."""

    request_ref: str
    customer_id: str
    subject_ref: str
    made_at: datetime
    available_until: date
    policy_set_hash: str
    contents: bool
    """Whether files.zip with the objects' current versions and the archive files comes with it."""


@dataclass
class Totals:
    """Counts per category and store, for the report's end, the ledger and XCom."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    shared: int = 0
    not_listed: int = 0

    def add(self, category: str, store: str, tally: Tally) -> None:
        per_store = self.counts.setdefault(category, {})
        per_store[store] = per_store.get(store, 0) + tally.count
        self.shared += tally.shared
        self.not_listed += tally.not_listed

    @property
    def items(self) -> int:
        return sum(n for stores in self.counts.values() for n in stores.values())

    def record(self) -> dict[str, Any]:
        return {"items": self.items, "shared": self.shared, "not_listed": self.not_listed}


def plain(value: Any) -> Any:
    """A column value as JSON: text, numbers and booleans as they are, times in ISO 8601, amounts as
    text (exact), bytes in base64."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    return str(value)


# -- words ------------------------------------------------------------------------------------------


def retention_words(retention: Retention) -> dict[Lang, str]:
    """How long the category is kept, in words, with the event it counts from (as the policy words it)."""
    if not retention.has_clock:
        return {
            "da": "indtil du beder os om at slette oplysningerne (ingen fast periode)",
            "en": "until you ask us to erase the data (no fixed period)",
        }
    period = retention.parsed_period
    if retention.counts_from == "end_of_financial_year":
        return {
            "da": f"{period_words(period, 'da')} fra udgangen af regnskabsåret for: {retention.event}",
            "en": f"{period_words(period, 'en')} from the end of the financial year of: {retention.event}",
        }
    return {
        "da": f"{period_words(period, 'da')} fra: {retention.event}",
        "en": f"{period_words(period, 'en')} from: {retention.event}",
    }


def texts(value: Texts | None) -> dict[str, str] | None:
    return None if value is None else {"da": value.da, "en": value.en}


def category_facts(policy: Policy) -> dict[str, Any]:
    """What the report says about a category besides its items (JSON)."""
    rule = policy.erasure_request
    return {
        "category": policy.id,
        "description": policy.description,
        "purpose": texts(policy.purpose),
        "personal_data": texts(policy.personal_data),
        "sources": texts(policy.sources),
        "legal_basis": {
            "basis": policy.legal_basis.basis,
            "words": BASIS_WORDS[policy.legal_basis.basis].model_dump(),
            "gdpr": policy.legal_basis.gdpr,
            "national": policy.legal_basis.national,
        },
        "retention": {
            "period": policy.retention.period,
            "counts_from": policy.retention.counts_from,
            "event": policy.retention.event,
            "words": dict(retention_words(policy.retention)),
        },
        "on_erasure_request": {"action": rule.action, "law": rule.law},
    }


# -- the writers ------------------------------------------------------------------------------------


class Writer(Protocol):
    """One document of the report, written as the walk goes."""

    def category(self, policy: Policy) -> None: ...

    def location(self, place: Place) -> None: ...

    def item(self, item: Item) -> None: ...

    def end_location(self, tally: Tally) -> None: ...

    def end_category(self) -> None: ...

    def close(self, totals: Totals) -> None: ...


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _fields(value: Mapping[str, Any]) -> str:
    """A JSON object's members without its braces (the writer adds members after them)."""
    return _dumps(dict(value))[1:-1]


class JsonWriter:
    """report.json, written as it goes; ``sha256`` is the digest of every byte written."""

    def __init__(self, out: IO[bytes], header: Header) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self._first: list[bool] = []
        head = {
            "kind": "access_report",
            "format_version": FORMAT_VERSION,
            "controller": "Alles-klar",
            "request_ref": header.request_ref,
            "customer_id": header.customer_id,
            "subject_ref": header.subject_ref,
            "made_at": header.made_at.isoformat(),
            "available_until": header.available_until.isoformat(),
            "policy_set_hash": header.policy_set_hash,
            "contents_included": header.contents,
        }
        self._write("{" + _fields(head) + ', "categories": [')
        self._first.append(True)

    def _write(self, text: str) -> None:
        data = text.encode("utf-8")
        self._hash.update(data)
        self._out.write(data)

    def _open(self, text: str) -> None:
        """An element of the innermost open list that itself opens a list."""
        self._element(text)
        self._first.append(True)

    def _element(self, text: str) -> None:
        separator = "\n" if self._first[-1] else ",\n"
        self._first[-1] = False
        self._write(separator + "  " * len(self._first) + text)

    def category(self, policy: Policy) -> None:
        self._open("{" + _fields(category_facts(policy)) + ', "locations": [')

    def location(self, place: Place) -> None:
        head = {"store": place.store, "location": place.label, "table": place.table}
        self._open("{" + _fields(head) + ', "items": [')

    def item(self, item: Item) -> None:
        self._element(_dumps(item.record()))

    def end_location(self, tally: Tally) -> None:
        self._first.pop()
        counts = {"count": tally.count, "shared": tally.shared, "not_listed": tally.not_listed}
        self._write("], " + _fields(counts) + "}")

    def end_category(self) -> None:
        self._first.pop()
        self._write("]}")

    def close(self, totals: Totals) -> None:
        self._first.pop()
        self._write('], "totals": ' + _dumps(totals.record()) + "}\n")

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


_WORDS: dict[str, dict[Lang, str]] = {
    "title": {"da": "Indsigt i dine personoplysninger", "en": "Access to your personal data"},
    "request": {"da": "Anmodning", "en": "Request"},
    "made": {"da": "Udarbejdet", "en": "Made"},
    "until": {"da": "Tilgængelig indtil", "en": "Available until"},
    "intro": {
        "da": (
            "Denne rapport viser, hvilke personoplysninger Alles-klar opbevarer om dig (GDPR art. 15), "
            "kategori for kategori: formålet, retsgrundlaget, hvor længe vi opbevarer oplysningerne, og "
            "hvor de kommer fra. Filen report.json indeholder de samme oplysninger i et maskinlæsbart "
            "format, som du kan tage med til en anden virksomhed (art. 20). Rapporten er selv "
            "personoplysninger: vi sletter den, når perioden ovenfor er udløbet."
        ),
        "en": (
            "This report shows the personal data Alles-klar holds about you (GDPR Art. 15), category by "
            "category: the purpose, the lawful basis, how long we keep the data and where it comes "
            "from. The file report.json holds the same in a machine-readable format that you can take "
            "to another company (Art. 20). The report is personal data itself: we delete it when the "
            "period above has ended."
        ),
    },
    "contents": {
        "da": "Filen files.zip indeholder de gemte dokumenter (den aktuelle version) og arkivfilerne.",
        "en": "The file files.zip holds the stored documents (their current version) and the archive files.",
    },
    "purpose": {"da": "Formål", "en": "Purpose"},
    "personal_data": {"da": "Oplysninger", "en": "Personal data"},
    "sources": {"da": "Kilde", "en": "Source"},
    "basis": {"da": "Retsgrundlag", "en": "Lawful basis"},
    "retention": {"da": "Opbevaring", "en": "Retention"},
    "on_request": {"da": "Hvis du beder om sletning", "en": "If you ask for erasure"},
    "erase": {"da": "slettes oplysningerne", "en": "the data is erased"},
    "keep": {"da": "opbevares de, til perioden er udløbet", "en": "it is kept until the period ends"},
    "nothing": {
        "da": "Vi opbevarer ingen oplysninger om dig i denne kategori.",
        "en": "We hold no data about you in this category.",
    },
    "shared": {"da": "delt", "en": "shared"},
    "shared_note": {
        "da": "Rækker og filer mærket «delt» vedrører også en anden kunde (f.eks. en fælles adresse).",
        "en": "Rows and files marked shared concern another customer as well (a shared address, say).",
    },
    "not_listed": {
        "da": "poster kunne ikke slås op sikkert og er ikke vist",
        "en": "records could not be looked up safely and are not shown",
    },
    "total": {"da": "I alt", "en": "In total"},
    "items": {"da": "poster", "en": "items"},
    "key": {"da": "Nøgle", "en": "Key"},
    "version": {"da": "Version", "en": "Version"},
    "size": {"da": "Størrelse (byte)", "en": "Size (bytes)"},
    "date": {"da": "Dato", "en": "Date"},
    "current": {"da": "Aktuel", "en": "Current"},
    "marker": {"da": "slettemarkør", "en": "delete marker"},
    "path": {"da": "Sti", "en": "Path"},
    "modified": {"da": "Ændret", "en": "Modified"},
    "link": {"da": "henvisning", "en": "link"},
    "yes": {"da": "ja", "en": "yes"},
    "no": {"da": "nej", "en": "no"},
}

STORES: dict[str, dict[Lang, str]] = {
    "database": {"da": "Forretningsdatabasen", "en": "The business database"},
    "s3": {"da": "Dokumentlageret (alle versioner)", "en": "Document storage (every version)"},
    "sftp": {"da": "Oversættelsesarkivet", "en": "The translation archive"},
    "filesystem": {"da": "Fildrevet", "en": "The file share"},
}

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#!~&])")


def cell(value: Any) -> str:
    """A value in a Markdown table cell: on one line, with Markdown and HTML characters escaped."""
    if value is None:
        return "—"
    if isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="seconds")
    else:
        shown = plain(value)
        text = shown if isinstance(shown, str) else json.dumps(shown, ensure_ascii=False)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


class MarkdownWriter:
    """rapport.md (Danish) or report.md (English), written as it goes."""

    def __init__(self, out: IO[bytes], header: Header, lang: Lang) -> None:
        self._out = out
        self._lang = lang
        self._number = 0
        self._place: Place | None = None
        self._columns: list[str] | None = None
        self._found = 0
        w = self._w
        self._line(f"# {w('title')}", "")
        self._line(f"- {w('request')}: {cell(header.request_ref)}")
        self._line(f"- {w('made')}: {cell(header.made_at)}")
        self._line(f"- {w('until')}: {header.available_until.isoformat()}", "")
        self._line(w("intro"), "")
        if header.contents:
            self._line(w("contents"), "")
        self._line(w("shared_note"), "")

    def _w(self, word: str) -> str:
        return _WORDS[word][self._lang]

    def _line(self, *lines: str) -> None:
        self._out.write("".join(f"{line}\n" for line in lines).encode("utf-8"))

    def category(self, policy: Policy) -> None:
        self._number += 1
        self._found = 0
        w, lang = self._w, self._lang
        basis = policy.legal_basis
        law = "; ".join(x for x in (basis.gdpr, basis.national) if x)
        rule = policy.erasure_request
        on_request = w("erase") if rule.action == "erase" else f"{w('keep')} ({rule.law})"
        self._line(
            f"## {self._number}. {cell(policy.id)}",
            "",
            f"*{cell(policy.description)}*",
            "",
            f"- **{w('purpose')}:** {_text(policy.purpose, lang)}",
            f"- **{w('personal_data')}:** {_text(policy.personal_data, lang)}",
            f"- **{w('sources')}:** {_text(policy.sources, lang)}",
            f"- **{w('basis')}:** {getattr(BASIS_WORDS[basis.basis], lang)} ({cell(law)})",
            f"- **{w('retention')}:** {cell(retention_words(policy.retention)[lang])}",
            f"- **{w('on_request')}:** {cell(on_request)}",
            "",
        )

    def location(self, place: Place) -> None:
        # Its heading is written with its first item: a location without any says nothing.
        self._place = place
        self._columns = None

    def _heading(self) -> None:
        place, self._place = self._place, None
        if place is not None:
            where = STORES.get(place.store, {}).get(self._lang, place.store)
            name = place.table if place.table is not None else place.label
            self._line(f"### {cell(where)}: {cell(name)}", "")

    def item(self, item: Item) -> None:
        self._found += 1
        self._heading()
        if isinstance(item, Row):
            self._row(item)
        elif isinstance(item, ObjectVersion):
            self._table_head([self._w(k) for k in ("key", "version", "size", "date", "current")])
            current = self._w("yes") if item.latest else self._w("no")
            version = f"{item.version_id} ({self._w('marker')})" if item.delete_marker else item.version_id
            self._cells([item.key, version, item.size, item.last_modified, current], item.shared)
        else:
            self._table_head([self._w(k) for k in ("path", "size", "modified")])
            path = f"{item.path} ({self._w('link')})" if item.link else item.path
            self._cells([path, item.size, item.modified], item.shared)

    def _row(self, row: Row) -> None:
        self._table_head(list(row.columns))
        self._cells([row.columns.get(c) for c in self._columns or ()], row.shared)

    def _table_head(self, columns: Sequence[str]) -> None:
        if self._columns is None:
            self._columns = list(columns)
            self._line("| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns))

    def _cells(self, values: Sequence[Any], shared: bool) -> None:
        cells = [cell(v) for v in values]
        if shared and cells:
            cells[0] += f" ({self._w('shared')})"
        self._line("| " + " | ".join(cells) + " |")

    def end_location(self, tally: Tally) -> None:
        if tally.not_listed:
            self._heading()
            self._line("", f"{tally.not_listed} {self._w('not_listed')}.")
        if tally.count or tally.not_listed:
            self._line("")
        self._place = None

    def end_category(self) -> None:
        if not self._found:
            self._line(self._w("nothing"), "")

    def close(self, totals: Totals) -> None:
        self._line(f"**{self._w('total')}:** {totals.items} {self._w('items')}.")


def _text(value: Texts | None, lang: Lang) -> str:
    if value is None:
        return f"*{NOT_DECLARED[lang]}*"
    return cell(value.da if lang == "da" else value.en)
