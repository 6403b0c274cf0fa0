"""Element types and shapes the Reader once refused or misread (issue 12,
items 4, 5, 9, 11), each against h5py (or PyTables for its own files) on
the same file, through both I/O engines:

- HDF5 array element types (PyTables atoms with a shape, h5py subarray
  dtypes): h5py reads them into trailing dimensions, and every key gives
  numpy indexing of that array;
- compounds whose members are stored out of offset order (PyTables'
  out_of_order_types.h5, and ones made with h5py's low-level API), with
  every API: Reader, Streamer, get_generator, table fields;
- scalar (0-d) datasets: ``[()]`` is h5py's value, ``[...]`` a 0-d array,
  other keys clear errors; the Streamer still refuses them;
- errors through links: a soft link to a dataset this HDF5 cannot open
  says what the target's own path says, a dangling link says dangling,
  an external link to a missing file says so."""

import errno
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest
import tables
from h5py import h5d, h5s, h5t

import multiload

pytestmark = pytest.mark.timeout(120)

IO_MODES = ["io_uring", "pread"]
N = 37  # rows: more than a chunk, not a multiple of one


@pytest.fixture(params=IO_MODES)
def io_mode(request):
    return request.param


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("types")
    paths = {k: str(d / f"{k}.h5") for k in ("h5", "pt", "ooo", "links", "other")}
    rng = np.random.default_rng(12)
    with h5py.File(paths["h5"], "w") as f:
        def sub(name, shape, dt, data, **kw):
            ds = f.create_dataset(name, shape=shape, dtype=np.dtype(dt), **kw)
            ds[...] = data
        sub("sub", (N,), ("<i2", (2, 2)), rng.integers(-999, 999, (N, 2, 2)))
        sub("sub_gz", (N,), ("<i2", (2, 2)), rng.integers(-999, 999, (N, 2, 2)), chunks=(5,), compression="gzip")
        sub("sub_be", (N,), (">i4", (3,)), rng.integers(-999, 999, (N, 3)))
        sub("sub2d", (N, 2), ("<f4", (3,)), rng.random((N, 2, 3)))
        sub("sub3", (N,), ("<u2", (2, 3, 2)), rng.integers(0, 999, (N, 2, 3, 2)))
        f["f8"] = np.float64(3.25)
        f["be"] = np.array(-7.5, dtype=">f8")
        f["i2"] = np.int16(-7)
        f["u8"] = np.uint64(2**63 + 5)
        f["str"] = np.bytes_(b"hello")
        f["str_short"] = np.array(b"ab", dtype="S6")
        f["cpd"] = np.array((1, 2.5, b"xy", [3, 4]), dtype=[("a", "<i4"), ("b", ">f8"), ("s", "S3"),
                                                             ("v", "<i2", (2,))])[()]
        f.create_dataset("arr_scalar", shape=(), dtype=np.dtype(("<i4", (2, 3))))  # an HDF5 array, 0-d
        f["arr_scalar"][()] = np.arange(6).reshape(2, 3)
        f.create_dataset("null", data=h5py.Empty("f4"))
    with tables.open_file(paths["pt"], "w") as f:
        ea = f.create_earray("/", "ea", atom=tables.Int32Atom(shape=(2, 3)), shape=(0,), chunkshape=(4,))
        ea.append(rng.integers(-99, 99, (N, 2, 3)).astype("i4"))
        ca = f.create_carray("/", "ca", atom=tables.Float64Atom(shape=(2,)), shape=(N, 3))
        ca[:] = rng.random((N, 3, 2))

        class Row(tables.IsDescription):
            x = tables.Int32Col(shape=(2, 3))
            y = tables.Float32Col()
        t = f.create_table("/", "t", Row)
        rows = np.zeros(N, dtype=t.dtype)
        rows["x"] = rng.integers(-99, 99, (N, 2, 3))
        rows["y"] = rng.random(N)
        t.append(rows)
    with h5py.File(paths["ooo"], "w") as f:
        t = h5t.create(h5t.COMPOUND, 16)  # members inserted with offsets not increasing
        t.insert(b"b", 8, h5t.IEEE_F64LE)
        t.insert(b"a", 0, h5t.STD_I32LE)
        t.insert(b"c", 4, h5t.STD_I16BE)
        for name, shape in (("ooo", (N,)), ("ooo2d", (N, 2))):
            h5d.create(f.id, name.encode(), t, h5s.create_simple(shape))
            v = np.zeros(shape, f[name].dtype)
            v["a"] = rng.integers(-9, 9, shape)
            v["b"] = rng.random(shape)
            v["c"] = rng.integers(-999, 999, shape)
            f[name][...] = v
        h5d.create(f.id, b"ooo_scalar", t, h5s.create(h5s.SCALAR))
        f["ooo_scalar"][()] = f["ooo"][3]
        t2 = h5t.create(h5t.COMPOUND, 24)
        t2.insert(b"inner", 8, t)
        t2.insert(b"z", 0, h5t.STD_I64LE)
        h5d.create(f.id, b"nested", t2, h5s.create_simple((N,)), dcpl=None)
        w = np.zeros(N, f["nested"].dtype)
        w["z"] = np.arange(N) * 7
        w["inner"] = f["ooo"][()]
        f["nested"][...] = w
    with h5py.File(paths["other"], "w") as f:
        f["x"] = np.arange(5)
    with h5py.File(paths["links"], "w", libver=("v112", "latest")) as f:
        f["compound"] = np.zeros(4, dtype=[("a", "<i4"), ("b", "<f8")])  # HDF5 1.10.8 cannot open it
        f["plain"] = np.arange(5)
        f["link"] = h5py.SoftLink("/compound")
        f["chain"] = h5py.SoftLink("/link")
        f.create_group("g")
        f["g/rel"] = h5py.SoftLink("link2")
        f["g/link2"] = h5py.SoftLink("/compound")
        f["dangling"] = h5py.SoftLink("/nowhere")
        f["ext_missing"] = h5py.ExternalLink("no_such_file.h5", "/x")
        f["ext_dangling"] = h5py.ExternalLink(os.path.basename(paths["other"]), "/nothing")
        f["ext_ok"] = h5py.ExternalLink(os.path.basename(paths["other"]), "/x")
        f["cycle1"] = h5py.SoftLink("/cycle2")
        f["cycle2"] = h5py.SoftLink("/cycle1")
        # A compound behind n-bit: HDF5 1.10.8 cannot open it, nor can the
        # native open (no n-bit decoder, no slow path without HDF5).
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((8,))
        dcpl.set_filter(h5py.h5z.FILTER_NBIT)
        ct = np.dtype([("a", "<i4"), ("b", "<i2")])
        h5py.h5d.create(f.id, b"nbitc", h5py.h5t.py_create(ct), h5py.h5s.create_simple((16,)), dcpl=dcpl).write(
            h5py.h5s.ALL, h5py.h5s.ALL, np.zeros(16, dtype=ct))
        f["link_nbitc"] = h5py.SoftLink("/nbitc")
        f["g/n2"] = h5py.SoftLink("/link_nbitc")
        f["g/rel_nbitc"] = h5py.SoftLink("n2")  # relative, then a chain
    src = os.path.join(os.path.dirname(tables.__file__), "tests", "out_of_order_types.h5")
    paths["pt_ooo"] = str(d / "out_of_order_types.h5")
    shutil.copy(src, paths["pt_ooo"])
    return paths


