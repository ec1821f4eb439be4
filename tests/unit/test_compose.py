"""docker-compose.yaml, parsed: the services, mounts, connections, pools, pins and secrets it needs.

No Docker engine runs here and no image can be pulled, so the file is read with PyYAML and Compose's
variable interpolation is reproduced for it; the connections are then read by Airflow's own hooks.
Where the docker CLI has its compose plugin, ``docker compose config`` checks the file as well.

``docker/business-db/schema.sql`` is generated from the reference world's schema; after a change to
``harness/world.py`` write it again with ``PYTHONPATH=.:plugins .venv/bin/python tests/unit/test_compose.py``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
DOCKER = REPO / "docker"
SCHEMA_SQL = DOCKER / "business-db" / "schema.sql"
MINIO_INIT = DOCKER / "minio" / "init-buckets.sh"

AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}
STACK_SERVICES = {"postgres", "redis", "business-db", "minio", "minio-init", "sftp"}
ONE_SHOT = {"airflow-init", "minio-init"}
BUCKETS = {"alleskar-documents", "alleskar-privacy-receipts"}

_TOKEN = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>))")
_REQUIRED = re.compile(r"\$\{(?P<name>\w+):\?[^}]*\}")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY$|TOKEN")
_URL_PASSWORD = re.compile(r"://[^:/@\s]*:(?P<password>[^@\s]*)@")


class MissingVariable(KeyError):
    """A ``${NAME:?message}`` whose variable is unset or empty: Compose refuses to start."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one string: ``$$``, ``${NAME}``, ``${NAME:-default}``, ``${NAME:?msg}``."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["name"] is None:
            raise ValueError(f"bare or malformed $ in {value!r}")
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        current = env.get(name)
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise MissingVariable(name)
        if op == ":-" and not current or op == "-" and current is None:
            return arg
        return current or ""

    return _TOKEN.sub(replace, value)


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not the keys) of a parsed Compose document."""
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    return interpolate(node, env) if isinstance(node, str) else node


def required_variables(node: Any) -> set[str]:
    """Names used as ``${NAME:?...}`` in the string values of a parsed Compose document."""
    if isinstance(node, dict):
        return set().union(*map(required_variables, node.values()))
    if isinstance(node, list):
        return set().union(*map(required_variables, node))
    return {m["name"] for m in _REQUIRED.finditer(node)} if isinstance(node, str) else set()


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (Compose accepts a mapping or a list of NAME=value)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def mounts(service: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A service's volumes by container path: ``source``, ``type`` (bind/volume) and ``read_only``."""
    found: dict[str, dict[str, Any]] = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            source, target, *mode = entry.split(":")
            kind = "bind" if source.startswith((".", "/")) else "volume"
            found[target] = {"source": source, "type": kind, "read_only": "ro" in mode}
        else:
            found[entry["target"]] = {
                "source": entry["source"],
                "type": entry["type"],
                "read_only": bool(entry.get("read_only")),
                "create_host_path": (entry.get("bind") or {}).get("create_host_path", True),
            }
    return found


def host_path(container_path: str, service: Mapping[str, Any]) -> Path:
    """The repository path a container path of ``service`` is bind-mounted from."""
    path = PurePosixPath(container_path)
    for target, mount in mounts(service).items():
        if mount["type"] == "bind" and (
            path == PurePosixPath(target) or PurePosixPath(target) in path.parents
        ):
            return REPO / mount["source"] / path.relative_to(target)
    raise AssertionError(f"{container_path} is not bind-mounted into the service")


