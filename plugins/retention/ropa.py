"""The record of processing activities (GDPR Art. 30, "fortegnelse over behandlingsaktiviteter").

The policies are the data map: per category they say why the data is processed (``purpose``),
what it is (``personal_data``), where it comes from (``sources``), under which lawful basis and
law, where it is stored, when it is erased and what a customer's request does to it. This module
writes that down for the data-protection lead, in Danish and English, from the policy set that
runs, so the record cannot drift from what is enforced:

- ``document(policy_set)``: the facts, JSON-ready, each text in both languages;
- ``view(doc, lang)``: one language's rows (what the monitoring page shows);
- ``render(policy_set, lang)``: the Markdown of one language (``make ropa``).

Both forms come from ``document``, so they state the same facts. Nothing here reads a database,
a file or the clock: the same policy set and controller give the same bytes (the generation time
appears only when passed in). What the policies do not say (recipients, transfers to third
countries, security measures) is marked "ikke angivet" / "not declared", never guessed.

The controller's defaults come from the privacy policy (``persondatapolitik``): Alles-klar,
published by Emercos ApS, CVR nr. 27718299, contact info@alles-klar.dk. It names no postal
address and no data-protection officer: the deployment sets those (``Controller.from_env``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from retention.deadlines import DeadlineRule, Span
from retention.locations import AnyLocation, DatabaseLocation, FieldRule, S3Location
from retention.params import REASONS
from retention.policy import Period, Policy, PolicySet, RequestRule, Texts
from retention.scope import in_scope, why_untouched

Lang = Literal["da", "en"]
LANGS: tuple[Lang, ...] = ("da", "en")
Words = dict[str, str]
"""A text in both languages: ``{"da": ..., "en": ...}``."""

KIND = "record_of_processing_activities"


def _w(da: str, en: str) -> Words:
    return {"da": da, "en": en}


def _texts(texts: Texts | None) -> Words | None:
    return None if texts is None else _w(texts.da, texts.en)


# -- the controller ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Controller:
    """Who is responsible for the processing (Art. 30(1)(a)); None: not declared."""

    name: str = "Alles-klar"
    company: str | None = "Emercos ApS"
    cvr: str | None = "27718299"
    address: str | None = None
    contact: str | None = "info@alles-klar.dk"
    dpo: str | None = None
    """The data-protection officer or lead: name and contact."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Controller:
        """The defaults, with each ``RETENTION_CONTROLLER_*`` variable that is set and not blank."""
        values = {
            name: environ[var].strip() for name, var in CONTROLLER_ENV.items() if environ.get(var, "").strip()
        }
        return replace(cls(), **values)


CONTROLLER_ENV: dict[str, str] = {
    f.name: f"RETENTION_CONTROLLER_{f.name.upper()}" for f in fields(Controller)
}
"""Controller field -> the environment variable a deployment sets it with."""

DEFAULT_CONTROLLER = Controller()


# -- words ------------------------------------------------------------------------------------------

NOT_DECLARED = _w("ikke angivet", "not declared")

BASIS_WORDS: dict[str, Words] = {
    "consent": _w("Samtykke (art. 6, stk. 1, litra a)", "Consent (Art. 6(1)(a))"),
    "contract": _w(
        "Nødvendig for at opfylde en kontrakt med den registrerede (art. 6, stk. 1, litra b)",
        "Necessary for the performance of a contract with the data subject (Art. 6(1)(b))",
    ),
    "legal_obligation": _w(
        "Nødvendig for at overholde en retlig forpligtelse (art. 6, stk. 1, litra c)",
        "Necessary for compliance with a legal obligation (Art. 6(1)(c))",
    ),
    "vital_interests": _w(
        "Nødvendig for at beskytte vitale interesser (art. 6, stk. 1, litra d)",
        "Necessary to protect vital interests (Art. 6(1)(d))",
    ),
    "public_task": _w(
        "Nødvendig for en opgave i samfundets interesse eller for myndighedsudøvelse "
        "(art. 6, stk. 1, litra e)",
        "Necessary for a task in the public interest or in the exercise of official authority (Art. 6(1)(e))",
    ),
    "legitimate_interests": _w(
        "Nødvendig for at forfølge en legitim interesse (art. 6, stk. 1, litra f)",
        "Necessary for the purposes of legitimate interests (Art. 6(1)(f))",
    ),
}
"""``legal_basis.basis`` in words, with the article (every value of ``policy.Basis``)."""

