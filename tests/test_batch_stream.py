"""multiload.BatchStream against h5py and the Order it follows.

Every batch's bytes are compared with h5py's reading of the same row
indices; which rows a batch holds is checked against multiload.Order,
whose sequence test_order.py pins with golden vectors and an independent
reimplementation. The guarantees of issue 11 are each a test here:
exactly once (drop / pad / uneven), equal length, determinism across
world sizes / threads / read-ahead, exact resume in a fresh process,
fingerprint, bounded memory; then aligned datasets, several files, bad
input, the batch slots, pickling and progress.
"""

import json
import os
import pickle
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest

import multiload
from multiload import BatchStream, Order

pytestmark = pytest.mark.timeout(120)

N = 3001          # rows: not a multiple of any block or batch size used
CHUNK = 7         # image rows per chunk (gzip)
LABEL_CHUNK = 500


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One file of images (chunked, gzip) and labels (chunked) and a
    contiguous copy; the same rows split over three files; the truth as
    h5py reads it."""
    d = tmp_path_factory.mktemp("batch")
    rng = np.random.default_rng(11)
    img = rng.integers(0, 256, size=(N, 4, 3), dtype=np.uint8)
    lab = np.arange(N, dtype=np.int64) * 3 + 1
    one = str(d / "one.h5")
    with h5py.File(one, "w") as f:
        f.create_dataset("img", data=img, chunks=(CHUNK, 4, 3), compression="gzip")
        f.create_dataset("lab", data=lab, chunks=(LABEL_CHUNK,))
        f.create_dataset("img_contig", data=img)
        f.create_dataset("img1", data=img, chunks=(1, 4, 3), compression="gzip")  # read by row gathers
        f.create_dataset("short", data=lab[:-1])
        f.create_dataset("f4", data=lab.astype(np.float32))
        f.create_dataset("wide", data=np.zeros((N, 5), np.uint8))
    cuts = [0, 1000, 1001, N]  # a one-row file in the middle
    parts = []
    for i in range(3):
        p = str(d / f"part-{i}.h5")
        with h5py.File(p, "w") as f:
            f.create_dataset("img", data=img[cuts[i]:cuts[i + 1]], chunks=(min(CHUNK, cuts[i + 1] - cuts[i]), 4, 3),
                             compression="gzip")
            f.create_dataset("lab", data=lab[cuts[i]:cuts[i + 1]])
        parts.append(p)
    with h5py.File(one) as f:
        truth = {"img": f["img"][:], "lab": f["lab"][:], "img_contig": f["img_contig"][:]}
    return dict(dir=str(d), one=one, parts=parts, **truth)


def rows_of(lab):
    return (np.asarray(lab) - 1) // 3


def local_rows(order, step, rank, world):
    got = order.local_batch(step, rank, world)
    return got if isinstance(got, tuple) else (got, None)


def collect(bs, data):
    """All batches of one iteration, checked against h5py; their rows."""
    out = []
    for b in bs:
        rows = rows_of(b["y"])
        np.testing.assert_array_equal(b["x"], data["img"][rows])
        np.testing.assert_array_equal(b["y"], data["lab"][rows])
        out.append((rows.copy(), None if "valid" not in b else b["valid"].copy()))
    return out


DS = {"x": "/img", "y": "/lab"}


@pytest.mark.parametrize("shuffle", ["none", "block", "window", "global"])
@pytest.mark.parametrize("tail", ["drop", "pad", "uneven"])
def test_batches_are_the_orders_rows_and_h5pys_bytes(data, shuffle, tail):
    bs = BatchStream(data["one"], DS, 32, shuffle=shuffle, seed=4, tail=tail, world_size=2, rank=1,
                     block_rows=70, num_streams=4)
    got = collect(bs, data)
    assert len(got) == len(bs) == bs.order.steps(1, 2)
    for step, (rows, valid) in enumerate(got):
        want, want_valid = local_rows(bs.order, step, 1, 2)
        np.testing.assert_array_equal(rows, want)
        if tail == "pad":
            np.testing.assert_array_equal(valid, want_valid)
        else:
            assert valid is None


def per_rank(data, world, batch, **kw):
    """Each rank's batches (rows, valid) of one epoch, checked against h5py."""
    return [collect(BatchStream(data["one"], DS, batch, world_size=world, rank=r, block_rows=70, num_streams=4,
                                **kw), data) for r in range(world)]


