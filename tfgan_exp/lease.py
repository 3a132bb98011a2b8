"""One process per run folder: an exclusive lease for as long as a process trains it.

Two processes training one folder delete each other's checkpoints and drop or double
epochs of ``metrics.jsonl``. It happens on clusters routinely: a Kubernetes replacement
pod starts while the preempted one is still saving, a user resubmits a job that still
runs. So a process takes the folder's lease before it reads or writes the run, and
keeps it until it ends. Two files in the folder:

  lease.lock   ``flock(LOCK_EX)`` by the holder; the kernel releases it when the process
               ends, however it ends (SIGKILL, out of memory, power loss of a client)
  lease.json   who holds it: host, pid, job (``scheduler.job_id``), started, heartbeat
               (UTC times), state: "training", or "stopping" once the holder got SIGTERM
               or SIGINT and is saving; refreshed every HEARTBEAT_SECONDS by a thread

Where ``flock`` does not work (some network filesystems answer ENOLCK, EOPNOTSUPP or
ENOSYS), ``lease.json`` alone is the lease: created with O_EXCL, and taken over by
another process only once its heartbeat is STALE_SECONDS old. Where ``flock`` works on
each host but not across hosts (NFS mounted with local locks), a fresh ``lease.json``
of another host is respected as well.

A newcomer that finds the folder held by a process that is *stopping* waits for it, up
to WAIT_SECONDS, polling, then trains: that is a replacement pod or a requeued task,
and skipping would lose the run. Held by a process that is *training*, it raises
``Held``, naming the holder.

Nothing here imports TensorFlow.
"""
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Optional

from tfgan_exp import scheduler
from tfgan_exp.config import UsageError
from tfgan_exp.rundir import write_atomically

LOCK_FILE = "lease.lock"
LEASE_FILE = "lease.json"
FILES = (LOCK_FILE, LEASE_FILE)
HEARTBEAT_SECONDS = 10.0
# Several missed heartbeats: a process that is merely slow (a loaded NFS server, a
# paused VM) is not taken over; one that died is, within two minutes.
STALE_SECONDS = 120.0
# A stopping holder saves a checkpoint and exits: seconds, or the minutes of an
# unfinished save to slow storage. Longer than that, something else is wrong.
WAIT_SECONDS = 600.0
POLL_SECONDS = 1.0
# How long a holder's record may be missing while its lock is held: the instant
# between its flock and its first write.
RECORD_GRACE_SECONDS = 5.0
# flock's answers on filesystems without working locks (EOPNOTSUPP is ENOTSUP on Linux).
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


class Held(UsageError):
    """The run folder is held by another process that is training it."""

    def __init__(self, path: str, holder: dict):
        self.path, self.holder = path, holder
        super().__init__(f"{path} is being trained by another process ({describe(holder)}); "
                         "it is left to that process. Run the command again once it has "
                         "ended, to resume or skip the run.")


def _stamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
        timespec="milliseconds")


def _seconds(stamp) -> Optional[float]:
    try:
        return datetime.datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return None


def heartbeat_age(holder: Optional[dict], now: Optional[float] = None) -> Optional[float]:
    """Seconds since the holder's last heartbeat (None when unknown)."""
    beat = _seconds((holder or {}).get("heartbeat"))
    return None if beat is None else (time.time() if now is None else now) - beat


def describe(holder: Optional[dict], now: Optional[float] = None) -> str:
    """'host h, pid 12, job 4_7, heartbeat 3 s ago' (and 'stopping' when it is)."""
    if not holder:
        return "no lease record yet"
    parts = [f"host {holder.get('host', '?')}", f"pid {holder.get('pid', '?')}"]
    if holder.get("job"):
        parts.append(f"job {holder['job']}")
    age = heartbeat_age(holder, now)
    if age is not None:
        parts.append(f"heartbeat {max(age, 0.0):.0f} s ago")
    if holder.get("state") == "stopping":
        parts.append("stopping")
    return ", ".join(parts)


