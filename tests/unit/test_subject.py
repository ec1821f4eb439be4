"""The deployment's customer-id format (``_subject.yaml``): loading, its errors, the one check of an id."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from retention.errors import PolicyError, TerminalError
from retention.policy import load_policies
from retention.subject import (
    DEFAULT_SUBJECT,
    SAFE_SUBJECT_SCHEMA,
    SUBJECT_FILE,
    SubjectFormat,
)

K_POLICIES = Path(__file__).resolve().parents[1] / "fixtures" / "k_deployment" / "policies"
K_SUBJECT: dict[str, Any] = yaml.safe_load((K_POLICIES / SUBJECT_FILE).read_text())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the K deployment's policy folder, to break."""
    return Path(shutil.copytree(K_POLICIES, tmp_path / "policies"))


def _write_subject(folder: Path, doc: Any) -> None:
    (folder / SUBJECT_FILE).write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)


def test_the_fixture_deployment_declares_its_format() -> None:
    policies = load_policies(K_POLICIES)
    assert policies.subject.pattern == "K-[0-9]{5}" and policies.subject.max_length == 7
    assert policies.subject.example == "K-00042"
    assert policies.subject.identity("email").normalise == "casefold"
    assert policies.ids == ["orders", "customers"]  # _subject.yaml is not a category


def test_without_the_file_the_default_format_applies_and_the_format_is_part_of_the_set_s_hash(
    folder: Path,
) -> None:
    with_file = load_policies(folder)
    (folder / SUBJECT_FILE).unlink()
    without = load_policies(folder)
    assert without.subject == DEFAULT_SUBJECT
    assert without.policies == with_file.policies
    # A run planned under one format cannot go on under another (check_same_policies compares hashes).
    assert without.hash != with_file.hash


BROKEN: list[tuple[dict[str, Any], str, str]] = [
    ({"pattern": "K-[0-9{5}"}, "pattern", "not a valid regular expression"),
    ({"pattern": "K-[0-9]*|"}, "pattern", "must not match the empty string"),
    ({"pattern": "[0-9]*"}, "pattern", "must not match the empty string"),
    ({"pattern": "(?i)K-[0-9]{5}"}, "pattern", "must not use inline flags"),
    ({"pattern": "(?i:K)-[0-9]{5}"}, "pattern", "must not use inline flags"),
    ({"example": "K-0042"}, "example", "example does not match pattern"),
    ({"example": "42"}, "example", "example does not match pattern"),
    ({"pattern": "K-[0-9]{5}|K-[0-9]{7}", "example": "K-0000042"}, "example", "longer than max_length"),
    ({"pattern": "K [0-9]{5}", "example": "K 00042"}, "example", "outside the generic id alphabet"),
    ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
    ({"max_length": 65}, "max_length", "less than or equal to 64"),
    ({"max_length": 0}, "max_length", "greater than or equal to 1"),
    ({"description": "K"}, "description", "at least 3 characters"),
    ({"pattern": None}, "pattern", "valid string"),
    (
        {"identities": [{**K_SUBJECT["identities"][0], "normalise": "lower"}]},
        "identities[0].normalise",
        "Input",
    ),
    ({"identities": [{**K_SUBJECT["identities"][0], "format": "(["}]}, "identities[0].format", "regular"),
    ({"identities": [K_SUBJECT["identities"][0]] * 2}, "identities", "same name"),
]


@pytest.mark.parametrize(("change", "field", "words"), BROKEN, ids=[f for _, f, _ in BROKEN])
def test_a_broken_subject_file_is_refused_naming_the_file_and_the_field(
    folder: Path, change: dict[str, Any], field: str, words: str
) -> None:
    _write_subject(folder, {**K_SUBJECT, **change})
    with pytest.raises(PolicyError) as refused:
        load_policies(folder)
    assert (refused.value.file, refused.value.field) == (SUBJECT_FILE, field)
    assert words in refused.value.message


@pytest.mark.parametrize("missing", ["pattern", "max_length", "description", "example"])
def test_every_field_but_identities_is_required(folder: Path, missing: str) -> None:
    _write_subject(folder, {k: v for k, v in K_SUBJECT.items() if k != missing})
    with pytest.raises(PolicyError, match=f"^{SUBJECT_FILE}: {missing}: Field required"):
        load_policies(folder)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("- K-[0-9]{5}\n", "<document>"),
        ("pattern: 'a'\npattern: 'b'\n", "line 2"),
        ("pattern: [\n", "line 2"),
    ],
)
def test_a_subject_file_that_is_no_mapping_or_not_yaml_is_refused(
    folder: Path, text: str, field: str
) -> None:
    _write_subject(folder, text)
    with pytest.raises(PolicyError) as refused:
        load_policies(folder)
    assert (refused.value.file, refused.value.field) == (SUBJECT_FILE, field)


@pytest.mark.parametrize("name", ["_other.yaml", "_subjects.yaml", "_subject.yml"])
def test_any_other_underscore_file_is_refused_rather_than_ignored(folder: Path, name: str) -> None:
    (folder / name).write_text(yaml.safe_dump(K_SUBJECT))
    with pytest.raises(PolicyError) as refused:
        load_policies(folder)
    assert (refused.value.file, refused.value.field) == (name, "<file>")
    assert "only _subject.yaml and _airflow.yaml and _accountability.yaml are known" in refused.value.message


