"""With io_uring blocked the way container runtimes block it (a seccomp
filter that makes io_uring_setup fail), multiload picks pread by itself and
streams the same bytes: the fallback needs no configuration."""

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.timeout(60)

# Installs a seccomp filter in the child: io_uring_setup -> EPERM, all else allowed.
SECCOMP = textwrap.dedent("""
    import ctypes, struct
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    NR_IO_URING_SETUP, EPERM = 425, 1   # 425 on every architecture (unified numbering)
    def stmt(code, k, jt=0, jf=0):
        return struct.pack("HBBI", code, jt, jf, k)
    prog = b"".join([
        stmt(0x20, 0),                                  # ld  [nr]
        stmt(0x15, NR_IO_URING_SETUP, 0, 1),            # jeq io_uring_setup
        stmt(0x06, 0x00050000 | EPERM),                 # ret ERRNO(EPERM)
        stmt(0x06, 0x7fff0000),                         # ret ALLOW
    ])
    buf = ctypes.create_string_buffer(prog)
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = Fprog(len(prog) // 8, ctypes.addressof(buf))
    assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        print("SECCOMP-UNAVAILABLE"); raise SystemExit(0)
""")


def test_streams_through_pread_when_io_uring_is_blocked(tmp_path):
    fn = str(tmp_path / "f.h5")
    data = np.arange(50000, dtype="<f8").reshape(5000, 10)
    with h5py.File(fn, "w") as f:
        f["contig"] = data
        f.create_dataset("gz", data=data, chunks=(64, 10), compression="gzip", shuffle=True)
    code = SECCOMP + textwrap.dedent(f"""
        import os, numpy as np, multiload
        os.environ.pop("MULTILOAD_IO", None)
        print(multiload.io_mode())
        for path in ("contig", "gz"):
            q = multiload.Streamer({fn!r}).get_queue(path, block_size=300, n_procs=2, ordered=True, remainder=True)
            out = np.concatenate([g.array.copy() for g in q])
            print(path, q.stats()["io_mode"], out.tobytes().hex()[:64], len(out))
            np.save({str(tmp_path)!r} + "/" + path + ".npy", out)
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "MULTILOAD_IO"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert "SECCOMP-UNAVAILABLE" not in r.stdout, "could not install the seccomp filter"
    assert lines[0] == "pread"
    for path in ("contig", "gz"):
        line = next(l for l in lines if l.startswith(path + " "))
        assert line.split()[1] == "pread"
        np.testing.assert_array_equal(np.load(str(tmp_path / f"{path}.npy")), data)
