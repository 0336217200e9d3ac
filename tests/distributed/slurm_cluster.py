"""A one-node Slurm cluster for tests: munged, slurmctld and slurmd from the Debian packages (environment.md §7),
with every file (configuration, state, spool, logs, pid files) in one scratch folder and munged's socket in a
folder of its own under /tmp (removed on stop).

Needs root (slurmd runs jobs as their user; munged runs as the ``munge`` user) and the packages ``slurmd
slurmctld slurm-client munge`` (.ci/run installs them). :func:`missing` says why a cluster cannot start here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel")
MUNGE_KEY = Path("/etc/munge/munge.key")


def missing() -> str | None:
    """Why a test cluster cannot start on this machine (None when it can)."""
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return (f"Slurm is not installed ({', '.join(absent)} missing): apt-get install -y --no-install-recommends "
                f"slurmd slurmctld slurm-client munge (.ci/run does this where apt is reachable)")
    if os.geteuid() != 0:
        return "a test Slurm cluster needs root (slurmd and munged switch users)"
    if not MUNGE_KEY.is_file():
        return f"{MUNGE_KEY} is missing (the munge package creates it)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SlurmCluster:
    """``start()`` the daemons, run jobs with :meth:`sbatch`, ``stop()`` them (by pid, slurmd first).

    ``cred_expire=10``: a requeued job may start again ``cred_expire`` seconds after it ended (120 s by default),
    and the schedulers look every 1-2 s instead of every 30-60 s, so a requeue test takes seconds, not minutes."""

    def __init__(self, root: Path, cpus: int = 2):
        self.root, self.cpus = root, cpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        # munged runs as the munge user, which cannot enter pytest's private (0700) folders: its own folder in /tmp
        self.munge_dir = Path(tempfile.mkdtemp(prefix="alignrl-munge-"))
        self.munge_socket = self.munge_dir / "munge.socket.2"
        self.pids: dict[str, Path] = {"slurmd": root / "slurmd.pid", "slurmctld": root / "slurmctld.pid",
                                      "munged": self.munge_dir / "munged.pid"}

    @property
    def env(self) -> dict[str, str]:
        """What Slurm's client commands need to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        r = self.root
        self.conf.write_text(f"""\
ClusterName=alignrltest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
SchedulerParameters=sched_interval=2,bf_interval=1
CredType=cred/munge
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={self.pids['slurmctld']}
SlurmdPidFile={self.pids['slurmd']}
SlurmctldLogFile={r / 'slurmctld.log'}
SlurmdLogFile={r / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
KillWait=30
MinJobAge=600
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def _start_munge(self) -> None:
        folder = self.munge_dir
        shutil.chown(folder, "munge", "munge")
        folder.chmod(0o755)
        subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force", f"--socket={self.munge_socket}",
                        f"--key-file={MUNGE_KEY}", f"--pid-file={self.pids['munged']}",
                        f"--log-file={folder / 'munged.log'}", f"--seed-file={folder / 'munged.seed'}"],
                       check=True, capture_output=True, text=True, timeout=30)

    def start(self, timeout: float = 60) -> None:
        self._write_conf()
        self._start_munge()
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(self.conf)], check=True, capture_output=True, text=True, timeout=30,
                           env={**os.environ, **self.env})
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.scontrol("show", "node", self.node, check=False)
            if re.search(r"State=IDLE", state):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the test Slurm node did not become idle in {timeout:.0f} s:\n{state}\n"
                           f"{self.log('slurmctld')[-2000:]}\n{self.log('slurmd')[-2000:]}")

    def stop(self) -> None:
        for daemon in ("slurmd", "slurmctld", "munged"):
            try:
                pid = int(self.pids[daemon].read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
        (self.root / "munged.log").write_bytes((self.munge_dir / "munged.log").read_bytes()) \
            if (self.munge_dir / "munged.log").exists() else None
        shutil.rmtree(self.munge_dir, ignore_errors=True)

    def log(self, daemon: str) -> str:
        path = self.root / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def scontrol(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30,
                                env={**os.environ, **self.env})
        if check and result.returncode != 0:
            raise RuntimeError(f"scontrol {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout + result.stderr

    def sbatch(self, *args: str, env: dict[str, str], cwd: Path) -> int:
        """Submit; returns the job id."""
        result = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, timeout=30,
                                cwd=cwd, env={**env, **self.env})
        if result.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)}: {result.stderr.strip()}")
        return int(result.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, ExitCode, Restarts, ...)."""
        text = self.scontrol("show", "job", str(job_id), "--oneliner")
        return dict(field.split("=", 1) for field in text.split() if "=" in field)

    def signal_batch(self, job_id: int, signal_name: str) -> None:
        """What ``--signal=B:<sig>@<seconds>`` does ahead of a time limit: the signal to the batch script only."""
        subprocess.run(["scancel", "--batch", f"--signal={signal_name}", str(job_id)], check=True,
                       capture_output=True, text=True, timeout=30, env={**os.environ, **self.env})

    def wait(self, job_id: int, states: tuple[str, ...], timeout: float) -> dict[str, str]:
        """Wait until the job is in one of ``states``; returns its record."""
        deadline = time.time() + timeout
        while True:
            record = self.job(job_id)
            if record.get("JobState") in states:
                return record
            if time.time() > deadline:
                raise TimeoutError(f"job {job_id} still {record.get('JobState')} after {timeout:.0f} s "
                                   f"(waiting for {states})")
            time.sleep(0.5)