def same(got, want):
    """Equal as h5py's result: type (ndarray or the numpy scalar type),
    shape, dtype, values."""
    assert type(got) is type(want), (type(got), type(want))
    if isinstance(want, np.ndarray):
        assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
        assert got.tobytes() == want.tobytes()
    else:
        assert np.asarray(got).dtype == np.asarray(want).dtype
        assert got == want


def same_fields(got, want):
    """Equal structured values, field by field (padding bytes between
    fields are not data: h5py's come from its conversion buffer)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype.names == want.dtype.names
    for name in want.dtype.names:
        if want.dtype[name].names:
            same_fields(got[name], want[name])
        else:
            assert got[name].dtype == want[name].dtype and (got[name] == want[name]).all(), name


def stage_result(r, ds, key):
    """reader.request(key) into a stage of the whole dataset, taken with get()."""
    return r.request(key, ds.create_stage(None if ds.shape else 1)).get()


# ---------------------------------------------------------------- 4. array element types

SUB_KEYS = [0, -1, 5, slice(None), slice(2, 9), slice(None, None, 3), slice(30, 3, -4), [0, 2, 3],
            [9, 1, 1], np.array([4, 0]), np.arange(N) % 3 == 0, (slice(2, 9), 0), (0, 1), (3, Ellipsis),
            (Ellipsis, 1), (slice(1, 4), slice(None), 1), (None,), (slice(None), None)]


def sub_truth(f, path, key):
    """What h5py gives for ``key``: numpy's key on the dataset's own
    dimensions (an array of element numbers), each picked element as
    h5py reads it. Checked against h5py itself for every key h5py takes
    (it refuses unsorted lists, negative steps and None). IndexError: more
    indices than the dataset has dimensions (h5py: ValueError)."""
    space = f[path].shape
    picked = np.arange(int(np.prod(space))).reshape(space)[key]
    whole = f[path][()]
    want = whole.reshape((-1,) + whole.shape[len(space):])[picked]
    try:
        h = f[path][key]
    except (TypeError, ValueError):
        return want
    same(h, want)
    return want


@pytest.mark.parametrize("path", ["sub", "sub_gz", "sub_be", "sub2d", "sub3"])
@pytest.mark.parametrize("inline", [True, False])
def test_array_elements_h5py(files, path, io_mode, inline):
    with h5py.File(files["h5"], "r") as f, \
            multiload.Reader(files["h5"], n_procs=2, io_mode=io_mode, inline_reads=inline) as r:
        ds = r.get_dataset(path)
        assert ds.shape == f[path].shape and ds.dtype == f[path].dtype  # h5py's own shape and dtype
        for key in SUB_KEYS:
            try:
                want = sub_truth(f, path, key)
            except IndexError:  # more indices than dimensions (h5py: ValueError)
                with pytest.raises(IndexError, match=f"dataset '{path}'"):
                    r.read(ds[key])
                continue
            same(r.read(ds[key]), want)
            if want.nbytes <= ds.dtype.itemsize * np.prod(ds.shape):
                same(stage_result(r, ds, ds[key]), want)
        # stages sized in rows and atoms hold whole elements
        rows = ds.shape[0]
        same(r.request(ds[:], ds.create_stage(rows)).get(), f[path][()])
        same(r.request(ds[:7], ds.create_stage_natoms(7 * int(np.prod(ds.shape[1:])))).get(), f[path][:7])
        with pytest.raises(multiload.SharedMemoryError):
            r.request(ds[:8], ds.create_stage(7))


def test_array_elements_streamer_matches_reader(files):
    """The Streamer's rows are h5py's rows, and so are the Reader's."""
    with h5py.File(files["h5"], "r") as f, multiload.Reader(files["h5"]) as r:
        for path in ("sub", "sub_gz", "sub2d"):
            rows = list(multiload.Streamer(files["h5"]).get_generator(path, block_size=4))
            assert len(rows) == N
            for i in (0, 5, N - 1):
                same(rows[i], f[path][i])
                same(r.read(r.get_dataset(path)[i]), f[path][i])