@pytest.mark.parametrize("shuffle", ["none", "block", "window", "global"])
def test_exactly_once_under_drop(data, shuffle):
    ranks = per_rank(data, 2, 50, shuffle=shuffle, seed=1, tail="drop")
    for got in ranks:
        assert len(got) == N // (50 * 2)
        assert all(len(rows) == 50 for rows, _ in got)  # equal length
    seen = np.concatenate([rows for got in ranks for rows, _ in got])
    assert len(np.unique(seen)) == len(seen)
    assert N - len(seen) < 50 * 2


def test_drop_gives_different_rows_each_epoch(data):
    dropped = []
    for e in range(3):
        bs = BatchStream(data["one"], DS, 64, shuffle="window", seed=2, epoch=e, block_rows=70)
        seen = np.concatenate([r for r, _ in collect(bs, data)])
        dropped.append(frozenset(range(N)) - frozenset(seen.tolist()))
    assert len(set(dropped)) == 3


def test_pad_every_row_at_least_once_and_valid_marks_repeats(data):
    ranks = per_rank(data, 2, 64, shuffle="window", seed=3, tail="pad")
    for got in ranks:
        assert len(got) == -(-N // 128)
        assert all(len(rows) == 64 for rows, _ in got)
    rows_all = np.concatenate([r for got in ranks for r, _ in got])
    valid_all = np.concatenate([v for got in ranks for _, v in got])
    assert sorted(rows_all[valid_all].tolist()) == list(range(N))   # valid rows: each exactly once
    assert (~valid_all).sum() == len(rows_all) - N                  # the repeats are the invalid ones


def test_uneven_nothing_dropped_or_repeated(data):
    ranks = per_rank(data, 4, 64, shuffle="block", seed=3, tail="uneven")
    seen = np.concatenate([rows for got in ranks for rows, _ in got])
    assert sorted(seen.tolist()) == list(range(N))
    steps = [len(got) for got in ranks]
    assert max(steps) - min(steps) <= 1


def test_global_sequence_is_the_same_for_any_world_size_threads_and_read_ahead(data):
    def global_seq(world, **kw):
        per_rank = [[r for r, _ in collect(BatchStream(data["one"], DS, 48 // world, shuffle="window", seed=9,
                                                       world_size=world, rank=rank, block_rows=70,
                                                       num_streams=8, **kw), data)]
                    for rank in range(world)]
        seq = []
        for step in range(len(per_rank[0])):
            batch = np.empty(48, np.int64)
            for rank in range(world):
                batch[rank::world] = per_rank[rank][step]
            seq.append(batch)
        return np.concatenate(seq)

    ref = global_seq(1)
    for world, kw in [(2, {}), (4, {}), (1, dict(n_procs=1, read_ahead=0)), (2, dict(n_procs=3, read_ahead=9))]:
        np.testing.assert_array_equal(global_seq(world, **kw), ref)
    o = Order(N, block_rows=70, seed=9, epoch=0, shuffle="window", num_streams=8, global_batch=48, tail="drop")
    np.testing.assert_array_equal(ref, [o.row(k) for k in range(len(ref))])


def test_window_reads_each_block_once(data):
    bs = BatchStream(data["one"], DS, 32, shuffle="window", seed=5, block_rows=70, num_streams=4)
    collect(bs, data)
    s = bs.stats()
    assert s["blocks_read"] == -(-N // 70)
    assert s["block_rows_read"] == N
    assert s["steps"] == len(bs) and s["rows"] == 32 * len(bs)


# -------------------------------------------------------------- resume

RESUME_SCRIPT = r"""
import json, sys
from multiload import BatchStream
args = json.loads(sys.argv[1])
bs = BatchStream(args["file"], {"x": "/img", "y": "/lab"}, args["batch"], shuffle=args["shuffle"], seed=7,
                 world_size=args["world"], rank=args["rank"], block_rows=70, num_streams=args["num_streams"])
if args["state"] is not None:
    bs.load_state_dict(args["state"])
    bs.set_epoch(args["state"]["epoch"])  # what a training loop does: keeps a mid-epoch position
out = []
while len(out) < args["take"]:
    for b in bs:
        out.append(((b["y"] - 1) // 3).tolist())
        if len(out) == args["take"]:
            break
    else:
        bs.set_epoch(bs.epoch + 1)
print(json.dumps({"rows": out, "state": bs.state_dict()}))
"""


def run_fresh(file, state, take, world=1, rank=0, batch=40, shuffle="window", num_streams=8):
    """Take ``take`` batches in a fresh process from ``state``; returns
    (rows per batch, the state after)."""
    arg = json.dumps(dict(file=file, state=state, take=take, world=world, rank=rank, batch=batch,
                          shuffle=shuffle, num_streams=num_streams))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(multiload.__file__)))
    p = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, arg], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    return got["rows"], got["state"]


