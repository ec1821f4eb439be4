"""Key and path templates: every refusal is a terminal ``UnsafeTargetError``, never a bare ``ValueError``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from retention.errors import PolicyError, RetentionError, UnsafeTargetError
from retention.paths import check_relative, placeholders, render
from retention.policy import parse_policy

POLICY_DIR = Path(__file__).resolve().parents[2] / "include" / "retention_policies"


def test_plain_placeholders_are_named_in_order() -> None:
    assert placeholders("documents/{customer_id}/{id}.pdf") == ["customer_id", "id"]
    assert placeholders("{{literal}}/{id}") == ["id"]
    assert render("documents/{customer_id}/{id}.pdf", {"customer_id": "c1", "id": 7}) == "documents/c1/7.pdf"


@pytest.mark.parametrize(
    ("template", "word"),
    [
        ("{}", "plain name"),
        ("{0}", "plain name"),
        ("{id.__class__}", "plain name"),
        ("{id[0]}", "plain name"),
        ("{id!r}", "conversion"),
        ("{id:>8}", "format"),
        ("docs/{id", "malformed"),
        ("docs/id}", "malformed"),
    ],
)
def test_a_template_that_is_not_plain_is_refused_as_unsafe(template: str, word: str) -> None:
    with pytest.raises(UnsafeTargetError, match=word) as raised:
        placeholders(template)
    assert isinstance(raised.value, RetentionError) and raised.value.terminal is True
    assert not isinstance(raised.value, ValueError)  # the Airflow edge would retry it as transient
    with pytest.raises(UnsafeTargetError):
        render(template, {"id": 1})


@pytest.mark.parametrize(
    ("template", "record"),
    [
        ("docs/{id}", {}),
        ("docs/{id}", {"id": None}),
        ("docs/{id}", {"id": "  "}),
        ("{id}", {"id": "/etc/passwd"}),
        ("docs/{id}", {"id": ".."}),
        ("docs/{id}/x", {"id": "a/../../b"}),
        ("docs/{id}", {"id": "a\\b"}),
        ("docs/{id}", {"id": "a\nb"}),
    ],
)
def test_a_rendered_path_that_could_escape_is_refused_as_unsafe(
    template: str, record: dict[str, object]
) -> None:
    with pytest.raises(UnsafeTargetError) as raised:
        render(template, record)
    assert raised.value.terminal is True


@pytest.mark.parametrize("path", ["", "/", "/abs", "a//b", "./a", "a/.."])
def test_check_relative_refuses_unsafe_paths(path: str) -> None:
    with pytest.raises(UnsafeTargetError):
        check_relative(path)


@pytest.mark.parametrize("template", ["{s3_key!r}", "{s3_key.__class__}", "documents/{s3_key", "../{s3_key}"])
def test_policy_validation_still_reports_a_refused_template_naming_file_and_field(template: str) -> None:
    """In a validator the typed error becomes the ValueError pydantic needs, then a PolicyError."""
    doc = yaml.safe_load((POLICY_DIR / "translation_documents.yaml").read_text())
    doc["locations"][0]["key"] = template
    with pytest.raises(PolicyError) as raised:
        parse_policy(yaml.safe_dump(doc), "translation_documents.yaml")
    assert raised.value.field == "locations[0].key", str(raised.value)
