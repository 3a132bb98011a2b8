"""Holds a run folder's lease as a training process would, for the tests:
``python hold_lease.py DIR RELEASE_FILE``.

Prints "held" once it holds the lease of DIR. A SIGTERM marks the lease "stopping" (as
the training command does when it starts to save); it lets go once RELEASE_FILE
exists, standing in for the end of that save.
"""
import os
import sys
import time

import tfgan_exp  # noqa: F401
from tfgan_exp import lease, stopping

stopping.install()
directory, release_file = sys.argv[1:3]
with stopping.deferred():
    held = lease.Lease(directory).acquire()
    with stopping.on_request(held.mark_stopping):
        print("held", flush=True)
        while not os.path.exists(release_file):
            time.sleep(0.02)
    held.release()