@pytest.mark.parametrize("shuffle", ["window", "global"])
def test_resume_in_a_fresh_process_matches_one_uninterrupted_run(data, shuffle):
    steps = N // 40  # 75 batches per epoch
    whole, _ = run_fresh(data["one"], None, 2 * steps, shuffle=shuffle)   # two epochs, one process
    # Stops at step 0, mid-epoch, at the end of an epoch (rolls over), twice in one epoch, in the next epoch.
    for stops in ([0], [10], [steps], [3, 20], [steps + 5]):
        rows, state, done = [], None, 0
        for stop in stops:
            got, state = run_fresh(data["one"], state, stop - done, shuffle=shuffle)
            rows += got
            done = stop
        if stops == [steps]:
            assert (state["epoch"], state["step"]) == (1, 0)
        got, _ = run_fresh(data["one"], state, 2 * steps - done, shuffle=shuffle)
        assert rows + got == whole, f"resumed at {stops}"


def test_resume_after_a_change_of_world_size(data):
    steps = N // 40
    whole, _ = run_fresh(data["one"], None, steps)
    first, state = run_fresh(data["one"], None, 12)                  # 1 rank, global batch 40
    assert state["step"] == 12 and state["epoch"] == 0
    halves = [run_fresh(data["one"], state, steps - 12, world=2, rank=r, batch=20)[0] for r in range(2)]
    merged = []
    for a, b in zip(*halves):
        m = [0] * 40
        m[0::2], m[1::2] = a, b
        merged.append(m)
    assert first + merged == whole


def test_state_at_the_end_of_an_epoch_is_the_start_of_the_next(data):
    bs = BatchStream(data["one"], DS, 100, shuffle="block", block_rows=70)
    for _ in bs:
        pass
    st = bs.state_dict()
    assert (st["epoch"], st["step"]) == (1, 0)
    assert st["version"] == 1
    json.dumps(st)  # plain data


def test_default_num_streams_is_taken_from_the_state(data):
    a = BatchStream(data["one"], DS, 40, world_size=2, rank=0, block_rows=70)   # default num_streams: 8
    st = a.state_dict()
    b = BatchStream(data["one"], DS, 20, world_size=4, rank=0, block_rows=70)   # default would be 16
    b.load_state_dict(st)
    assert b.num_streams == a.num_streams


@pytest.mark.parametrize("field,change", [
    ("files", dict(source="parts")), ("datasets", dict(datasets={"x": "/img_contig", "y": "/lab"})),
    ("block_rows", dict(block_rows=140)), ("shuffle", dict(shuffle="block")), ("seed", dict(seed=99)),
    ("window_rows", dict(window_rows=140)), ("num_streams", dict(num_streams=16)),
    ("global_batch", dict(batch_size=50)), ("tail", dict(tail="pad")),
])
def test_fingerprint_names_the_field_that_changed(data, field, change):
    base = dict(source=data["one"], datasets=DS, batch_size=40, shuffle="window", seed=7, block_rows=70,
                num_streams=8)
    st = BatchStream(**base).state_dict()
    kw = dict(base, **change)
    if kw["source"] == "parts":
        kw["source"] = data["parts"]
    with pytest.raises(ValueError, match=field):
        BatchStream(**kw).load_state_dict(st)


