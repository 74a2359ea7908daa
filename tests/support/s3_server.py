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


class _LoopbackServer:
    """What both servers share: an empty AWS config dir for the clients (see `s3_env`), created at
    start and removed at stop, and use as a context manager. Subclasses start and stop the server."""

    def __init__(self) -> None:
        self._aws_dir: str | None = None
        self.port: int | None = None

    def _make_aws_dir(self) -> None:
        self._aws_dir = tempfile.mkdtemp(prefix="tinyclf-aws-")
        for name in ("config", "credentials"):
            Path(self._aws_dir, name).write_text("")

    def _stop_server(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop_server()
        if self._aws_dir is not None:
            shutil.rmtree(self._aws_dir, ignore_errors=True)
            self._aws_dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class S3Server(_LoopbackServer):
    """moto's server bound to 127.0.0.1 on a port the OS picks (no race for a "free" port)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__()
        self.host = host
        self._server = None

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
        self._make_aws_dir()
        self._server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        return self

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

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


class AuthS3Server(_LoopbackServer):
    """moto's server with authentication on: it checks every request's signature against an IAM user's
    access key, as AWS and MinIO do.

    moto authenticates once `INITIAL_NO_AUTH_ACTION_COUNT` unauthenticated calls have been made (its
    IAM docs), a setting it reads at import: so the server runs in its own process, and exactly
    that many calls set it up: create a user, give it a key, allow it s3:*, create the bucket.
    """

    SETUP_CALLS = 4
    USER = "tinyclf-dvc"
    _SERVE = (
        "import logging, sys\n"
        "logging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
        "from moto.server import ThreadedMotoServer\n"
        "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
        "server.start()\n"
        "print(server.get_host_and_port()[1], flush=True)\n"
        "sys.stdin.read()  # until the test closes stdin\n"
    )

    def __init__(self, bucket: str = "tinyclf-auth") -> None:
        super().__init__()
        self.bucket = bucket
        self.access_key: str | None = None
        self.secret_key: str | None = None
        self._proc = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "AuthS3Server":
        import json
        import os
        import subprocess
        import sys

        import boto3

        self._make_aws_dir()
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(self.SETUP_CALLS)}
        self._proc = subprocess.Popen([sys.executable, "-c", self._SERVE], env=env, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        self.port = int(self._proc.stdout.readline())
        anyone = dict(endpoint_url=self.endpoint_url, region_name=REGION, aws_access_key_id="setup",
                      aws_secret_access_key="setup")
        iam = boto3.client("iam", **anyone)
        iam.create_user(UserName=self.USER)
        key = iam.create_access_key(UserName=self.USER)["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName=self.USER, PolicyName="s3", PolicyDocument=json.dumps(policy))
        boto3.client("s3", **anyone).create_bucket(Bucket=self.bucket)  # the last unauthenticated call
        return self

    def _stop_server(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - a server that does not stop is killed
                self._proc.kill()
            self._proc = None

    def env(self, base: dict[str, str], *, access_key: str | None = None, secret: str | None = None) -> dict[str, str]:
        """`base` with this server's real key, or with the `access_key` / `secret` given instead."""
        env = s3_env(base, self._aws_dir)
        env.update(AWS_ACCESS_KEY_ID=access_key or self.access_key, AWS_SECRET_ACCESS_KEY=secret or self.secret_key)
        return env

    def objects(self) -> dict[str, str]:
        """{key: ETag} of everything in the bucket, read with the real key."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                              aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            found.update({obj["Key"]: obj["ETag"] for obj in page.get("Contents", [])})
        return found
