"""multiload.ray.read_hdf5 on a real local Ray cluster (``ray.init(num_cpus=2)``,
once for the module). The truth is h5py's (or PyTables') reading of the
same files.
"""

import os
import subprocess
import sys
import threading

import h5py
import numpy as np
import pytest
import tables

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import multiload  # noqa: E402
import multiload.ray as mlr  # noqa: E402

# A Ray cluster takes seconds to start: `slow`, out of the pread pass of `make test` (the first pass runs it).
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = (3000, 1000, 4100)


@pytest.fixture(scope="module")
def cluster():
    # The workers import this checkout's multiload, whatever the venv's editable install points at.
    path = os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray")
    rng = np.random.default_rng(65760)
    whole = rng.integers(0, 1 << 20, (sum(PARTS), 3, 4)).astype(np.int32)
    out = {"parts": [], "whole": whole}
    start = 0
    for i, n in enumerate(PARTS):
        p = str(d / f"part{i}.h5")
        with h5py.File(p, "w") as f:
            f.create_dataset("x", data=whole[start:start + n], chunks=(256 if i != 1 else 100, 3, 4),
                             compression="gzip", shuffle=True)
            f.create_dataset("flat", data=whole[start:start + n, 0, 0].astype(np.float64))  # contiguous, 1-D
        out["parts"].append(p)
        start += n
    out["table"] = str(d / "table.h5")
    with tables.open_file(out["table"], "w") as t:
        desc = np.dtype([("id", "<i8"), ("v", "<f4", (2,)), ("name", "S6"), ("inner", [("p", "<i2"), ("q", "<f8")])])
        tab = t.create_table("/", "table", desc, filters=tables.Filters(complevel=3, complib="zlib"),
                             chunkshape=(300,))
        rows = np.zeros(5000, desc)
        rows["id"] = np.arange(5000)
        rows["v"] = rng.normal(size=(5000, 2))
        rows["name"] = [b"n%d" % (i % 977) for i in range(5000)]
        rows["inner"]["p"] = np.arange(5000) % 300
        rows["inner"]["q"] = rng.normal(size=5000)
        tab.append(rows)
    return out


def test_take_all_equals_h5py_array(cluster, data):
    src = data["parts"][0]
    with h5py.File(src) as f:
        want = f["x"][()]
    ds = mlr.read_hdf5(src, "/x", override_num_blocks=4)
    rows = ds.take_all()
    assert [sorted(r) for r in rows[:1]] == [["data"]]
    np.testing.assert_array_equal(np.stack([r["data"] for r in rows]), want)
    assert ds.count() == len(want)


def test_multi_file_iter_batches(cluster, data):
    want = data["whole"]
    ds = mlr.read_hdf5(data["parts"], "/x", override_num_blocks=5, include_paths=True)
    batches = list(ds.iter_batches(batch_size=700, batch_format="numpy"))
    got = np.concatenate([b["data"] for b in batches])
    np.testing.assert_array_equal(got, want)
    paths = np.concatenate([b["path"] for b in batches])
    np.testing.assert_array_equal(paths, np.repeat(data["parts"], PARTS))
    flat = mlr.read_hdf5(data["parts"], "flat").take_all()  # contiguous storage, 1-D
    np.testing.assert_array_equal([r["data"] for r in flat], want[:, 0, 0].astype(np.float64))


def test_read_tasks_are_chunk_aligned_ranges_inside_files(data, monkeypatch):
    src = mlr.HDF5Datasource(data["parts"], "/x")
    assert src.estimate_inmemory_data_size() == data["whole"].nbytes
    ctx = ray.data.DataContext.get_current()
    monkeypatch.setattr(ctx, "target_min_block_size", 1)  # these files are smaller than Ray's 1 MiB minimum
    tasks = src.get_read_tasks(6, data_context=ctx)
    ranges = mlr.task_ranges(src._array, 6)
    assert len(tasks) == len(ranges) >= 6
    for i, a, b, unit in ranges:
        assert unit == (100 if i == 1 else 256)
        assert a % unit == 0 and (b % unit == 0 or b == PARTS[i]) and b <= PARTS[i]
    for i in range(3):  # every row of every file once
        covered = [(a, b) for j, a, b, _ in ranges if j == i]
        assert covered[0][0] == 0 and covered[-1][1] == PARTS[i]
        assert all(x[1] == y[0] for x, y in zip(covered, covered[1:]))
    assert sum(t.metadata.num_rows for t in tasks) == sum(PARTS)
    # Ray's default parallelism (200+) never makes tasks below its minimum block size (1 MiB here)
    few = mlr.task_ranges(src._array, 200, min_rows=(1 << 20) // 48)
    assert all(b - a >= (1 << 20) // 48 or b == PARTS[i] for i, a, b, _ in few)
    assert len(few) == 3
    # a read task yields blocks of about the target block size
    row = 3 * 4 * 4
    blocks = list(mlr._read_task(src._array, 0, 0, 3000, 1024, False))
    assert [b.num_rows for b in blocks] == [1024, 1024, 952]
    assert all(b.nbytes >= 1024 * row for b in blocks[:2])


def test_table_is_one_column_per_field(cluster, data):
    with tables.open_file(data["table"]) as t:
        want = t.root.table.read()
    ds = mlr.read_hdf5(data["table"], "/table", override_num_blocks=3)
    assert ds.schema().names == ["id", "v", "name", "inner/p", "inner/q"]
    batches = list(ds.iter_batches(batch_size=1000, batch_format="numpy"))
    got = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    np.testing.assert_array_equal(got["id"], want["id"])
    np.testing.assert_array_equal(got["v"], want["v"])
    assert list(got["name"]) == list(want["name"])
    np.testing.assert_array_equal(got["inner/p"], want["inner"]["p"])
    np.testing.assert_array_equal(got["inner/q"], want["inner"]["q"])


def test_streaming_split_gives_each_row_once(cluster, data):
    ds = mlr.read_hdf5(data["table"], "/table", override_num_blocks=6)
    its = ds.streaming_split(2)
    seen = [[], []]

    def consume(k):
        for b in its[k].iter_batches(batch_size=256, batch_format="numpy"):
            seen[k].append(b["id"])

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads)
    ids = [np.concatenate(s) if s else np.zeros(0, np.int64) for s in seen]
    assert all(len(i) for i in ids)  # both consumers got rows
    np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(5000))