def test_fingerprint_sees_a_rewritten_file(data, tmp_path):
    path = str(tmp_path / "f.h5")
    with h5py.File(path, "w") as f:
        f["img"], f["lab"] = data["img"], data["lab"]
    st = BatchStream(path, DS, 40, block_rows=70).state_dict()
    os.utime(path, ns=(1, 1))
    with pytest.raises(ValueError, match="files"):
        BatchStream(path, DS, 40, block_rows=70).load_state_dict(st)


def test_bad_states(data):
    bs = BatchStream(data["one"], DS, 40, block_rows=70)
    st = bs.state_dict()
    for bad in ([1, 2], {"epoch": 0}, dict(st, version=2), dict(st, step=10**6), dict(st, epoch=-1)):
        with pytest.raises(ValueError):
            bs.load_state_dict(bad)


# ------------------------------------------------------------ epochs

def test_iterating_again_without_set_epoch_repeats_and_warns_once(data):
    bs = BatchStream(data["one"], DS, 500, shuffle="block", block_rows=70)
    first = [r for r, _ in collect(bs, data)]
    with pytest.warns(UserWarning, match="set_epoch"):
        again = [r for r, _ in collect(bs, data)]
    assert all((a == b).all() for a, b in zip(first, again))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        collect(bs, data)  # once only
        bs.set_epoch(1)
        other = [r for r, _ in collect(bs, data)]
    assert not all((a == b).all() for a, b in zip(first, other))


def test_a_partial_iteration_goes_on_where_it_stopped(data):
    bs = BatchStream(data["one"], DS, 100, shuffle="window", block_rows=70)
    whole = [r for r, _ in collect(BatchStream(data["one"], DS, 100, shuffle="window", block_rows=70), data)]
    got = []
    for i, b in enumerate(bs):
        got.append(rows_of(b["y"]))
        if i == 4:
            break
    assert bs.step == 5
    bs.set_epoch(0)  # the epoch it is in: keeps the position
    got += [r for r, _ in collect(bs, data)]
    assert all((a == b).all() for a, b in zip(got, whole)) and len(got) == len(whole)


def test_a_new_iteration_supersedes_the_old_one(data):
    bs = BatchStream(data["one"], DS, 100, block_rows=70)
    it1 = iter(bs)
    next(it1)
    it2 = iter(bs)
    next(it2)
    with pytest.raises(RuntimeError, match="superseded"):
        next(it1)


def test_close_ends_iteration_and_keeps_batches(data):
    with BatchStream(data["one"], DS, 100, block_rows=70) as bs:
        it = iter(bs)
        b = next(it)
    with pytest.raises(RuntimeError, match="closed"):
        next(it)
    with pytest.raises(RuntimeError, match="closed"):
        iter(bs)
    np.testing.assert_array_equal(b["x"], data["img"][rows_of(b["y"])])  # a batch handed out stays valid
    bs.close()  # twice: fine


# ------------------------------------------------- datasets and files

def test_several_files_and_a_glob_are_one_dataset(data):
    for source in (data["parts"], os.path.join(data["dir"], "part-*.h5")):
        bs = BatchStream(source, DS, 64, shuffle="window", seed=1, block_rows=70, tail="pad")
        assert bs.n_rows == N
        rows = np.concatenate([r[v] for r, v in collect(bs, data)])
        assert sorted(rows.tolist()) == list(range(N))
    for shuffle in ("global", "none"):
        collect(BatchStream(data["parts"], DS, 64, shuffle=shuffle, block_rows=70), data)


