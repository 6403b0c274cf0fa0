"""Ctrl-C: a process blocked in get() gets SIGINT and raises
KeyboardInterrupt promptly, then exits cleanly. Each case runs in a
subprocess with a timeout, in both I/O engines."""

import os
import signal
import subprocess
import sys
import threading

import pytest

import reliability_files as rf

pytestmark = pytest.mark.timeout(90)

#: The child blocks in get() for real: read_ahead=1 and the only slot is
#: held by a guard in ANOTHER thread (so it is no self-deadlock error),
#: or every read stalls (slow fault).
CHILD = r"""
import os, sys, threading, time
sys.path.insert(0, os.path.join(os.environ["ROOT"], "tests"))
import reliability_files as rf
import multiload
fn = rf.write_data_file(os.path.join(os.environ["DIR"], "data.h5"))
how = os.environ["HOW"]
if how == "held":
    q = multiload.Streamer(fn).get_queue("gz", n_procs=2, read_ahead=1, block_size=rf.BLOCK)
    holding = threading.Event()
    def hold():
        g = q.get(timeout=20)
        holding.set()
        time.sleep(3600)
    threading.Thread(target=hold, daemon=True).start()
    holding.wait(20)
else:
    q = multiload.Streamer(fn).get_queue("contig", n_procs=1, block_size=rf.BLOCK)
print("READY", flush=True)
try:
    q.get()
    print("RETURNED", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    q.close()
    print("CLOSED", q.get() is multiload.QueueClosed, flush=True)
"""


@pytest.mark.parametrize("io_mode", ["pread", "uring"])
@pytest.mark.parametrize("how", ["held", "slow"])
def test_sigint_interrupts_blocked_get(tmp_path, io_mode, how):
    env = dict(os.environ)
    env.pop("MULTILOAD_FAULTS", None)
    env.update(ROOT=rf.ROOT, DIR=str(tmp_path), HOW=how, MULTILOAD_IO=io_mode,
               PYTHONPATH=rf.ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    if how == "slow":
        env["MULTILOAD_FAULTS"] = "slow~1:1500"
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    try:
        line = p.stdout.readline()
        assert line.strip() == "READY", (line, p.stderr.read() if p.poll() is not None else "")
        # Give the child time to enter get(); a signal that arrives earlier
        # is handled at the next bytecode and still raises KeyboardInterrupt.
        threading.Event().wait(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "INTERRUPTED" in out and "CLOSED True" in out, (out, err[-2000:])
    assert "RETURNED" not in out
    assert p.returncode == 0, err[-2000:]


def test_signal_handler_exception_propagates_from_get(tmp_path):
    """Any Python signal handler runs during a blocked get(), and its
    exception leaves get() (SIGALRM here)."""
    code = r"""
import os, signal, sys, threading, time
sys.path.insert(0, os.path.join(os.environ["ROOT"], "tests"))
import reliability_files as rf
import multiload
fn = rf.write_data_file(os.path.join(os.environ["DIR"], "data.h5"))
q = multiload.Streamer(fn).get_queue("contig", n_procs=1, read_ahead=1, block_size=rf.BLOCK)
held = []
t = threading.Thread(target=lambda: held.append(q.get(timeout=20)), daemon=True)
t.start(); t.join(20)
class Alarm(Exception): pass
def on_alarm(*a): raise Alarm()
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    q.get()
    print("RETURNED")
except Alarm:
    print("ALARM")
q.close()
"""
    r = rf.run_python(code, env={"ROOT": rf.ROOT, "DIR": str(tmp_path)})
    assert r.returncode == 0 and r.stdout.strip() == "ALARM", (r.stdout, r.stderr[-2000:])
