"""The record of processing activities (GDPR Art. 30) written from the policies: ``retention.ropa``
and ``python -m retention.cli ropa``.

Expected texts are taken from the policies themselves (whatever categories the shipped folder
holds), and from a small policy folder written here for what the shipped one does not show.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

from retention import ropa, stores
from retention.cli import DEFAULT_FOLDER, main
from retention.locations import FieldRule
from retention.params import REASONS
from retention.policy import Basis, Period, PolicySet, load_policies
from retention.ropa import (
    BASIS_WORDS,
    CONTROLLER_ENV,
    LANGS,
    REASON_WORDS,
    STORE_WORDS,
    Controller,
    document,
    markdown,
    period_words,
    render,
    view,
)

TITLES = {"da": "# Fortegnelse over behandlingsaktiviteter", "en": "# Record of processing activities"}
NOT_DECLARED = {"da": "ikke angivet", "en": "not declared"}
PURPOSE = {"da": "Formål", "en": "Purpose"}

# Two categories the shipped folder does not have: no purpose, personal data or sources; no
# retention clock; a child table anonymised with a fixed value; an S3 prefix; direct marketing;
# a financial year from 1 July; a consent category with its own rule for a withdrawn consent.
NOTES = """\
id: notes
description: Free-text notes about customers.
legal_basis:
  basis: legitimate_interests
  gdpr: "Art. 6(1)(f)"
rationale: Notes are kept until the customer asks us to remove them.
retention:
  counts_from: on_request_only
  event: no event (erased on request only)
records: {table: notes, key: id, subject: customer_id}
erasure_request: {action: erase}
cap: {max_items: 10, max_fraction: 0.5}
locations:
  - {store: database, table: notes, action: delete}
  - store: database
    table: note_tags
    foreign_key: note_id
    action: anonymise
    fields: {tag: {strategy: fixed, value: "-"}, label: {strategy: "null"}}
  - {store: s3, bucket: alleskar-notes, key: "notes/{customer_id}/"}
