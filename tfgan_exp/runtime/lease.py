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
               or SIGINT and is saving; rewritten every HEARTBEAT_SECONDS by a thread

Where ``flock`` does not work (some network filesystems answer ENOLCK, EOPNOTSUPP or
ENOSYS), ``lease.json`` alone is the lease, created with O_EXCL. Where ``flock`` works on
each host but perhaps not across hosts (NFS mounted with local locks), a lock obtained
over another host's record does not prove that host's process dead either.

Whether a holder that no lock vouches for still runs is never judged by comparing
clocks (hosts' clocks differ, by minutes where NTP fails): the newcomer watches the
record on its own monotonic clock. A record that changes (a new heartbeat, a new file)
belongs to a live process; one unchanged for STALE_SECONDS, to a dead one, and is taken
over. On this host a record's process is looked up by its pid instead.

A newcomer that finds the folder held by a process that is *stopping* waits for it, up
to WAIT_SECONDS, polling, then trains: that is a replacement pod or a requeued task,
and skipping would lose the run. Held by a process that is *training*, it raises
``Held``, naming the holder.

A holder whose lease another process has taken over (it seemed dead: a paused VM, a
host cut off from the storage for minutes) learns it at its next heartbeat, and stops
at once without writing anything more (``stop_at_once``, exit status EXIT_LOST): the
other process trains the run now. Its heartbeat never rewrites a record that is not its
own; it checks immediately before the rename that would.

Nothing here imports TensorFlow.
"""
import collections
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
from typing import Callable, List, Optional

from tfgan_exp.runtime import scheduler, stopping
from tfgan_exp.config import UsageError
from tfgan_exp.rundir import read_json, written_atomically

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
# The exit status of a process whose lease another process took over: EX_TEMPFAIL of
# sysexits.h (the run is not lost: the other process trains it).
EXIT_LOST = 75


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
    """Seconds since the holder's last heartbeat by this host's clock (None when unknown):
    for people to read, never to decide by (another host's clock may differ)."""
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
    return read_json(os.path.join(directory, LEASE_FILE))


def _look(path: str):
    """(record, signature) of the lease file at ``path``: its record ({} while it is not
    whole), and what every write of it changes (inode, modification time, size,
    heartbeat, token); (None, None) when there is none."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None, None
    record = read_json(path) or {}
    return record, (status.st_ino, status.st_mtime_ns, status.st_size,
                    record.get("heartbeat"), record.get("token"))


def _runs_here(pid) -> bool:
    """Whether process ``pid`` of this host runs (EPERM: it does, as another user's)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def holder(directory: str) -> Optional[dict]:
    """The record of a live holder of ``directory`` as far as a look without waiting
    tells (for --dry_run), or None. Takes no lock (a lock taken to look would make a
    process starting that instant think the folder held). On this host its process must
    run; another host's record counts while its heartbeat is younger than STALE_SECONDS
    by this host's clock: a guess, shown to the user only (a process taking the lease
    watches the heartbeat instead)."""
    record = read(directory)
    if record is None:
        return None
    if record.get("host") == socket.gethostname():
        return record if _runs_here(record.get("pid")) else None
    age = heartbeat_age(record)
    return record if age is not None and age <= STALE_SECONDS else None


def stop_at_once(lease: "Lease", found: Optional[dict]) -> None:
    """What a process does by default when another has taken its lease over: says so in
    one line and exits with EXIT_LOST at once, from whichever thread learnt it, without
    running any more of its code (no checkpoint, no metrics line: the folder is the
    other process's now)."""
    print(f"error: {lease.directory}: another process has taken this run over "
          f"({describe(found) if found else 'its lease record was moved away'}); this "
          f"process stops at once and writes nothing more (exit status {EXIT_LOST})",
          file=sys.stderr, flush=True)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os._exit(EXIT_LOST)


# What a newcomer found instead of the lease: the holder's record ({} when there is none
# yet); its signature (``_look``); locked: the holder's lock says it runs, else only
# watching its record can tell.
_Found = collections.namedtuple("_Found", "record signature locked")


class _Watch:
    """A holder's liveness on this host's monotonic clock: alive once its record has
    changed, dead once it has not changed for ``stale_seconds``."""

    def __init__(self, stale_seconds: float):
        self.stale_seconds = stale_seconds
        self.signature = None
        self.since: Optional[float] = None  # when the record last changed (or was seen)
        self.changed = False

    def see(self, signature, now: float) -> Optional[bool]:
        """True: it runs; False: it is dead; None: not known yet."""
        if self.since is None or signature != self.signature:
            self.changed = self.since is not None
            self.signature, self.since = signature, now
        elif now - self.since >= self.stale_seconds:
            return False
        return True if self.changed else None


class _NotOurs(Exception):
    """The record about to be replaced is not the one this process may replace."""


class Lease:
    """The lease of one run folder; ``acquire`` it, ``release`` it.

    Args:
      directory: the run folder; created if missing (``created_directory`` says so, and
        ``release(remove_unused=True)`` removes it again if nothing else was written).
      use_locks: False to rely on the lease file alone, as on a filesystem without
        working ``flock`` (for tests; by default that is detected).
      heartbeat_seconds, stale_seconds, wait_seconds, poll_seconds: as the module says.
      on_lost: called as ``on_lost(lease, record)`` when another process has taken the
        lease over (``record``: its record, None if the file was moved away); by
        default ``stop_at_once``.
      run: the run's settings (JSON values), kept in the record as ``run``: until the
        run's own config.json is written (after minutes of start-up, for a first
        CIFAR-10 run) they are how a grid tells which run a held folder holds.
    """

    def __init__(self, directory: str, environ=None, use_locks: bool = True,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS,
                 stale_seconds: float = STALE_SECONDS, wait_seconds: float = WAIT_SECONDS,
                 poll_seconds: float = POLL_SECONDS,
                 on_lost: Callable[["Lease", Optional[dict]], None] = stop_at_once,
                 run: Optional[dict] = None):
        self.directory = directory
        self.run = run
        self.lock_path = os.path.join(directory, LOCK_FILE)
        self.lease_path = os.path.join(directory, LEASE_FILE)
        self.use_locks = use_locks
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.on_lost = on_lost
        self.created_directory = False
        self.created_parents: List[str] = []
        self.lost = False  # another process took the lease over
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

    # Taking and giving back.

    def acquire(self) -> "Lease":
        """Takes the lease: at once when the folder is free or its holder is dead; after
        waiting for a stopping holder to finish; after watching the record of a holder
        no lock vouches for until it changes (it runs) or has not changed for
        ``stale_seconds`` (it is dead: its lease is taken over).

        Raises:
          Held: a process is training the folder (or has been stopping for longer than
            ``wait_seconds``).
          OSError: the folder cannot be created or written.
        """
        watch = _Watch(self.stale_seconds)
        dead = None  # the signature of a record found dead: it may be taken over
        waiting_since = unknown_since = None
        watching = False
        try:
            while True:
                stopping.check()  # a signal deferred by the caller still ends a wait
                found = self._try(dead)
                if found is None:
                    break
                now = time.monotonic()
                record = found.record
                if found.locked:
                    if not record:  # locked, but its record is not written yet
                        unknown_since = unknown_since or now
                        if now - unknown_since < RECORD_GRACE_SECONDS:
                            time.sleep(min(self.poll_seconds, 0.1))
                            continue
                else:
                    alive = watch.see(found.signature, now)
                    if alive is False:
                        dead = found.signature
                        continue
                    if alive is None:
                        if not watching:
                            watching = True
                            print(f"note: {self.directory} is leased to {describe(record)}, "
                                  "which no lock here vouches for; watching its heartbeat "
                                  f"for up to {self.stale_seconds:.0f} s to tell whether "
                                  "that process runs", file=sys.stderr, flush=True)
                        time.sleep(self.poll_seconds)
                        continue
                if record.get("state") == "stopping":
                    if waiting_since is None:
                        waiting_since = now
                        print(f"note: {self.directory} is held by a process that is stopping "
                              f"({describe(record)}); waiting up to {self.wait_seconds:.0f} s "
                              "for it to save and end", file=sys.stderr, flush=True)
                    if now - waiting_since < self.wait_seconds:
                        time.sleep(self.poll_seconds)
                        continue
                raise Held(self.directory, record)
            self._thread = threading.Thread(target=self._beat, name="lease-heartbeat",
                                            daemon=True)
            self._thread.start()
        except BaseException:  # Held, or a stop signal while waiting or writing
            self.release(remove_unused=True)
            raise
        return self

    def _try(self, dead) -> Optional[_Found]:
        """Takes the lease if it can (returns None); else returns what it found. ``dead``:
        the signature of a record found dead, which may be replaced."""
        for _ in range(3):  # a parent another process removed meanwhile is made again
            if os.path.isdir(self.directory):
                break
            parent = os.path.dirname(os.path.abspath(self.directory))
            missing, ancestor = [], parent  # the parents made here, deepest first:
            while not os.path.exists(ancestor):  # removed with the folder
                missing.append(ancestor)
                ancestor = os.path.dirname(ancestor)
            os.makedirs(parent, exist_ok=True)
            try:
                os.mkdir(self.directory)  # of two processes racing, one creates it
                self.created_directory, self.created_parents = True, missing
            except (FileExistsError, FileNotFoundError):
                continue
        if not self.use_locks:
            return self._try_lease_file(dead)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return _Found(read(self.directory) or {}, None, locked=True)
        except OSError as error:
            os.close(fd)
            if error.errno not in UNSUPPORTED:
                raise
            self.use_locks = False  # this filesystem has none: the lease file alone
            print(f"note: {self.directory} cannot be locked ({error.strerror}); its "
                  "lease file alone keeps other processes out", file=sys.stderr)
            return self._try_lease_file(dead)
        if not _same_file(fd, self.lock_path):
            # Its last holder removed the folder meanwhile (a run that never started):
            # this lock is on a file nobody else will open. Take the new one.
            os.close(fd)
            return self._try(dead)
        # Locked: no process of this host holds it. A record left here is a dead
        # process's, or one of another host whose lock this one may not see.
        self._fd = fd  # from here on, release() closes it whatever happens
        record, signature = _look(self.lease_path)
        if signature is None or signature == dead or self._dead_here(record, locked=True):
            self.held = True  # and removes a record of ours cut short
            if self._write(lambda _, current: current == signature):
                return None
            self.held = False  # it changed meanwhile: it runs
            record, signature = _look(self.lease_path)
        self._fd = None
        os.close(fd)
        return _Found(record or {}, signature, locked=False)

    def _try_lease_file(self, dead) -> Optional[_Found]:
        try:
            fd = os.open(self.lease_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            record, signature = _look(self.lease_path)
            if signature is None:
                return self._try_lease_file(dead)  # released meanwhile
            if signature == dead or self._dead_here(record):
                if self._take_over(signature):
                    return self._try_lease_file(None)
                record, signature = _look(self.lease_path)
            return _Found(record or {}, signature, locked=False)
        self.held = True
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self._record()) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return None

    def _dead_here(self, record: Optional[dict], locked: bool = False) -> bool:
        """A record of this host whose process has ended; or, once this process holds the
        lock (``locked``), one with this process's pid: an earlier process's, which had
        the same pid (a container restarted, PID 1 again)."""
        if not record or record.get("host") != self._host:
            return False
        pid = record.get("pid")
        return not _runs_here(pid) or (locked and pid == os.getpid())

    def _take_over(self, signature) -> bool:
        """Moves a dead holder's lease file aside; False if it is not the one found dead
        (it changed: its holder runs; or another newcomer replaced it)."""
        aside = f"{self.lease_path}.stale-{self._token}"
        try:
            os.rename(self.lease_path, aside)
        except FileNotFoundError:
            return True  # gone already: try to create ours
        if _look(aside)[1] != signature:  # a rename keeps the inode and mtime
            try:
                os.link(aside, self.lease_path)  # put it back, never over a newer one
            except OSError:
                pass
            os.remove(aside)
            return False
        os.remove(aside)
        return True

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
            remove = (remove_unused and self.held and not self.lost
                      and self.created_directory
                      and set(_listdir(self.directory)) <= set(FILES))
            if remove:
                for name in FILES:
                    try:
                        os.remove(os.path.join(self.directory, name))
                    except OSError:
                        pass
                try:
                    os.rmdir(self.directory)
                    for parent in self.created_parents:  # e.g. runs/, if this made it
                        os.rmdir(parent)  # fails (and stops) where another run lives
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
                    self._refresh()
                except OSError:
                    pass  # a full disk must not turn a clean stop into a crash

    def _record(self) -> dict:
        record = {"host": self._host, "pid": os.getpid(), "job": self._job,
                  "started": _stamp(self._started), "heartbeat": _stamp(time.time()),
                  "state": self._state, "token": self._token}
        if self.run is not None:
            record["run"] = self.run
        return record

    def _write(self, may_replace: Callable[[Optional[dict], object], bool]) -> bool:
        """Writes this process's record whole (a temporary file renamed over lease.json),
        if ``may_replace(record, signature)`` says yes of the record there, asked
        immediately before the rename: the last moment before it would be overwritten.
        Returns whether it was written."""
        try:
            with written_atomically(self.lease_path) as temporary:
                with open(temporary, "w") as f:
                    f.write(json.dumps(self._record()) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                if not may_replace(*_look(self.lease_path)):
                    raise _NotOurs()
        except _NotOurs:
            return False
        return True

    def _refresh(self) -> None:
        """Rewrites this process's record (a heartbeat, or its new state), unless the
        record there is no longer its own: then another process has taken the lease
        over, and ``on_lost`` is called."""
        seen = []

        def ours(record, signature):
            seen.append(record)
            return (record or {}).get("token") == self._token

        if self._write(ours):
            return
        record = seen[-1]
        if record == {}:
            return  # not whole (being written by its taker?): the next beat tells
        self.lost = True
        self.on_lost(self, record)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            with self._mutex:
                if self._stop.is_set() or not self.held or self.lost:
                    return
                try:
                    self._refresh()
                except OSError as error:  # storage hiccup: try again next beat
                    print(f"warning: cannot refresh the lease of {self.directory}: {error}",
                          file=sys.stderr, flush=True)


def _same_file(fd: int, path: str) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _listdir(path: str):
    try:
        return os.listdir(path)
    except OSError:
        return ["?"]
