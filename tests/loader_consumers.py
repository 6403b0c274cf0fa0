"""What consumer processes run for tests/test_loader_process.py.

A module of its own so that spawned consumers import it by name. Each
consumer connects to a LoaderProcess it got pickled, streams its queue and
sends back (start, block copy) pairs, which the test compares with h5py.
"""

import os
import signal
import time

import numpy as np

import multiload


def stream_all(loader, consumer_id, out, options=None):
    """Stream every block; put ("ok", [(start, rows-array)...]) or ("error", repr)."""
    try:
        got = []
        with loader.connect(consumer_id, **(options or {})) as q:
            for guard in q:
                with guard as block:
                    got.append((guard.start, np.array(block)))
        out.put(("ok", consumer_id, got))
    except BaseException as e:  # the test wants every failure, by name
        out.put(("error", consumer_id, repr(e)))


def stream_then_die(loader, consumer_id, out, hold, options=None):
    """Take `hold` blocks, keep their guards reserved, report, then SIGKILL ourselves."""
    q = loader.connect(consumer_id, **(options or {}))
    guards = [q.get() for _ in range(hold)]
    out.put(("holding", consumer_id, [g.start for g in guards], os.getpid()))
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGKILL)


def wait_for_death(loader, consumer_id, out, options=None):
    """Stream a cyclic queue until the loader dies; report how get() ended and when."""
    try:
        with loader.connect(consumer_id, **(options or {})) as q:
            out.put(("streaming", consumer_id, os.getpid()))
            while True:
                g = q.get()
                if g is multiload.QueueClosed:
                    out.put(("closed", consumer_id, time.monotonic()))
                    return
                g.release()
    except multiload.LoaderDiedError as e:
        out.put(("died", consumer_id, time.monotonic(), str(e)))
    except BaseException as e:
        out.put(("error", consumer_id, repr(e)))
