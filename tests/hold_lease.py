"""Holds a run folder's lease as a training process would, for the tests:
``python hold_lease.py DIR RELEASE_FILE [--files_only] [--heartbeat=SECONDS]``.

Prints "held" once it holds the lease of DIR. A SIGTERM marks the lease "stopping" (as
the training command does when it starts to save); it lets go once RELEASE_FILE
exists, standing in for the end of that save. ``--files_only``: the lease file alone,
as on a filesystem without working ``flock``.
"""
import argparse
import os
import time

import tfgan_exp  # noqa: F401
from tfgan_exp.runtime import lease, stopping

parser = argparse.ArgumentParser()
parser.add_argument("directory")
parser.add_argument("release_file")
parser.add_argument("--files_only", action="store_true")
parser.add_argument("--heartbeat", type=float, default=lease.HEARTBEAT_SECONDS)
options = parser.parse_args()
stopping.install()
with stopping.deferred():
    held = lease.Lease(options.directory, use_locks=not options.files_only,
                       heartbeat_seconds=options.heartbeat).acquire()
    with stopping.on_request(held.mark_stopping):
        print("held", flush=True)
        while not os.path.exists(options.release_file):
            time.sleep(0.02)
    held.release()
