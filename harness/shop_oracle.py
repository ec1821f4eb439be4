"""What a run over the web-shop world (``harness.shop_world``) must leave behind, from the README's rules.

Independent of the engine: it reads the policy files as plain YAML and applies the rules the README
states ("How it works", "Writing a policy", "Safety rules") to an in-memory copy of the world, in
the order a run has (every category's files first, then the database pass in policy order), never
querying a store or calling ``retention``:

- due: the anchor plus the period has passed in Copenhagen time (``end_of_financial_year``: from
  the end of the anchor's financial year); a NULL anchor is never due; through ``anchor_via``, a
  record is due when the path reaches an anchor and every anchor it reaches is due;
  ``on_request_only`` is never due;
- the nightly run erases what is due; a request erases the customer's records (``keep_until_due``:
  the due ones, the rest is kept by law); a legal hold keeps everything of its customer;
- an item (object version, archive file) goes only if every record naming it may be erased now;
  a record whose item stays keeps its row; a category that deletes its records keeps those another
  category's rows still reference (``blocked_by_reference``);
- a ``via`` path reaches rows from the records; a row something else also references (any row but
  the path's own rows before it) is shared: ``keep`` leaves it, ``anonymise`` anonymises it while
  the own rows get the action; anonymising touches only values not yet anonymised; ``pseudonym``
  is ``psn:`` and the keyed HMAC of ``table.column`` NUL value;
- the SFTP erasure removes the directories it empties (never the root).
"""

from __future__ import annotations

import copy
import graphlib
import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from harness.shop_world import FOREIGN_KEYS, POLICY_DIR, TABLES, Mode, Outcome, ShopWorld
from harness.world_rules import COPENHAGEN

REDACTED = "[slettet]"
Rows = dict[str, dict[Any, dict[str, Any]]]


class Hop(NamedTuple):
    source: str
    source_column: str
    target: str
    target_column: str

    @classmethod
    def parse(cls, text: str) -> Hop:
        left, right = (side.strip().split(".") for side in text.split("->"))
        return cls(left[0], left[1], right[0], right[1])

    @property
    def to_parent(self) -> bool:
        """The source rows reference the target rows (a step where paths may converge)."""
        return any(
            fk == (self.source, self.source_column, self.target, self.target_column) for fk in FOREIGN_KEYS
        )


@dataclass
class Expected:
    """The stores after the run, and what the run must report per (category, store)."""

    rows: Rows
    objects: dict[str, list[tuple[str, bool]]]
    archive: dict[str, bytes]
    counts: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    """``erased``, ``anonymised`` and the reasons things stayed (``shared_with_not_due``, ...)."""
    statutory: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Request: per ``keep_until_due`` category what the law keeps (count, law, until dates)."""

    @property
    def directories(self) -> set[str]:
        """The archive's directories: those still holding a file (emptied ones are removed)."""
        return {"/".join(p.split("/")[:i]) for p in self.archive for i in range(1, p.count("/") + 1)}

    def outcome(self, table: str, key: Any, before: Mapping[str, Any]) -> Outcome:
        row = self.rows[table].get(key)
        return "deleted" if row is None else "unchanged" if row == before else "anonymised"


def expected(
    world: ShopWorld, mode: Mode, pseudonym_key: bytes, *, policy_dir: Path = POLICY_DIR
) -> Expected:
    """The state and counts the nightly run at ``world.now`` or the request for ``world.subject`` leaves."""
    return _Run(world, mode, pseudonym_key, _categories(policy_dir)).result()


def _categories(folder: Path) -> list[dict[str, Any]]:
    """The policies in run order: each after the categories it names in ``after`` (ties by id)."""
    docs = {d["id"]: d for d in (yaml.safe_load(p.read_text()) for p in sorted(folder.glob("[!_]*.yaml")))}
    sorter = graphlib.TopologicalSorter({pid: docs[pid].get("after", []) for pid in sorted(docs)})
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order += ready
        sorter.done(*ready)
    return [docs[pid] for pid in order]


