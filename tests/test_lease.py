"""One process per run folder: the lease, its staleness and takeover, the wait for a
stopping holder, and two training processes started at once on one folder."""
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

from conftest import REPO, command_line, wait_for
from tfgan_exp.grids import launch
from tfgan_exp.runtime import lease, stopping
from tfgan_exp.training import trainer
from tfgan_exp.config import Config, TrainingDiverged
from tfgan_exp.rundir import RunDir, write_atomically

HOLDER = os.path.join(REPO, "tests", "hold_lease.py")


def stamp(seconds_ago):
    moment = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        seconds=seconds_ago)
    return moment.isoformat(timespec="milliseconds")


def write_record(directory, seconds_ago, host="node7", pid=4242, state="training"):
    """A lease record as another process would have left it: written whole (renamed into
    place), as every holder writes it, so a reader never sees half of one."""
    os.makedirs(directory, exist_ok=True)
    record = {"host": host, "pid": pid, "job": "99_3", "started": stamp(600),
              "heartbeat": stamp(seconds_ago), "state": state, "token": "theirs"}
    write_atomically(os.path.join(directory, lease.LEASE_FILE), json.dumps(record))


class Beating:
    """Another host's live holder, as this one sees it on shared storage: a thread that
    rewrites its lease record every few milliseconds (without taking the lock, which
    that host's flock would not show here), its clock ``skew`` seconds off ours."""

    def __init__(self, directory, skew):
        self.directory, self.skew = directory, skew
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.wait(0.02):
            write_record(self.directory, seconds_ago=-self.skew)

    def __enter__(self):
        write_record(self.directory, seconds_ago=-self.skew)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


@pytest.mark.parametrize("use_locks", [True, False])
def test_another_hosts_holder_is_judged_by_whether_its_heartbeat_changes_not_by_clocks(
        tmp_path, use_locks):
    # use_locks=False: the lease file alone, as on a filesystem without flock; with
    # locks, the lock is free here (NFS with host-local locks, or a holder that died
    # on another node: a Kubernetes retry pod, a Slurm requeue after a node failure).
    folder = str(tmp_path / "run")
    # A live holder whose clock is five minutes behind ours: its heartbeat looks old,
    # but it changes, so it runs.
    with Beating(folder, skew=-300):
        with pytest.raises(lease.Held, match=r"is being trained by another process \(host "
                                             r"node7, pid 4242, job 99_3, heartbeat \d+ s ago\)"):
            lease.Lease(folder, use_locks=use_locks, stale_seconds=60,
                        poll_seconds=0.01).acquire()
    # A dead holder whose clock was five minutes ahead: its heartbeat looks fresh, but
    # it no longer changes; once it has not for stale_seconds, the lease is taken over.
    write_record(folder, seconds_ago=-300)
    started = time.monotonic()
    taken = lease.Lease(folder, use_locks=use_locks, stale_seconds=0.5, poll_seconds=0.01,
                        heartbeat_seconds=0.05, environ={"SLURM_JOB_ID": "123"}).acquire()
    assert time.monotonic() - started >= 0.5  # it watched the record that long
    mine = lease.read(folder)
    assert (mine["host"], mine["pid"], mine["job"], mine["state"]) == (
        socket.gethostname(), os.getpid(), "123", "training")
    with pytest.raises(lease.Held, match=f"pid {os.getpid()}, job 123"):
        lease.Lease(folder, use_locks=use_locks, poll_seconds=0.01).acquire()
    taken.release()
    assert lease.read(folder) is None  # released: the next process takes it at once
    lease.Lease(folder, use_locks=use_locks).acquire().release()


def test_the_heartbeat_refreshes_the_record_and_a_dead_holder_on_this_host_is_replaced(
        tmp_path, monkeypatch):
    folder = str(tmp_path / "run")
    held = lease.Lease(folder, heartbeat_seconds=0.05).acquire()
    first = lease.read(folder)["heartbeat"]
    wait_for(lambda: lease.read(folder)["heartbeat"] != first, "a heartbeat")
    assert lease.holder(folder)["pid"] == os.getpid()
    held.release()
    assert lease.holder(folder) is None and os.path.exists(os.path.join(folder, "lease.lock"))
    # A record left by a process of this host that died (its flock went with it) is
    # taken over at once, however fresh its heartbeat; in the lease file alone too.
    for use_locks in (True, False):
        write_record(folder, seconds_ago=1, host=socket.gethostname(), pid=2**22 + 1)
        assert lease.holder(folder) is None
        lease.Lease(folder, use_locks=use_locks, stale_seconds=600).acquire().release()
    # With the lock, a record with this process's own pid is an earlier process's (a
    # restarted container's PID 1): taken at once, not after watching it go stale.
    write_record(folder, seconds_ago=1, host=socket.gethostname(), pid=os.getpid())
    started = time.monotonic()
    lease.Lease(folder, stale_seconds=60, poll_seconds=0.01).acquire().release()
    assert time.monotonic() - started < 60
    # EPERM from kill(pid, 0): the process runs, as another user's. Its record is not
    # taken over at once: only once it has not changed for stale_seconds.
    write_record(folder, seconds_ago=1, host=socket.gethostname(), pid=2**22 + 1)

    def not_permitted(pid, signum):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(lease.os, "kill", not_permitted)
    assert lease.holder(folder)["pid"] == 2**22 + 1
    started = time.monotonic()
    lease.Lease(folder, stale_seconds=0.5, poll_seconds=0.01).acquire().release()
    assert time.monotonic() - started >= 0.5


