"""DistributedDataParallel on CPU over multiload.torch.StreamDataset.

    python examples/torch_ddp.py [--world-size 2] [--workers 0]

Writes a small dataset, starts ``--world-size`` processes (gloo), and
trains a linear classifier for two epochs. Each rank reads its own share
of every global batch (the rank and world size come from
torch.distributed); every rank gets the same number of batches, so the
all-reduce never waits on a rank that ran out. Rank 0 prints the loss per
epoch and the rows each rank saw.
"""

import argparse
import os
import tempfile

import h5py
import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from multiload.torch import StreamDataset


def make_file(path, n=4096):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 32)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) > 0).astype(np.int64)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=x, chunks=(256, 32), compression="gzip")
        f.create_dataset("y", data=y, chunks=(1024,))


def run(rank, world_size, path, init, workers):
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    ds = StreamDataset(path, {"x": "/x", "y": "/y"}, batch_size=64, seed=7, num_streams=8)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = ds.loader(num_workers=workers)
    for epoch in range(2):
        ds.set_epoch(epoch)
        total, seen = 0.0, 0
        for batch in loader:
            loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            seen += len(batch["y"])
        t = torch.tensor([total / len(ds), seen], dtype=torch.float64)
        dist.all_reduce(t)
        if rank == 0:
            print(f"epoch {epoch}: mean loss {t[0].item() / world_size:.3f}, {int(t[1].item())} rows over "
                  f"{world_size} ranks, {len(ds)} batches each")
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "data.h5")
        make_file(path)
        mp.spawn(run, args=(args.world_size, path, os.path.join(d, "init"), args.workers), nprocs=args.world_size)


if __name__ == "__main__":
    main()