PT_KEYS = {"/ea": [0, -1, slice(None), slice(3, 20, 2), 7, (5, Ellipsis)],
           "/ca": [0, -1, slice(None), slice(3, 20, 2), 7, (slice(2, 9), 1), (4, 1), (Ellipsis, 2)]}


@pytest.mark.parametrize("path", ["/ea", "/ca"])
def test_array_atoms_pytables(files, path, io_mode):
    with tables.open_file(files["pt"]) as f, multiload.Reader(files["pt"], io_mode=io_mode) as r:
        node = f.get_node(path)
        ds = r.get_dataset(path)
        assert ds.shape == tuple(node.shape) and ds.dtype == node.atom.dtype
        for key in PT_KEYS[path]:
            want = node[key]
            got = stage_result(r, ds, ds[key])
            assert got.shape == want.shape and got.dtype == want.dtype and (got == want).all(), key
        for a, b in ((0, 5), (3, None)):
            want = node.read(a, b)
            got = r.read(ds.read(a, b))
            assert got.shape == want.shape and (got == want).all()


def test_table_array_column_pytables(files, io_mode):
    with tables.open_file(files["pt"]) as f, multiload.Reader(files["pt"], io_mode=io_mode) as r:
        t = f.root.t
        ds = r.get_dataset("/t")
        st = ds.create_stage(N)
        for got, want in [
            (r.request(ds["x"][1:9], st).get(), t.read(1, 9, field="x")),
            (r.request(ds.col("x"), st).get(), t.col("x")),
            (r.request(ds.read(0, N, 3, field="x"), st).get(), t.read(0, N, 3, field="x")),
            (r.request(ds.read_coordinates([5, 2], field="x"), st).get(), t.read_coordinates([5, 2], field="x")),
            (r.request(ds[4]["x"], st).get(), t[4]["x"]),
            (r.request(ds.where("y > 0.5"), st).get(), t.read_where("y > 0.5")),
            (r.request(ds[:], st).get(), t.read()),
        ]:
            assert got.shape == want.shape and got.dtype == want.dtype and (got == want).all()
        with pytest.raises(NotImplementedError):
            r.read(ds.where("x > 0", {"x": ds.col("x")}))
        with pytest.raises(NotImplementedError):
            t.read_where("x > 0", {"x": t.cols.x})


