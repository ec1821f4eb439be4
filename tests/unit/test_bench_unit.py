"""The benchmark's pure helpers: ratio arithmetic, minimal S3 request counts, sizes, the DAG's figures,
the JSON shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bench.due_constant import keys_up_to
from bench.results import (
    DAG_FIELDS,
    STORE_FIELDS,
    TARGETS,
    Sizes,
    customer_result,
    dag_result,
    due_constant_boundary,
    due_constant_result,
    extrapolate,
    format_table,
    latency_split,
    list_pages,
    memory_result,
    ratio,
    s3_min_requests,
    scheduler_latencies,
    shape_problems,
    store_result,
    union_seconds,
    upstream_of,
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


def test_sizes_may_scale_the_documents_by_their_own_factor() -> None:
    five = Sizes().scaled(5, files=1)

    assert (five.correspondence, five.customers) == (10_000_000, 100_000)
    assert (five.documents, five.archive_files) == (Sizes().documents, Sizes().archive_files)
    assert Sizes().scaled(5, files=5) == Sizes().scaled(5)
    with pytest.raises(ValueError, match="positive"):
        Sizes().scaled(5, files=0)


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
    dag = _dag()
    result = {
        "stores": {"database": _row(), "s3": s3, "sftp": _row()},
        "memory": memory_result({"s3": memory[0], "database": 90.0}, {"s3": memory[1], "database": 95.0}),
        "customer_erasure": customer_result(at_s, at_10s),
        "dag": dag,
        "due_constant": due_constant_result(dag, {**dag, "wall_without_approval_s": 28.0}),
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
    del result["dag"]["overhead_s"]
    del result["due_constant"]

    assert shape_problems(result) == [
        "stores.s3.requests_ratio_vs_min is missing",
        "stores.sftp is missing",
        "memory.peak_rss_mb_4n is missing",
        "customer_erasure is missing",
        "dag.overhead_s is missing",
        "due_constant is missing",
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


def test_the_dag_targets_are_a_ratio_and_seconds() -> None:
    by_target = {v["target"]: v for v in _result()["verdicts"]}

    # 50 s wall, 10 s of it waiting for a human: 40 s against 32 s of engine steps.
    assert by_target["dag_vs_engine"] == {
        "target": "dag_vs_engine",
        "ratio": 1.25,
        "max": 1.3,
        "unit": "x",
        "met": True,
    }
    assert by_target["dag_overhead_s"]["ratio"] == 8.0
    assert by_target["dag_overhead_s"]["unit"] == "s" and by_target["dag_overhead_s"]["met"] is True
    assert by_target["due_constant_10x_vs_1x"]["ratio"] == 0.7
    assert by_target["database_vs_bound"]["unit"] == "x"


def test_a_result_without_the_dag_stage_leaves_its_targets_unmeasured() -> None:
    result = _result()
    del result["dag"], result["due_constant"]

    met = {v["target"]: v["met"] for v in verdicts(result)}

    assert met["dag_vs_engine"] is None and met["dag_overhead_s"] is None
    assert met["due_constant_10x_vs_1x"] is None


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
    assert "dag_overhead_s: 8.00 s (target <= 60.0 s) met" in lines
    dag_line = next(line for line in lines if line.startswith("retention_nightly DAG"))
    assert "overhead 8.00 s (ratio 1.25)" in dag_line and "7 task instances" in dag_line
    assert any(
        line.startswith("nightly DAG, same due items: 40.00 s at 1x stored, 28.00 s") for line in lines
    )


# --------------------------------------------------------------------------- the DAG's figures

T0 = 1_800_000_000.0


def _at(seconds: float) -> str:
    """An ISO time as the REST API writes it, ``seconds`` after T0."""
    return datetime.fromtimestamp(T0 + seconds, UTC).isoformat().replace("+00:00", "Z")


def _ti(task: str, start: float | None, end: float | None, index: int = -1, **extra: Any) -> dict[str, Any]:
    return {
        "task_id": task,
        "map_index": index,
        "start_date": None if start is None else _at(start),
        "end_date": None if end is None else _at(end),
        "duration": None if start is None or end is None else end - start,
        "state": "success" if start is not None else "skipped",
        **extra,
    }


TASKS = [
    {"task_id": "prepare_run", "downstream_task_ids": ["group.plan", "group.erase", "finish"]},
    {"task_id": "group.plan", "downstream_task_ids": ["group.erase"]},
    {"task_id": "group.erase", "downstream_task_ids": ["finish"]},
    {"task_id": "finish", "downstream_task_ids": []},
]


def _tis() -> list[dict[str, Any]]:
    return [
        _ti("prepare_run", 2, 4),
        _ti("group.plan", 5, 7, 0),
        _ti("group.plan", 6, 9, 1),
        # Map index 0 follows its own plan (ended at 7), not index 1's (ended at 9).
        _ti("group.erase", 8, 20, 0),
        _ti("group.erase", 12, 30, 1),
        _ti("finish", 33, 40),
        _ti("skipped", None, None),
    ]


def _timings() -> list[dict[str, Any]]:
    return [
        {"fn": "plan", "start": T0 + 5, "end": T0 + 6, "task": "group.plan", "map_index": 0},
        {"fn": "erase_files", "start": T0 + 9, "end": T0 + 19, "task": "group.erase", "map_index": 0},
        {
            "fn": "execute_step",
            "start": T0 + 9.5,
            "end": T0 + 18.5,
            "task": "group.erase",
            "map_index": 0,
            "store": "s3",
            "requests": 5,
        },
        {"fn": "erase_files", "start": T0 + 13, "end": T0 + 29, "task": "group.erase", "map_index": 1},
        {
            "fn": "execute_step",
            "start": T0 + 13,
            "end": T0 + 28,
            "task": "group.erase",
            "map_index": 1,
            "store": "sftp",
        },
    ]


def _dag() -> dict[str, Any]:
    return dag_result(
        run={"start_date": _at(0), "end_date": _at(50)},
        task_instances=_tis(),
        upstream=upstream_of(TASKS),
        approvals=[
            {"created_at": _at(9), "responded_at": _at(15)},
            {"created_at": _at(12), "responded_at": _at(19)},  # overlaps the first: 10 s in all
            {"created_at": _at(45), "responded_at": None},  # never answered: no wait to take off
        ],
        timings=[*_timings(), {"fn": "execute_step", "start": T0 + 30, "end": T0 + 38, "store": "database"}],
        summary={"totals": {"erased": 900, "anonymised": 100}},
    )


def test_overlapping_intervals_count_once() -> None:
    assert union_seconds([(0, 10), (5, 12), (20, 21), (20.5, 20.7)]) == pytest.approx(13.0)
    assert union_seconds([]) == 0.0


def test_upstream_tasks_come_from_the_downstream_lists() -> None:
    assert upstream_of(TASKS) == {
        "prepare_run": [],
        "group.plan": ["prepare_run"],
        "group.erase": ["group.plan", "prepare_run"],
        "finish": ["group.erase", "prepare_run"],
    }


def test_scheduler_latency_follows_the_same_map_index_inside_a_mapped_group() -> None:
    latencies = scheduler_latencies(_tis(), upstream_of(TASKS), T0)

    # prepare_run from the run's start; plans after prepare_run; each erase after its own plan;
    # finish after the last erase; the skipped instance has none.
    assert latencies == pytest.approx([2, 1, 2, 1, 3, 3])


def test_the_latency_split_says_where_the_wait_goes() -> None:
    tis = [
        _ti("prepare_run", 2, 4, scheduled_when=_at(0.5), queued_when=_at(1)),
        _ti("group.plan", 5, 7, 0, scheduled_when=_at(4.5), queued_when=_at(4.8)),
    ]

    split = latency_split(tis, upstream_of(TASKS), T0)

    assert split == pytest.approx({"to_scheduled_s": 0.5, "to_queued_s": 0.4, "to_start_s": 0.6})


def test_the_dag_overhead_is_wall_time_without_approvals_minus_the_engine_steps() -> None:
    dag = _dag()

    assert (dag["wall_s"], dag["approval_wait_s"], dag["approvals"]) == (50.0, 10.0, 3)
    assert dag["wall_without_approval_s"] == 40.0
    assert dag["engine_s"] == 32.0  # execute_step: 9 + 15 + 8
    assert dag["engine_flow_s"] == 27.0  # plan 1 + erase_files 10 + 16
    assert (dag["overhead_s"], dag["ratio_vs_engine"]) == (8.0, 1.25)
    assert dag["step_s_by_store"] == {"database": 8.0, "s3": 9.0, "sftp": 15.0}
    assert dag["requests_by_store"] == {"s3": 5}
    assert (dag["task_instances"], dag["task_states"]) == (7, {"skipped": 1, "success": 6})
    assert (dag["scheduler_latency_median_s"], dag["scheduler_latency_max_s"]) == (2.0, 3.0)
    assert (dag["erased"], dag["anonymised"]) == (900, 100)
    assert set(DAG_FIELDS) <= set(dag)


def test_per_task_the_engine_time_is_told_from_the_rest() -> None:
    per_task = _dag()["per_task"]

    assert per_task["group.erase"] == {
        "instances": 2,
        "task_s": 30.0,
        "engine_s": 26.0,
        "outside_engine_s": 4.0,
        "outside_engine_per_instance_s": 2.0,
    }
    assert per_task["finish"]["engine_s"] == 0.0  # the database step above ran outside any task
    assert "skipped" not in per_task


def test_the_critical_path_goes_back_through_the_upstream_that_ended_last() -> None:
    path = _dag()["critical_path"]

    # finish waited for erase[1] (ended at 30), which waited for its own plan[1] (9), for prepare_run (4).
    assert path == {
        "tasks": ["prepare_run", "group.plan[1]", "group.erase[1]", "finish"],
        "task_s": 30.0,
        "engine_s": 16.0,
        "gap_s": 10.0,
        "after_last_s": 10.0,
    }


def test_a_run_without_an_end_is_refused() -> None:
    with pytest.raises(ValueError, match="no start or end"):
        dag_result(run={"start_date": _at(0)}, task_instances=[], upstream={}, approvals=[], timings=[])


def test_the_due_constant_row_compares_the_paid_time_and_the_due_items() -> None:
    at_1x = {**_dag(), "stored": {"rows": 10}}
    at_10x = {**_dag(), "wall_without_approval_s": 44.0, "engine_s": 35.2, "stored": {"rows": 100}}

    row = due_constant_result(at_1x, at_10x)

    assert (row["seconds_1x"], row["seconds_10x"], row["ratio_10x_vs_1x"]) == (40.0, 44.0, 1.1)
    assert row["engine_ratio_10x_vs_1x"] == 1.1
    assert row["due_items_1x"] == row["due_items_10x"] == 1000
    # Beside it: the steps without S3 (moto lists in time proportional to the bucket), S3's requests.
    assert (row["engine_s_without_s3_1x"], row["engine_without_s3_ratio_10x_vs_1x"]) == (23.0, 1.0)
    assert row["s3_requests_ratio_10x_vs_1x"] == 1.0
    assert (row["stored_1x"], row["stored_10x"]) == ({"rows": 10}, {"rows": 100})
    assert row["database_bound_ratio_10x_vs_1x"] is None, "no bound measured"


def test_the_due_constant_row_sets_the_database_step_beside_the_bare_statements_on_both_worlds() -> None:
    steps_1x = {**_dag()["step_s_by_store"], "database": 2.0}
    at_1x = {**_dag(), "step_s_by_store": steps_1x, "bound": {"wall_s": 0.8, "verify_wall_s": 0.2}}
    at_10x = {
        **_dag(),
        "step_s_by_store": {**steps_1x, "database": 3.0},
        "bound": {"wall_s": 3.0, "verify_wall_s": 1.0},
    }

    row = due_constant_result(at_1x, at_10x)

    assert (row["database_s_1x"], row["database_s_10x"], row["database_ratio_10x_vs_1x"]) == (2.0, 3.0, 1.5)
    assert (row["database_bound_s_1x"], row["database_bound_s_10x"]) == (1.0, 4.0)
    assert row["database_bound_ratio_10x_vs_1x"] == 4.0


def test_the_due_constant_worlds_split_the_customers_at_a_tenth() -> None:
    assert due_constant_boundary(20_000) == 2_000
    assert due_constant_boundary(45) == 4
    with pytest.raises(ValueError, match="at least 10 customers"):
        due_constant_boundary(9)
    wanted = keys_up_to(20)
    assert [
        wanted(k) for k in ("documents/20/7/9.txt", "documents/21/1/1.txt", "20/7/9.txt", "201/1/1.txt")
    ] == [
        True,
        False,
        True,
        False,
    ]
    assert wanted("templates/letter.txt")  # objects of no customer stay in both worlds


def test_the_held_fraction_reaches_the_generator() -> None:
    sizes = Sizes(held_fraction=0.01).scaled(0.5)

    assert sizes.held_fraction == 0.01
    assert sizes.world().held_fraction == 0.01
    assert Sizes().world().held_fraction == 0.1