def _period(text: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?", text)
    if m is None:
        raise ValueError(f"the oracle reads only P..Y..M..D periods, not {text!r}")
    years, months, days = (int(g or 0) for g in m.groups())
    return years, months, days


def _plus(start: datetime, period: tuple[int, int, int]) -> datetime:
    years, months, days = period
    month = start.month - 1 + months
    year, month = start.year + years + month // 12, month % 12 + 1
    day = min(start.day, [31, 29 if year % 4 == 0 else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1])
    return start.replace(year=year, month=month, day=day) + timedelta(days=days)


def due_from(retention: Mapping[str, Any], anchor: datetime | date) -> datetime:
    """The Copenhagen moment from which a record with this anchor is due."""
    period = _period(retention["period"])
    if retention["counts_from"] == "event":
        if not isinstance(anchor, datetime):
            raise TypeError("an event anchor is a timestamp")
        return _plus(anchor.astimezone(COPENHAGEN), period)
    month, day = (int(x) for x in retention.get("financial_year_start", "01-01").split("-"))
    year_end = datetime(anchor.year, month, day, tzinfo=COPENHAGEN)
    if year_end.date() <= anchor:
        year_end = year_end.replace(year=anchor.year + 1)
    return _plus(year_end, period)


class _Run:
    def __init__(self, world: ShopWorld, mode: Mode, key: bytes, categories: list[dict[str, Any]]) -> None:
        self.world, self.mode, self.key, self.categories = world, mode, key, categories
        self.rows: Rows = copy.deepcopy(world.rows)
        self.objects = copy.deepcopy(world.objects)
        self.archive = dict(world.archive)
        self.counts: dict[tuple[str, str], Counter[str]] = {}
        self.kept_for_files: dict[str, set[Any]] = {}
        self.statutory: dict[str, dict[str, Any]] = {}
        self._file_phase: dict[str, dict[Any, dict[str, Any]]] | None = {}
        """The selections while only files change (the rows are the same for every file step)."""

    def result(self) -> Expected:
        for store in ("s3", "sftp"):
            for category in self.categories:
                for loc in category["locations"]:
                    if loc["store"] == store:
                        self._files(category, loc)
        self._file_phase = None
        for category in self.categories:
            self._database(category)
        return Expected(self.rows, self.objects, self.archive, self.counts, self.statutory)

    # -- which records a run acts on ------------------------------------------------------------

    def _due(self, category: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
        retention = category["retention"]
        if retention["counts_from"] == "on_request_only":
            return False
        anchors = [row]
        for hop in map(Hop.parse, retention.get("anchor_via") or []):
            values = {r[hop.source_column] for r in anchors} - {None}
            anchors = [r for r in self.rows[hop.target].values() if r[hop.target_column] in values]
        dates = [r[retention["anchor"]] for r in anchors]
        return bool(dates) and all(d is not None and due_from(retention, d) <= self.world.now for d in dates)

    def _selected(self, category: Mapping[str, Any]) -> dict[Any, dict[str, Any]]:
        """The records this run erases in the category, held ones included."""
        if self._file_phase is not None and category["id"] in self._file_phase:
            return self._file_phase[category["id"]]
        found = self._select(category)
        if self._file_phase is not None:
            self._file_phase[category["id"]] = found
        return found

    def _select(self, category: Mapping[str, Any]) -> dict[Any, dict[str, Any]]:
        records, table = category["records"], self.rows[category["records"]["table"]]
        if self.mode == "nightly":
            return {k: r for k, r in table.items() if self._due(category, r)}
        keep = category["erasure_request"]["action"] == "keep_until_due"
        return {
            k: r
            for k, r in table.items()
            if r[records["subject"]] == self.world.subject and (not keep or self._due(category, r))
        }

    def _held(self, category: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
        return row[category["records"]["subject"]] in self.world.held

    def _count(self, category: Mapping[str, Any], store: str, what: str, n: int = 1) -> None:
        self.counts.setdefault((category["id"], store), Counter())[what] += n

    # -- files --------------------------------------------------------------------------------------

    def _files(self, category: Mapping[str, Any], loc: Mapping[str, Any]) -> None:
        store, template = loc["store"], loc.get("key") or loc["path"]
        place = self.objects if store == "s3" else self.archive
        for key, record in self._selected(category).items():
            if any(record[c] is None for c in _placeholders(template)):
                continue
            named = template.format(**record)
            items = [i for i in place if i == named or (named.endswith("/") and i.startswith(named))]
            for item in items:
                n = len(self.objects[item]) if store == "s3" else 1
                why = "legal_hold" if self._held(category, record) else self._named_otherwise(store, item)
                if why is None:
                    del place[item]
                    self._count(category, store, "erased", n)
                else:
                    self.kept_for_files.setdefault(category["id"], set()).add(key)
                    self._count(category, store, why, n)

    def _named_otherwise(self, store: str, item: str) -> str | None:
        """``shared_with_not_due`` if a record that may not be erased now also names ``item``."""
        for category in self.categories:
            for loc in category["locations"]:
                template = loc.get("key") or loc.get("path")
                if loc["store"] != store or template is None:
                    continue
                erasable = self._selected(category)
                for key, record in self.rows[category["records"]["table"]].items():
                    if any(record[c] is None for c in _placeholders(template)):
                        continue
                    named = template.format(**record)
                    if item == named or (named.endswith("/") and item.startswith(named)):
                        if key not in erasable or self._held(category, record):
                            return "shared_with_not_due"
        return None

    # -- the database pass ----------------------------------------------------------------------

    def _database(self, category: Mapping[str, Any]) -> None:
        table, key = category["records"]["table"], category["records"]["key"]
        locations = [loc for loc in category["locations"] if loc["store"] == "database"]
        own_tables = {loc["table"] for loc in locations}
        deletes = any(loc["table"] == table and loc["action"] == "delete" for loc in locations)
        chosen: dict[Any, dict[str, Any]] = {}
        for k, record in self._selected(category).items():
            if self._held(category, record):
                self._count(category, "database", "legal_hold")
            elif k not in self.kept_for_files.get(category["id"], set()):
                chosen[k] = record
        referenced = {k for k, r in chosen.items() if deletes and self._referenced(table, r, own_tables)}
        chosen = {k: r for k, r in chosen.items() if k not in referenced}
        records_last = sorted(locations, key=lambda loc: loc["table"] == table and "via" not in loc)
        for loc in records_last:
            if "via" in loc:
                self._path(category, loc, chosen)
            elif loc["action"] == "delete":
                for k in chosen:
                    del self.rows[table][k]
                self._count(category, "database", "erased", len(chosen))
                self._count(category, "database", "blocked_by_reference", len(referenced))
            else:
                self._anonymise(category, table, [self.rows[table][k] for k in chosen], loc["fields"])
        if self.mode == "request" and category["erasure_request"]["action"] == "keep_until_due":
            self._kept_by_law(category, key)

    def _referenced(self, table: str, row: Mapping[str, Any], own_tables: set[str]) -> bool:
        """Whether rows of a table outside the category reference ``row``."""
        return any(
            fk.table not in own_tables | {table}
            and any(r[fk.column] == row[fk.parent_column] for r in self.rows[fk.table].values())
            for fk in FOREIGN_KEYS
            if fk.parent == table
        )

    def _path(self, category: Mapping[str, Any], loc: Mapping[str, Any], records: dict[Any, Any]) -> None:
        hops = [Hop.parse(h) for h in loc["via"]]
        reached, own = self._reach(hops, records)
        target = self.rows[loc["table"]]
        if loc["action"] == "delete":
            for k in own:
                del target[k]
            self._count(category, "database", "erased", len(own))
        else:
            self._anonymise(category, loc["table"], [reached[k] for k in own], loc["fields"])
        shared = [reached[k] for k in reached if k not in own]
        if loc.get("shared", "keep") == "anonymise":
            self._anonymise(category, loc["table"], shared, loc["fields"])
        elif shared:
            self._count(category, "database", "shared_with_not_due", len(shared))

    def _reach(self, hops: list[Hop], records: dict[Any, Any]) -> tuple[dict[Any, Any], set[Any]]:
        """The rows the path reaches from ``records``, and the keys of those that are the records' own:
        not referenced by anything but the path's own rows before them (at each converging step, and
        at the end)."""
        everything, own_level = dict(records), dict(records)
        for i, hop in enumerate(hops):
            pk = TABLES[hop.target][0]
            values = {r[hop.source_column] for r in everything.values()} - {None}
            everything = {r[pk]: r for r in self.rows[hop.target].values() if r[hop.target_column] in values}
            own_values = {r[hop.source_column] for r in own_level.values()} - {None}
            arrived = [r for r in self.rows[hop.target].values() if r[hop.target_column] in own_values]
            last = i == len(hops) - 1
            downstream = None if last else hops[i + 1]
            if hop.to_parent or last:
                arrived = [r for r in arrived if not self._shared(hop, own_level, r, downstream)]
            own_level = {r[pk]: r for r in arrived}
        return everything, set(own_level)

    def _shared(
        self, hop: Hop, own_source: Mapping[Any, Any], row: Mapping[str, Any], downstream: Hop | None
    ) -> bool:
        for fk in FOREIGN_KEYS:
            if fk.parent != hop.target:
                continue
            if downstream is not None and (fk.table, fk.column) == (
                downstream.target,
                downstream.target_column,
            ):
                continue
            pk = TABLES[fk.table][0]
            for other in self.rows[fk.table].values():
                if other[fk.column] is None or other[fk.column] != row[fk.parent_column]:
                    continue
                if (fk.table, fk.column) == (hop.source, hop.source_column) and other[pk] in own_source:
                    continue
                return True
        return False

    def _anonymise(
        self,
        category: Mapping[str, Any],
        table: str,
        rows: Iterable[dict[str, Any]],
        fields: Mapping[str, Any],
    ) -> None:
        """Replace the fields of the rows that still hold a value not anonymised; count those rows."""
        done = 0
        for row in rows:
            if not any(_needs_anonymising(row[column], rule) for column, rule in fields.items()):
                continue
            for column, rule in fields.items():
                if rule["strategy"] != "pseudonym":
                    row[column] = _replacement(rule)
                elif _needs_anonymising(row[column], rule):
                    message = f"{table}.{column}\x00{row[column]}".encode()
                    row[column] = "psn:" + hmac.new(self.key, message, hashlib.sha256).hexdigest()[:32]
            done += 1
        self._count(category, "database", "anonymised", done)

    def _kept_by_law(self, category: Mapping[str, Any], key: str) -> None:
        retention, subject = category["retention"], category["records"]["subject"]
        kept = [
            r
            for r in self.rows[category["records"]["table"]].values()
            if r[subject] == self.world.subject and not self._due(category, r)
        ]
        if kept:
            dates = sorted(r[retention["anchor"]] for r in kept)
            self.statutory[category["id"]] = {
                "count": len(kept),
                "law": category["erasure_request"]["law"],
                "until_earliest": due_from(retention, dates[0]).date().isoformat(),
                "until": due_from(retention, dates[-1]).date().isoformat(),
            }


def _placeholders(template: str) -> list[str]:
    return re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", template)


def _needs_anonymising(value: Any, rule: Mapping[str, Any]) -> bool:
    if value is None:
        return False
    if rule["strategy"] == "pseudonym":
        return not str(value).startswith("psn:")
    return bool(value != _replacement(rule))


def _replacement(rule: Mapping[str, Any]) -> str | None:
    return {"null": None, "redact": REDACTED}.get(rule["strategy"], rule.get("value"))