# ---------------------------------------------------------------- 5. out-of-order compounds

def _ooo_keys(dt):
    n = dt.names
    return [slice(None), 3, -1, slice(2, 30, 3), [5, 1, 1], n[0], n[-1], (slice(1, 9), ), [n[-1], n[0]]]


@pytest.mark.parametrize("path", ["ooo", "ooo2d", "nested"])
def test_out_of_order_reader(files, path, io_mode):
    with h5py.File(files["ooo"], "r") as f, multiload.Reader(files["ooo"], io_mode=io_mode) as r:
        whole = f[path][()]
        ds = r.get_dataset(path)
        assert ds.dtype == f[path].dtype
        for key in _ooo_keys(ds.dtype):
            want = whole[key]
            for got in (r.read(ds[key]), stage_result(r, ds, ds[key])):
                if want.dtype.names:
                    same_fields(got, want)
                else:
                    same(got, want)
        if path == "nested":
            got = r.read(ds.col("inner/c"))
            want = whole["inner"]["c"]
            assert got.dtype == want.dtype and (got == want).all()
        if path == "ooo":
            same_fields(r.read(ds.where("a > 0")), whole[whole["a"] > 0])
            same_fields(r.read(ds.read_sorted("c")), whole[np.argsort(whole["c"], kind="stable")])
            same_fields(r.read(ds.read_coordinates([4, 2])), whole[[4, 2]])


@pytest.mark.parametrize("path", ["ooo", "nested"])
def test_out_of_order_streamer(files, path):
    with h5py.File(files["ooo"], "r") as f:
        whole = f[path][()]
    s = multiload.Streamer(files["ooo"])
    rows = list(s.get_generator(path, block_size=5))
    same_fields(np.array(rows, dtype=whole.dtype), whole)
    for name in whole.dtype.names:
        got = list(s.get_generator(path, block_size=5, field=name))
        if whole.dtype[name].names:
            same_fields(np.array(got, dtype=whole.dtype[name]), whole[name])
        else:
            assert np.array(got).tolist() == whole[name].tolist()
    q = s.get_queue(path, block_size=5, n_procs=2, ordered=True)
    blocks = []
    while True:
        b = q.get()
        if b is multiload.QueueClosed:
            break
        with b as block:
            blocks.append(block.copy())
    for i, block in enumerate(blocks):  # (np.concatenate would canonicalize the dtype)
        same_fields(block, whole[i * 5:(i + 1) * 5])
    same_fields(s.get_remainder(path, 5), whole[len(blocks) * 5:])