def business_schema_sql() -> str:
    """The PostgreSQL DDL of the reference world's business schema (``harness.world.metadata``)."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    from harness.world_schema import metadata

    dialect = postgresql.dialect()
    statements = []
    for table in metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            statements.append(str(CreateIndex(index).compile(dialect=dialect)))
    body = "\n\n".join(s.strip() + ";" for s in statements)
    header = (
        "-- The business schema of the reference world (harness/world.py), for the business-db service.\n"
        "-- Generated: PYTHONPATH=.:plugins .venv/bin/python tests/unit/test_compose.py\n"
    )
    return header + "\n" + "\n".join(line.rstrip() for line in body.splitlines()) + "\n"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def raw_text() -> str:
    """docker-compose.yaml as written."""
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def parsed(raw_text: str) -> dict[str, Any]:
    """docker-compose.yaml parsed by PyYAML (anchors and ``<<`` merges applied), not interpolated."""
    document = yaml.safe_load(raw_text)
    assert isinstance(document, dict), "docker-compose.yaml is not a YAML mapping"
    return document


@pytest.fixture(scope="module")
def sample_env(parsed: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A value for every required variable, as docker/README.md makes them (a real host key line)."""
    from harness.services import generate_ed25519_key

    host_key = generate_ed25519_key(tmp_path_factory.mktemp("compose-keys") / "ssh_host_ed25519_key")
    env = {name: f"sample-{name.lower().replace('_', '-')}-0f3a9c" for name in required_variables(parsed)}
    env["ARCHIVE_SFTP_HOST_KEY"] = host_key
    env["AIRFLOW_UID"] = "1000"
    return env


