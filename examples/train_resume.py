"""A training loop on multiload.BatchStream that checkpoints and resumes exactly.

    python examples/train_resume.py [--dir DIR] [--stop-after N]

Writes a small image/label dataset as two HDF5 files (if DIR has none),
trains a linear model on shuffled, aligned batches for two epochs, and
saves a checkpoint (model + stream state) every 10 steps. Run it with
``--stop-after 25`` to stop mid-epoch, then again without: the second run
loads the checkpoint and goes on with exactly the batches an
uninterrupted run would have seen. It prints a digest of every row index
it trained on, the same for a resumed and an uninterrupted run.
"""

import argparse
import hashlib
import json
import os

import h5py
import numpy as np

import multiload


def make_files(d, n=6000):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 16, 16), dtype=np.uint8)
    labels = (images.mean(axis=(1, 2)) > 127.5).astype(np.int64)
    half = n // 2
    for i, part in enumerate((slice(0, half), slice(half, n))):
        with h5py.File(os.path.join(d, f"part-{i}.h5"), "w") as f:
            f.create_dataset("images", data=images[part], chunks=(1, 16, 16), compression="gzip")
            f.create_dataset("labels", data=labels[part], chunks=(1000,))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="train-example")
    ap.add_argument("--stop-after", type=int, default=None, help="stop after this many steps in this run")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    if not os.path.exists(os.path.join(args.dir, "part-0.h5")):
        make_files(args.dir)
    ckpt = os.path.join(args.dir, "checkpoint.json")

    stream = multiload.BatchStream(os.path.join(args.dir, "part-*.h5"), {"x": "/images", "y": "/labels"},
                                   batch_size=128, shuffle="window", seed=42)
    w = np.zeros(256)
    trained = []
    if os.path.exists(ckpt):
        with open(ckpt) as f:
            saved = json.load(f)
        w = np.array(saved["w"])
        trained = saved["trained"]
        stream.load_state_dict(saved["data"])      # ValueError if the files or settings changed
        print(f"resumed at epoch {stream.epoch}, step {stream.step}")

    steps = 0
    for epoch in range(stream.epoch, args.epochs):
        stream.set_epoch(epoch)                    # keeps a loaded mid-epoch position
        for batch in stream:
            x = batch["x"].reshape(len(batch["x"]), -1) / 255.0
            y = batch["y"]
            grad = x.T @ (x @ w - y) / len(y)      # one step of least squares
            w -= 0.1 * grad
            trained.append(hashlib.sha1(y.tobytes() + x.tobytes()).hexdigest()[:8])
            steps += 1
            if steps % 10 == 0 or steps == args.stop_after:
                with open(ckpt, "w") as f:
                    json.dump({"w": w.tolist(), "trained": trained, "data": stream.state_dict()}, f)
            if steps == args.stop_after:
                print(f"stopped after {steps} steps (epoch {stream.epoch}, step {stream.step})")
                return
    digest = hashlib.sha1("".join(trained).encode()).hexdigest()
    print(f"trained {len(trained)} batches over {args.epochs} epochs; digest {digest}")
    os.remove(ckpt)


if __name__ == "__main__":
    main()