REASON_WORDS: dict[str, Words] = {
    "erasure_request": _w("Anmodning om sletning (art. 17)", "Erasure request (Art. 17)"),
    "consent_withdrawn": _w("Tilbagetrukket samtykke (art. 7, stk. 3)", "Consent withdrawn (Art. 7(3))"),
    "objection": _w("Indsigelse (art. 21)", "Objection (Art. 21)"),
}
"""A customer's request by its reason (``params.REASONS``)."""


def _reason(reason: str) -> Words:
    return REASON_WORDS.get(reason, _w(reason, reason))


STORE_WORDS: dict[str, Words] = {
    "database": _w("forretningsdatabasen", "the business database"),
    "s3": _w("dokumentlageret (S3, alle versioner)", "document storage (S3, every version)"),
    "sftp": _w("oversættelsesarkivet (SFTP)", "the translation archive (SFTP)"),
    "filesystem": _w("fællesdrevet", "the mounted share"),
}

_STRATEGY_WORDS: dict[str, Words] = {
    "pseudonym": _w("erstattes af et pseudonym", "replaced by a pseudonym"),
    "null": _w("tømmes", "emptied"),
    "redact": _w("overskrives", "redacted"),
    "fixed": _w("sættes til en fast værdi", "set to a fixed value"),
}

_SHARED_WORDS: dict[str, Words] = {
    "keep": _w("rækker, som andet også henviser til, bevares", "rows something else also refers to are kept"),
    "erase": _w(
        "rækker, som andet også henviser til, anonymiseres også",
        "rows something else also refers to are anonymised too",
    ),
    "anonymise": _w(
        "rækker, som andet også henviser til, anonymiseres",
        "rows something else also refers to are anonymised",
    ),
}

_UNITS: dict[str, tuple[tuple[str, str], ...]] = {
    "da": (("år", "år"), ("måned", "måneder"), ("dag", "dage")),
    "en": (("year", "years"), ("month", "months"), ("day", "days")),
}
_AND = _w("og", "and")
_MONTHS = _w(
    "januar februar marts april maj juni juli august september oktober november december",
    "January February March April May June July August September October November December",
)


def period_words(period: Period, lang: str) -> str:
    """``P5Y`` -> "5 år" / "5 years"; ``P1Y6M`` -> "1 år og 6 måneder" / "1 year and 6 months"."""
    units = _UNITS[lang]
    amounts = (period.years, period.months, period.days)
    parts = [f"{n} {units[i][n != 1]}" for i, n in enumerate(amounts) if n]
    if len(parts) == 1:
        return parts[0]
    return f"{', '.join(parts[:-1])} {_AND[lang]} {parts[-1]}"


def _both(period: Period) -> Words:
    return {lang: period_words(period, lang) for lang in LANGS}