def test_tuple_and_single_dataset_batches(data):
    bs = BatchStream(data["one"], ["/img", "/lab"], 64, block_rows=70, tail="pad")
    b = next(iter(bs))
    assert isinstance(b, tuple) and len(b) == 3  # img, lab, valid
    np.testing.assert_array_equal(b[0], data["img"][rows_of(b[1])])
    one = next(iter(BatchStream(data["one"], "/lab", 64, block_rows=70, shuffle="none")))  # dataset order
    np.testing.assert_array_equal(one, data["lab"][:64])


@pytest.mark.parametrize("shuffle", ["none", "window", "global"])
def test_one_row_per_chunk_data_is_gathered_in_place(data, shuffle):
    bs = BatchStream(data["one"], {"x": "/img1", "y": "/lab"}, 64, shuffle=shuffle, seed=2, block_rows=70,
                     tail="pad")
    assert bs._by_rows == [True, shuffle == "global"]
    got = collect(bs, data)
    assert len(got) == len(bs)
    assert bs.stats()["gathered_rows"] == 64 * len(bs)


def test_reader_gathers_one_row_chunks_in_any_order(data):
    # Unsorted, repeated (together and apart) rows of a one-row-per-chunk
    # dataset: singles are decoded in place, repeats through the band cache.
    rows = [5, 3, 3, 2999, 0, 5, 1777, 1777, 1777, 12]
    with multiload.Reader(data["one"]) as r:
        ds = r.get_dataset("/img1")
        np.testing.assert_array_equal(r.read(ds[rows]), data["img"][rows])
        np.testing.assert_array_equal(r.read(ds[100:164]), data["img"][100:164])
        np.testing.assert_array_equal(r.read(ds[rows, 1]), data["img"][rows, 1])   # part of a row: cached path


def test_contiguous_data(data):
    bs = BatchStream(data["one"], {"x": "/img_contig", "y": "/lab"}, 64, seed=2)
    for b in bs:
        np.testing.assert_array_equal(b["x"], data["img"][rows_of(b["y"])])


def test_default_block_rows_are_whole_chunks(data):
    bs = BatchStream(data["one"], DS, 64)
    assert bs.block_rows % CHUNK == 0 and bs.block_rows % LABEL_CHUNK == 0 or bs.block_rows % LABEL_CHUNK == 0


# ----------------------------------------------------------- bad input

def test_bad_input(data, tmp_path):
    one = data["one"]
    with pytest.raises(ValueError, match=r"'/img'.*3001.*'/short'.*3000"):
        BatchStream(one, {"x": "/img", "s": "/short"}, 8)
    other = str(tmp_path / "other.h5")
    with h5py.File(other, "w") as f:
        f["img"] = data["img"].astype(np.uint16)
        f["lab"] = data["lab"]
    with pytest.raises(ValueError, match="other.h5"):
        BatchStream([one, other], DS, 8)
    wide = str(tmp_path / "wide.h5")
    with h5py.File(wide, "w") as f:
        f["img"] = np.zeros((5, 4, 4), np.uint8)
        f["lab"] = np.zeros(5, np.int64)
    with pytest.raises(ValueError, match="wide.h5"):
        BatchStream([one, wide], DS, 8)
    with pytest.raises(FileNotFoundError):
        BatchStream(str(tmp_path / "nothing-*.h5"), DS, 8)
    with pytest.raises(FileNotFoundError):
        BatchStream(str(tmp_path / "absent.h5"), DS, 8)
    with pytest.raises(KeyError):
        BatchStream(one, {"x": "/nope"}, 8)
    rules = [
        (dict(rank=2, world_size=2), r"rank must be in \[0, world_size\)"),
        (dict(rank=-1), "rank"),
        (dict(world_size=3, num_streams=8), "world_size .* must divide num_streams"),
        (dict(batch_size=0), "batch_size"),
        (dict(window_rows=0), "window_rows"),
        (dict(window_rows=100, block_rows=70), "multiple of block_rows"),
        (dict(shuffle="rows"), "shuffle"),
        (dict(tail="cut"), "tail"),
        (dict(seed=-3), "seed"),
        (dict(max_memory=1000), "max_memory"),
    ]
    for kw, msg in rules:
        args = dict(batch_size=8)
        args.update(kw)
        with pytest.raises(ValueError, match=msg):
            BatchStream(one, DS, **args)
    with pytest.raises(ValueError, match="valid"):
        BatchStream(one, {"valid": "/lab"}, 8)


