"""The ``hold`` commands: add, release, list and check legal holds, refusing what could never match."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention.cli import DEFAULT_FOLDER, main
from retention.holds import HoldRegistry
from retention.policy import load_policies

CATEGORY = load_policies(DEFAULT_FOLDER).ids[0]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def hold(url: str, *args: str) -> int:
    return main(["hold", args[0], "--database-url", url, *args[1:]])


def test_add_list_release_and_check(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        hold(url, "add", "--reason", "Retssag BS-1234/2026", "--subject", "4711", "--category", CATEGORY) == 0
    )
    assert capsys.readouterr().out == "added legal hold 1\n"
    assert (
        hold(
            url, "add", "--reason", "Tilsyn", "--prefix", "documents/17/", "--until", "2099-01-01T00:00+01:00"
        )
        == 0
    )
    assert capsys.readouterr().out == "added legal hold 2\n"

    assert hold(url, "list") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["1", "subject", CATEGORY] and lines[0].endswith("Retssag BS-1234/2026")
    assert lines[1].split()[:3] == ["2", "prefix", "*"] and "until 2098-12-31T23:00:00+00:00" in lines[1]
    assert lines[-1] == "2 legal holds"
    assert "4711" not in out and "documents/17/" not in out
    assert hold(url, "list", "--show-subjects") == 0
    shown = capsys.readouterr().out
    assert "4711" in shown and "documents/17/" in shown

    assert hold(url, "check") == 0
    assert capsys.readouterr().out == "2 legal holds in force, all valid\n"

    assert hold(url, "release", "--id", "1") == 0
    assert capsys.readouterr().out == "released legal hold 1\n"
    assert hold(url, "list") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 legal holds"
    assert hold(url, "list", "--all") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 legal holds"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--subject", "042"], "leading zero"),
        (["--subject", "٤٢"], "digits other than 0-9"),
        (["--subject", "42 "], "whitespace"),
        (["--subject", "kunde@example.dk"], "character other than ASCII letters, digits"),
        (["--subject", "4711", "--category", "invoice"], "not one of the policy set's categories"),
        (["--prefix", "/srv/archive/"], "absolute"),
        (["--prefix", " documents/"], "whitespace"),
        (["--prefix", ""], "empty"),
        (["--subject", "4711", "--until", "2099-01-01"], "time zone"),
        (["--subject", "4711", "--until", "next year"], "ISO 8601"),
        (["--subject", "4711", "--until", "2001-01-01T00:00Z"], "later than its creation"),
    ],
)
def test_add_refuses_a_hold_that_could_never_match_and_stores_nothing(
    url: str, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    assert hold(url, "add", "--reason", "Retssag", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("refused: ") and problem in err
    assert not args[1].strip() or args[1].strip() not in err  # refusals never repeat the value
    engine = sa.create_engine(url)
    try:
        registry = HoldRegistry(engine)
        registry.ensure_schema()
        assert registry.list(include_inactive=True) == []
    finally:
        engine.dispose()


def test_add_needs_exactly_one_of_subject_and_prefix(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as both:
        hold(url, "add", "--reason", "x", "--subject", "17", "--prefix", "documents/17/")
    assert both.value.code == 2
    with pytest.raises(SystemExit):
        hold(url, "add", "--reason", "x")
    assert "one of the arguments --subject --prefix is required" in capsys.readouterr().err


def test_check_names_a_hand_written_hold_by_id(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert hold(url, "add", "--reason", "Retssag", "--subject", "4711") == 0
    engine = sa.create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(
                sa.text(
                    "INSERT INTO retention_legal_holds (subject, category, reason, created_at) "
                    "VALUES ('04711', NULL, 'by hand', :at)"
                ),
                {"at": datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)},
            )
    finally:
        engine.dispose()
    assert hold(url, "check") == 2
    err = capsys.readouterr().err
    assert err.startswith("refused: legal hold 2 is invalid: its subject") and "04711" not in err


def test_release_of_an_unknown_hold_and_a_bad_url_exit_2(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert hold(url, "add", "--reason", "Retssag", "--subject", "4711") == 0
    assert hold(url, "release", "--id", "99") == 2
    assert "no legal hold with id 99" in capsys.readouterr().err
    assert hold("nonsense://user:secret@host/db", "list") == 2
    err = capsys.readouterr().err
    assert "not a SQLAlchemy database URL" in err and "secret" not in err


K_POLICIES = Path(__file__).resolve().parents[1] / "fixtures" / "k_deployment" / "policies"


def test_add_and_check_use_the_customer_id_format_of_the_policy_folder(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    k = ["--policies", str(K_POLICIES)]
    assert hold(url, "add", "--reason", "Retssag", "--subject", "K-00042", "--category", "orders", *k) == 0
    assert capsys.readouterr().out == "added legal hold 1\n"
    # The same id under the default policies (digits only) is refused, and a digits id under K's.
    assert hold(url, "add", "--reason", "Retssag", "--subject", "K-00042") == 2
    err = capsys.readouterr().err
    assert err.startswith("refused: hold subject must be the internal customer id") and "K-00042" not in err
    assert hold(url, "add", "--reason", "Retssag", "--subject", "4711", *k) == 2
    err = capsys.readouterr().err
    assert err.startswith("refused: hold subject must be the customer number, K- and five digits: it ")
    assert "4711" not in err

    assert hold(url, "check", *k) == 0
    assert capsys.readouterr().out == "1 legal holds in force, all valid\n"
    # Checked against the default policies, the K hold names no customer id those stores could match.
    assert hold(url, "check") == 2
    err = capsys.readouterr().err
    assert err.startswith("refused: legal hold 1 is invalid: its subject") and "K-00042" not in err
