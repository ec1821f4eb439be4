"""The benchmark's pure helpers: ratio arithmetic, minimal S3 request counts, sizes, the JSON shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.results import (
    STORE_FIELDS,
    TARGETS,
    Sizes,
    customer_result,
    extrapolate,
    format_table,
    list_pages,
    memory_result,
    ratio,
    s3_min_requests,
    shape_problems,
    store_result,
    verdicts,
)


@pytest.mark.parametrize(
    ("value", "reference", "expected"),
    [
        (3.0, 2.0, 1.5),
        (1.0, 3.0, 0.333),
        (2.0, 0.0, None),
        (None, 1.0, None),
        (1.0, None, None),
        (1.0, -1.0, None),
    ],
)
def test_ratio_is_rounded_and_undefined_without_a_positive_reference(
    value: float | None, reference: float | None, expected: float | None
) -> None:
    assert ratio(value, reference) == expected


@pytest.mark.parametrize(("versions", "pages"), [(0, 1), (1, 1), (1000, 1), (1001, 2), (40_000, 40)])
def test_a_listing_costs_a_request_per_thousand_versions_and_at_least_one(versions: int, pages: int) -> None:
    assert list_pages(versions) == pages


def test_minimal_s3_requests_are_list_pages_deletes_and_verify_pages() -> None:
    # 20,000 versions listed, 9,000 deleted (9 DeleteObjects), 11,000 left to list again.
    assert s3_min_requests(20_000, 9_000, 11_000) == 20 + 9 + 11
    assert s3_min_requests(20_000, 9_001, 10_999) == 20 + 10 + 11
    assert s3_min_requests(0, 0, 0) == 2


def test_extrapolation_scales_the_sample_rate() -> None:
    assert extrapolate(2.0, 1_000, 50_000) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="at least one"):
        extrapolate(1.0, 0, 10)


def test_sizes_scale_every_count_and_keep_rows_per_customer() -> None:
    base = Sizes()
    tenth = base.scaled(0.1)

    assert (tenth.correspondence, tenth.documents, tenth.archive_files, tenth.customers) == (
        200_000,
        1_000,
        500,
        2_000,
    )
    assert tenth.versions == base.versions
    assert tenth.correspondence / tenth.customers == base.correspondence / base.customers
    assert base.scaled(1.0) == base
    world = base.world()
    assert (world.correspondence, world.documents, world.customers) == (2_000_000, 10_000, 20_000)
    assert world.min_versions == world.max_versions == 2


def test_tiny_scales_keep_a_valid_world_and_a_non_positive_scale_is_refused() -> None:
    tiny = Sizes().scaled(1e-6)

    assert tiny.archive_files <= tiny.documents
    tiny.world()  # WorldSize validates itself
    with pytest.raises(ValueError, match="positive"):
        Sizes().scaled(0)


def _row(**extra: Any) -> dict[str, Any]:
    return store_result(
        due_items=1_000,
        wall_s=2.0,
        requests=50,
        peak_rss_mb=100.04,
        bound_wall_s=1.6,
        naive_wall_s=8.0,
        **extra,
    )


def test_a_store_row_carries_its_ratios_and_rate() -> None:
    row = _row(kept=3)

    assert set(STORE_FIELDS) <= set(row)
    assert (row["ratio_vs_bound"], row["ratio_vs_naive"]) == (1.25, 0.25)
    assert (row["items_per_s"], row["peak_rss_mb"], row["kept"]) == (500, 100.0, 3)


def _result(memory: tuple[float, float] = (100.0, 110.0)) -> dict[str, Any]:
    s3 = _row(requests_min=40, requests_ratio_vs_min=ratio(42, 40))
    at_s = {"seconds": 0.2, "items": 120, "s3_seconds": 0.1, "s3_requests": 6}
    at_10s = {"seconds": 0.24, "items": 121, "s3_seconds": 0.9, "s3_requests": 6}
    result = {
        "stores": {"database": _row(), "s3": s3, "sftp": _row()},
        "memory": memory_result({"s3": memory[0], "database": 90.0}, {"s3": memory[1], "database": 95.0}),
        "customer_erasure": customer_result(at_s, at_10s),
    }
    result["verdicts"] = verdicts(result)
    return result


def test_a_complete_result_has_the_documented_shape_and_survives_json() -> None:
    result = _result()

    assert shape_problems(result) == []
    again = json.loads(json.dumps(result))
    assert shape_problems(again) == []
    assert again["memory"]["ratio_4n_vs_n"] == 1.1
    assert again["customer_erasure"]["ratio_10s_vs_s"] == 1.2


def test_missing_parts_are_named() -> None:
    result = _result()
    del result["stores"]["s3"]["requests_ratio_vs_min"]
    del result["stores"]["sftp"]
    del result["memory"]["peak_rss_mb_4n"]
    del result["customer_erasure"]

    assert shape_problems(result) == [
        "stores.s3.requests_ratio_vs_min is missing",
        "stores.sftp is missing",
        "memory.peak_rss_mb_4n is missing",
        "customer_erasure is missing",
    ]
    assert shape_problems({}) == ["stores is missing"]


def test_verdicts_compare_each_ratio_with_its_target() -> None:
    met = {v["target"]: v["met"] for v in _result(memory=(100.0, 110.0))["verdicts"]}
    missed = {v["target"]: v["met"] for v in _result(memory=(100.0, 130.0))["verdicts"]}

    assert set(met) == set(TARGETS)
    assert met["rss_4n_vs_n"] is True and missed["rss_4n_vs_n"] is False
    assert met["database_vs_bound"] is True  # 1.25 <= 1.5
    assert met["sftp_vs_openssh"] is False  # 1.25 > 1.2
    assert met["customer_10s_vs_s"] is True


def test_an_unmeasured_ratio_is_neither_met_nor_missed() -> None:
    result = _result()
    result["stores"]["s3"]["ratio_vs_bound"] = None

    by_target = {v["target"]: v for v in verdicts(result)}

    assert by_target["s3_wall_vs_raw_loop"]["met"] is None


def test_the_table_has_a_row_per_store_and_every_verdict() -> None:
    table = format_table(_result())
    lines = table.splitlines()

    assert lines[0].startswith("| store | due items | wall s | items/s | requests or statements |")
    assert [line.split("|")[1].strip() for line in lines[2:5]] == ["database", "s3", "sftp"]
    assert "| database | 1,000 | 2.00 | 500 | 50 | 100 | 1.25 | 0.25 |" in lines
    assert sum(1 for line in lines if line.startswith(tuple(TARGETS))) == len(TARGETS)
