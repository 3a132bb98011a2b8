"""A one-node Slurm on loopback for the job files' tests: munged and slurmctld/slurmd,
started in a folder of their own with free ports, stopped by their pids.

Debian's slurm-wlm and munge packages provide the programs (`.ci/run` installs them);
where they are missing or will not start, ``start`` says why in one line and the test
is skipped with it. No cgroups (proctrack/linuxproc, task/none), no accounting daemon:
a job's states come from ``scontrol show job`` and the jobcomp file.
"""
import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Dict, Optional

PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel")


def _free_ports(count: int):
    """Ports free on loopback, all held at once while chosen, so they cannot repeat."""
    held = [socket.socket() for _ in range(count)]
    for s in held:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in held]
    for s in held:
        s.close()
    return ports


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {seconds:.0f} s")
        time.sleep(0.2)


class SlurmCluster:
    """A running one-node Slurm; ``env`` is what its client commands need."""

    def __init__(self, folder: str):
        self.folder = folder
        self.env: Dict[str, str] = {}
        self._pid_files = []

    def start(self) -> Optional[str]:
        """Starts the daemons; returns None, or why Slurm cannot run here."""
        missing = [p for p in PROGRAMS if not shutil.which(p)
                   and not os.path.exists(f"/usr/sbin/{p}")]
        if missing:
            return f"Slurm is not installed ({', '.join(missing)} missing; apt-get " \
                   "install slurm-wlm munge)"
        if os.geteuid() != 0:
            return "the one-node Slurm runs its daemons as root"
        munge = os.path.join(self.folder, "munge")
        sock = os.path.join(self.folder, "munge-socket")  # must be reachable by all
        for path, mode in ((munge, 0o700), (sock, 0o755)):
            os.makedirs(path)
            shutil.chown(path, "munge", "munge")
            os.chmod(path, mode)
        os.chmod(self.folder, 0o755)
        key = os.path.join(munge, "munge.key")
        socket_path = os.path.join(sock, "munge.sock")
        as_munge = ["runuser", "-u", "munge", "--"]
        try:
            subprocess.run(as_munge + ["mungekey", "--create", f"--keyfile={key}"],
                           check=True, capture_output=True, timeout=30)
            subprocess.run(as_munge + ["munged", f"--socket={socket_path}",
                                       f"--key-file={key}",
                                       f"--log-file={munge}/munged.log",
                                       f"--pid-file={munge}/munged.pid",
                                       f"--seed-file={munge}/munged.seed"],
                           check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as error:
            return f"munged does not start: {error}"
        self._pid_files.append(f"{munge}/munged.pid")
        ctld_port, node_port = _free_ports(2)
        host = socket.gethostname().split(".")[0]
        state = {name: os.path.join(self.folder, name) for name in ("state", "spool", "log")}
        for path in state.values():
            os.makedirs(path)
        # At least 4 CPUs, whatever the machine has (config_overrides: slurmd takes the
        # configured count): a test's jobs wait on Slurm more than they compute.
        cpus = max(os.cpu_count() or 1, 4)
        conf = os.path.join(self.folder, "slurm.conf")
        with open(conf, "w") as f:
            f.write(f"""ClusterName=tfgantest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={node_port}
AuthType=auth/munge
AuthInfo=socket={socket_path},cred_expire=20
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={state['state']}
SlurmdSpoolDir={state['spool']}
SlurmctldPidFile={self.folder}/slurmctld.pid
SlurmdPidFile={self.folder}/slurmd.pid
SlurmctldLogFile={state['log']}/slurmctld.log
SlurmdLogFile={state['log']}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={state['log']}/jobcomp.txt
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
MinJobAge=3600
DefMemPerCPU=500
SlurmdParameters=config_overrides
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        self.env = {"SLURM_CONF": conf}
        environ = dict(os.environ, **self.env)
        try:
            for daemon in ("slurmctld", "slurmd"):
                subprocess.run([daemon, "-f", conf], check=True, env=environ,
                               capture_output=True, timeout=60)
                self._pid_files.append(os.path.join(self.folder, f"{daemon}.pid"))
            _wait(lambda: "idle" in subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=environ, capture_output=True,
                text=True).stdout, 60, "the node did not become idle")
        except (OSError, subprocess.SubprocessError, RuntimeError) as error:
            self.stop()
            return f"Slurm does not start here: {error}"
        return None

    def stop(self) -> None:
        """Stops the daemons this cluster started, by their pids."""
        for pid_file in reversed(self._pid_files):
            try:
                with open(pid_file) as f:
                    os.kill(int(f.read().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                continue

    def job(self, job_id: str) -> Dict[str, str]:
        """``scontrol show job``'s fields of one job or array task (first record)."""
        out = subprocess.run(["scontrol", "-o", "show", "job", job_id],
                             env=dict(os.environ, **self.env), capture_output=True,
                             text=True).stdout.splitlines()
        if not out:
            return {}
        return dict(field.split("=", 1) for field in out[0].split() if "=" in field)