def test_out_of_order_pytables_file(files, io_mode):
    """PyTables' own out_of_order_types.h5: every field as PyTables reads it."""
    fn = files["pt_ooo"]
    with tables.open_file(fn) as f, multiload.Reader(fn, io_mode=io_mode) as r:
        t = f.root.group.table
        ds = r.get_dataset("/group/table")
        whole = t.read()
        for name in t.colnames:
            assert r.read(ds.col(name)).tolist() == t.col(name).tolist()
            assert r.read(ds.read(field=name)).tolist() == t.read(field=name).tolist()
            assert r.read(ds[0][name]) == t[0][name]
            got = list(multiload.Streamer(fn).get_generator("/group/table", field=name))
            assert got == list(t.col(name))
        got = r.read(ds[:])
        assert [tuple(got[n]) for n in t.colnames] == [tuple(whole[n]) for n in t.colnames]


# ---------------------------------------------------------------- 9. scalars

SCALARS = ["f8", "be", "i2", "u8", "str", "str_short", "cpd", "arr_scalar"]


@pytest.mark.parametrize("path", SCALARS)
def test_scalar_values(files, path, io_mode):
    with h5py.File(files["h5"], "r") as f, multiload.Reader(files["h5"], io_mode=io_mode) as r:
        h = f[path]
        ds = r.get_dataset(path)
        assert ds.shape == () == h.shape and ds.dtype == h.dtype
        keys = [(), Ellipsis, (Ellipsis,)]
        if h.dtype.names:
            keys += [h.dtype.names[0], (h.dtype.names[1], Ellipsis), (Ellipsis, h.dtype.names[-1]),
                     tuple(h.dtype.names[:2])]
        for key in keys:
            want = h[key]
            got = r.read(ds[key])
            if isinstance(want, np.void):  # h5py packs a field subset; numpy's keeps the offsets
                assert type(got) is np.void
                same_fields(got, want)
            else:
                same(got, want)
            # a stage holds arrays: numpy's scalar comes as a 0-d array of its dtype
            st = r.request(ds[key], ds.create_stage(1)).get()
            if np.asarray(want).dtype.names:
                same_fields(st, want)
            elif isinstance(want, bytes):  # a string scalar keeps the dataset's length (docs/reader.md)
                assert st.shape == () and st.dtype == h.dtype and st == want
            else:
                same(st, np.asarray(want))
        if path in ("f8", "i2", "str"):  # PyTables reads these as Arrays: read() is a 0-d array
            with tables.open_file(files["h5"]) as t:
                same(r.read(ds.read()), t.get_node("/" + path).read())


def test_scalar_refusals(files):
    with multiload.Reader(files["h5"]) as r:
        ds = r.get_dataset("f8")
        for key in (0, slice(None), [0], -1):
            with pytest.raises(IndexError, match="dataset 'f8'.*scalar dataset"):
                r.read(ds[key])
            with pytest.raises(IndexError, match="scalar dataset"):
                r.request(ds[key], ds.create_stage(1))
        with pytest.raises(IndexError, match="field name 'a' on a scalar dataset without fields"):
            r.read(ds["a"])
        with pytest.raises(multiload.reader.ColumnError, match="nope"):
            r.read(r.get_dataset("cpd")["nope"])
        with pytest.raises(TypeError, match="len.*scalar"):
            len(ds)
        with pytest.raises(ValueError, match="0 dimensions"):
            ds.create_stage(None)
        with pytest.raises(multiload.SharedMemoryError):
            r.request(r.get_dataset("cpd")[()], ds.create_stage(0))
        with pytest.raises(TypeError, match="null dataspace.*h5py.Empty"):
            r.get_dataset("null")
        # the stage a refused request would have used stays free
        st = ds.create_stage(1)
        with pytest.raises(IndexError):
            r.request(ds[0], st)
        assert r.request(ds[()], st).get() == 3.25


