"""Plain clients on the harness's local stores, not through Airflow: used by the demo, the bench and tests.

- ``sftp_session(spec)``: the one way to open an SFTP session on an SFTP server outside Airflow;
  the server's host key is pinned (``SftpSpec.host_key_line``) and paramiko's ``RejectPolicy``
  refuses any other key, so a key is never added on first sight.
- ``s3_client(endpoint_url)``: the one boto3 S3 client factory for a local endpoint (moto),
  with the harness's fixed credentials and region.

This module imports nothing else of the harness: ``harness.services`` builds on it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import paramiko

S3_KEY = "testing"
"""Access key and secret of the local S3 server (moto accepts any)."""
S3_REGION = "eu-north-1"


@dataclass(frozen=True)
class SftpSpec:
    """How to reach an SFTP server with its host key pinned (plain values: picklable and JSON-able)."""

    host: str
    port: int
    user: str
    key_file: str
    """The client's private key (ed25519, no passphrase)."""
    host_key_line: str
    """The server's public host key, ``ssh-ed25519 AAAA...``."""


@contextmanager
def sftp_session(spec: SftpSpec) -> Iterator[paramiko.SFTPClient]:
    """A paramiko SFTP session that accepts only the server's known host key; closed on leaving."""
    ssh = paramiko.SSHClient()
    kind, blob = spec.host_key_line.split()[:2]
    key = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
    ssh.get_host_keys().add(f"[{spec.host}]:{spec.port}", kind, key)
    ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        ssh.connect(
            spec.host,
            port=spec.port,
            username=spec.user,
            key_filename=spec.key_file,
            look_for_keys=False,
            allow_agent=False,
        )
        sftp = ssh.open_sftp()
        if sftp is None:
            raise RuntimeError(f"the SFTP server on {spec.host}:{spec.port} refused the sftp subsystem")
        yield sftp
    finally:
        ssh.close()


def s3_client(endpoint_url: str, **options: Any) -> Any:
    """A plain boto3 S3 client on a local endpoint; ``options`` go to ``boto3.client`` (e.g. ``config``)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_KEY,
        region_name=S3_REGION,
        **options,
    )
