"""A real two-node Slurm cluster on this machine, for trying docs/multinode.md's sbatch script.

    sudo python tests/support/slurm_cluster.py start [--dir DIR]   # prints: export SLURM_CONF=DIR/slurm.conf
    sudo python tests/support/slurm_cluster.py stop  [--dir DIR]

One munged, one slurmctld and two slurmd (`slurmd -N n1`, `slurmd -N n2`) on 127.0.0.1, each slurmd
on its own port: Debian's slurm-wlm is built with --enable-multiple-slurmd, so that is a two-node
cluster with munge authentication, not a simulation. Both nodes share this machine's hostname,
which is why the sbatch script takes the rendezvous address from the first node's NodeAddr and the
node rank from SLURM_NODEID. Needs root (slurmd starts jobs as their user) and the packages
`slurmctld slurmd slurm-client munge` (.ci/run installs them).

Everything lives in DIR (default /tmp/tinyclf-slurm): config, munge key and socket, state, logs,
pid files. Nothing under /etc or /run is touched and the system's own munged or Slurm, if any,
is left alone: clients find this cluster through SLURM_CONF only. `start` on a running cluster
does nothing; `stop` cancels its jobs, ends exactly the processes of its pid files (and job steps
left behind), and removes DIR.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

DEFAULT_DIR = Path("/tmp/tinyclf-slurm")
NODES = ("n1", "n2")
PARTITION = "debug"
PACKAGES = "slurmctld slurmd slurm-client munge"
HEADER = "# Written by tests/support/slurm_cluster.py: a two-node cluster on one machine."
TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "scancel")


class ClusterError(RuntimeError):
    pass


def missing_requirement() -> str | None:
    """Why a cluster cannot be started here (one line), or None when it can."""
    if os.geteuid() != 0:
        return "a Slurm cluster needs root (slurmd runs jobs as their user)"
    missing = [tool for tool in TOOLS if shutil.which(tool, path=_sbin_path()) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install {PACKAGES})"
    return None


def _sbin_path() -> str:
    # munged, slurmctld and slurmd live in /usr/sbin, not on every PATH.
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _free_port() -> int:
    # Not support.helpers.free_port: this file also runs as a script (above), without the support package.
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SlurmCluster:
    def __init__(self, directory: Path = DEFAULT_DIR):
        self.dir = Path(directory).resolve()
        self.conf = self.dir / "slurm.conf"
        self.munge_socket = self.dir / "munge" / "munge.socket"

    # --- what clients need -------------------------------------------------------------------------
    def env(self, base: dict | None = None) -> dict:
        """An environment whose Slurm commands (sbatch, scontrol, ...) talk to this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin", "/sbin"])
        return env

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            why = proc.stderr.strip() or proc.stdout.strip()
            raise ClusterError(f"{' '.join(cmd)} exited {proc.returncode}: {why}")
        return proc

    # --- pid files -----------------------------------------------------------------------------------
    def _pid_files(self) -> dict[str, Path]:
        files = {"munged": self.dir / "munge" / "munged.pid", "slurmctld": self.dir / "slurmctld.pid"}
        files.update({f"slurmd {node}": self.dir / f"slurmd.{node}.pid" for node in NODES})
        return files

    def _pid(self, path: Path) -> int | None:
        """The pid in `path` if that process is alive and is ours: its command line names this
        cluster's files, so a recycled pid is never taken for a daemon."""
        try:
            pid = int(path.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            return None
        return pid if str(self.dir) in cmdline else None

    def running(self) -> dict[str, int | None]:
        return {name: self._pid(path) for name, path in self._pid_files().items()}

    # --- start ---------------------------------------------------------------------------------------
    def start(self, timeout: float = 30) -> None:
        if (why := missing_requirement()) is not None:
            raise ClusterError(why)
        pids = self.running()
        if all(pids.values()):
            return  # already up (maybe running jobs): starting twice is harmless
        if any(pids.values()):
            self.stop(remove=False)  # half up (a daemon died): start clean rather than guess
        if self.dir.exists() and any(self.dir.iterdir()) and not self._is_ours():
            raise ClusterError(f"{self.dir} holds other files than a cluster's: give an empty or new --dir")
        try:
            self._start(timeout)
        except BaseException:
            self.stop(remove=False)  # nothing left running; the logs stay for a look
            raise

    def _start(self, timeout: float) -> None:
        self._write_files()
        env = self.env()
        sbin = _sbin_path()
        munge = self.dir / "munge"
        self._daemon([shutil.which("munged", path=sbin), f"--socket={self.munge_socket}",
                      f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'munged.pid'}",
                      f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}"], env)
        self._wait_for_pid("munged", timeout)
        # -c: no saved state from an earlier cluster in this directory; -f: the config (and this
        # directory in the command line, which is how stop() recognises the process).
        self._daemon([shutil.which("slurmctld", path=sbin), "-c", "-f", str(self.conf)], env)
        self._wait_for_pid("slurmctld", timeout)
        for node in NODES:
            self._daemon([shutil.which("slurmd", path=sbin), "-N", node, "-f", str(self.conf)], env)
        for node in NODES:
            self._wait_for_pid(f"slurmd {node}", timeout)
        deadline = time.monotonic() + timeout
        while not self.nodes_idle():
            if time.monotonic() > deadline:
                raise ClusterError(f"nodes not idle after {timeout:.0f} s: {self._node_states()}\n{self.log_tail()}")
            time.sleep(0.2)

    def _write_files(self) -> None:
        munge_dir = self.dir / "munge"
        munge_dir.mkdir(parents=True, exist_ok=True)
        # munged refuses a socket directory that others cannot traverse (or may write to).
        for path in (self.dir, munge_dir):
            path.chmod(0o755)
        (self.dir / "state").mkdir(exist_ok=True)
        host = socket.gethostname().split(".")[0]
        ctld_port = _free_port()
        node_lines = [
            # Both slurmd on 127.0.0.1, told apart by their port. NodeHostname is the real hostname
            # (both nodes share it); CPUs=1 each, so the two nodes split this machine's cores.
            f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} CPUs=1 State=UNKNOWN"
            for node in NODES]
        self.conf.write_text("\n".join([
            HEADER,
            "ClusterName=tinyclf",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # This cluster's munged, not the system's /run/munge socket (absent without systemd).
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.dir / 'state'}",
            # %n: each slurmd (multiple-slurmd build) gets its own spool, pid and log file.
            f"SlurmdSpoolDir={self.dir / 'spool.%n'}",
            f"SlurmdPidFile={self.dir / 'slurmd.%n.pid'}",
            f"SlurmdLogFile={self.dir / 'slurmd.%n.log'}",
            f"SlurmctldPidFile={self.dir / 'slurmctld.pid'}",
            f"SlurmctldLogFile={self.dir / 'slurmctld.log'}",
            # No cgroups here (no systemd): track job processes through /proc, no task binding.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "MpiDefault=none",
            "MailProg=/bin/true",  # the default /bin/mail is not installed; slurmctld logs an error without it
            "ReturnToService=2",
            # A cancelled job gets SIGTERM, then SIGKILL this many seconds later (default 30): enough
            # for training to save its checkpoint, short enough for stop() not to wait long.
            "KillWait=10",
            # sbatch --wait polls the job after 2 s, then 8 s, then every 32 s, unless the 2 s poll is
            # already at least MinJobAge / 2: 4 keeps it at 2 s, so a 20 s job is not waited on for 42 s.
            # Ended jobs stay visible to `scontrol show job` for MinJobAge seconds (default 300).
            "MinJobAge=4",
            # Job ids (-c starts them afresh) from a random base: the sbatch script derives its
            # rendezvous port from the job id, so two clusters on one machine do not share ports.
            f"FirstJobId={random.randrange(1000, 19000)}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            *node_lines,
            f"PartitionName={PARTITION} Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP",
            ""]))
        key = munge_dir / "munge.key"  # after slurm.conf: its header marks the directory as ours
        if not key.exists():
            subprocess.run([shutil.which("mungekey", path=_sbin_path()), "--create", f"--keyfile={key}"], check=True,
                           capture_output=True)

    @staticmethod
    def _daemon(cmd: list[str], env: dict) -> None:
        # Each daemon forks into the background and writes its pid file; the foreground part exits.
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ClusterError(f"{Path(cmd[0]).name} did not start (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()}")

    def _wait_for_pid(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._pid(self._pid_files()[name]) is None:
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} wrote no pid file within {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(0.05)

    def _node_states(self) -> dict[str, str]:
        if not self.conf.exists():
            return {}
        proc = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False, timeout=10)
        return dict(line.split(maxsplit=1) for line in proc.stdout.splitlines() if " " in line)

    def nodes_idle(self) -> bool:
        """Whether every node is up and runs no job (nor the end of one)."""
        states = self._node_states()
        return all(states.get(node) == "idle" for node in NODES)

    # --- stop ----------------------------------------------------------------------------------------
    def stop(self, remove: bool = True, timeout: float = 30) -> bool:
        """Cancel this cluster's jobs, end its daemons and what they left, then remove the directory
        if start() wrote it. Returns whether it was removed."""
        pids = self.running()
        if pids["slurmctld"]:
            self.run("scancel", "--full", f"--partition={PARTITION}", check=False, timeout=10)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                queue = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.2)
        # slurmd first (they report to slurmctld), munged last (everyone authenticates through it).
        for names in ([f"slurmd {node}" for node in NODES], ["slurmctld"], ["munged"]):
            _end([pids[name] for name in names if pids[name]], timeout=10)
        # Job steps left running without their slurmd (a job that scancel could not end), with their tasks.
        _kill_trees(self._orphan_steps())
        if remove and self._is_ours():
            shutil.rmtree(self.dir, ignore_errors=True)
            return True
        return False

    def _is_ours(self) -> bool:
        """Whether the directory is one start() wrote: stop() removes no directory but those."""
        try:
            return self.conf.read_text().startswith(HEADER)
        except OSError:
            return False

    def _orphan_steps(self) -> list[int]:
        """slurmstepd processes of this cluster: they carry its SLURM_CONF, inherited from slurmd."""
        mine = f"SLURM_CONF={self.conf}".encode()
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if (b"slurmstepd" in (proc / "cmdline").read_bytes()
                        and mine in (proc / "environ").read_bytes().split(b"\0")):
                    found.append(int(proc.name))
            except OSError:
                continue
        return found

    def log_tail(self, lines: int = 15) -> str:
        """The end of every daemon log, for error messages."""
        out = []
        for log in sorted(self.dir.glob("*.log")) + sorted(self.dir.glob("munge/*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)


def _alive(pid: int) -> bool:
    try:
        # A zombie has exited; only its parent's wait is missing.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _end(pids: list[int], timeout: float) -> None:
    """SIGTERM to all of `pids`, then SIGKILL to those still alive after `timeout` seconds."""
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal([pid for pid in pids if _alive(pid)], signal.SIGKILL)


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _kill_trees(roots: list[int]) -> None:
    """SIGKILL each of `roots` and all its descendants: job steps left without their slurmd,
    whose job is being torn down anyway (waiting for SIGTERM there took minutes)."""
    tree, todo = [], list(roots)
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    _signal(tree, signal.SIGSTOP)  # frozen first, so none forks or is re-parented out of reach meanwhile
    _signal(tree, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start or stop a two-node Slurm cluster on this machine.")
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"the cluster's files ({DEFAULT_DIR})")
    args = parser.parse_args(argv)
    cluster = SlurmCluster(args.dir)
    try:
        if args.command == "start":
            cluster.start()
            print(f"slurm: nodes {', '.join(NODES)} up; export SLURM_CONF={cluster.conf}")
        elif args.command == "stop":
            removed = cluster.stop()
            print(f"slurm: stopped{f', removed {cluster.dir}' if removed else ''}")
        else:
            print(" ".join(f"{name}={pid or '-'}" for name, pid in cluster.running().items()))
    except (ClusterError, subprocess.SubprocessError, OSError) as exc:
        print(f"slurm_cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
