"""What retention_settings may change is checked against the policies and pinned for the run (#14)."""

from __future__ import annotations

import dataclasses

import pytest

from retention import flow
from retention.errors import TerminalError
from tests.integration.conftest import WorldEnv


def test_a_run_records_where_the_policies_point_and_later_steps_must_see_the_same(
    world_env: WorldEnv,
) -> None:
    ctx = world_env.context()
    run = flow.prepare(ctx)
    assert run.places["s3:alleskar-documents"] == world_env.bucket
    assert run.places["sftp"] == world_env.archive_root
    flow.check_same_policies(ctx, run)

    elsewhere = dataclasses.replace(ctx, bucket_map={**ctx.bucket_map, "alleskar-documents": "other-bucket"})
    with pytest.raises(TerminalError, match="buckets or roots of retention_settings changed"):
        flow.check_same_policies(elsewhere, run)
    moved = dataclasses.replace(ctx, roots={**ctx.roots, "sftp": "/srv/another-archive"})
    with pytest.raises(TerminalError, match="buckets or roots of retention_settings changed"):
        flow.check_same_policies(moved, run)


def test_a_bucket_no_policy_names_or_a_relative_root_is_refused_before_anything_runs(
    world_env: WorldEnv,
) -> None:
    ctx = world_env.context()
    typo = dataclasses.replace(ctx, bucket_map={**ctx.bucket_map, "alleskar-documetns": world_env.bucket})
    with pytest.raises(
        TerminalError, match="bucket_map names 'alleskar-documetns', a bucket no policy names"
    ):
        flow.prepare(typo)
    relative = dataclasses.replace(ctx, roots={**ctx.roots, "sftp": "archive"})
    with pytest.raises(TerminalError, match="the root of sftp must be an absolute path"):
        flow.prepare(relative)
