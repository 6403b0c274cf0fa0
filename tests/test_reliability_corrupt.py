"""Corrupt data: damaged compressed bytes, fletcher32 mismatches, files cut
in the middle of a dataset, chunk addresses past the end of the file. Each
gives an OSError(EIO) naming the block (and the chunk where there is one);
every other block is exact; nothing is ever wrong data or a crash."""

import errno
import os
import shutil
import struct

import numpy as np
import pytest

import multiload
import reliability_files as rf
from reliability_files import BLOCK, CHUNK, IO_MODES, N

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return rf.write_data_file(str(tmp_path_factory.mktemp("corrupt") / "pristine.h5"))


@pytest.fixture
def copy(pristine, tmp_path):
    fn = str(tmp_path / "damaged.h5")
    shutil.copy(pristine, fn)
    return fn


def stream(fn, path, io_mode, **kw):
    kw.setdefault("n_procs", 2)
    q = multiload.Streamer(fn).get_queue(path, block_size=BLOCK, io_mode=io_mode, **kw)
    with q:
        return rf.drain(q)


def check_only_bad(fn, path, blocks, errors, bad, what, chunk=None):
    """Errors for exactly the blocks in `bad`, each naming block, dataset,
    file (and chunk), with `what` in the message; all other blocks exact."""
    assert sorted(rf.block_of(e) for e in errors) == sorted(bad), errors
    for e in errors:
        assert isinstance(e, OSError) and e.errno == errno.EIO, repr(e)
        msg = str(e)
        assert what in msg and f"'{path}'" in msg and fn in msg, msg
        if chunk is not None:
            assert f"chunk {chunk} " in msg, msg
    assert sorted(blocks) == [k for k in range(N // BLOCK) if k not in bad]
    rf.check_blocks(blocks, rf.values())


@pytest.mark.parametrize("io_mode", IO_MODES)
@pytest.mark.parametrize("path,where,what", [
    ("gz", "middle", "cannot decode"),            # deflate stream damaged (adler32 / stream error)
    ("gz", "start", "cannot decode"),             # zlib header damaged
    ("gz", "end", "cannot decode"),               # adler32 trailer damaged
    ("f32", "middle", "fletcher32 checksum mismatch"),  # data under the checksum
    ("f32", "end", "fletcher32 checksum mismatch"),     # the stored checksum itself
    ("gzf32", "middle", "fletcher32 checksum mismatch"),
])
def test_damaged_chunk(copy, io_mode, path, where, what):
    chunk = 7  # rows 700..800: block 3
    off, size = rf.chunk_span(copy, path, chunk)
    at = {"start": off, "middle": off + size // 2, "end": off + size - 4}[where]
    rf.xor_bytes(copy, at, 4)
    blocks, errors = stream(copy, path, io_mode)
    check_only_bad(copy, path, blocks, errors, [chunk * CHUNK // BLOCK], what, chunk=chunk)


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_every_chunk_damaged(copy, io_mode):
    """Damage in every chunk: every block is an error, in order, none lost."""
    for i in range(N // CHUNK):
        off, size = rf.chunk_span(copy, "f32", i)
        rf.xor_bytes(copy, off + size // 3, 1)
    blocks, errors = stream(copy, "f32", io_mode, ordered=True)
    assert blocks == {}
    assert [rf.block_of(e) for e in errors] == list(range(N // BLOCK))


@pytest.mark.parametrize("seed", range(6))
def test_random_damage_is_never_wrong_data(copy, seed):
    """Random bytes flipped in random chunks of checksummed datasets: each
    block is exact or an error naming it."""
    rng = np.random.default_rng(seed)
    path = ["gz", "f32", "gzf32"][seed % 3]
    hit = sorted(set(rng.integers(0, N // CHUNK, size=3).tolist()))
    for i in hit:
        off, size = rf.chunk_span(copy, path, i)
        rf.xor_bytes(copy, off + int(rng.integers(0, size)), 1)
    blocks, errors = stream(copy, path, IO_MODES[seed % 2])
    check_only_bad(copy, path, blocks, errors, sorted({i * CHUNK // BLOCK for i in hit}), "chunk")


def test_unchecksummed_damage_is_documented(copy):
    """Without a checksum (no filter) damage cannot be detected: multiload
    returns the stored bytes, as h5py does. (docs/reliability.md says so.)"""
    off, size = rf.chunk_span(copy, "plain", 3)
    rf.xor_bytes(copy, off, 4)
    blocks, errors = stream(copy, "plain", "pread")
    assert errors == []
    got = np.concatenate([blocks[k][1] for k in sorted(blocks)])
    assert np.array_equal(got, rf.truth(copy, "plain"))  # same as h5py reads
    assert not np.array_equal(got, rf.values())


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_file_cut_inside_contiguous_data(tmp_path, io_mode):
    fn = str(tmp_path / "cut.h5")
    off = rf.write_contig_last(fn)
    row_bytes = rf.COLS * 4
    cut_row = 1234  # inside block 6 (rows 1200..1400)
    rf.set_eof(fn, off + cut_row * row_bytes + 5)
    blocks, errors = stream(fn, "contig", io_mode)
    check_only_bad(fn, "contig", blocks, errors, list(range(cut_row // BLOCK, N // BLOCK)), "file truncated")


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_file_cut_inside_chunks(tmp_path, io_mode):
    fn = write = str(tmp_path / "cutchunks.h5")
    rf.write_chunked_only(write)
    off, size = rf.chunk_span(fn, "gz", 25)  # rows 2500..2600: block 12
    ends = [sum(rf.chunk_span(fn, "gz", i)) for i in range(N // CHUNK)]
    assert max(ends) == os.path.getsize(fn)
    rf.set_eof(fn, off + size // 2)
    later = {i * CHUNK // BLOCK for i in range(N // CHUNK) if sum(rf.chunk_span(fn, "gz", i)) > off}
    blocks, errors = stream(fn, "gz", io_mode)
    check_only_bad(fn, "gz", blocks, errors, sorted(later), "past the end of the file")


@pytest.mark.parametrize("io_mode", IO_MODES)
@pytest.mark.parametrize("path", ["gz", "plain"])
def test_chunk_address_past_eof(copy, io_mode, path):
    """The chunk index points chunk 5 far past the end of the file."""
    off, _ = rf.chunk_span(copy, path, 5)
    hits = rf.find_address(copy, off)
    assert len(hits) == 1, hits
    with open(copy, "r+b") as f:
        f.seek(hits[0])
        f.write(struct.pack("<Q", os.path.getsize(copy) * 10))
    assert rf.chunk_span(copy, path, 5)[0] == os.path.getsize(copy) * 10
    blocks, errors = stream(copy, path, io_mode)
    check_only_bad(copy, path, blocks, errors, [5 * CHUNK // BLOCK], "past the end of the file")


@pytest.mark.parametrize("io_mode", IO_MODES)
def test_chunk_size_in_index_wrong(copy, io_mode):
    """An unfiltered chunk whose stored size (in the B-tree key) is not the
    chunk size is refused, not half-copied."""
    off, size = rf.chunk_span(copy, "plain", 9)
    hits = rf.find_address(copy, off)
    assert len(hits) == 1
    # v1 B-tree key of a 2-D chunk: size(4) mask(4) offsets(3*8), then the address
    key = hits[0] - 32
    assert struct.unpack("<I", open(copy, "rb").read()[key:key + 4])[0] == size
    with open(copy, "r+b") as f:
        f.seek(key)
        f.write(struct.pack("<I", size - 16))
    blocks, errors = stream(copy, "plain", io_mode)
    check_only_bad(copy, "plain", blocks, errors, [9 * CHUNK // BLOCK], "stored size differs", chunk=9)


def test_truncated_file_is_refused_at_open(copy):
    """Cut without fixing the superblock: HDF5 refuses it, with a clear error."""
    os.truncate(copy, os.path.getsize(copy) // 2)
    with pytest.raises(OSError, match="HDF5 cannot open .*damaged"):
        multiload.Streamer(copy).get_queue("contig")


@pytest.mark.timeout(120)
def test_metadata_fuzz_never_crashes(tmp_path):
    """Random bytes flipped in the metadata of a checksummed (libver latest)
    file: opening and streaming either work or raise a Python exception; the
    interpreter never dies. Run in a subprocess so a crash is reported as a
    failure, not as a dead test run."""
    code = r'''
import os, shutil, sys, numpy as np
sys.path.insert(0, os.path.join(os.environ["ROOT"], "tests"))
import reliability_files as rf, multiload
base = os.path.join(os.environ["DIR"], "base.h5")
rf.write_data_file(base, libver="latest")
with open(base, "rb") as f:
    data = f.read()
meta_end = min(rf.chunk_span(base, p, 0)[0] for p in ("gz", "f32", "plain"))
rng = np.random.default_rng(1)
outcomes = {}
for i in range(40):
    buf = bytearray(data)
    for _ in range(3):
        buf[int(rng.integers(0, meta_end))] ^= int(rng.integers(1, 256))
    fn = os.path.join(os.environ["DIR"], "fuzz.h5")
    with open(fn, "wb") as f:
        f.write(buf)
    for path in ("contig", "gz", "f32"):
        try:
            q = multiload.Streamer(fn).get_queue(path, n_procs=2, block_size=rf.BLOCK)
            with q:
                blocks, errors = rf.drain(q)
            kind = "ok" if not errors else "block-errors"
        except (OSError, KeyError, TypeError, ValueError, MemoryError) as e:
            kind = type(e).__name__
        outcomes[kind] = outcomes.get(kind, 0) + 1
print(sorted(outcomes.items()))
'''
    r = rf.run_python(code, timeout=100, env={"ROOT": rf.ROOT, "DIR": str(tmp_path)})
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    assert "ok" in r.stdout, r.stdout