@pytest.fixture(scope="module")
def resolved(parsed: dict[str, Any], sample_env: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yaml as Compose would run it with ``sample_env`` in .env."""
    return resolve(parsed, sample_env)


@pytest.fixture(scope="module")
def minio_calls(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The ``mc`` commands that docker/minio/init-buckets.sh runs against a fresh MinIO."""
    result, calls = _run_minio_init(tmp_path_factory.mktemp("minio-init"))
    assert result.returncode == 0, result.stderr
    return calls


_FAKE_MC = """#!/bin/sh
printf '%s\\n' "$*" >> "$MC_LOG"
fresh_user='{"status":"success","accessKey":"retention-user","userStatus":"enabled"}'
case "$1 $2 $3" in
    "version info "*) echo "$3 versioning is ${FAKE_VERSIONING:-enabled}" ;;
    "admin user info") echo "${FAKE_USER_INFO:-$fresh_user}" ;;
esac
"""


def _run_minio_init(workdir: Path, **fake: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the MinIO init script with a recording ``mc`` first on PATH."""
    mc = workdir / "mc"
    mc.write_text(_FAKE_MC)
    mc.chmod(0o755)
    log = workdir / "mc.log"
    log.write_text("")
    env = {
        "PATH": f"{workdir}{os.pathsep}{os.environ['PATH']}",
        "MC_LOG": str(log),
        "MINIO_ROOT_USER": "root-user",
        "MINIO_ROOT_PASSWORD": "root-password-0f3a9c",
        "RETENTION_S3_ACCESS_KEY": "retention-user",
        "RETENTION_S3_SECRET_KEY": "retention-secret-0f3a9c",
        **fake,
    }
    result = subprocess.run(
        ["sh", str(MINIO_INIT)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    return result, log.read_text().splitlines()


# --------------------------------------------------------------------------- services


def test_every_service_of_the_stack_is_there_and_airflow_runs_celery(parsed: dict[str, Any]) -> None:
    services = parsed["services"]
    assert set(services) == AIRFLOW_SERVICES | STACK_SERVICES

    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES - {"airflow-init"}}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
        "airflow-worker": "celery worker",
    }
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"


def test_long_running_services_are_health_checked_and_wait_for_what_they_need(parsed: dict[str, Any]) -> None:
    services = parsed["services"]
    for name, service in services.items():
        if name not in ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
            assert service.get("restart") == "always", name
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    worker_needs = services["airflow-worker"]["depends_on"]
    assert worker_needs["business-db"] == {"condition": "service_healthy"}
    assert worker_needs["sftp"] == {"condition": "service_healthy"}
    assert worker_needs["minio-init"] == {"condition": "service_completed_successfully"}
    assert services["minio-init"]["depends_on"]["minio"] == {"condition": "service_healthy"}


def test_published_ports_listen_on_loopback_only(parsed: dict[str, Any]) -> None:
    published = [(name, port) for name, s in parsed["services"].items() for port in s.get("ports", [])]
    assert ("airflow-apiserver", "127.0.0.1:8080:8080") in published
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_images_are_pinned_and_airflow_matches_the_requirements(parsed: dict[str, Any]) -> None:
    services = parsed["services"]
    images = {name: interpolate(s["image"], {}) for name, s in services.items() if "image" in s}
    built = {name: s["build"] for name, s in services.items() if "build" in s}
    assert set(images) | set(built) == set(services)
    for name, context in built.items():
        dockerfile = REPO / context / "Dockerfile"
        froms = re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.MULTILINE)
        assert froms, f"{dockerfile} has no FROM"
        images.update({f"{name} (FROM)": image for image in froms})
    for name, image in images.items():
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag and tag and tag != "latest", f"{name}: {image} is not pinned"

    airflow_pin = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements.txt").read_text(), re.M)
    assert airflow_pin is not None
    for name in AIRFLOW_SERVICES:
        assert images[name].startswith(f"apache/airflow:{airflow_pin[1]}"), images[name]


# --------------------------------------------------------------------------- mounts


def test_dags_plugins_and_include_are_mounted_read_only(parsed: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        found = mounts(parsed["services"][name])
        for folder in ("dags", "plugins", "include"):
            mount = found.get(f"/opt/airflow/{folder}")
            assert mount is not None, f"{name}: {folder}/ is not mounted"
            assert (REPO / mount["source"]).resolve() == REPO / folder, name
            assert mount["read_only"], f"{name}: {folder}/ must be read-only"
        keys = found["/opt/airflow/sftp-keys"]
        assert keys["source"] == "./docker/sftp/keys/client" and keys["read_only"]
        # A missing key directory must stop Compose, not become an empty directory.
        assert keys["create_host_path"] is False


def test_the_plugins_packages_import_through_the_containers_pythonpath(
    parsed: dict[str, Any], tmp_path: Path
) -> None:
    worker = parsed["services"]["airflow-worker"]
    entries = environment(worker)["PYTHONPATH"].split(":")
    host_entries = [str(host_path(entry, worker)) for entry in entries]
    code = "import retention.engine, retention_airflow.clients, retention_airflow.tasks"

    def run(pythonpath: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": pythonpath}
        return subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )

    with_path = run(os.pathsep.join(host_entries))
    assert with_path.returncode == 0, with_path.stderr[-2000:]
    # The control: without that PYTHONPATH the same import fails, so the check above means something.
    assert run("").returncode != 0


# --------------------------------------------------------------------------- connections


def test_connections_are_in_the_common_environment_as_json(parsed: dict[str, Any]) -> None:
    from retention_airflow import clients

    expected = {
        clients.BUSINESS_DB: "postgres",
        clients.DOCS_S3: "aws",
        clients.ARCHIVE_SFTP: "sftp",
        clients.PSEUDONYM: "generic",
    }
    common = environment(parsed["x-airflow-common"])
    for conn_id, conn_type in expected.items():
        raw = common.get(f"AIRFLOW_CONN_{conn_id.upper()}")
        assert raw is not None, f"AIRFLOW_CONN_{conn_id.upper()} is missing"
        conn = json.loads(raw)  # the placeholders sit inside JSON strings, so the raw text parses
        assert conn["conn_type"] == conn_type, conn_id
    for name in AIRFLOW_SERVICES:
        env = environment(parsed["services"][name])
        missing = {
            k for k in common if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_")) and env.get(k) != common[k]
        }
        assert not missing, f"{name} lacks {missing}"

    sftp_extra = json.loads(common["AIRFLOW_CONN_ARCHIVE_SFTP"])["extra"]
    assert sftp_extra["no_host_key_check"] is False
    assert _REQUIRED.fullmatch(sftp_extra["host_key"]), "the SFTP host key must come from .env"


def test_the_hooks_read_the_connections_as_the_retention_system_needs_them(
    resolved: dict[str, Any], sample_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.sftp.hooks.sftp import SFTPHook
    from airflow.sdk import BaseHook

    from retention_airflow import clients

    worker = resolved["services"]["airflow-worker"]
    for name, value in environment(worker).items():
        if name.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_")):
            json.loads(value)  # still JSON with the .env values filled in
            monkeypatch.setenv(name, value)

    sftp = SFTPHook(ssh_conn_id=clients.ARCHIVE_SFTP)
    assert sftp.no_host_key_check is False
    assert sftp.host_key is not None
    assert f"{sftp.host_key.get_name()} {sftp.host_key.get_base64()}" == sample_env["ARCHIVE_SFTP_HOST_KEY"]
    assert (sftp.remote_host, sftp.port, sftp.username) == ("sftp", 22, "archive")
    assert sftp.look_for_keys is False
    assert host_path(str(sftp.key_file), worker) == REPO / "docker/sftp/keys/client/id_ed25519"

    s3 = S3Hook(aws_conn_id=clients.DOCS_S3).conn_config
    assert s3.endpoint_url == "http://minio:9000"
    assert s3.region_name == environment(resolved["services"]["minio"])["MINIO_SITE_REGION"]
    assert s3.aws_access_key_id == sample_env["RETENTION_S3_ACCESS_KEY"]

    business = BaseHook.get_connection(clients.BUSINESS_DB)
    db_env = environment(resolved["services"]["business-db"])
    assert (business.conn_type, business.host, business.port) == ("postgres", "business-db", 5432)
    assert (business.schema, business.login) == (db_env["POSTGRES_DB"], db_env["POSTGRES_USER"])
    assert business.password == db_env["POSTGRES_PASSWORD"] == sample_env["BUSINESS_DB_PASSWORD"]

    assert clients.pseudonym_key() == sample_env["RETENTION_PSEUDONYM_KEY"].encode()


def test_the_settings_variable_fits_the_policies_buckets_and_archive(
    resolved: dict[str, Any], minio_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from retention.policy import load_policies
    from retention_airflow import clients

    worker = resolved["services"]["airflow-worker"]
    raw = environment(worker)["AIRFLOW_VAR_RETENTION_SETTINGS"]
    assert set(json.loads(raw)) <= {f.name for f in fields(clients.Settings)}
    monkeypatch.setenv("AIRFLOW_VAR_RETENTION_SETTINGS", raw)
    monkeypatch.setenv("RETENTION_POLICY_DIR", environment(worker)["RETENTION_POLICY_DIR"])
    settings = clients.settings()

    policy_dir = host_path(settings.policy_dir, worker)
    policy_buckets = {
        loc.bucket for p in load_policies(policy_dir).policies for loc in p.locations if loc.store == "s3"
    }
    assert policy_buckets <= set(settings.bucket_map), (
        "every S3 bucket of the policies needs a bucket_map entry"
    )
    created = {call.rsplit("/", 1)[1] for call in minio_calls if call.startswith("mb ")}
    assert set(settings.bucket_map.values()) | {settings.receipts_bucket} <= created

    # The archive root is seen through the SFTP chroot, so it must land on the archive volume.
    chroot = re.search(r"^\s*ChrootDirectory\s+(\S+)", (DOCKER / "sftp/sshd_config").read_text(), re.M)
    assert chroot is not None
    on_server = str(PurePosixPath(chroot[1]) / settings.archive_root.lstrip("/"))
    assert mounts(resolved["services"]["sftp"])[on_server]["type"] == "volume"


# --------------------------------------------------------------------------- initialisation


def test_minio_init_creates_both_buckets_versioned_and_the_retention_user(
    parsed: dict[str, Any], minio_calls: list[str]
) -> None:
    service = parsed["services"]["minio-init"]
    assert service["entrypoint"] == ["/bin/sh", "/init-buckets.sh"]
    assert (REPO / mounts(service)["/init-buckets.sh"]["source"]).resolve() == MINIO_INIT
    script_vars = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", MINIO_INIT.read_text())) - {"BUCKETS"}
    assert script_vars <= set(environment(service)), "the init script reads variables the service lacks"

    region = environment(parsed["services"]["minio"])["MINIO_SITE_REGION"]
    for bucket in BUCKETS:
        lock = "--with-lock " if bucket == "alleskar-privacy-receipts" else ""  # the ledger's anchors
        made = minio_calls.index(f"mb --ignore-existing {lock}--region {region} local/{bucket}")
        versioned = minio_calls.index(f"version enable local/{bucket}")
        checked = minio_calls.index(f"version info local/{bucket}")
        assert made < versioned < checked
    attach = [c for c in minio_calls if c.startswith("admin policy attach ")]
    assert attach == ["admin policy attach local readwrite --user retention-user"]


def test_minio_init_runs_again_and_stops_on_an_unversioned_bucket(tmp_path: Path) -> None:
    for name in ("again", "suspended"):
        (tmp_path / name).mkdir()
    again, calls = _run_minio_init(tmp_path / "again", FAKE_USER_INFO='{"policyName":"readwrite"}')
    assert again.returncode == 0, again.stderr
    assert not [c for c in calls if c.startswith("admin policy attach ")], "attached a second time"

    failed, _ = _run_minio_init(tmp_path / "suspended", FAKE_VERSIONING="suspended")
    assert failed.returncode != 0
    assert "versioning is not enabled" in failed.stderr


def test_airflow_init_migrates_creates_the_admin_and_the_pools_the_tasks_use(parsed: dict[str, Any]) -> None:
    from retention_airflow import tasks

    service = parsed["services"]["airflow-init"]
    env = environment(service)
    assert env["_AIRFLOW_DB_MIGRATE"] == "true" and env["_AIRFLOW_WWW_USER_CREATE"] == "true"
    script = service["command"][-1]
    pools = {}
    for line in script.splitlines():
        words = shlex.split(line)
        if words[:4] == ["/entrypoint", "airflow", "pools", "set"]:
            name, slots, description = words[4:7]
            pools[name] = int(slots)
            assert description
    assert set(pools) == set(tasks.POOLS)
    assert all(slots >= 1 for slots in pools.values()), pools
    assert script.index("/entrypoint airflow version") < script.index("pools set"), (
        "pools need the migrated DB"
    )


def test_airflow_init_creates_the_retention_roles_the_dags_access_control_names(
    parsed: dict[str, Any],
) -> None:
    from retention_airflow import roles

    for name in AIRFLOW_SERVICES:
        auth = environment(parsed["services"][name])["AIRFLOW__CORE__AUTH_MANAGER"]
        assert auth.endswith("fab_auth_manager.FabAuthManager"), f"{name}: access_control needs FAB"
    script = parsed["services"]["airflow-init"]["command"][-1]
    calls = [shlex.split(line) for line in script.splitlines() if "retention_airflow.roles" in line]
    assert calls == [["/entrypoint", "python", "-m", "retention_airflow.roles", "sync"]]
    assert script.index("/entrypoint airflow version") < script.index("retention_airflow.roles"), (
        "the roles need the migrated DB"
    )
    assert set(roles.ROLES) == {r for dag_id in roles.DAG_ACCESS for r in roles.access_control(dag_id)}


def test_the_business_database_starts_with_the_reference_schema(parsed: dict[str, Any]) -> None:
    service = parsed["services"]["business-db"]
    init = mounts(service)["/docker-entrypoint-initdb.d/01-schema.sql"]
    assert (REPO / init["source"]).resolve() == SCHEMA_SQL and init["read_only"]
    assert SCHEMA_SQL.read_text() == business_schema_sql(), (
        "docker/business-db/schema.sql is out of date with harness/world.py; write it again with "
        "PYTHONPATH=.:plugins .venv/bin/python tests/unit/test_compose.py"
    )


# --------------------------------------------------------------------------- secrets


def test_no_secret_is_in_the_file_and_each_one_is_required_from_env(
    parsed: dict[str, Any], raw_text: str
) -> None:
    assert "PRIVATE KEY" not in raw_text

    def check(where: str, value: str) -> None:
        assert _REQUIRED.fullmatch(value), f"{where} must be a required ${{VAR:?...}} from .env, not a value"

    for name, service in [("x-airflow-common", parsed["x-airflow-common"]), *parsed["services"].items()]:
        for key, value in environment(service).items():
            if _SECRET_NAME.search(key) and not key.startswith("AIRFLOW_CONN_"):
                check(f"{name}: {key}", value)  # a connection's secret is its password, checked below
            for match in _URL_PASSWORD.finditer(value):
                if match["password"]:
                    check(f"{name}: password in {key}", match["password"])
            if key.startswith("AIRFLOW_CONN_"):
                conn = json.loads(value)
                if "password" in conn:
                    check(f"{name}: {key} password", conn["password"])
                if conn["conn_type"] == "aws":
                    check(f"{name}: {key} access key", conn["login"])
    with pytest.raises(MissingVariable):
        resolve(parsed, {})


def test_the_sftp_private_keys_cannot_be_committed() -> None:
    private = ["docker/sftp/keys/server/ssh_host_ed25519_key", "docker/sftp/keys/client/id_ed25519"]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *private], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert ignored.stdout.split() == private, "the SFTP private keys must be ignored by git"
    tracked = subprocess.run(
        ["git", "ls-files", "docker"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for path in tracked:
        assert "PRIVATE KEY" not in (REPO / path).read_text(errors="replace"), path


def test_every_required_variable_is_explained_in_the_docker_readme(parsed: dict[str, Any]) -> None:
    readme = (DOCKER / "README.md").read_text()
    undocumented = {name for name in required_variables(parsed) if f"{name}=" not in readme}
    assert not undocumented, f"docker/README.md does not say how to set {sorted(undocumented)}"


# --------------------------------------------------------------------------- docker compose


def test_docker_compose_config_accepts_the_file(
    parsed: dict[str, Any], resolved: dict[str, Any], sample_env: dict[str, str]
) -> None:
    docker = shutil.which("docker")
    plugin = (
        docker is not None
        and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0
    )
    if not plugin:
        message = "the docker CLI has no compose plugin here: only the PyYAML parse of the file is checked"
        warnings.warn(message, stacklevel=1)
        assert set(parsed["services"]) == AIRFLOW_SERVICES | STACK_SERVICES, message
        return

    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")} | sample_env
    command = [str(docker), "compose", "--project-directory", str(REPO), "-f", str(COMPOSE)]
    result = subprocess.run(
        [*command, "config", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads(result.stdout)
    assert set(config["services"]) == set(parsed["services"])
    worker = config["services"]["airflow-worker"]["environment"]
    mine = environment(resolved["services"]["airflow-worker"])
    for name in ("AIRFLOW_CONN_ARCHIVE_SFTP", "AIRFLOW_CONN_DOCS_S3", "AIRFLOW_VAR_RETENTION_SETTINGS"):
        assert json.loads(worker[name]) == json.loads(mine[name]), name


if __name__ == "__main__":
    SCHEMA_SQL.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_SQL.write_text(business_schema_sql())
    print(f"wrote {SCHEMA_SQL.relative_to(REPO)}")
