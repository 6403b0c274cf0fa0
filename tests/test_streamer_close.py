"""close() and interpreter exit return even while a worker is stuck in a
read that will not finish for a minute (a hung network mount): the stuck
worker is detached and frees its share of the stream when the read ends."""

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("io_mode", ["io_uring", "pread"])
def test_close_returns_while_reads_hang(tmp_path, io_mode):
    fn = str(tmp_path / "stuck.h5")
    with h5py.File(fn, "w") as f:
        f["x"] = np.arange(10000)
    code = textwrap.dedent(f"""
        import multiload
        q = multiload.Streamer({fn!r}).get_queue("x", block_size=100, n_procs=2, io_mode={io_mode!r})
        q.close()                      # both workers are inside a 60 s read
        assert q.get() is multiload.QueueClosed
        print("closed")
    """)
    env = dict(os.environ, MULTILOAD_FAULTS="slow~1:60000")
    # The 30 s limit is a hang detector: joining the workers would take 60 s.
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "closed"


@pytest.mark.parametrize("io_mode", ["io_uring", "pread"])
def test_close_returns_while_a_direct_batch_hangs(tmp_path, io_mode):
    """A direct stream's workers each have a batch of blocks in flight (the
    cold path's deep queue): close() and Ctrl-C still return while every
    read of the batch hangs, and the stream says it was batching."""
    fn = str(tmp_path / "stuck_direct.h5")
    with h5py.File(fn, "w") as f:
        f["x"] = np.arange(200000)
    try:
        os.close(os.open(fn, os.O_RDONLY | os.O_DIRECT))
    except OSError:
        pytest.skip("this filesystem refuses O_DIRECT")
    code = textwrap.dedent(f"""
        import os, signal, threading, time
        import multiload
        q = multiload.Streamer({fn!r}).get_queue("x", block_size=1000, n_procs=2, io_mode={io_mode!r},
                                                 direct=True)
        assert q.stats()["batch_blocks"] > 1, q.stats()
        time.sleep(0.2)                # both workers are inside a batch of 60 s reads
        q.close()
        assert q.get() is multiload.QueueClosed
        q2 = multiload.Streamer({fn!r}).get_queue("x", block_size=1000, n_procs=2, io_mode={io_mode!r},
                                                  direct=True)
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            q2.get(timeout=50)         # Ctrl-C while waiting for a block that hangs
        except KeyboardInterrupt:
            print("interrupted")
        q2.close()
        print("closed")
    """)
    env = dict(os.environ, MULTILOAD_FAULTS="slow~1:60000", MULTILOAD_COLD="1")
    # The 30 s limit is a hang detector: joining the workers would take 60 s.
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["interrupted", "closed"]
