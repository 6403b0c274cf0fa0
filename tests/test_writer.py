"""multiload.Writer: files read back byte-exact with h5py and PyTables
(values, dtype, chunks, filters), append and slice assignment, growth,
fill values, durability across processes, back-pressure, the error
roll-up, abort, ENOSPC (tmpfs and fault injection), bad input, asyncio and
reads in the same process. Truth is always h5py / PyTables / numpy."""

import asyncio
import ast
import errno
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import tables

import multiload
from multiload import _core

pytestmark = pytest.mark.timeout(120) if hasattr(pytest.mark, "timeout") else []

FILTERS = [
    dict(),
    dict(compression="gzip"),
    dict(compression="gzip", compression_opts=1, shuffle=True),
    dict(compression="gzip", shuffle=True, fletcher32=True),
    dict(compression="lzf"),
    dict(compression="lzf", shuffle=True, fletcher32=True),
    dict(shuffle=True),
    dict(fletcher32=True),
]

DTYPES = ["i1", "u1", "i2", ">u2", "i4", "u4", "i8", "<u8", "f2", "f4", ">f8", "?", "S7", "c8",
          np.dtype([("a", "<i4"), ("b", "f8"), ("s", "S3")]),
          np.dtype([("v", "f4", (3,)), ("k", "u1")])]


def sample(dtype, shape, seed=0):
    dt = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8)
    if dt.kind == "f" or dt.names or dt.kind == "c":
        arr = np.zeros(n, dt)
        if dt.names:
            for name in dt.names:
                sub = dt.fields[name][0]
                base = sub.base
                vals = rng.integers(-1000, 1000, size=(n,) + sub.shape)
                arr[name] = vals.astype(base) if base.kind != "S" else np.char.encode(vals.astype(str))
        elif dt.kind == "c":
            arr = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt)
        else:
            arr = (rng.standard_normal(n) * 100).astype(dt)
        return arr.reshape(shape)
    if dt.kind == "b":
        return (raw[:n] & 1).astype(bool).reshape(shape)
    if dt.kind == "S":
        return np.array([b"x%d" % v for v in rng.integers(0, 10**5, n)], dtype=dt).reshape(shape)
    return raw.view(dt)[:n].reshape(shape)