def read(directory: str) -> Optional[dict]:
    """The lease record in ``directory``, or None (none, or not whole yet)."""
    try:
        with open(os.path.join(directory, LEASE_FILE)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def holder(directory: str, stale_seconds: float = STALE_SECONDS) -> Optional[dict]:
    """The record of a live holder of ``directory``, or None. Takes no lock (a lock
    taken to look would make a process starting that instant think the folder held):
    a record is live while its heartbeat is fresh and, on this host, its process runs."""
    record = read(directory)
    age = heartbeat_age(record)
    if record is None or age is None or age > stale_seconds:
        return None
    if record.get("host") == socket.gethostname():
        try:
            os.kill(int(record.get("pid", 0)), 0)
        except (OSError, ValueError, OverflowError):
            return None  # that process has ended
    return record


class Lease:
    """The lease of one run folder; ``acquire`` it, ``release`` it (or use ``with``).

    Args:
      directory: the run folder; created if missing (``created_directory`` says so, and
        ``release(remove_unused=True)`` removes it again if nothing else was written).
      use_locks: False to rely on the lease file alone, as on a filesystem without
        working ``flock`` (for tests; by default that is detected).
      heartbeat_seconds, stale_seconds, wait_seconds, poll_seconds: as the module says.
    """

    def __init__(self, directory: str, environ=None, use_locks: bool = True,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS,
                 stale_seconds: float = STALE_SECONDS, wait_seconds: float = WAIT_SECONDS,
                 poll_seconds: float = POLL_SECONDS):
        self.directory = directory
        self.lock_path = os.path.join(directory, LOCK_FILE)
        self.lease_path = os.path.join(directory, LEASE_FILE)
        self.use_locks = use_locks
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.created_directory = False
        self.lost = False  # another process took the lease over (lease file alone)
        self.held = False
        self._job = scheduler.job_id(environ)
        self._host = socket.gethostname()
        self._token = uuid.uuid4().hex
        self._started = time.time()
        self._state = "training"
        self._fd: Optional[int] = None
        # Reentrant: mark_stopping runs in a signal handler, which may interrupt the
        # main thread inside release().
        self._mutex = threading.RLock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    # Taking and giving back.

    def acquire(self) -> "Lease":
        """Takes the lease, first waiting for a stopping holder to finish.

        Raises:
          Held: a process is training the folder (or has been stopping for longer than
            ``wait_seconds``).
          OSError: the folder cannot be created or written.
        """
        waiting_since = unknown_since = None
        try:
            while True:
                found = self._try()
                if found is None:
                    break
                now = time.monotonic()
                if not found:  # locked, but its record is not written yet
                    unknown_since = unknown_since or now
                    if now - unknown_since < RECORD_GRACE_SECONDS:
                        time.sleep(min(self.poll_seconds, 0.1))
                        continue
                elif found.get("state") == "stopping":
                    if waiting_since is None:
                        waiting_since = now
                        print(f"note: {self.directory} is held by a process that is stopping "
                              f"({describe(found)}); waiting up to {self.wait_seconds:.0f} s "
                              "for it to save and end", file=sys.stderr, flush=True)
                    if now - waiting_since < self.wait_seconds:
                        time.sleep(self.poll_seconds)
                        continue
                raise Held(self.directory, found)
        except BaseException:  # Held, or a stop signal while waiting or writing
            self._let_go(remove_unused=True)
            raise
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat",
                                        daemon=True)
        self._thread.start()
        return self

    def _try(self) -> Optional[dict]:
        """Takes the lease if it can (returns None); else returns the holder's record
        ({} while the lock is held but its record is not written yet)."""
        if not os.path.isdir(self.directory):
            os.makedirs(os.path.dirname(os.path.abspath(self.directory)), exist_ok=True)
            try:
                os.mkdir(self.directory)  # of two processes racing, one creates it
                self.created_directory = True
            except FileExistsError:
                pass
        if self.use_locks:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return read(self.directory) or {}
            except OSError as error:
                os.close(fd)
                if error.errno not in UNSUPPORTED:
                    raise
                self.use_locks = False  # this filesystem has none: the lease file alone
                print(f"note: {self.directory} cannot be locked ({error.strerror}); its "
                      "lease file alone keeps other processes out", file=sys.stderr)
                return self._try()
            if not _same_file(fd, self.lock_path):
                # Its last holder removed the folder meanwhile (a run that never started):
                # this lock is on a file nobody else will open. Take the new one.
                os.close(fd)
                return self._try()
            found = read(self.directory)
            if found and self._live_elsewhere(found):
                os.close(fd)  # flock is not shared with that host: respect its lease
                return found
            self._fd = fd
            self.held = True  # from here on, release() cleans up whatever happens
            self._write()
            return None
        return self._try_lease_file()

    def _try_lease_file(self) -> Optional[dict]:
        try:
            fd = os.open(self.lease_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            found = read(self.directory)
            if not self._stale(found):
                return found or {}
            if not self._take_over(found):
                return read(self.directory) or {}
            return self._try_lease_file()
        self.held = True
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self._record()) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return None

    def _stale(self, found: Optional[dict]) -> bool:
        age = heartbeat_age(found)
        if age is None:  # not whole: judge by when the file was last written
            try:
                age = time.time() - os.path.getmtime(self.lease_path)
            except OSError:
                return True
        return age > self.stale_seconds

    def _take_over(self, stale: Optional[dict]) -> bool:
        """Moves a stale lease file aside; False if another process took it first."""
        aside = f"{self.lease_path}.stale-{self._token}"
        try:
            os.rename(self.lease_path, aside)
        except FileNotFoundError:
            return True  # gone already: try to create ours
        moved = _read_file(aside)
        if stale is not None and (moved or {}).get("token") != stale.get("token"):
            # Another newcomer replaced the stale file between our read and our
            # rename: that record is live. Put it back (never over a newer one).
            try:
                os.link(aside, self.lease_path)
            except OSError:
                pass
            os.remove(aside)
            return False
        os.remove(aside)
        return True

    def _live_elsewhere(self, found: dict) -> bool:
        age = heartbeat_age(found)
        return (found.get("host") != self._host and age is not None
                and age <= self.stale_seconds)

    def release(self, remove_unused: bool = False) -> None:
        """Gives the lease back. ``remove_unused``: remove the folder again if this
        lease created it and nothing but the lease's files was written into it."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._let_go(remove_unused)

    def _let_go(self, remove_unused: bool = False) -> None:
        with self._mutex:
            if self.held and not self.lost:
                record = read(self.directory)
                # None: ours, cut short while it was written (never another's: we hold it)
                if record is None or record.get("token") == self._token:
                    try:
                        os.remove(self.lease_path)
                    except OSError:
                        pass
            # Only a holder removes: the lease files of a folder held by another are theirs.
            remove = (remove_unused and self.held and self.created_directory
                      and set(_listdir(self.directory)) <= set(FILES))
            if remove:
                for name in FILES:
                    try:
                        os.remove(os.path.join(self.directory, name))
                    except OSError:
                        pass
                try:
                    os.rmdir(self.directory)
                except OSError:
                    pass
            if self._fd is not None:  # after the record: a newcomer finds none left over
                os.close(self._fd)  # closing the last descriptor releases the flock
                self._fd = None
            self.held = False

    # While held.

    def mark_stopping(self, signum: int = 0) -> None:
        """Records that the holder is stopping (called from the stop signal's handler):
        a newcomer then waits for the release instead of skipping the run."""
        with self._mutex:
            self._state = "stopping"
            if self.held and not self.lost:
                try:
                    self._write()
                except OSError:
                    pass  # a full disk must not turn a clean stop into a crash

    def _record(self) -> dict:
        return {"host": self._host, "pid": os.getpid(), "job": self._job,
                "started": _stamp(self._started), "heartbeat": _stamp(time.time()),
                "state": self._state, "token": self._token}

    def _write(self) -> None:
        write_atomically(self.lease_path, json.dumps(self._record()) + "\n")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            with self._mutex:
                if self._stop.is_set() or not self.held:
                    return
                found = read(self.directory)
                if found is not None and found.get("token") != self._token:
                    self.lost = True
                    print(f"warning: {self.directory}: another process took this run's "
                          f"lease over ({describe(found)}); this process's heartbeat was "
                          f"older than {self.stale_seconds:.0f} s", file=sys.stderr,
                          flush=True)
                    return
                try:
                    self._write()
                except OSError as error:  # storage hiccup: try again next beat
                    print(f"warning: cannot refresh the lease of {self.directory}: {error}",
                          file=sys.stderr, flush=True)


def _same_file(fd: int, path: str) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_file(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _listdir(path: str):
    try:
        return os.listdir(path)
    except OSError:
        return ["?"]