# --------------------------------------------------- batch memory

def test_a_kept_batch_is_never_overwritten_and_the_bound_is_an_error(data):
    bs = BatchStream(data["one"], DS, 16, shuffle="window", block_rows=70, outstanding=4)
    kept = []
    with pytest.raises(RuntimeError, match="copy=True"):
        for b in bs:
            kept.append(b["x"][2:])  # a view pins its batch
    assert len(kept) == 4
    for k in kept:
        assert k.shape == (14, 4, 3)
    first = next(iter(BatchStream(data["one"], DS, 16, shuffle="window", block_rows=70)))
    np.testing.assert_array_equal(kept[0], first["x"][2:])


def test_batches_dropped_free_their_slots(data):
    bs = BatchStream(data["one"], DS, 16, block_rows=70, outstanding=2)
    n = sum(1 for _ in bs)
    assert n == len(bs) > 2


def test_copy_true_gives_batches_of_their_own(data):
    bs = BatchStream(data["one"], DS, 16, block_rows=70, outstanding=1, copy=True)
    kept = list(bs)
    for b in kept:
        np.testing.assert_array_equal(b["x"], data["img"][rows_of(b["y"])])


def test_memory_bound_is_stated_and_checked(data):
    bs = BatchStream(data["one"], DS, 16, block_rows=70, window_rows=280, num_streams=2)
    need = bs.stats()["memory_bound"]
    with pytest.raises(ValueError, match="max_memory"):
        BatchStream(data["one"], DS, 16, block_rows=70, window_rows=280, num_streams=2, max_memory=need - 1)
    BatchStream(data["one"], DS, 16, block_rows=70, window_rows=280, num_streams=2, max_memory=need)


# ------------------------------------------------ pickle, fork, progress

def test_pickles_as_a_description_with_its_position(data):
    bs = BatchStream(data["one"], DS, 40, shuffle="window", seed=3, block_rows=70)
    it = iter(bs)
    for _ in range(3):
        next(it)
    copy = pickle.loads(pickle.dumps(bs))
    assert (copy.epoch, copy.step) == (0, 3)
    rest = [r for r, _ in collect(copy, data)]
    whole = [r for r, _ in collect(BatchStream(data["one"], DS, 40, shuffle="window", seed=3, block_rows=70), data)]
    assert all((a == b).all() for a, b in zip(rest, whole[3:])) and len(rest) == len(whole) - 3


def test_pickle_keeps_the_shard(data):
    bs = BatchStream(data["one"], DS, 40, world_size=2, rank=1, block_rows=70)
    copy = pickle.loads(pickle.dumps(bs))
    assert (copy.rank, copy.world_size, copy.num_streams) == (1, 2, bs.num_streams)


def test_pickle_refuses_a_changed_file(data, tmp_path):
    path = str(tmp_path / "f.h5")
    with h5py.File(path, "w") as f:
        f["img"], f["lab"] = data["img"], data["lab"]
    blob = pickle.dumps(BatchStream(path, DS, 40, block_rows=70))
    os.utime(path, ns=(1, 1))
    with pytest.raises(multiload.FileChangedError, match="f.h5.*modified"):
        pickle.loads(blob)


def test_a_forked_child_reads_with_threads_of_its_own(data):
    bs = BatchStream(data["one"], DS, 40, block_rows=70)
    next(iter(bs))  # threads started in the parent
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            ok = all((b["x"] == data["img"][rows_of(b["y"])]).all() for b in BatchStream.__iter__(bs))
            code = 0 if ok else 2
        finally:
            os._exit(code)
    os.close(w)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_progress_bar(data, capsys):
    bs = BatchStream(data["one"], DS, 500, block_rows=70, progress=True)
    for _ in bs:
        pass
    assert "epoch 0" in capsys.readouterr().err


