"""The ``validate`` command."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.world_schema import create_schema
from retention.cli import DEFAULT_FOLDER, main


def test_validate_shipped_policies_against_a_real_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'b.db'}"
    create_schema(sa.create_engine(url))
    assert main(["validate", str(DEFAULT_FOLDER), "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "12 policies valid" in out and "checked against the database" in out


def test_validate_names_file_and_field_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for f in DEFAULT_FOLDER.glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text().replace("period: P5Y", "period: five years"))
    assert main(["validate", str(tmp_path)]) == 2
    assert "retention.period" in capsys.readouterr().err


def test_validate_refuses_a_column_missing_from_the_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'b.db'}"
    engine = sa.create_engine(url)
    create_schema(engine)
    with engine.begin() as c:
        c.execute(sa.text("DROP INDEX ix_documents_archive_path"))
        c.execute(sa.text("ALTER TABLE documents DROP COLUMN archive_path"))
    assert main(["validate", str(DEFAULT_FOLDER), "--database-url", url]) == 2
    assert (
        "translation_documents.yaml: locations[1].path: column 'archive_path' does not exist"
        in capsys.readouterr().err
    )
