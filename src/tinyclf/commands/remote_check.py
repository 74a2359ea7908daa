"""Say which DVC remote a push/pull uses and, when it cannot work, what to check.

DVC's own message for a remote it cannot reach does not name the remote and often not the
cause (`ERROR: unexpected error - Could not connect to the endpoint URL: "http://…/files/md5/…"`
after several seconds of retries; `failed to transfer '…' - The specified bucket does not exist`).
This module checks a remote directly and explains the problem in one line that names the remote,
its URL, and the setting or credential to fix:

    tinyclf remote-check                  # check the default remote
    tinyclf remote-check -r s3store       # check a named remote
    tinyclf remote-check push             # dvc push; on failure, explain which remote and why
    tinyclf remote-check -r s3store pull models/model.pt

The check reads the remote's configuration through DVC (so `.dvc/config`, `.dvc/config.local`,
the global config and AWS_* environment variables all apply exactly as for `dvc push`), then:
local remotes: the directory exists or can be created, and is writable; S3 remotes: the endpoint
accepts TCP connections (when `endpointurl` is set), and the bucket can be listed with the
credentials DVC would use. It never writes to the remote.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tinyclf.errors import ArgumentParser, TinyclfError

DOCS = "docs/remotes.md"
PROG = "tinyclf remote-check"  # also run as `python -m tinyclf.commands.remote_check`


class RemoteProblem(TinyclfError):
    """A remote cannot be used; the message is one line naming the remote and what to check."""


@dataclass(frozen=True)
class RemoteInfo:
    name: str
    url: str
    endpointurl: str | None
    scheme: str  # "local", "s3", or another fsspec scheme (gs, azure, ssh, …), checked by DVC only

    def label(self) -> str:
        via = f" via {self.endpointurl}" if self.endpointurl else ""
        return f"remote '{self.name}' ({self.url}{via})"


def _scheme(url: str) -> str:
    parsed = urlparse(url)
    # A Windows drive letter parses as a one-letter scheme; anything without "://" is a path.
    if "://" not in url or len(parsed.scheme) == 1:
        return "local"
    return parsed.scheme


def describe_remote(repo_root: str | Path = ".", name: str | None = None) -> RemoteInfo:
    """The remote `name` (default: the repository's default remote) as DVC resolves it."""
    from dvc.config import ConfigError
    from dvc.repo import Repo

    try:
        repo = Repo(str(repo_root))
    except Exception as exc:  # NotDvcRepoError and friends: one line is enough.
        raise RemoteProblem(f"{repo_root}: not a DVC repository ({exc})") from None
    try:
        remotes = repo.config.get("remote", {})
        if not name:
            name = repo.config.get("core", {}).get("remote")
        if not name:
            raise RemoteProblem(
                "no default DVC remote: add one with `dvc remote add -d storage <url>` "
                f"or pass -r NAME (see {DOCS})"
            )
        if name not in remotes:
            known = ", ".join(sorted(remotes)) or "none"
            raise RemoteProblem(
                f"remote '{name}' is not configured (configured: {known}); "
                f"check `dvc remote list` and .dvc/config.local (see {DOCS})"
            )
        section = remotes[name]
    except ConfigError as exc:
        raise RemoteProblem(f"DVC config is invalid: {exc}") from None
    finally:
        repo.close()
    url = str(section["url"])
    if _scheme(url) == "local" and not os.path.isabs(url):
        # DVC resolves a relative local remote against the config file that defines it (.dvc/).
        url = os.path.normpath(os.path.join(str(repo_root), ".dvc", url))
    return RemoteInfo(name=name, url=url, endpointurl=section.get("endpointurl"), scheme=_scheme(url))


def _check_local(info: RemoteInfo) -> None:
    path = Path(info.url)
    if path.exists() and not path.is_dir():
        raise RemoteProblem(f"{info.label()}: {path} is a file, not a directory; fix the remote's url")
    # DVC creates missing directories; what matters is that the nearest existing one is writable.
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RemoteProblem(f"{info.label()}: {existing} is not writable by this user; "
                            "check its permissions or the url")


def _check_endpoint(info: RemoteInfo, timeout: float) -> None:
    parsed = urlparse(info.endpointurl)
    host = parsed.hostname
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if not host:
        raise RemoteProblem(f"{info.label()}: endpointurl {info.endpointurl!r} has no host; "
                            f"set it with `dvc remote modify {info.name} endpointurl http://HOST:PORT`")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RemoteProblem(
            f"{info.label()}: cannot connect to {host}:{port} ({reason}); check that the server is running "
            f"and the endpointurl (`dvc remote modify {info.name} endpointurl …`)"
        ) from None


def _check_s3(info: RemoteInfo, repo_root: str | Path, timeout: float) -> None:
    if info.endpointurl:
        _check_endpoint(info, timeout)
    from dvc.repo import Repo

    bucket = urlparse(info.url).netloc
    repo = Repo(str(repo_root))
    try:
        remote = repo.cloud.get_remote(info.name)
        remote.fs.ls(bucket)
    except Exception as exc:  # botocore/s3fs raise many types; classify by name and text.
        raise RemoteProblem(f"{info.label()}: {_explain_s3(info, bucket, exc)}") from None
    finally:
        repo.close()


def _explain_s3(info: RemoteInfo, bucket: str, exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    first = text.strip().splitlines()[0][:200]
    if "NoCredentials" in text or "Unable to locate credentials" in text:
        return ("no credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or "
                f"`dvc remote modify --local {info.name} access_key_id …` and `secret_access_key …`")
    # Before the missing-bucket test: a refused key's message ("The AWS Access Key Id you provided
    # does not exist in our records") would otherwise read as a missing bucket.
    if isinstance(exc, PermissionError) or any(
        code in text for code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403")
    ):
        return (f"access to bucket '{bucket}' denied ({first}); check the credentials "
                "(AWS_* environment variables, AWS_PROFILE, or .dvc/config.local) and the bucket policy")
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text or "does not exist" in text:
        return (f"bucket '{bucket}' does not exist; create it or fix the url "
                f"(`dvc remote modify {info.name} url s3://BUCKET/PATH`)")
    if "Could not connect" in text or "EndpointConnectionError" in text or "ConnectTimeout" in text:
        return f"cannot reach the S3 endpoint ({first}); check the network, region and endpointurl"
    return f"S3 check failed ({first})"


def check_remote(repo_root: str | Path = ".", name: str | None = None, timeout: float = 5.0) -> RemoteInfo:
    """Resolve and check a remote; returns its description, or raises RemoteProblem explaining the failure."""
    info = describe_remote(repo_root, name)
    if info.scheme == "local":
        _check_local(info)
    elif info.scheme == "s3":
        _check_s3(info, repo_root, timeout)
    # Other schemes (gs, azure, ssh, http…) are left to DVC: this project documents local and S3.
    return info


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Check a DVC remote, or run dvc push/pull/fetch and explain a failure naming the remote "
                    f"and what to check (see {DOCS}).",
    )
    parser.add_argument("-r", "--remote", help="remote name (default: the repository's default remote)")
    parser.add_argument("--repo", default=".", help="repository root (default: the current directory)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an S3 endpoint (default 5)")
    parser.add_argument("command", nargs="?", choices=["check", "push", "pull", "fetch"], default="check",
                        help="check (default) only checks; push/pull/fetch run that dvc command with the remote")
    parser.add_argument("dvc_args", nargs=argparse.REMAINDER, help="further arguments for dvc (targets, --force, …)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        try:
            info = check_remote(args.repo, args.remote, args.timeout)
        except RemoteProblem as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 1
        print(f"{info.label()}: ok")
        return 0

    # Run DVC first: the common case (a working remote) costs nothing extra. Only a failure is checked.
    cmd = ["dvc", args.command] + (["-r", args.remote] if args.remote else []) + args.dvc_args
    code = subprocess.run(cmd, cwd=args.repo).returncode
    if code == 0:
        return 0
    try:
        info = check_remote(args.repo, args.remote, args.timeout)
    except RemoteProblem as exc:
        print(f"{PROG}: dvc {args.command} failed: {exc}", file=sys.stderr)
        return code
    print(f"{PROG}: dvc {args.command} failed (exit {code}) although {info.label()} answers; "
          "see DVC's message above (missing cache files, a locally modified output, …)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
