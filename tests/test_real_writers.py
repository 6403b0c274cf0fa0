"""Files written by the tools users write HDF5 with, read as h5py reads
them (issue 12): netCDF4 (netCDF-4 files, with fletcher32 and deflate in
netCDF-C's filter order), pandas (PyTables tables and fixed frames),
hdf5storage (MATLAB v7.3 files, with their 512-byte user block), xarray
and anndata. Every dataset of every file is read whole through the Reader
and, where it has rows, streamed, and compared with h5py's reading of it.
Object references (MATLAB cell arrays; h5py returns Reference objects) are
the one kind multiload does not read: for them the test requires a
TypeError that says so."""

import os
import warnings

import anndata
import h5py
import hdf5storage
import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import multiload

pytestmark = pytest.mark.timeout(300)


def datasets(fn):
    """[(path, h5py's value)] of every dataset in the file."""
    out = []
    with h5py.File(fn, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out.append(("/" + name, obj[()], obj.dtype))
        f.visititems(visit)
    return out


def is_reference(dt):
    return h5py.check_dtype(ref=dt) is not None or (dt.names and any(is_reference(dt[n]) for n in dt.names))


def read_whole(fn, path, shape):
    with multiload.Reader(fn) as r:
        ds = r.get_dataset(path)
        return r.read(ds[()] if shape == () else ds[0:shape[0]])


def equal(got, ref):
    if isinstance(ref, np.ndarray) and ref.dtype == object:
        got = np.asarray(got, dtype=object)
        return got.shape == ref.shape and all(a == b for a, b in zip(got.ravel(), ref.ravel()))
    got = np.asarray(got)
    ref = np.asarray(ref)
    return got.shape == ref.shape and got.dtype == ref.dtype and got.tobytes() == ref.tobytes()


def check_file(fn):
    found = datasets(fn)
    assert found, fn
    for path, ref, dt in found:
        if is_reference(dt):
            with pytest.raises(TypeError, match="reference"):
                read_whole(fn, path, np.shape(ref))
            continue
        got = read_whole(fn, path, np.shape(ref))
        assert equal(got, ref), (fn, path, dt)
        if np.ndim(ref) >= 1 and len(ref) and dt.kind != "O":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", multiload.SlowPathWarning)
                q = multiload.Streamer(fn).get_queue(path, ordered=True, remainder=True, block_size=7, n_procs=2)
                with q:
                    out = np.concatenate([g.array.copy() for g in q])
            assert out.astype(ref.dtype).tobytes() == np.ascontiguousarray(ref).tobytes(), (fn, path)
    return [p for p, _, _ in found]


def test_netcdf4_files(tmp_path):
    fn = str(tmp_path / "nc.nc")
    with netCDF4.Dataset(fn, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("x", 37)
        t = nc.createVariable("time", "f8", ("time",))
        v = nc.createVariable("temp", "f4", ("time", "x"), zlib=True, fletcher32=True, shuffle=True)
        w = nc.createVariable("count", "i2", ("x",), zlib=True, complevel=9, fletcher32=True)
        u = nc.createVariable("flags", "u1", ("time", "x"), fill_value=7, chunksizes=(3, 10))
        s = nc.createVariable("name", "S1", ("x",))
        t[:] = np.arange(50) * 0.5
        v[:] = np.arange(50 * 37, dtype="f4").reshape(50, 37) / 3
        w[:] = np.arange(37) - 18
        u[:20] = np.arange(20 * 37).reshape(20, 37) % 200
        s[:] = np.array([b"abcdefghijklmnopqrstuvwxyz0123456789!"[i:i + 1] for i in range(37)])
    names = check_file(fn)
    assert {"/temp", "/count", "/time", "/flags"} <= set(names)
    with h5py.File(fn) as f:  # netCDF-C's order: fletcher32 before deflate
        assert list(f["temp"]._filters)[0] == "fletcher32"


def test_pandas_files(tmp_path):
    fn = str(tmp_path / "pd.h5")
    df = pd.DataFrame({"a": np.arange(500), "b": np.linspace(0, 1, 500), "c": np.arange(500) % 3 == 0,
                       "s": [f"r{i}" for i in range(500)]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df.to_hdf(fn, key="table", format="table", data_columns=["a"], complevel=5, complib="zlib")
        df[["a", "b", "c"]].to_hdf(fn, key="fixed", format="fixed")
        df.to_hdf(fn, key="blosc", format="table", complevel=3, complib="blosc:lz4")
    check_file(fn)


def test_hdf5storage_matlab_files(tmp_path):
    fn = str(tmp_path / "m.mat")
    data = {"x": np.arange(24, dtype="f8").reshape(4, 6), "n": np.int32(7), "s": "hello",
            "b": np.array([True, False, True]), "c": np.arange(6, dtype="c16"),
            "cell": np.array([np.arange(3.0), np.arange(2.0)], dtype=object)}  # a cell array: object references
    hdf5storage.savemat(fn, data, format="7.3", store_python_metadata=False)
    with open(fn, "rb") as f:
        assert f.read(512)[:6] == b"MATLAB"  # the user block
    check_file(fn)


def test_xarray_files(tmp_path):
    fn = str(tmp_path / "xr.nc")
    ds = xr.Dataset({"v": (("t", "x"), np.arange(60, dtype="f4").reshape(10, 6)),
                     "label": (("x",), np.array(["a", "bb", "ccc", "d", "e", "f"]))},
                    coords={"t": np.arange(10), "x": np.arange(6) * 2.0})
    ds.to_netcdf(fn, engine="netcdf4", encoding={"v": {"zlib": True, "fletcher32": True}})
    check_file(fn)


def test_anndata_files(tmp_path):
    fn = str(tmp_path / "a.h5ad")
    obs = pd.DataFrame({"cell": [f"c{i}" for i in range(40)], "n": np.arange(40)},
                       index=[f"c{i}" for i in range(40)])
    a = anndata.AnnData(X=np.arange(40 * 9, dtype="f4").reshape(40, 9), obs=obs)
    a.write_h5ad(fn)
    check_file(fn)