def test_progress_without_tqdm_says_how_to_get_it(data, monkeypatch):
    import multiload._progress as prog
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setattr(prog, "_warned", False)
    bs = BatchStream(data["one"], DS, 500, block_rows=70, progress=True)
    with pytest.warns(UserWarning, match="pip install tqdm"):
        for _ in bs:
            pass


def test_import_multiload_does_not_import_torch():
    code = "import sys, multiload; multiload.BatchStream; assert 'torch' not in sys.modules"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(multiload.__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_a_corrupt_chunk_is_an_error_naming_the_file_and_dataset(data, tmp_path):
    path = str(tmp_path / "corrupt.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("img", data=data["img"], chunks=(CHUNK, 4, 3), compression="gzip")
        f["lab"] = data["lab"]
        info = f["img"].id.get_chunk_info(40)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    for shuffle in ("window", "global"):
        bs = BatchStream(path, DS, 64, shuffle=shuffle, block_rows=70)
        with pytest.raises(OSError, match=r"corrupt\.h5.*img|img.*corrupt\.h5"):
            for _ in bs:
                pass


def test_small_and_empty_datasets(tmp_path):
    path = str(tmp_path / "small.h5")
    with h5py.File(path, "w") as f:
        f["a"] = np.arange(10)
        f["empty"] = np.zeros((0, 3))
    assert len(BatchStream(path, "/a", 64)) == 0                      # fewer rows than a batch: none under drop
    assert [list(b) for b in BatchStream(path, "/a", 64, tail="uneven", shuffle="none")] == [list(range(10))]
    b, valid = next(iter(BatchStream(path, "/a", 16, tail="pad", shuffle="none")))
    assert list(b[valid]) == list(range(10)) and len(b) == 16
    assert list(BatchStream(path, "/empty", 4)) == []


@pytest.mark.parametrize("images", ["/img", "/img1"])  # read through the arena / by row gathers
def test_the_slot_error_loses_no_batch(data, images):
    ds = {"x": images, "y": "/lab"}
    whole = [r for r, _ in collect(BatchStream(data["one"], DS, 16, block_rows=70), data)]
    bs = BatchStream(data["one"], ds, 16, block_rows=70, outstanding=3)
    it = iter(bs)
    kept = []
    with pytest.raises(RuntimeError, match="slots are held"):
        while True:
            kept.append(next(it))
    got = [rows_of(b["y"]) for b in kept]
    assert bs.step == 3
    del kept  # the slots come back; a new iteration goes on with the next batch
    for b in bs:
        got.append(rows_of(b["y"]))
    assert len(got) == len(whole) and all((a == b).all() for a, b in zip(got, whole))


def test_compound_fields_out_of_offset_order(tmp_path):
    """A compound whose fields are stored out of offset order (PyTables'
    out_of_order_types.h5) keeps its dtype in the batches: the slot pin's
    array interface alone would flatten it to V16."""
    from h5py import h5d, h5s, h5t
    ct = h5t.create(h5t.COMPOUND, 16)
    ct.insert(b"b", 8, h5t.IEEE_F64LE)
    ct.insert(b"a", 0, h5t.STD_I32LE)
    mdt = np.dtype({"names": ["b", "a"], "formats": ["<f8", "<i4"], "offsets": [8, 0], "itemsize": 16})
    v = np.zeros(100, mdt)
    v["a"] = np.arange(100)
    v["b"] = np.arange(100) / 2
    fn = str(tmp_path / "ooo.h5")
    with h5py.File(fn, "w") as f:
        h5d.create(f.id, b"x", ct, h5s.create_simple((100,))).write(h5s.ALL, h5s.ALL, v, mtype=h5t.py_create(mdt))
    with h5py.File(fn) as f:
        ref = f["x"][()]
    with multiload.BatchStream(fn, "x", batch_size=10, shuffle="none") as bs:
        batches = [np.array(b) for b in bs]
    assert all(b.dtype == ref.dtype for b in batches)
    for name in ref.dtype.names:  # (np.concatenate would pack the fields)
        np.testing.assert_array_equal(np.concatenate([b[name] for b in batches]), ref[name])