def h5_filters(d):
    return d.compression, d.compression_opts, d.shuffle, d.fletcher32


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()) or "none")
def test_filters_round_trip_h5py_and_tables(tmp_path, flt):
    p = tmp_path / "f.h5"
    data = sample("i4", (1037, 6), seed=1)
    with multiload.Writer(p, "w", n_procs=2) as w:
        ds = w.create_dataset("x", shape=(0, 6), dtype="i4", chunks=(64, 4), maxshape=(None, 6), **flt)
        for i in range(0, len(data), 111):
            ds.append(data[i:i + 111])
    with h5py.File(p, "r") as f:
        d = f["x"]
        assert d.shape == data.shape and d.dtype == np.dtype("i4") and d.chunks == (64, 4)
        assert d.maxshape == (None, 6)
        exp = (flt.get("compression"), flt.get("compression_opts", 4 if flt.get("compression") == "gzip" else None),
               bool(flt.get("shuffle")), bool(flt.get("fletcher32")))
        assert h5_filters(d) == exp
        np.testing.assert_array_equal(d[...], data)
    if flt.get("compression") != "lzf":
        with tables.open_file(str(p)) as t:
            np.testing.assert_array_equal(t.root.x[:], data)
            assert t.root.x.filters.fletcher32 == bool(flt.get("fletcher32"))
            assert t.root.x.filters.complevel == (exp[1] or 0)
            if flt.get("compression"):  # PyTables reports shuffle only with a compressor
                assert t.root.x.filters.shuffle == bool(flt.get("shuffle"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dtypes_byte_exact(tmp_path, dtype):
    p = tmp_path / "d.h5"
    data = sample(dtype, (301,), seed=2)
    with multiload.Writer(p, "w") as w:
        ds = w.create_dataset("d", shape=(0,), dtype=dtype, chunks=(32,), maxshape=(None,),
                              compression="gzip", shuffle=True)
        ds.append(data[:100])
        ds.append(data[100:])
    with h5py.File(p, "r") as f:
        got = f["d"][...]
        assert f["d"].dtype == np.dtype(dtype)
        assert got.tobytes() == data.tobytes()


@pytest.mark.parametrize("shape,chunks", [((50, 7, 5), (8, 3, 2)), ((40, 9), (16, 9)), ((33, 2, 3, 4), (5, 2, 2, 3))])
def test_nd_chunks_across_other_axes(tmp_path, shape, chunks):
    p = tmp_path / "nd.h5"
    data = sample("f4", shape, seed=3)
    with multiload.Writer(p, "w", n_procs=3) as w:
        ds = w.create_dataset("nd", shape=(0,) + shape[1:], dtype="f4", chunks=chunks,
                              maxshape=(None,) + shape[1:], compression="gzip", fillvalue=7.5)
        for i in range(0, shape[0], 13):
            ds.append(data[i:i + 13])
    with h5py.File(p, "r") as f:
        assert f["nd"].chunks == chunks and f["nd"].fillvalue == 7.5
        np.testing.assert_array_equal(f["nd"][...], data)
        f["nd"].id.set_extent  # readable by h5py; extent grows show fill below


def test_tail_chunk_holds_fill_after_flush(tmp_path):
    p = tmp_path / "tail.h5"
    with multiload.Writer(p, "w") as w:
        ds = w.create_dataset("t", shape=(0,), dtype="i2", chunks=(10,), maxshape=(None,), fillvalue=-3)
        ds.append(np.arange(14, dtype="i2"))
        w.flush()
    with h5py.File(p, "a") as f:
        d = f["t"]
        assert d.shape == (14,)
        d.resize((20,))  # the rows not written of the tail chunk read as the fill value
        np.testing.assert_array_equal(d[...], np.r_[np.arange(14), [-3] * 6].astype("i2"))


def test_slice_assign_aligned_unaligned_overlapping(tmp_path):
    p = tmp_path / "s.h5"
    truth = np.full((203, 3), 5, dtype="u4")
    with multiload.Writer(p, "w", n_procs=2) as w:
        ds = w.create_dataset("s", shape=(203, 3), dtype="u4", chunks=(20, 2), compression="gzip",
                              fillvalue=5)
        rng = np.random.default_rng(4)
        for k, (i, j) in enumerate([(0, 40), (40, 60), (7, 13), (55, 141), (100, 203), (0, 1), (199, 203),
                                    (21, 22), (30, 95)]):
            v = rng.integers(0, 10**6, size=(j - i, 3)).astype("u4")
            ds[i:j] = v
            truth[i:j] = v
            if k == 4:
                w.flush()
        ds[150] = np.array([1, 2, 3], "u4")
        truth[150] = [1, 2, 3]
        ds[-1] = 9
        truth[-1] = 9
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(f["s"][...], truth)
    with tables.open_file(str(p)) as t:
        np.testing.assert_array_equal(t.root.s[:], truth)


def test_slice_assign_into_growing_tail_and_existing_h5py_dataset(tmp_path):
    p = tmp_path / "g.h5"
    base = np.arange(95, dtype="f8")
    with h5py.File(p, "w") as f:
        f.create_dataset("g", data=base, chunks=(10,), maxshape=(None,), compression="gzip", shuffle=True)
        f.create_dataset("contig", data=base)
    truth = list(base)
    with multiload.Writer(p, "a") as w:
        ds = w["g"]
        assert ds.shape == (95,) and ds.chunks == (10,) and ds.compression == "gzip" and ds.shuffle
        ds.append(np.arange(100, 117, dtype="f8"))  # merges with the partial chunk 90..95 on disk
        truth += list(range(100, 117))
        ds[93:110] = -1.0
        truth[93:110] = [-1.0] * 17
        with pytest.raises(ValueError, match="not chunked"):
            w["contig"]
        with pytest.raises(KeyError):
            w["nope"]
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(f["g"][...], np.array(truth))


def test_create_same_params_returns_it_other_params_value_error(tmp_path):
    p = tmp_path / "c.h5"
    with multiload.Writer(p, "w") as w:
        a = w.create_dataset("x", shape=(10, 4), dtype="f4", chunks=(5, 4), compression="gzip")
        b = w.create_dataset("x", shape=(10, 4), dtype="f4", chunks=(5, 4), compression="gzip")
        assert a is b
        with pytest.raises(ValueError, match="compression"):
            w.create_dataset("x", shape=(10, 4), dtype="f4", compression="lzf")
        with pytest.raises(ValueError, match="dtype"):
            w.create_dataset("x", shape=(10, 4), dtype="i4", compression="gzip")
    with multiload.Writer(p, "a") as w:  # reopened: compared against what the file says
        with pytest.raises(ValueError, match="shape"):
            w.create_dataset("x", shape=(11, 4), dtype="f4", compression="gzip")
        assert w.create_dataset("x", shape=(10, 4), dtype="f4", compression="gzip").chunks == (5, 4)


def test_default_chunks_like_h5py_and_data_argument(tmp_path):
    p = tmp_path / "dflt.h5"
    data = sample("i8", (5000, 3), seed=5)
    with multiload.Writer(p, "w") as w:
        w.create_dataset("d", data=data, compression="gzip")
    with h5py.File(tmp_path / "ref.h5", "w") as r:
        ref = r.create_dataset("d", data=data, compression="gzip")
        ref_chunks = ref.chunks
    with h5py.File(p, "r") as f:
        assert f["d"].chunks == ref_chunks
        np.testing.assert_array_equal(f["d"][...], data)


def test_other_process_reads_after_flush(tmp_path):
    p = tmp_path / "live.h5"
    data = sample("i4", (777, 5), seed=6)
    w = multiload.Writer(p, "w")
    ds = w.create_dataset("x", shape=(0, 5), dtype="i4", chunks=(50, 5), maxshape=(None, 5), compression="gzip")
    ds.append(data[:500])
    w.flush()
    code = textwrap.dedent(f"""
        import h5py, numpy as np, sys
        with h5py.File({str(p)!r}, "r") as f:
            sys.stdout.write(f["x"][...].tobytes().hex())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert bytes.fromhex(out.stdout) == data[:500].tobytes()
    ds.append(data[500:])
    w.flush()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert bytes.fromhex(out.stdout) == data.tobytes()
    w.close()


def test_reader_in_same_process_sees_rows_written(tmp_path):
    p = tmp_path / "same.h5"
    data = sample("f4", (333, 4), seed=7)
    with multiload.Writer(p, "w") as w:
        ds = w.create_dataset("x", shape=(0, 4), dtype="f4", chunks=(40, 4), maxshape=(None, 4),
                              compression="gzip", shuffle=True)
        ds.append(data)  # PENDING and WRITABLE blocks: opening a reader flushes them
        r = multiload.Reader(str(p), n_procs=1)
        try:
            dsr = r.get_dataset("/x"); got = r.read(dsr[:])
        finally:
            r.close()
        np.testing.assert_array_equal(got, data)
        # Streamer too
        s = multiload.Streamer(str(p))
        q = s.get_queue("/x", n_procs=1, block_size=40)
        rows = []
        for guard in q.iter():
            with guard as block:
                rows.append(np.array(block))
        q.close()
        got = np.concatenate(rows)  # the Streamer's blocks of 40: the 13-row remainder is not streamed
        assert len(got) == 320
        np.testing.assert_array_equal(got, data[:320])


def test_back_pressure_timeout_and_bounded_memory(tmp_path):
    p = tmp_path / "bp.h5"
    block = 256 * 1024  # 64 Ki rows of f4 per chunk of one row width
    with multiload.Writer(p, "w", n_procs=1, max_pending_bytes=2 * block) as w:
        ds = w.create_dataset("x", shape=(0,), dtype="f4", chunks=(block // 4,), maxshape=(None,),
                              compression="gzip", compression_opts=9)
        os.environ["MULTILOAD_FAULTS"] = "slowwrite"  # harmless unknown rule
        seen = 0
        rng = np.random.default_rng(0)
        data = rng.standard_normal(block // 4 * 12).astype("f4")
        timed_out = False
        for i in range(12):
            try:
                ds.append(data[i * (block // 4):(i + 1) * (block // 4)], timeout=0)
            except TimeoutError:
                timed_out = True
                ds.append(data[i * (block // 4):(i + 1) * (block // 4)], timeout=60)
            seen = max(seen, w.stats()["pending_bytes"])
        assert seen <= 2 * block
        assert timed_out  # one worker on gzip-9 cannot keep up with memcpy
        os.environ.pop("MULTILOAD_FAULTS")
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(f["x"][...], data)


def _fault_writer(tmp_path, rule):
    os.environ["MULTILOAD_FAULTS"] = rule
    _core.fault_reload() if hasattr(_core, "fault_reload") else None
    return tmp_path / "fault.h5"


def run_child(code):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=90, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_enospc_fault_injected_rollup_and_earlier_rows_kept(tmp_path):
    p = tmp_path / "enospc.h5"
    out = run_child(f"""
        import os
        os.environ["MULTILOAD_FAULTS"] = "enospc@7,enospc@9"
        import numpy as np, multiload
        w = multiload.Writer({str(p)!r}, "w", n_procs=2)
        ds = w.create_dataset("x", shape=(0,), dtype="i4", chunks=(100,), maxshape=(None,))
        ds.append(np.arange(500, dtype="i4"))
        w.flush()                              # chunks 1..5: durable
        try:  # the failure surfaces at the next append or at flush, whichever comes first
            ds.append(np.arange(500, 1000, dtype="i4"))
            w.flush()
        except multiload.WriteError as e:
            import errno
            assert isinstance(e, OSError) and e.errno == errno.ENOSPC, e
            rows = sorted((b.dataset, b.rows.start, b.rows.stop, b.errno) for b in e.errors)
            print(rows)
            assert "'/x'" in str(e) and "rows" in str(e)
        else:
            raise SystemExit("no WriteError")
        try:
            ds.append(np.arange(3, dtype="i4"))
        except multiload.WriteError:
            print("append raises")
        w.close(abort=True)
        w.close()
    """)
    # Two workers take the second append's five chunks in either order, so
    # which chunks are the 7th and 9th writes varies: one or two of them
    # failed, each a whole chunk of the second append, with ENOSPC.
    failed = ast.literal_eval(out.splitlines()[0])
    assert 1 <= len(failed) <= 2, out
    for name, start, stop, code in failed:
        assert name == "/x" and code == errno.ENOSPC and stop - start == 100 and start % 100 == 0
        assert 500 <= start < 1000
    assert "append raises" in out
    with h5py.File(p, "r") as f:
        got = f["x"][...]
    np.testing.assert_array_equal(got[:500], np.arange(500))  # flushed before the failure: kept
    lost = {start for _, start, _, _ in failed}
    for start in range(500, min(len(got), 1000), 100):  # every chunk not reported lost was written
        if start not in lost and len(got) >= start + 100 and not (got[start:start + 100] == 0).all():
            np.testing.assert_array_equal(got[start:start + 100], np.arange(start, start + 100))


def test_enospc_real_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        p = mnt / "full.h5"
        w = multiload.Writer(p, "w", n_procs=2)
        ds = w.create_dataset("x", shape=(0,), dtype="u1", chunks=(65536,), maxshape=(None,))
        first = np.random.default_rng(1).integers(0, 255, 512 * 1024, dtype=np.uint8)
        ds.append(first)
        w.flush()
        with pytest.raises(multiload.WriteError) as ei:
            for _ in range(8):
                ds.append(np.ones(512 * 1024, np.uint8))
            w.flush()
        e = ei.value
        assert e.errors and any(b.errno == 28 or "No space" in str(b) for b in e.errors), e
        assert "'/x'" in str(e) or "full.h5" in str(e)
        w.close(abort=True)
        with h5py.File(p, "r") as f:
            np.testing.assert_array_equal(f["x"][:len(first)], first)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_abort_discards_and_close_idempotent(tmp_path):
    p = tmp_path / "ab.h5"
    w = multiload.Writer(p, "w", n_procs=1)
    ds = w.create_dataset("x", shape=(0,), dtype="i8", chunks=(1000,), maxshape=(None,))
    ds.append(np.arange(1500))
    w.flush()
    ds.append(np.arange(1500, 1700))
    w.close(abort=True)
    w.close()
    w.close(abort=True)
    assert w.closed
    with pytest.raises(RuntimeError, match="closed"):
        ds.append(np.arange(3))
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(f["x"][...], np.arange(1500))


def test_bad_input(tmp_path):
    p = tmp_path / "bad.h5"
    with multiload.Writer(p, "w") as w:
        ds = w.create_dataset("x", shape=(10, 3), dtype="i4", chunks=(5, 3))
        g = w.create_dataset("g", shape=(0, 3), dtype="i4", chunks=(5, 3), maxshape=(None, 3))
        with pytest.raises(TypeError, match="'/g'"):
            g.append(np.zeros((2, 3), "f8"))
        with pytest.raises(TypeError, match="'/g'"):
            g.append(np.array([["a", "b", "c"]]))
        with pytest.raises(ValueError, match="'/g'.*shape"):
            g.append(np.zeros((2, 4), "i4"))
        with pytest.raises(IndexError, match="'/x'"):
            ds[8:12] = np.zeros((4, 3), "i4")
        with pytest.raises(IndexError):
            ds[10] = np.zeros(3, "i4")
        with pytest.raises(ValueError, match="maxshape"):
            ds.append(np.zeros((1, 3), "i4"))
        with pytest.raises(ValueError, match="'/x'"):
            ds[0:5] = np.zeros((4, 3), "i4")
        with pytest.raises(TypeError, match="dtype"):
            w.create_dataset("u", shape=(3,), dtype="U4")
        with pytest.raises(ValueError, match="compression"):
            w.create_dataset("z", shape=(3,), dtype="i4", compression="szip")
        with pytest.raises(ValueError):
            multiload.Writer(p, "r")
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "f.h5").write_bytes(p.read_bytes())
    os.chmod(ro / "f.h5", 0o444)
    if os.geteuid() != 0:
        with pytest.raises(OSError, match="f.h5"):
            multiload.Writer(ro / "f.h5", "a")
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not hdf5" * 100)
    with pytest.raises(OSError, match="bogus.h5"):
        multiload.Writer(bogus, "a")
    with pytest.raises(OSError, match="nodir"):
        multiload.Writer(tmp_path / "nodir" / "x.h5", "w")


def test_read_only_mount_oserror_names_file(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        with pytest.raises(OSError, match="x.h5") as ei:
            multiload.Writer(mnt / "x.h5", "w")
        assert ei.value.errno == 30  # EROFS
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_asyncio_flush_and_async_with(tmp_path):
    p = tmp_path / "aio.h5"
    data = sample("i4", (1000, 2), seed=8)

    async def main():
        async with multiload.Writer(p, "w") as w:
            ds = w.create_dataset("x", shape=(0, 2), dtype="i4", chunks=(64, 2), maxshape=(None, 2),
                                  compression="gzip")
            ds.append(data[:600])
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            t = asyncio.ensure_future(ticker())
            r = w.flush()
            assert asyncio.iscoroutine(r)
            await r
            t.cancel()
            ds.append(data[600:])
        return ticks

    assert asyncio.run(main()) >= 1
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(f["x"][...], data)


def test_flush_off_loop_returns_none(tmp_path):
    with multiload.Writer(tmp_path / "n.h5", "w") as w:
        assert w.flush() is None
        assert w.commit_all() is None
        assert isinstance(w.event_fd(), int)


def test_docs_writer_md_examples_run():
    import pathlib
    import re
    doc = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "writer.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) >= 2
    for code in blocks:
        exec(compile(code, "docs/writer.md", "exec"), {})


def test_many_datasets_opened_while_blocks_are_in_flight(tmp_path):
    """Datasets created one after another while earlier ones' blocks are
    being written (the dataset table grows under the workers): every
    dataset reads back byte-exact."""
    path = tmp_path / "many.h5"
    data = [sample("<f4", (3000, 5), seed=i) for i in range(20)]
    with multiload.Writer(path, "w", n_procs=2, max_pending_bytes=1 << 20) as w:
        for i, a in enumerate(data):
            ds = w.create_dataset(f"d{i}", (0, 5), "<f4", chunks=(64, 5), maxshape=(None, 5),
                                  compression="gzip", shuffle=True)
            ds.append(a[:1500])
            for j in range(i):  # keep earlier datasets busy
                w[f"d{j}"].append(data[j][1500 + 75 * (i - 1 - j):1500 + 75 * (i - j)])
        for j in range(20):
            done = 1500 + 75 * (19 - j)
            w[f"d{j}"].append(data[j][done:])
    with h5py.File(path, "r") as f:
        for i, a in enumerate(data):
            np.testing.assert_array_equal(f[f"d{i}"][...], a)


def test_core_misuse_raises_never_crashes(tmp_path):
    """The C binding checks what it is given: a dataset index it does not
    have, rows outside a block, a buffer shorter than the rows, more valid
    rows than a block has, a block of another writer, a spent block."""
    with multiload.Writer(tmp_path / "a.h5", "w") as w, multiload.Writer(tmp_path / "b.h5", "w") as v:
        ds = w.create_dataset("x", (0,), "<i4", chunks=(16,), maxshape=(None,))
        v.create_dataset("y", (0,), "<i4", chunks=(16,), maxshape=(None,))
        core, ocore = w._core, v._core
        for bad in (99, -1, 1 << 40):
            with pytest.raises((ValueError, OverflowError, OSError)):
                core.info(bad)
            with pytest.raises((ValueError, OverflowError, OSError)):
                core.block_new(bad, 0, False)
            with pytest.raises((ValueError, OverflowError, OSError)):
                core.grow(bad, 10)
        with pytest.raises((ValueError, OSError)):
            core.block_new(ds._ds, 1 << 62, False)  # a band past 2**64 rows
        cap = core.block_new(ds._ds, 0, False)
        row = np.arange(16, dtype="<i4")
        with pytest.raises(ValueError):
            core.block_put(cap, 10, row, 16)  # past the block's 16 rows
        with pytest.raises(ValueError):
            core.block_put(cap, 0, row[:4], 16)  # a buffer of 4 rows for 16
        with pytest.raises(ValueError):
            core.submit(cap, 17, False)  # more valid rows than the block has
        with pytest.raises(ValueError):
            ocore.block_put(cap, 0, row, 16)  # another writer's block
        with pytest.raises(ValueError):
            ocore.submit(cap, 16, False)
        core.block_put(cap, 0, row, 16)
        assert core.reserve(64, None)
        core.submit(cap, 16, False)
        with pytest.raises(RuntimeError):
            core.block_put(cap, 0, row, 16)  # spent: submitted
        core.unreserve(1 << 40)  # more than reserved: clamped, no underflow
        assert core.wait_idle(30)
        ds._n = max(ds._n, 16)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        np.testing.assert_array_equal(f["x"][:16], row)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(shape=(-1,)), ValueError),  # once looped forever in the chunk guess
    (dict(shape=(2**63,)), ValueError),
    (dict(shape=(10,), chunks=(0,)), ValueError),
    (dict(shape=(10,), chunks=(2**40,)), ValueError),
    (dict(shape=(10,), maxshape=(-5,)), ValueError),
    (dict(shape=(10,), fillvalue="x"), ValueError),
    (dict(shape=(10,), dtype=object), TypeError),
    (dict(shape=(), dtype="f4"), ValueError),
])
def test_create_dataset_bad_arguments_raise_naming_it(tmp_path, kwargs, exc):
    kwargs.setdefault("dtype", "f4")
    with multiload.Writer(tmp_path / "bad.h5", "w") as w:
        with pytest.raises(exc, match="'/x'|dtype"):
            w.create_dataset("x", **kwargs)


def test_ctrl_c_during_close_discards_the_rest_and_closes(tmp_path):
    """SIGINT while close() waits for throttled blocks: KeyboardInterrupt
    reaches the caller promptly, the writer is closed (the blocks not
    written are discarded), a second close is a no-op, and the rows
    written before are in the file."""
    import signal
    import threading
    import time

    path = tmp_path / "intr.h5"
    w = multiload.Writer(path, "w", n_procs=1, budget=multiload.Budget(max_bytes_per_s=1000))
    ds = w.create_dataset("x", (0,), "<u1", chunks=(100_000,), maxshape=(None,))
    ds.append(np.zeros(400_000, dtype=np.uint8))  # the first chunk passes on the full bucket, then minutes
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            w.close()
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 30
    w.close()  # closed already: returns at once
    with pytest.raises(RuntimeError, match="closed"):
        ds.append(np.zeros(1, dtype=np.uint8))
    with h5py.File(path, "r") as f:
        assert f["x"].shape[0] >= 100_000


def test_reader_opened_before_a_write_raises_file_changed(tmp_path):
    """A Reader or queue that opened a dataset holds its chunk addresses; a
    Writer of this process writing that dataset again may move them. The
    reader then raises FileChangedError (never returns stale or foreign
    bytes); a reader opened after sees the new rows; other datasets of the
    file are unaffected."""
    path = tmp_path / "rw.h5"
    first = np.arange(1000, dtype="<f4")
    with multiload.Writer(path, "w") as w:
        ds = w.create_dataset("x", (1000,), "<f4", chunks=(100,), compression="gzip")
        other = w.create_dataset("y", (1000,), "<f4", chunks=(100,))
        ds[0:1000] = first
        other[0:1000] = first
        reader = multiload.Reader(str(path))
        np.testing.assert_array_equal(reader.read(reader.get_dataset("x")[:]), first)  # opened: flushed first
        np.testing.assert_array_equal(reader.read(reader.get_dataset("y")[:]), first)
        queue = multiload.Streamer(str(path)).get_queue("x", block_size=100, ordered=True)
        ds[0:50] = -first[:50]  # rewrites chunk 0: its stored size changes
        with pytest.raises(multiload.FileChangedError, match="'/x'.*written by a multiload.Writer"):
            reader.read(reader.get_dataset("x")[:])
        with pytest.raises(multiload.FileChangedError):
            queue.get()
        np.testing.assert_array_equal(reader.read(reader.get_dataset("y")[:]), first)  # not written again
        queue.close()
        reader.close()
        fresh = multiload.Reader(str(path))
        want = first.copy()
        want[:50] = -first[:50]
        np.testing.assert_array_equal(fresh.read(fresh.get_dataset("x")[:]), want)
        fresh.close()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][...], want)


@pytest.mark.parametrize("kwargs", [dict(n_procs=0), dict(n_procs=10**6), dict(n_procs=True),
                                    dict(max_pending_bytes=0), dict(max_pending_bytes=2**70),
                                    dict(mode="r")])
def test_writer_bad_arguments(tmp_path, kwargs):
    mode = kwargs.pop("mode", "w")
    with pytest.raises(ValueError):
        multiload.Writer(tmp_path / "args.h5", mode, **kwargs)