def test_worker_errors_name_the_file_dataset_and_rows(cluster, data, tmp_path):
    p = str(tmp_path / "corrupt.h5")
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=data["whole"][:2000], chunks=(256, 3, 4), compression="gzip")
        info = f["x"].id.get_chunk_info(3)  # rows 768..1024
    st = os.stat(p)
    with open(p, "r+b") as f:
        f.seek(info.byte_offset + info.size // 2)
        f.write(b"\xff" * 64)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(Exception) as e:
        mlr.read_hdf5(p, "/x", override_num_blocks=2).take_all()
    msg = str(e.value)
    assert "corrupt.h5" in msg and "'/x'" in msg and "rows 768..1024" in msg and "OSError" in msg, msg


def test_bad_sources_are_refused_on_the_driver(data, tmp_path):
    odd = str(tmp_path / "odd.h5")
    with h5py.File(odd, "w") as f:
        f.create_dataset("x", data=np.zeros((5, 3, 5), np.int32))
        f.create_dataset("s", data=[b"a"], dtype=h5py.string_dtype())
    with pytest.raises(ValueError, match="odd.h5"):
        mlr.read_hdf5(data["parts"] + [odd], "/x")
    with pytest.raises(TypeError, match="variable-length"):
        mlr.read_hdf5(odd, "/s")
    with pytest.raises(FileNotFoundError):
        mlr.read_hdf5(str(tmp_path / "missing.h5"), "/x")


def test_import_multiload_does_not_import_ray():
    code = "import sys, multiload; print('ray' in sys.modules, 'pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_edge_shapes_and_names_as_in_rays_proposal(cluster, tmp_path):
    """The cases ray-project/ray#65760's tests hold that multiload reads the
    same way: a name without a leading slash, a pathlib path, no rows, rows
    of no width, a big-endian dataset."""
    p = tmp_path / "edges.h5"
    with h5py.File(p, "w") as f:
        f["observations"] = np.arange(12).reshape(4, 3)
        f.create_dataset("empty", (0, 3), dtype=np.float32)
        f.create_dataset("zero_width", shape=(5, 0), dtype=np.int32, chunks=True)
        f.create_dataset("big_endian", data=np.arange(6, dtype=">i4").reshape(3, 2))
        mixed = np.zeros(4, [("a", ">i4"), ("b", "<f8", (2,)), ("c", [("d", ">u2")])])
        mixed["a"], mixed["b"], mixed["c"]["d"] = np.arange(4), np.arange(8).reshape(4, 2), 7
        f["mixed"] = mixed
    rows = mlr.read_hdf5(p, dataset="observations").take_all()
    np.testing.assert_array_equal(np.stack([r["data"] for r in rows]), np.arange(12).reshape(4, 3))
    assert mlr.read_hdf5(p, dataset="empty").count() == 0
    rows = mlr.read_hdf5(p, dataset="zero_width").take_all()
    assert len(rows) == 5 and all(r["data"].shape == (0,) for r in rows)
    rows = mlr.read_hdf5(p, dataset="big_endian").take_all()
    np.testing.assert_array_equal(np.stack([r["data"] for r in rows]), np.arange(6).reshape(3, 2))
    rows = mlr.read_hdf5(p, dataset="mixed").take_all()  # big-endian fields, one nested
    assert [r["a"] for r in rows] == [0, 1, 2, 3] and [r["c/d"] for r in rows] == [7] * 4
    np.testing.assert_array_equal(np.stack([r["b"] for r in rows]), np.arange(8).reshape(4, 2))


def test_a_ray_tasks_reader_has_the_tasks_cpus(cluster):
    from multiload.array import _engine_threads

    assert _engine_threads() is None  # the driver
    assert ray.get(ray.remote(_engine_threads).remote()) == 1
    assert ray.get(ray.remote(num_cpus=2)(_engine_threads).remote()) == 2