def test_scalar_pickles_and_streamer_refuses(files):
    with multiload.Reader(files["h5"]) as r:
        ds = pickle.loads(pickle.dumps(r.get_dataset("cpd")))
        assert ds.shape == () and ds._reader.read(ds["a"]) == h5py.File(files["h5"])["cpd"]["a"]
    with pytest.raises(TypeError, match="dataset 'f8' .* is scalar .*no rows to stream"):
        multiload.Streamer(files["h5"]).get_queue("f8")


# ---------------------------------------------------------------- 11. errors through links

def open_error(fn, path):
    with pytest.raises(Exception) as e:
        multiload.Reader(fn).get_dataset(path)
    return e.value


def test_link_to_a_dataset_hdf5_cannot_open(files):
    """A soft link (chained, relative) to a dataset HDF5 1.10.8 cannot open
    (a v112 compound) reads it, through the native open, as h5py reads it;
    to one neither opener reads, it gives the target's own error."""
    fn = files["links"]
    with h5py.File(fn, "r") as f:
        ref = f["compound"][()]
        assert f["link"][()].tobytes() == ref.tobytes()  # it exists: h5py 2.0 reads it
    for path in ("/compound", "/link", "/chain", "/g/rel"):
        with multiload.Reader(fn) as r:
            got = r.read(r.get_dataset(path)[:])
        assert got.dtype == ref.dtype and got.tobytes() == ref.tobytes(), path
        with multiload.Streamer(fn).get_queue(path, ordered=True, remainder=True, block_size=3) as q:
            assert np.concatenate([g.array.copy() for g in q]).tobytes() == ref.tobytes()
    direct = open_error(fn, "/nbitc")
    assert isinstance(direct, OSError) and direct.errno == errno.EIO
    assert "'/nbitc'" in str(direct) and "nbit" in str(direct)
    for path in ("/link_nbitc", "/g/rel_nbitc"):
        e = open_error(fn, path)
        assert type(e) is type(direct) and e.errno == direct.errno
        assert str(e) == str(direct).replace("'/nbitc'", f"'{path}'")  # the same words, naming the path asked


def test_dangling_and_missing_links(files):
    fn = files["links"]
    cases = {
        "/dangling": ["dangling link", "'/dangling' is a soft link to '/nowhere'", "nothing is at '/nowhere'"],
        "/ext_missing": ["dangling link", "external link to '/x' in file 'no_such_file.h5'",
                         "that file does not exist"],
        "/ext_dangling": ["dangling link", "external link to '/nothing'", "nothing is at '/nothing'"],
        "/nowhere": ["nothing is at '/nowhere'"],
        "/g/none/x": ["nothing is at '/g/none'"],
        "/plain/x": ["'/plain', a dataset, not a group"],
        "/cycle1": ["more than 16 soft or external links"],
    }
    for path, words in cases.items():
        e = open_error(fn, path)
        assert isinstance(e, KeyError), (path, e)
        msg = e.args[0]
        assert f"no dataset '{path}' in file '{fn}'" in msg
        for w in words:
            assert w in msg, (path, msg)
        if path not in ("/dangling", "/ext_missing", "/ext_dangling"):
            assert "dangling" not in msg
        with h5py.File(fn, "r") as f, pytest.raises(KeyError if path != "/cycle1" else RuntimeError):
            f[path]  # h5py refuses each too
    with h5py.File(fn, "r") as f, multiload.Reader(fn) as r:
        assert r.read(r.get_dataset("/ext_ok")[:]).tobytes() == f["ext_ok"][()].tobytes()