direct_marketing: true
"""
LEDGER = """\
id: ledger_lines
description: Lines of the general ledger that name a customer.
purpose: {da: Bogføring af kundens betalinger., en: Bookkeeping of the customer's payments.}
legal_basis:
  basis: consent
  gdpr: "Art. 6(1)(a)"
  national: "Bogføringsloven § 12"
rationale: A made-up category with a financial year that starts on 1 July.
retention:
  period: P1Y6M
  counts_from: end_of_financial_year
  event: the booking date
  anchor: booked_at
  financial_year_start: "07-01"
records: {table: ledger_lines, key: id, subject: customer_id}
erasure_request:
  action: erase
  consent_withdrawn: {action: keep_until_due, law: "GDPR art. 7, stk. 1"}
cap: {max_items: 10, max_fraction: 0.5}
locations:
  - {store: database, table: ledger_lines, action: delete}
  - {store: sftp, path: "ledger/{customer_id}/"}
"""


@pytest.fixture(scope="module")
def shipped() -> PolicySet:
    return load_policies(DEFAULT_FOLDER)


@pytest.fixture
def made_up(tmp_path: Path) -> PolicySet:
    (tmp_path / "notes.yaml").write_text(NOTES, encoding="utf-8")
    (tmp_path / "ledger_lines.yaml").write_text(LEDGER, encoding="utf-8")
    return load_policies(tmp_path)


@pytest.fixture(autouse=True)
def no_controller_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in CONTROLLER_ENV.values():
        monkeypatch.delenv(var, raising=False)


def sections(text: str) -> dict[str, str]:
    """Category id -> its part of the Markdown."""
    out = {}
    for part in text.split("\n## ")[1:]:
        heading, _, body = part.partition("\n")
        out[heading.split(". ", 1)[1]] = body
    return out


def row(body: str, label: str) -> str:
    """The text of one row of a category: inline, or its items, one per line."""
    lines = body.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"- **{label}:**"))
    inline = lines[start].split(":**", 1)[1].strip()
    if inline:
        return inline
    items = []
    for line in lines[start + 1 :]:
        if not line.startswith("  - "):
            break
        items.append(line[4:])
    return "\n".join(items)


# --- every category, both languages ------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_every_category_appears_with_its_purpose_basis_storage_and_retention(
    shipped: PolicySet, lang: ropa.Lang
) -> None:
    text = render(shipped, lang)
    assert text.startswith(TITLES[lang] + "\n")
    found = sections(text)
    assert list(found) == shipped.ids
    assert f": {len(shipped.policies)}\n" in text
    for policy in shipped.policies:
        body = found[policy.id]
        assert policy.purpose is not None and policy.personal_data and policy.sources, policy.id
        assert row(body, PURPOSE[lang]) == getattr(policy.purpose, lang)
        assert getattr(policy.personal_data, lang) in body and getattr(policy.sources, lang) in body
        assert BASIS_WORDS[policy.legal_basis.basis][lang] in body
        assert policy.legal_basis.gdpr in body
        assert (policy.legal_basis.national or NOT_DECLARED[lang]) in body
        for loc in policy.locations:
            assert loc.label() in body, (policy.id, loc.label())
            assert STORE_WORDS[loc.store][lang] in body
        ret = policy.retention
        if ret.has_clock:
            assert period_words(ret.parsed_period, lang) in body
        assert ret.event in body and policy.rationale in body
        for reason in REASONS:
            assert REASON_WORDS[reason][lang] in body
        assert NOT_DECLARED[lang] in row(body, "Modtagere" if lang == "da" else "Recipients")


def test_the_shipped_policies_declare_purpose_data_and_sources_in_danish_and_english(
    shipped: PolicySet,
) -> None:
    for policy in shipped.policies:
        for texts in (policy.purpose, policy.personal_data, policy.sources):
            assert texts is not None, policy.id
            assert texts.da != texts.en, policy.id
    for lang in LANGS:
        for body in sections(render(shipped, lang)).values():
            assert NOT_DECLARED[lang] not in row(body, PURPOSE[lang])


def test_words_for_every_lawful_basis_reason_and_store() -> None:
    assert set(BASIS_WORDS) == set(typing.get_args(Basis))
    assert set(REASON_WORDS) == set(REASONS)
    assert set(STORE_WORDS) == set(stores.ORDER)
    strategies = typing.get_args(FieldRule.model_fields["strategy"].annotation)
    assert set(ropa._STRATEGY_WORDS) == set(strategies)
    for words in (*BASIS_WORDS.values(), *REASON_WORDS.values(), *STORE_WORDS.values()):
        assert set(words) == set(LANGS) and all(words.values())


@pytest.mark.parametrize(
    ("period", "da", "en"),
    [
        ("P5Y", "5 år", "5 years"),
        ("P1Y", "1 år", "1 year"),
        ("P18M", "18 måneder", "18 months"),
        ("P1M", "1 måned", "1 month"),
        ("P1Y6M", "1 år og 6 måneder", "1 year and 6 months"),
        ("P2Y1M3D", "2 år, 1 måned og 3 dage", "2 years, 1 month and 3 days"),
        ("P2W", "14 dage", "14 days"),
        ("P1D", "1 dag", "1 day"),
    ],
)
def test_periods_in_words(period: str, da: str, en: str) -> None:
    assert period_words(Period.parse(period), "da") == da
    assert period_words(Period.parse(period), "en") == en


def test_data_subjects_deadlines_and_the_request_rules_of_the_shipped_policies(shipped: PolicySet) -> None:
    doc = {c["id"]: c for c in document(shipped)["categories"]}
    da = sections(render(shipped, "da"))
    for policy in shipped.policies:
        rec = policy.records
        who = row(da[policy.id], "Registrerede")
        assert (rec.table + "." + rec.subject in who) == (rec.subject != rec.key), policy.id
        if policy.deadline is not None:
            within = period_words(ropa._span(policy.deadline.within_span), "da")
            assert f"senest {within} efter modtagelsen" in row(da[policy.id], "Lovbestemte frister")
        erasure = doc[policy.id]["erasure"]
        for reason in REASONS:
            rule = policy.erasure_request.rule(reason)
            if erasure[reason]["applies"]:
                assert erasure[reason]["action"] == rule.action
                assert erasure[reason]["law"] == rule.law
                if rule.law:
                    assert rule.law in erasure[reason]["words"]["da"]
            else:
                assert erasure[reason]["action"] is None
        assert erasure["direct_marketing"] is policy.direct_marketing


# --- what the policies do not say, and what the shipped folder does not show -------------------


def test_a_policy_without_purpose_says_not_declared(made_up: PolicySet) -> None:
    da, en = sections(render(made_up, "da")), sections(render(made_up, "en"))
    assert row(da["notes"], "Formål") == "ikke angivet"
    assert row(en["notes"], "Purpose") == "not declared"
    assert row(da["notes"], "Personoplysninger") == "ikke angivet"
    assert row(en["notes"], "Sources") == "not declared"
    assert row(da["ledger_lines"], "Formål") == "Bogføring af kundens betalinger."
    notes = document(made_up)["categories"][[p.id for p in made_up.policies].index("notes")]
    assert notes["purpose"] is None and notes["personal_data"] is None and notes["sources"] is None
    views = {lang: view(document(made_up), lang) for lang in LANGS}
    section = next(s for s in views["en"].sections if s.category == "notes")
    assert [r.declared for r in section.rows if r.label == "Purpose"] == [False]


def test_no_clock_prefixes_children_and_direct_marketing_in_words(made_up: PolicySet) -> None:
    da, en = sections(render(made_up, "da"))["notes"], sections(render(made_up, "en"))["notes"]
    assert "Ingen opbevaringsfrist: oplysningerne slettes kun, når kunden beder om det." in da
    assert "No retention period: the data is erased only when the customer asks for it." in en
    storage = row(en, "Where stored").splitlines()
    assert storage == [
        "table:notes — the business database: rows are deleted",
        "table:note_tags — the business database: rows are anonymised: label emptied; tag set to a fixed "
        "value (linked through note_tags.note_id)",
        "s3:alleskar-notes/notes/{customer_id}/ — document storage (S3, every version): everything under "
        "the prefix is deleted",
    ]
    assert "tag sættes til en fast værdi" in da and "alt under præfikset slettes" in da
    requests = row(da, "Anmodninger fra kunden")
    assert "Indsigelse (art. 21): slettes og anonymiseres straks (se opbevaring)." in requests
    assert "Direkte markedsføring: Ja" in requests
    assert "berøres ikke af, at samtykket trækkes tilbage" in requests  # not processed under consent


def test_financial_year_and_a_rule_of_its_own_for_a_withdrawn_consent(made_up: PolicySet) -> None:
    da, en = sections(render(made_up, "da"))["ledger_lines"], sections(render(made_up, "en"))["ledger_lines"]
    assert "1 år og 6 måneder regnet fra udgangen af det regnskabsår" in da and "1. juli" in da
    assert "1 year and 6 months from the end of the financial year" in en and "1 July" in en
    assert "»the booking date« (politikkens ordlyd); datoen står i ledger_lines.booked_at" in da
    assert "sftp:ledger/{customer_id}/ — the translation archive (SFTP): the whole directory is deleted" in en
    requests = row(en, "Requests from the customer").splitlines()
    assert requests[0] == "Erasure request (Art. 17): erased at once."
    assert requests[1] == (
        "Consent withdrawn (Art. 7(3)): kept until the retention period has passed, because the law "
        "requires it: GDPR art. 7, stk. 1"
    )
    entry = document(made_up)["categories"][[p.id for p in made_up.policies].index("ledger_lines")]
    assert entry["erasure"]["consent_withdrawn"]["own_rule"] is True
    assert entry["erasure"]["objection"]["applies"] is False
    assert entry["retention"]["financial_year_start"] == "07-01"


# --- the JSON form, the header, determinism ----------------------------------------------------


def _words(value: Any) -> list[dict[str, str]]:
    """Every {"da", "en"} text in the document."""
    if isinstance(value, dict):
        if set(value) == set(LANGS):
            return [value]
        return [w for v in value.values() for w in _words(v)]
    if isinstance(value, list):
        return [w for v in value for w in _words(v)]
    return []


@pytest.mark.parametrize("folder", ["shipped", "made_up"])
def test_the_json_form_holds_the_same_facts(folder: str, request: pytest.FixtureRequest) -> None:
    policies: PolicySet = request.getfixturevalue(folder)
    doc = document(policies)
    assert json.loads(json.dumps(doc, ensure_ascii=False)) == doc
    assert doc["policy_set_hash"] == policies.hash and doc["generated_at"] is None
    assert [c["id"] for c in doc["categories"]] == policies.ids
    for policy, entry in zip(policies.policies, doc["categories"], strict=True):
        assert entry["purpose"] == (policy.purpose.model_dump() if policy.purpose else None)
        assert entry["personal_data"] == (policy.personal_data.model_dump() if policy.personal_data else None)
        assert entry["sources"] == (policy.sources.model_dump() if policy.sources else None)
        assert entry["legal_basis"]["basis"] == policy.legal_basis.basis
        assert entry["legal_basis"]["gdpr"] == policy.legal_basis.gdpr
        assert [s["label"] for s in entry["storage"]] == [loc.label() for loc in policy.locations]
        assert entry["retention"]["period"] == policy.retention.period
        assert entry["retention"]["counts_from"] == policy.retention.counts_from
        assert entry["recipients"] is None and entry["transfers_to_third_countries"] is None
    for lang in LANGS:
        text = render(policies, lang)
        assert text == markdown(view(doc, lang))
        for words in _words(doc):
            assert words[lang] in text, words[lang]


def test_the_header_names_the_controller_and_the_hash(shipped: PolicySet) -> None:
    da = render(shipped, "da")
    assert "- **Dataansvarlig:** Alles-klar" in da and "- **CVR-nr.:** 27718299" in da
    assert "- **Kontakt:** info@alles-klar.dk" in da
    assert "- **Adresse:** ikke angivet (sættes af driften med RETENTION_CONTROLLER_ADDRESS)" in da
    assert f"- **Politiksættets hash:** `{shipped.hash}`" in da
    en = render(shipped, "en", controller=Controller(address="Vestergade 1, 8000 Aarhus C", dpo="dpo@x.dk"))
    assert (
        "- **Address:** Vestergade 1, 8000 Aarhus C" in en and "- **Data-protection officer:** dpo@x.dk" in en
    )
    assert f"- **Policy set hash:** `{shipped.hash}`" in en
    assert "Recipients, transfers to third countries" in en


def test_the_controller_from_the_environment() -> None:
    env = {CONTROLLER_ENV["address"]: " Vestergade 1 ", CONTROLLER_ENV["cvr"]: "  ", "OTHER": "x"}
    assert Controller.from_env(env) == Controller(address="Vestergade 1")
    assert Controller.from_env({}) == ropa.DEFAULT_CONTROLLER


def test_the_output_is_deterministic(shipped: PolicySet) -> None:
    again = load_policies(DEFAULT_FOLDER)
    for lang in LANGS:
        assert render(shipped, lang) == render(again, lang) == render(shipped, lang)
        assert "Dannet" not in render(shipped, lang) and "Generated" not in render(shipped, lang)
    assert document(shipped) == document(again)
    stamped = render(shipped, "en", generated_at="2026-06-15T10:00:00+02:00")
    assert "- **Generated:** 2026-06-15T10:00:00+02:00" in stamped
    with pytest.raises(ValueError, match="lang"):
        render(shipped, "de")  # type: ignore[arg-type]


# --- the command ---------------------------------------------------------------------------------


def test_cli_prints_markdown_json_or_both(shipped: PolicySet, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ropa", str(DEFAULT_FOLDER), "--lang", "da"]) == 0
    assert capsys.readouterr().out == render(shipped, "da")

    assert main(["ropa", "--lang", "en"]) == 0  # the shipped folder by default
    assert capsys.readouterr().out == render(shipped, "en")

    assert main(["ropa", str(DEFAULT_FOLDER)]) == 0
    both = capsys.readouterr().out
    assert both == render(shipped, "da") + "\n---\n\n" + render(shipped, "en")
    assert both.index(TITLES["da"]) < both.index(TITLES["en"])

    assert main(["ropa", str(DEFAULT_FOLDER), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == document(shipped)


def test_cli_generation_time_and_controller(
    shipped: PolicySet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONTROLLER_ENV["address"], "Vestergade 1, 8000 Aarhus C")
    at = "2026-06-15T10:00:00+02:00"
    assert main(["ropa", "--lang", "da", "--generated-at", at]) == 0
    out = capsys.readouterr().out
    assert f"- **Dannet:** {at}" in out and "- **Adresse:** Vestergade 1, 8000 Aarhus C" in out
    assert main(["ropa", "--format", "json", "--generated-at", "now"]) == 0
    assert json.loads(capsys.readouterr().out)["generated_at"].endswith("+00:00")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--generated-at", "2026-06-15T10:00:00"], "needs a time zone"),
        (["--generated-at", "yesterday"], "not an ISO 8601 date-time"),
    ],
)
def test_cli_refuses_a_bad_generation_time(
    args: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ropa", *args]) == 2
    captured = capsys.readouterr()
    assert problem in captured.err and captured.out == ""


def test_cli_refuses_invalid_policies_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.yaml").write_text(NOTES.replace("basis: legitimate_interests", "basis: whim"))
    assert main(["ropa", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("invalid: notes.yaml") and "legal_basis.basis" in captured.err
    assert captured.out == ""
    assert main(["ropa", str(tmp_path / "nothing")]) == 2