def _span(span: Span) -> Period:
    return Period(years=span.months // 12, months=span.months % 12, days=span.days)


def _and(items: Sequence[str], lang: str) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {_AND[lang]} {items[-1]}"


# -- the document -----------------------------------------------------------------------------------


def document(
    policy_set: PolicySet, *, controller: Controller = DEFAULT_CONTROLLER, generated_at: str | None = None
) -> dict[str, Any]:
    """The record as JSON-ready data: the controller, the policy set's hash and one entry per category
    (in the policy set's order), every text in Danish and English; None where nothing is declared."""
    return {
        "kind": KIND,
        "article": "GDPR Art. 30(1)",
        "controller": {f.name: getattr(controller, f.name) for f in fields(Controller)},
        "policy_set_hash": policy_set.hash,
        "generated_at": generated_at,
        "not_declared_in_policies": ["recipients", "transfers_to_third_countries", "security_measures"],
        "categories": [_category(policy) for policy in policy_set.policies],
    }


def _category(policy: Policy) -> dict[str, Any]:
    basis = policy.legal_basis
    return {
        "id": policy.id,
        "description": policy.description,
        "purpose": _texts(policy.purpose),
        "personal_data": _texts(policy.personal_data),
        "sources": _texts(policy.sources),
        "data_subjects": _data_subjects(policy),
        "legal_basis": {
            "basis": basis.basis,
            "words": BASIS_WORDS.get(basis.basis, _w(basis.basis, basis.basis)),
            "gdpr": basis.gdpr,
            "national": basis.national,
        },
        "storage": [_storage(policy, loc) for loc in policy.locations],
        "retention": _retention(policy),
        "erasure": _erasure(policy),
        "deadline": None if policy.deadline is None else _deadline(policy.deadline),
        "recipients": None,
        "transfers_to_third_countries": None,
    }


def _data_subjects(policy: Policy) -> dict[str, Any]:
    """Whom the records are about, as far as the policy shows it: the customer its ``records.subject``
    links each record to; a contact-person table (by its name) holds contact persons of customers."""
    rec = policy.records
    if rec.subject == rec.key:
        return {"words": _w("Kunderne selv", "The customers themselves"), "link": None}
    link = f"{rec.table}.{rec.subject}"
    if "contact" in rec.table.lower():
        return {"words": _w("Kontaktpersoner hos kunderne", "Contact persons at the customers"), "link": link}
    return {"words": _w("Kunder", "Customers"), "link": link}


def _storage(policy: Policy, loc: AnyLocation) -> dict[str, Any]:
    """One location: its label (the template, never a rendered key), the action and its words."""
    place = STORE_WORDS.get(loc.store, _w(loc.store, loc.store))
    effect, link = _effect(policy, loc), _link(loc)
    action = loc.action if isinstance(loc, DatabaseLocation) else "delete"
    words = {
        lang: f"{loc.label()} — {place[lang]}: {effect[lang]}" + (f" ({link[lang]})" if link else "")
        for lang in LANGS
    }
    return {"store": loc.store, "label": loc.label(), "action": action, "words": words}


def _effect(policy: Policy, loc: AnyLocation) -> Words:
    if isinstance(loc, DatabaseLocation):
        if loc.action == "delete":
            effect = _w("rækkerne slettes", "rows are deleted")
        else:
            how = _fields(loc.fields)
            effect = {
                lang: f"{_w('rækkerne anonymiseres', 'rows are anonymised')[lang]}: {how[lang]}"
                for lang in LANGS
            }
        if loc.via is not None:
            shared = _SHARED_WORDS[loc.shared]
            effect = {lang: f"{effect[lang]}; {shared[lang]}" for lang in LANGS}
        return effect
    directory = loc.template.endswith("/")
    if isinstance(loc, S3Location):
        return (
            _w("alt under præfikset slettes", "everything under the prefix is deleted")
            if directory
            else _w("objektet slettes", "the object is deleted")
        )
    return (
        _w("hele mappen slettes", "the whole directory is deleted")
        if directory
        else _w("filen slettes", "the file is deleted")
    )


def _fields(rules: Mapping[str, FieldRule]) -> Words:
    """Columns grouped by what happens to them: "name erstattes af et pseudonym; email og phone tømmes"."""
    out: Words = {}
    for lang in LANGS:
        groups = []
        for strategy, words in _STRATEGY_WORDS.items():
            columns = [name for name, rule in rules.items() if rule.strategy == strategy]
            if columns:
                groups.append(f"{_and(columns, lang)} {words[lang]}")
        out[lang] = "; ".join(groups)
    return out


def _link(loc: AnyLocation) -> Words | None:
    if isinstance(loc, DatabaseLocation) and loc.foreign_key is not None:
        return _w(
            f"knyttet gennem {loc.table}.{loc.foreign_key}", f"linked through {loc.table}.{loc.foreign_key}"
        )
    if loc.via:
        path = " → ".join(loc.via)
        return _w(f"nås gennem {path}", f"reached through {path}")
    return None


def _retention(policy: Policy) -> dict[str, Any]:
    ret = policy.retention
    anchor = None if ret.anchor is None else f"{policy.anchor_table()}.{ret.anchor}"
    return {
        "period": ret.period,
        "counts_from": ret.counts_from,
        "event": ret.event,
        "anchor": anchor,
        "anchor_via": ret.anchor_via,
        "financial_year_start": ret.financial_year_start
        if ret.counts_from == "end_of_financial_year"
        else None,
        "words": _retention_words(policy),
        "event_words": _event_words(policy, anchor),
        "rationale": policy.rationale,
    }


def _retention_words(policy: Policy) -> Words:
    ret = policy.retention
    if not ret.has_clock:
        return _w(
            "Ingen opbevaringsfrist: oplysningerne slettes kun, når kunden beder om det.",
            "No retention period: the data is erased only when the customer asks for it.",
        )
    period = _both(ret.parsed_period)
    then = _w(
        "Når fristen er udløbet, slettes eller anonymiseres oplysningerne som angivet under opbevaring "
        "ved den næste natlige kørsel.",
        "When it has passed, the next nightly run erases or anonymises the data as listed under "
        "where stored.",
    )
    if ret.counts_from == "end_of_financial_year":
        month, day = ret.fy_start
        rule = _w(
            f"{period['da']} regnet fra udgangen af det regnskabsår, hændelsen falder i "
            f"(regnskabsåret begynder {day}. {_MONTHS['da'].split()[month - 1]}).",
            f"{period['en']} from the end of the financial year in which the event falls "
            f"(the financial year begins on {day} {_MONTHS['en'].split()[month - 1]}).",
        )
    else:
        rule = _w(f"{period['da']} regnet fra hændelsen.", f"{period['en']} from the event.")
    return {lang: f"{rule[lang]} {then[lang]}" for lang in LANGS}


def _event_words(policy: Policy, anchor: str | None) -> Words:
    event = policy.retention.event
    words = _w(f"»{event}« (politikkens ordlyd)", f'"{event}" (as the policy words it)')
    if anchor is not None:
        words = _w(f"{words['da']}; datoen står i {anchor}", f"{words['en']}; the date is in {anchor}")
    via = policy.retention.anchor_via
    if via:
        path = " → ".join(via)
        words = _w(f"{words['da']}, som nås gennem {path}", f"{words['en']}, reached through {path}")
    return words


def _erasure(policy: Policy) -> dict[str, Any]:
    """What each kind of request does to the category (``retention.scope``, ``ErasureRequest.rule``)."""
    by_reason: dict[str, Any] = {}
    for reason in REASONS:
        untouched = why_untouched(policy, reason)
        rule = policy.erasure_request.rule(reason)
        if untouched is not None:
            words = _w(untouched.da, untouched.en)
        else:
            words = _rule_words(policy, rule)
        by_reason[reason] = {
            "applies": in_scope(policy, reason),
            "action": None if untouched is not None else rule.action,
            "law": None if untouched is not None else rule.law,
            "own_rule": reason != "erasure_request" and rule is not policy.erasure_request,
            "words": {lang: f"{_reason(reason)[lang]}: {words[lang]}" for lang in LANGS},
        }
    marketing = (
        _w(
            "Ja: en indsigelse mod direkte markedsføring stopper den altid (art. 21, stk. 2 og 3).",
            "Yes: an objection to direct marketing always ends it (Art. 21(2) and (3)).",
        )
        if policy.direct_marketing
        else _w("Nej.", "No.")
    )
    return {**by_reason, "direct_marketing": policy.direct_marketing, "direct_marketing_words": marketing}


def _rule_words(policy: Policy, rule: RequestRule) -> Words:
    if rule.action == "keep_until_due":
        return _w(
            f"opbevares, til fristen er udløbet, fordi loven kræver det: {rule.law}",
            f"kept until the retention period has passed, because the law requires it: {rule.law}",
        )
    actions = {loc.action if isinstance(loc, DatabaseLocation) else "delete" for loc in policy.locations}
    if actions == {"delete"}:
        return _w("slettes straks.", "erased at once.")
    if actions == {"anonymise"}:
        return _w("anonymiseres straks (se opbevaring).", "anonymised at once (see storage).")
    return _w(
        "slettes og anonymiseres straks (se opbevaring).", "erased and anonymised at once (see storage)."
    )


def _deadline(rule: DeadlineRule) -> dict[str, Any]:
    within = _both(_span(rule.within_span))
    by = rule.extension.by if rule.extension is not None else None
    if rule.kind == "notice":
        words = _w(
            f"Kunden skal have besked om oplysningerne senest {within['da']} efter modtagelsen "
            "(art. 14 og persondatapolitikken); overvåges dagligt.",
            f"The customer must be told of the data within {within['en']} of receipt "
            "(Art. 14 and the privacy policy); watched daily.",
        )
    else:
        extra = _w("", "")
        if by is not None:
            total = _both(_span(rule.within_span + Span.parse(by)))
            extra = _w(
                f", eller {total['da']}, hvis kunden inden for den første frist får besked om forlængelsen "
                "med begrundelse",
                f", or {total['en']} if the customer is told of the extension, with the reasons, "
                "within the first period",
            )
        words = _w(
            f"Anmodningen besvares senest {within['da']} efter modtagelsen{extra['da']} (art. 12, stk. 3); "
            "overvåges dagligt.",
            f"The request is answered within {within['en']} of receipt{extra['en']} (Art. 12(3)); "
            "watched daily.",
        )
    return {"kind": rule.kind, "within": rule.within, "extension_by": by, "words": words}


# -- one language: the rows the page shows and the Markdown prints ---------------------------------

LABELS: dict[str, dict[str, str]] = {
    "da": {
        "title": "Fortegnelse over behandlingsaktiviteter",
        "intro": "Efter databeskyttelsesforordningens art. 30, stk. 1, skrevet ud fra de "
        "opbevaringspolitikker, som sletningen kører efter (include/retention_policies). "
        "Tekster markeret »politikkens ordlyd« står, som de er skrevet i politikken.",
        "controller": "Dataansvarlig",
        "company": "Selskab",
        "cvr": "CVR-nr.",
        "address": "Adresse",
        "contact": "Kontakt",
        "dpo": "Databeskyttelsesansvarlig",
        "hash": "Politiksættets hash",
        "generated": "Dannet",
        "set_by": "sættes af driften med",
        "undeclared": "Modtagere, overførsler til tredjelande og de tekniske og organisatoriske "
        "sikkerhedsforanstaltninger (art. 30, stk. 1, litra d, e og g) er ikke angivet i politikkerne: "
        "den dataansvarlige skal supplere dem.",
        "categories": "Kategorier",
        "description": "Beskrivelse (politikkens ordlyd)",
        "purpose": "Formål",
        "data_subjects": "Registrerede",
        "linked": "knyttet til kunden gennem",
        "personal_data": "Personoplysninger",
        "sources": "Kilder",
        "legal_basis": "Retsgrundlag",
        "gdpr": "Databeskyttelsesforordningen (politikkens ordlyd)",
        "national": "National lov (politikkens ordlyd)",
        "storage": "Opbevaring",
        "retention": "Slettefrist",
        "event": "Hændelse",
        "rationale": "Begrundelse (politikkens ordlyd)",
        "erasure": "Anmodninger fra kunden",
        "direct_marketing": "Direkte markedsføring",
        "deadline": "Lovbestemte frister",
        "none": "ingen",
        "recipients": "Modtagere",
        "transfers": "Overførsel til tredjelande",
        "in_policies": "i politikkerne",
    },
    "en": {
        "title": "Record of processing activities",
        "intro": "As GDPR Art. 30(1) requires, written from the retention policies the erasure runs by "
        '(include/retention_policies). Texts marked "as the policy words it" are quoted as the policy '
        "writes them.",
        "controller": "Controller",
        "company": "Company",
        "cvr": "CVR no.",
        "address": "Address",
        "contact": "Contact",
        "dpo": "Data-protection officer",
        "hash": "Policy set hash",
        "generated": "Generated",
        "set_by": "set by the deployment with",
        "undeclared": "Recipients, transfers to third countries and the technical and organisational "
        "security measures (Art. 30(1)(d), (e) and (g)) are not declared in the policies: the controller "
        "must add them.",
        "categories": "Categories",
        "description": "Description (as the policy words it)",
        "purpose": "Purpose",
        "data_subjects": "Data subjects",
        "linked": "linked to the customer through",
        "personal_data": "Personal data",
        "sources": "Sources",
        "legal_basis": "Lawful basis",
        "gdpr": "GDPR (as the policy words it)",
        "national": "National law (as the policy words it)",
        "storage": "Where stored",
        "retention": "Time limit for erasure",
        "event": "Event",
        "rationale": "Rationale (as the policy words it)",
        "erasure": "Requests from the customer",
        "direct_marketing": "Direct marketing",
        "deadline": "Legal time limits",
        "none": "none",
        "recipients": "Recipients",
        "transfers": "Transfers to third countries",
        "in_policies": "in the policies",
    },
}


@dataclass(frozen=True)
class Row:
    """One fact: a label and its text(s); one text is shown inline, several as a list."""

    label: str
    items: tuple[str, ...]
    code: bool = False
    """Shown as code (a hash)."""
    declared: bool = True
    """False: the policies do not say (the text says "ikke angivet" / "not declared")."""


@dataclass(frozen=True)
class Section:
    """One category."""

    category: str
    heading: str
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class View:
    """The record in one language."""

    lang: Lang
    title: str
    intro: str
    header: tuple[Row, ...]
    note: str
    sections: tuple[Section, ...]

    @property
    def count(self) -> str:
        """How many categories: "Kategorier: 10" / "Categories: 10"."""
        return f"{LABELS[self.lang]['categories']}: {len(self.sections)}"


def view(doc: Mapping[str, Any], lang: Lang) -> View:
    """The record of ``document`` in one language, as rows."""
    labels = LABELS[lang]
    header = [
        *_controller_rows(doc["controller"], lang),
        Row(labels["hash"], (doc["policy_set_hash"],), code=True),
    ]
    if doc.get("generated_at"):
        header.append(Row(labels["generated"], (str(doc["generated_at"]),)))
    sections = tuple(
        Section(c["id"], f"{n}. {c['id']}", _category_rows(c, lang))
        for n, c in enumerate(doc["categories"], start=1)
    )
    return View(lang, labels["title"], labels["intro"], tuple(header), labels["undeclared"], sections)


def _controller_rows(controller: Mapping[str, str | None], lang: Lang) -> list[Row]:
    labels = LABELS[lang]
    rows = []
    for name in CONTROLLER_ENV:
        value = controller.get(name)
        if value:
            rows.append(Row(labels[name if name != "name" else "controller"], (value,)))
        else:
            text = f"{NOT_DECLARED[lang]} ({labels['set_by']} {CONTROLLER_ENV[name]})"
            rows.append(Row(labels[name if name != "name" else "controller"], (text,), declared=False))
    return rows


def _declared(label: str, words: Mapping[str, str] | None, lang: Lang) -> Row:
    if words is None:
        return Row(label, (NOT_DECLARED[lang],), declared=False)
    return Row(label, (words[lang],))


def _category_rows(c: Mapping[str, Any], lang: Lang) -> tuple[Row, ...]:
    labels = LABELS[lang]
    subjects = c["data_subjects"]
    who = subjects["words"][lang] + (f" ({labels['linked']} {subjects['link']})" if subjects["link"] else "")
    basis = c["legal_basis"]
    national = basis["national"] or NOT_DECLARED[lang]
    ret = c["retention"]
    erasure = c["erasure"]
    deadline = c["deadline"]
    undeclared = f"{NOT_DECLARED[lang]} {labels['in_policies']}"
    return (
        Row(labels["description"], (c["description"],)),
        _declared(labels["purpose"], c["purpose"], lang),
        Row(labels["data_subjects"], (who,)),
        _declared(labels["personal_data"], c["personal_data"], lang),
        _declared(labels["sources"], c["sources"], lang),
        Row(
            labels["legal_basis"],
            (
                basis["words"][lang],
                f"{labels['gdpr']}: {basis['gdpr']}",
                f"{labels['national']}: {national}",
            ),
        ),
        Row(labels["storage"], tuple(s["words"][lang] for s in c["storage"])),
        Row(
            labels["retention"],
            (
                ret["words"][lang],
                f"{labels['event']}: {ret['event_words'][lang]}",
                f"{labels['rationale']}: {ret['rationale']}",
            ),
        ),
        Row(
            labels["erasure"],
            (
                *(erasure[reason]["words"][lang] for reason in REASONS),
                f"{labels['direct_marketing']}: {erasure['direct_marketing_words'][lang]}",
            ),
        ),
        Row(labels["deadline"], (labels["none"] if deadline is None else deadline["words"][lang],)),
        Row(labels["recipients"], (undeclared,), declared=False),
        Row(labels["transfers"], (undeclared,), declared=False),
    )


# -- Markdown ---------------------------------------------------------------------------------------


def render(
    policy_set: PolicySet,
    lang: Lang,
    *,
    controller: Controller = DEFAULT_CONTROLLER,
    generated_at: str | None = None,
) -> str:
    """The record in Markdown, in Danish (``da``) or English (``en``)."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}")
    return markdown(view(document(policy_set, controller=controller, generated_at=generated_at), lang))


def markdown(record: View) -> str:
    """One language's record as Markdown (ends with a newline)."""
    lines = [f"# {record.title}", "", record.intro, ""]
    lines += [_line(row) for row in record.header]
    lines += ["", record.note, "", record.count]
    for section in record.sections:
        lines += ["", f"## {section.heading}", ""]
        for row in section.rows:
            lines.append(_line(row))
    return "\n".join(lines) + "\n"


def _line(row: Row) -> str:
    items = [f"`{item}`" if row.code else item for item in row.items]
    if len(items) == 1:
        return f"- **{row.label}:** {items[0]}"
    return "\n".join([f"- **{row.label}:**", *(f"  - {item}" for item in items)])
