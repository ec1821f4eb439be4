"""The overview's *Last sweep*: per root the newest orphan-sweep summary, and the newest coverage report."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from retention.coverage import Finding
from retention.ledger import Ledger, LedgerEntry
from retention.sweep import SweepRun
from retention_airflow.sweep_tasks import coverage_entry
from retention_airflow.ui import create_app
from retention_airflow.ui.reader import LedgerReader
from tests.unit.test_ui_app import auth_manager, dom, viewer  # noqa: F401 - fixtures

DOCS = "s3:alleskar-documents/*"
ARCHIVE = "sftp:*"
POLICY_HASH = "ab" * 32


def _root_summary(run_id: str, root: str, **counts: Any) -> LedgerEntry:
    detail: dict[str, Any] = {
        "listed": 0,
        "named": 0,
        "recent": 0,
        "orphans": 0,
        "held": 0,
        "reported": 0,
        "unsafe": 0,
    }
    detail |= {"erasable": 0, "erased": 0, "failed": 0, "remaining": 0, "kept": {}, "dry_run": False}
    detail |= counts
    return LedgerEntry(
        run_id=run_id,
        store=root.split(":", 1)[0],
        location=root,
        action="orphan_sweep",
        outcome="summary",
        count=detail["orphans"],
        detail=detail,
    )


def _findings() -> list[Finding]:
    return [
        Finding("table", "newsletter_signups", "no policy names it; 1 of its 3 columns look personal"),
        Finding(
            "column", "newsletter_signups.email", "its name looks like e-mail; sampled values: e-mail 5 of 5"
        ),
        Finding(
            "column", "staff_12345678.name", "its name looks like a name"
        ),  # the guard refuses the digits
        Finding(
            "prefix", "alleskar-documents/tmp/", "no location's template renders anything here; 4 object(s)"
        ),
    ]


@pytest.fixture
def ledger_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = sa.create_engine(url)
    ledger = Ledger(engine)
    ledger.ensure_schema()
    run = SweepRun("sweep_b", datetime(2026, 6, 14, tzinfo=UTC), False, 1000, POLICY_HASH, ())
    ledger.append_many(
        [
            _root_summary("sweep_a", DOCS, orphans=9, reported=9, recent=1),
            _root_summary("sweep_a", ARCHIVE, orphans=1, reported=1),
            _root_summary("sweep_b", DOCS, orphans=5, reported=3, unsafe=1, erased=0, held=2, recent=7),
            _root_summary("sweep_b", ARCHIVE, orphans=2, erased=4, recent=0),
            coverage_entry(run, _findings()),
            LedgerEntry(run_id="sweep_b", action="sweep", outcome="summary", count=4, detail={"roots": 2}),
        ]
    )
    engine.dispose()
    yield url


def _rows(text: str) -> dict[str, dict[str, str]]:
    table = dom(text).one("table", data_testid="sweep-table")
    return {
        row.attrs["data-root"]: {
            cell.attrs["data-field"]: cell.text() for cell in row.find_all("td") if "data-field" in cell.attrs
        }
        for row in table.find_all("tr")
        if "data-root" in row.attrs
    }


def test_the_overview_shows_each_roots_newest_sweep_and_the_coverage_findings(
    ledger_url: str,
    viewer: dict[str, str],  # noqa: F811 - the fixture imported above
) -> None:
    def no_business_db() -> sa.Engine:
        raise RuntimeError("not in this test")

    app = create_app(
        engine_factory=lambda: sa.create_engine(ledger_url), business_engine_factory=no_business_db
    )
    with TestClient(app) as client:
        response = client.get("/", headers=viewer)
    assert response.status_code == 200
    assert _rows(response.text) == {
        DOCS: {"found": "5", "reported": "3 (1 unsafe)", "erased": "0", "held": "2", "recent": "7"},
        ARCHIVE: {"found": "2", "reported": "0", "erased": "4", "held": "0", "recent": "0"},
    }
    section = dom(response.text).one("section", data_testid="last-sweep")
    assert section.one("span", data_field="coverage-total").text() == "4"
    kinds = section.one("p", data_testid="coverage-kinds").text()
    assert "1 table(s), 2 column(s), 1 S3 prefix(es), 0 directory(ies)" in kinds
    lines = [li.text() for li in section.one("ul", data_testid="coverage-findings").find_all("li")]
    assert lines == [
        "uncovered table newsletter_signups: no policy names it; 1 of its 3 columns look personal",
        "uncovered column newsletter_signups.email: its name looks like e-mail; "
        "sampled values: e-mail 5 of 5",
        "uncovered column (its name is not shown: it looks like personal data)",
        "uncovered prefix alleskar-documents/tmp/: no location's template renders anything here; 4 object(s)",
    ]
    assert "12345678" not in response.text
    assert [r.run_id for r in LedgerReader(sa.create_engine(ledger_url)).recent_runs()] == []


def test_without_a_sweep_the_panel_says_so(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    Ledger(engine).ensure_schema()
    assert LedgerReader(engine).last_sweep() is None


def test_the_coverage_entry_keeps_within_the_ledgers_detail_limit() -> None:
    run = SweepRun("sweep_c", datetime(2026, 6, 14, tzinfo=UTC), True, 1000, POLICY_HASH, ())
    many = [Finding("column", f"table_{i}.name_{'x' * 200}", "its name looks like a name") for i in range(60)]
    entry = coverage_entry(run, many)
    assert entry.count == 60 and entry.detail is not None
    assert 0 < entry.detail["shown"] < 60 and entry.detail["column"] == 60 and entry.detail["dry_run"] is True
