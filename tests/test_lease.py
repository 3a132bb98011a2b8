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

import pytest

from conftest import REPO, command_line
from tfgan_exp import launch, lease
from tfgan_exp.config import Config
from tfgan_exp.rundir import RunDir

HOLDER = os.path.join(REPO, "tests", "hold_lease.py")


def stamp(seconds_ago):
    moment = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        seconds=seconds_ago)
    return moment.isoformat(timespec="milliseconds")


def write_record(directory, seconds_ago, host="node7", pid=4242, state="training"):
    """A lease record as another process would have left it."""
    os.makedirs(directory, exist_ok=True)
    record = {"host": host, "pid": pid, "job": "99_3", "started": stamp(600),
              "heartbeat": stamp(seconds_ago), "state": state, "token": "theirs"}
    with open(os.path.join(directory, lease.LEASE_FILE), "w") as f:
        json.dump(record, f)


def wait_for(condition, what, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("use_locks", [True, False])
def test_a_fresh_lease_of_another_host_is_respected_and_a_stale_one_taken_over(
        tmp_path, use_locks):
    # use_locks=False: the lease file alone, as on a filesystem without flock; with
    # locks, the record of another host still counts (NFS with host-local locks).
    folder = str(tmp_path / "run")
    write_record(folder, seconds_ago=5)
    with pytest.raises(lease.Held, match=r"is being trained by another process \(host "
                                         r"node7, pid 4242, job 99_3, heartbeat [56] s ago\)"):
        lease.Lease(folder, use_locks=use_locks, stale_seconds=60).acquire()
    write_record(folder, seconds_ago=300)  # that host died five minutes ago
    taken = lease.Lease(folder, use_locks=use_locks, stale_seconds=60,
                        environ={"SLURM_JOB_ID": "123"}).acquire()
    mine = lease.read(folder)
    assert (mine["host"], mine["pid"], mine["job"], mine["state"]) == (
        socket.gethostname(), os.getpid(), "123", "training")
    with pytest.raises(lease.Held, match=f"pid {os.getpid()}, job 123"):
        lease.Lease(folder, use_locks=use_locks, stale_seconds=60).acquire()
    taken.release()
    assert lease.read(folder) is None  # released: the next process takes it at once
    lease.Lease(folder, use_locks=use_locks).acquire().release()


def test_the_heartbeat_refreshes_the_record_and_a_dead_holder_on_this_host_is_replaced(
        tmp_path):
    folder = str(tmp_path / "run")
    held = lease.Lease(folder, heartbeat_seconds=0.05).acquire()
    first = lease.read(folder)["heartbeat"]
    wait_for(lambda: lease.read(folder)["heartbeat"] != first, "a heartbeat")
    assert lease.holder(folder)["pid"] == os.getpid()
    held.release()
    assert lease.holder(folder) is None and os.path.exists(os.path.join(folder, "lease.lock"))
    # A record left by a process of this host that died (its flock went with it) is
    # taken over at once, however fresh its heartbeat.
    write_record(folder, seconds_ago=1, host=socket.gethostname(), pid=2**22 + 1)
    assert lease.holder(folder) is None
    lease.Lease(folder).acquire().release()


def test_a_newcomer_waits_for_a_stopping_holder_then_takes_the_lease(tmp_path):
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

    thread = threading.Thread(target=newcomer, daemon=True)
    thread.start()
    assert not taken.is_set() and holder.poll() is None  # waiting while it saves
    release.touch()  # the holder's save ends; it lets go
    thread.join(timeout=60)
    assert taken.is_set(), failure
    assert holder.wait(timeout=60) == 0
    assert lease.read(folder)["pid"] == os.getpid()


def test_two_processes_started_at_once_on_one_folder_train_it_once(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = ["run.py", "--deterministic", "--epochs=3", "--image_size=16", "--width=4",
            "--latent_dim=8", "--eval_samples=100", f"--cache_dir={cache_dir}",
            f"--run_dir={run_dir}"]
    processes = [subprocess.Popen(command_line(*args), cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    ended = [(p.pid, p.wait(timeout=600), p.communicate()[1]) for p in processes]
    statuses = sorted(status for _, status, _ in ended)
    assert statuses == [0, 2], [err[-2000:] for _, _, err in ended]
    winner = next(pid for pid, status, _ in ended if status == 0)
    loser_err = next(err for _, status, err in ended if status == 2)
    errors = [line for line in loser_err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is being trained by another process" in errors[0]
    assert f"host {socket.gethostname()}, pid {winner}," in errors[0]
    assert "heartbeat" in errors[0] and "Traceback" not in loser_err
    assert [r["epoch"] for r in RunDir(str(run_dir)).read_metrics()] == [1, 2, 3]


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
