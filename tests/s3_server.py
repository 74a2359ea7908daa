"""A real S3-compatible server on 127.0.0.1 for tests: moto's standalone server, in a thread.

DVC talks to it over HTTP exactly as it would to MinIO or any S3-compatible endpoint
(`endpointurl`), so push/pull go through dvc-s3, s3fs and botocore for real; only the storage
behind the API is moto's in-memory one.

    with S3Server() as s3:
        s3.create_bucket("dvc-test")
        env = s3.env(dict(os.environ))   # fake credentials, no ~/.aws files, no IMDS lookups
        dvc remote add s3remote s3://dvc-test/store
        dvc remote modify s3remote endpointurl <s3.endpoint_url>

The `s3_server` pytest fixture (module-scoped in the tests that use it) starts one and stops it at
teardown. Credentials are fake and only ever sent to 127.0.0.1.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
from contextlib import closing
from pathlib import Path

FAKE_ACCESS_KEY = "tinyclf-test-key"
FAKE_SECRET_KEY = "tinyclf-test-secret"
REGION = "us-east-1"


class S3Server:
    """moto's server bound to 127.0.0.1 on a port the OS picks (no race for a "free" port)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._server = None
        self._aws_dir: str | None = None
        self.port: int | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("S3Server is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> "S3Server":
        # Imported here so that test modules which do not use S3 do not pay for moto's import.
        from moto.server import ThreadedMotoServer

        # One log line per request on stderr would drown a failing test's output.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._aws_dir = tempfile.mkdtemp(prefix="tinyclf-aws-")
        for name in ("config", "credentials"):
            Path(self._aws_dir, name).write_text("")
        self._server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._aws_dir is not None:
            shutil.rmtree(self._aws_dir, ignore_errors=True)
            self._aws_dir = None

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` plus fake credentials for DVC/boto3 subprocesses, with nothing from the user's AWS setup."""
        return s3_env(base, self._aws_dir)

    def client(self):
        """A boto3 S3 client for this server (to create buckets and inspect what DVC wrote)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=FAKE_ACCESS_KEY,
            aws_secret_access_key=FAKE_SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys


def s3_env(base: dict[str, str], aws_dir: str | Path) -> dict[str, str]:
    """`base` with the fake test credentials (the way a user passes real ones: environment variables).

    `aws_dir` holds empty AWS config/credentials files: botocore refuses /dev/null, and a developer's
    ~/.aws profile must not leak into (or break) the tests.
    """
    env = {k: v for k, v in base.items() if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")}
    env.update(
        AWS_ACCESS_KEY_ID=FAKE_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=FAKE_SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(Path(aws_dir) / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(Path(aws_dir) / "credentials"),
        # No EC2 instance-metadata lookups (they would wait on a network that is not there).
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def closed_port(host: str = "127.0.0.1") -> int:
    """A loopback port with nothing listening (bound then released), for "unreachable remote" tests."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