def test_a_holder_whose_lease_was_taken_over_stops_at_once_and_writes_nothing_more(
        tmp_path):
    # The lease file alone: the holder was taken for dead (a paused VM, a host cut off
    # from the storage) and another process took its lease over.
    folder, release = tmp_path / "run", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, HOLDER, str(folder), str(release),
                               "--files_only", "--heartbeat=0.05"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        taker = {"host": "node9", "pid": 77, "job": "99_4", "started": stamp(0),
                 "heartbeat": stamp(0), "state": "training", "token": "the-takers"}
        write_atomically(str(folder / lease.LEASE_FILE), json.dumps(taker))
        contents = sorted(os.listdir(folder))
        assert holder.wait(timeout=120) == lease.EXIT_LOST
    finally:
        release.touch()
        holder.wait(timeout=60)
    lines = holder.stderr.read().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {folder}: another process has taken this run over "
                               "(host node9, pid 77, job 99_4, heartbeat")
    # Its heartbeat did not write over the taker's record, nor did it let go of it.
    assert json.loads((folder / lease.LEASE_FILE).read_text()) == taker
    assert sorted(os.listdir(folder)) == contents


def test_a_parallel_run_taken_over_counts_as_held_and_writes_no_failure(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    child = types.SimpleNamespace(name="g_loss=hinge", started=time.time(),
                                  config=Config(run_dir=str(run_dir)))
    tally = launch.Tally(1)
    outcome = launch._count(tally, child, lease.EXIT_LOST, [])
    assert "taken over by another process" in outcome
    assert tally.held_runs == ["g_loss=hinge"] and tally.failed == 0
    assert os.listdir(run_dir) == []  # the folder is the other process's


def test_a_newcomer_waits_for_a_stopping_holder_then_takes_the_lease(tmp_path, capsys):
    folder, release = str(tmp_path / "run"), tmp_path / "release"
    holder = subprocess.Popen([sys.executable, HOLDER, folder, str(release)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    # Training: a newcomer is refused at once, told who holds the folder.
    with pytest.raises(lease.Held, match=f"pid {holder.pid}"):
        lease.Lease(folder).acquire()
    holder.send_signal(signal.SIGTERM)  # it starts to save: its lease says "stopping"
    wait_for(lambda: (lease.read(folder) or {}).get("state") == "stopping", "stopping")
    with pytest.raises(lease.Held, match="stopping"):  # not waited for beyond the limit
        lease.Lease(folder, wait_seconds=0).acquire()
    taken, failure = threading.Event(), []

    def newcomer():
        try:
            lease.Lease(folder, poll_seconds=0.05).acquire()
            taken.set()
        except Exception as error:  # reported by the assertions below
            failure.append(error)

    capsys.readouterr()
    thread = threading.Thread(target=newcomer, daemon=True)
    thread.start()
    said = []
    wait_for(lambda: said.append(capsys.readouterr().err) or "waiting up to" in "".join(said)
             or failure, "the newcomer to wait")
    # It has found the holder stopping and waits while it saves, polling: not taken.
    assert "is held by a process that is stopping" in "".join(said), failure
    assert not taken.is_set() and holder.poll() is None
    release.touch()  # the holder's save ends; it lets go
    thread.join(timeout=60)
    assert taken.is_set(), failure
    assert holder.wait(timeout=60) == 0
    assert lease.read(folder)["pid"] == os.getpid()


@pytest.mark.slow
def test_a_second_process_on_a_folder_being_trained_names_the_holder_and_exits_2(
        tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = ["run.py", "--deterministic", "--epochs=3", "--image_size=16", "--width=4",
            "--latent_dim=8", "--eval_samples=100", f"--cache_dir={cache_dir}",
            f"--run_dir={run_dir}"]
    first = subprocess.Popen(command_line(*args), cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        # Once it holds the lease it is paused, so that it cannot have finished whatever
        # the second process's speed; its lock stays held, and the second meets it.
        wait_for(lambda: (lease.read(str(run_dir)) or {}).get("pid") == first.pid
                 or first.poll() is not None, "the first process's lease")
        first.send_signal(signal.SIGSTOP)
        # Its record names the run, for a grid that meets the folder before config.json.
        assert (lease.read(str(run_dir)) or {}).get("run", {}).get("epochs") == 3
        second = subprocess.run(command_line(*args), cwd=tmp_path, capture_output=True,
                                text=True, timeout=600)
    finally:
        first.send_signal(signal.SIGCONT)
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 2, second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is being trained by another process" in errors[0]
    assert f"host {socket.gethostname()}, pid {first.pid}," in errors[0]
    assert "heartbeat" in errors[0] and "Traceback" not in second.stderr
    assert [r["epoch"] for r in RunDir(str(run_dir)).read_metrics()] == [1, 2, 3]


@pytest.mark.slow
def test_a_grid_skips_a_run_another_process_holds_names_it_and_fails(tmp_path, cache_dir,
                                                                      capsys):
    root = tmp_path / "grid"
    release = tmp_path / "release"
    holder = subprocess.Popen([sys.executable, HOLDER, str(root / "g_loss=minimax"),
                               str(release)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        configs = [Config(g_loss=g_loss, epochs=1, image_size=16, width=4, latent_dim=8,
                          eval_every=0, strategy="default", cache_dir=cache_dir,
                          run_dir=str(root / f"g_loss={g_loss}")).resolved()
                   for g_loss in ("minimax", "hinge")]
        tally = launch.run_sequentially(configs, str(root))
    finally:
        release.touch()
        holder.wait(timeout=60)
    err = capsys.readouterr().err
    assert f"g_loss=minimax is held by another process (host {socket.gethostname()}, " \
           f"pid {holder.pid}" in err and "skipped" in err
    assert (tally.finished, tally.held, tally.failed, tally.exit_status) == (1, 1, 0, 1)
    assert tally.summary() == ("grid: 2 runs: 1 finished, 0 diverged, 0 failed, 1 held by "
                               "another process (g_loss=minimax)")
    assert not os.path.exists(root / "g_loss=minimax" / "config.json")  # left alone


def test_a_run_decides_overwrite_and_divergence_only_once_it_holds_the_lease(
        tmp_path, cache_dir, monkeypatch):
    folder, release = tmp_path / "run", tmp_path / "release"
    config = Config(dataset="digits", epochs=1, image_size=16, width=4, latent_dim=8,
                    eval_every=0, strategy="default", cache_dir=cache_dir,
                    run_dir=str(folder))
    RunDir(str(folder)).prepare(config.resolved())
    RunDir(str(folder)).record_divergence({"epoch": 1, "step": 3, "values": {"d_loss": "nan"}})
    # Held by another process (a --retry_diverged run, say): not this one's to judge.
    holder = subprocess.Popen([sys.executable, HOLDER, str(folder), str(release)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(lease.Held, match=f"pid {holder.pid}"):
            trainer.run(config)
    finally:
        release.touch()
        holder.wait(timeout=60)
    seen = []
    for name in ("will_overwrite", "divergence"):
        def spy(self, *args, real=getattr(RunDir, name), name=name):
            seen.append((name, (lease.read(self.path) or {}).get("pid") == os.getpid()))
            return real(self, *args)
        monkeypatch.setattr(RunDir, name, spy)
    with pytest.raises(TrainingDiverged, match="diverged before"):
        trainer.run(config)
    assert sorted(seen) == [("divergence", True), ("will_overwrite", True)]


def test_a_stop_signal_as_the_lease_is_taken_leaves_no_folder(tmp_path, monkeypatch):
    # The signal lands just after the lease's record is written, before the run holds
    # the lease: the run must still release it and remove the folder it created for it.
    acquire = lease.Lease.acquire

    def acquire_then_signal(self):
        taken = acquire(self)
        os.kill(os.getpid(), signal.SIGINT)
        return taken

    monkeypatch.setattr(lease.Lease, "acquire", acquire_then_signal)
    run_dir = tmp_path / "runs" / "run"
    # (KeyboardInterrupt: Python's own SIGINT, if the signal came outside our handlers)
    with pytest.raises((stopping.Interrupted, KeyboardInterrupt)):
        trainer.run(Config(epochs=1, image_size=16, width=4, latent_dim=8, eval_every=0,
                           run_dir=str(run_dir)))
    assert not (tmp_path / "runs").exists()  # the folder, and the parent made for it


def test_in_a_cluster_a_stop_signal_while_the_lease_is_taken_stops_every_worker(tmp_path):
    # ``agree`` is the cluster's all-gather max (distribute.agreement); here the values
    # the other worker would bring, with this process as the chief.
    def cluster(other_worker):
        passed = []
        return passed, lambda value: passed.append(value) or max(value, other_worker)

    run_dir = str(tmp_path / "runs" / "run")
    passed, agree = cluster(other_worker=2)  # the other worker was signalled
    with stopping.deferred():
        with pytest.raises(stopping.Interrupted, match="another worker of the cluster"):
            trainer._take_lease(run_dir, chief=True, agree=agree)
    assert passed == [0] and not (tmp_path / "runs").exists()  # lease given back
    passed, agree = cluster(other_worker=0)  # this one was, as the lease was taken
    with stopping.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(stopping.Interrupted) as stopped:
            trainer._take_lease(run_dir, chief=True, agree=agree)
    assert passed == [2] and stopped.value.signum == signal.SIGINT
    assert not (tmp_path / "runs").exists()
    passed, agree = cluster(other_worker=0)  # no signal: the lease is held
    with stopping.deferred():
        held = trainer._take_lease(run_dir, chief=True, agree=agree)
    assert passed == [0] and held.held
    held.release(remove_unused=True)