def test_the_airflow_settings_file_sets_how_long_airflow_keeps_per_customer_runs(folder: Path) -> None:
    default = load_policies(folder)
    assert default.airflow.keep == "P30D" and "customer_erasure" in default.airflow.dags
    (folder / "_airflow.yaml").write_text(yaml.safe_dump({"keep": "P14D", "dags": ["customer_erasure"]}))
    changed = load_policies(folder)
    assert (changed.airflow.keep, changed.airflow.dags) == ("P14D", ["customer_erasure"])
    assert changed.hash != default.hash, "the window is part of what the policy set's hash covers"
    (folder / "_airflow.yaml").write_text(yaml.safe_dump({"keep": "two weeks"}))
    with pytest.raises(PolicyError) as refused:
        load_policies(folder)
    assert (refused.value.file, refused.value.field) == ("_airflow.yaml", "keep")


def test_the_accountability_settings_file_sets_how_long_tombstones_and_keys_are_kept(folder: Path) -> None:
    default = load_policies(folder)
    assert (default.accountability.tombstones.keep, default.accountability.pseudonym_keys.keep) == (
        "P90D",
        "P5Y",
    )
    (folder / "_accountability.yaml").write_text(yaml.safe_dump({"tombstones": {"keep": "P35D"}}))
    changed = load_policies(folder)
    assert changed.accountability.tombstones.keep == "P35D"
    assert changed.accountability.pseudonym_keys.keep == "P5Y", "an absent section keeps its default"
    assert changed.hash != default.hash, "how long the proof is kept is part of the policy set's hash"
    (folder / "_accountability.yaml").write_text(yaml.safe_dump({"pseudonym_keys": {"period": "month"}}))
    with pytest.raises(PolicyError) as refused:
        load_policies(folder)
    assert (refused.value.file, refused.value.field) == ("_accountability.yaml", "pseudonym_keys.period")


# -- the one check of an id -------------------------------------------------------------------------

K = load_policies(K_POLICIES).subject

K_REFUSED: list[tuple[Any, str]] = [
    ("K-0042", "it does not match the format (e.g. K-00042)"),
    ("k-00042", "it has letters in the wrong case"),
    (" K-00042", "it has surrounding whitespace"),
    ("K-00042\n", "it has surrounding whitespace"),
    ("00042", "it does not match the format (e.g. K-00042)"),
    ("42", "it does not match the format (e.g. K-00042)"),
    ("K-000042", "it is longer than 7 characters"),
    ("K-0004２", "it contains characters outside ASCII"),
    ("K–00042", "it contains characters outside ASCII"),  # an en dash
    ("K_00042", "it does not match the format (e.g. K-00042)"),
    ("-K00042", "it starts with a character other than a letter or digit"),
    ("a@b.dk", "it contains a character other than ASCII letters, digits, '.', '_' and '-'"),
    ("K-00042;--", "it contains a character other than ASCII letters, digits, '.', '_' and '-'"),
    ("", "it is empty"),
    (None, "it is missing"),
    (42, "it is int, not text"),
]


@pytest.mark.parametrize(("value", "problem"), K_REFUSED, ids=[repr(v) for v, _ in K_REFUSED])
def test_the_check_full_matches_never_normalises_and_names_the_problem_not_the_value(
    value: Any, problem: str
) -> None:
    with pytest.raises(TerminalError) as refused:
        K.check(value, "customer id")
    # The whole message is made of the format's declared words: nothing of the value is in it.
    assert str(refused.value) == f"customer id must be the customer number, K- and five digits: {problem}"


@pytest.mark.parametrize("value", ["K-00042", "K-00000", "K-99999"])
def test_an_id_of_the_format_is_returned_unchanged(value: str) -> None:
    assert K.check(value) is value


def test_a_pattern_is_matched_whole_without_anchors() -> None:
    loose = SubjectFormat(pattern="[0-9]{3}", max_length=10, description="three digits", example="123")
    assert loose.check("123") == "123"
    for value in ("1234", "x123", "123x"):
        with pytest.raises(TerminalError):
            loose.check(value)


SAFE_CASES = [
    "K-00042",
    "42",
    "a.b_c-d",
    "x" * 64,
    "x" * 65,
    "",
    "-1",
    ".x",
    "_x",
    "a@b.dk",
    "1\n",
    "1 ",
    " 1",
    "K-0004２",
    "é",
    "a/b",
]


@pytest.mark.parametrize("value", SAFE_CASES, ids=[repr(v) for v in SAFE_CASES])
def test_the_json_schema_of_the_trigger_form_accepts_exactly_the_generic_alphabet(value: str) -> None:
    import jsonschema

    generic = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value) is not None
    try:
        jsonschema.validate(value, SAFE_SUBJECT_SCHEMA)
        accepted = True
    except jsonschema.ValidationError:
        accepted = False
    assert accepted is generic
