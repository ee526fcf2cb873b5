"""Train the AnyLoss MLP with an exact global-batch F1 loss under DistributedDataParallel.

    torchrun --nproc_per_node 2 examples/ddp_train.py --epochs 3
    python examples/ddp_train.py --epochs 3          # one process: sync is then a no-op

Every rank sees its shard of each global batch (DistributedSampler), but the loss is
``compile_metric("f1", sync=True)``: the forward all-reduces the four soft confusion sums,
so every rank computes the F1 loss of the *global* batch, and its backward scales the
local gradients so that DDP's averaging yields the global-batch gradient (see
docs/distributed.md). Rank 0 prints the F1 of hard predictions (p > 0.5) after each epoch.

Data: metricc's ``random`` dataset (AnyLoss dataset #1, 10,000 rows, 2 features, 9:1),
which needs scikit-learn; without it, a torch-generated stand-in of the same shape.
Gloo on CPU, NCCL when CUDA is available.
"""

import argparse
import datetime
import gc
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import metricc
from metricc.experiments.models import MLP


def load_random_dataset(seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """metricc's ``random`` dataset as float64 features and 0/1 labels."""
    try:
        from metricc.experiments.datasets import load_dataset
    except ImportError:
        load_dataset = None
    try:
        dataset = load_dataset("random") if load_dataset is not None else None
    except ImportError:  # scikit-learn is missing
        dataset = None
    if dataset is not None:
        return torch.from_numpy(dataset.X), torch.from_numpy(dataset.y), dataset.summary()
    # Stand-in: two Gaussian blobs in 2-D, 10 % positives (not the paper's data; install scikit-learn for that).
    generator = torch.Generator().manual_seed(seed)
    y = (torch.rand(10_000, generator=generator) < 0.1).long()
    X = torch.randn(10_000, 2, generator=generator, dtype=torch.float64) + y[:, None] * torch.tensor([1.8, 1.2])
    return X, y, "random (torch stand-in: scikit-learn is not installed): 10000 rows, 2 features, ~9:1"


def f1_of_hard_predictions(logits: torch.Tensor, y: torch.Tensor) -> float:
    predicted, positive = logits > 0, y == 1  # σ(z) > 0.5
    tp = int((predicted & positive).sum())
    fp = int((predicted & ~positive).sum())
    fn = int((~predicted & positive).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=400,
                        help="global batch size, split across ranks (default 400: 5%% of the training set, "
                             "the AnyLoss paper's MLP setting)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 0.01)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    distributed = world_size > 1
    if distributed:  # torchrun sets MASTER_ADDR and MASTER_PORT
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(minutes=5))
    if args.batch_size % world_size:
        parser.error(f"--batch-size {args.batch_size} must be divisible by the world size {world_size}")

    # Every rank draws the same split and the same initial model from the same seed.
    X, y, summary = load_random_dataset(args.seed)
    split = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.seed))
    train_index, test_index = split[: len(y) * 4 // 5], split[len(y) * 4 // 5:]
    mean, std = X[train_index].mean(0), X[train_index].std(0)
    X = (X - mean) / std
    X_train, y_train, X_test, y_test = X[train_index], y[train_index], X[test_index], y[test_index]

    torch.manual_seed(args.seed)
    model = MLP(X.shape[1])
    if distributed and device.type == "cuda":
        # Per-rank BatchNorm statistics would make each rank normalize differently; SyncBatchNorm
        # normalizes with the global batch's statistics (it needs GPU inputs).
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # float64, as metricc's experiments: the AnyLoss amplifier (L = 73) saturates in float32.
    model = model.to(device, torch.float64)
    trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if distributed else model

    loss_fn = metricc.compile_metric("f1", sync=True)  # exact global-batch F1 loss; no-op in one process
    optimizer = torch.optim.Adam(trained.parameters(), lr=args.lr)
    sampler = DistributedSampler(TensorDataset(X_train, y_train), num_replicas=world_size, rank=rank,
                                 shuffle=True, seed=args.seed)
    loader = DataLoader(TensorDataset(X_train, y_train), batch_size=args.batch_size // world_size, sampler=sampler)

    if rank == 0:
        print(summary)
        setup = (f"{world_size} ranks, {backend} on {device.type}, statistics all-reduced across ranks"
                 if distributed else f"1 process on {device.type}, no process group: sync is a no-op")
        print(f"{setup}; global batch {args.batch_size} ({args.batch_size // world_size} per rank); "
              f"loss: {loss_fn.derivation.loss_text('f1')}")
        if distributed and device.type != "cuda":
            print("note: on CPU the MLP's BatchNorm normalizes with each rank's shard (SyncBatchNorm needs a GPU)")
    for epoch in range(1, args.epochs + 1):
        sampler.set_epoch(epoch)
        trained.train()
        losses = []
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(trained(xb.to(device)), yb.to(device))  # the same value on every rank
            loss.backward()  # DDP averages the world-size-scaled local gradients: the global gradient
            optimizer.step()
            losses.append(loss.item())
        if rank == 0:
            model.eval()
            with torch.no_grad():
                train_f1 = f1_of_hard_predictions(model(X_train.to(device)).cpu(), y_train)
                test_f1 = f1_of_hard_predictions(model(X_test.to(device)).cpu(), y_test)
            print(f"epoch {epoch:3d}  F1 loss {sum(losses) / len(losses):.4f}  "
                  f"train F1 {train_f1:.4f}  test F1 {test_f1:.4f}", flush=True)
    if distributed:
        # Free DDP (its reducer sits in reference cycles) while the process group still exists:
        # left to interpreter shutdown, gloo can abort with "terminate called without an active exception".
        del trained, optimizer
        gc.collect()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
