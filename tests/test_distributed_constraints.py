"""Constrained and grouped losses under real torch.distributed (gloo on loopback, 2 spawned CPU processes).

Rank 0 holds no sample of group 1. With ``sync=True`` every rank evaluates the global batch's per-group table (soft
and hard, one all-reduce): its loss and gradient are the single process's on the concatenated batch. Without sync
each rank's loss is its own, but the hard table is all-reduced for the multipliers, which therefore stay equal on
every rank and equal to the single process's. Compared in this process with the same loss on the concatenation.
"""

import datetime
import gc
import multiprocessing
import multiprocessing.connection
import os
import socket
import time
import traceback
import warnings
from pathlib import Path

import pytest
import torch

import metricc

WORLD_SIZE = 2
SIZES = (9, 15)
STEPS = 3
TIMEOUT_S = 120
GAP = "max_g(TP[g]/(TP[g]+FN[g])) - min_g(TP[g]/(TP[g]+FN[g])) <= 0.02"
OPTIONS = dict(groups=2, constraints=[GAP, "FP/N <= 0.1"], multiplier_lr=0.5)


def _shards():
    generator = torch.Generator().manual_seed(3)
    shards = []
    for rank, size in enumerate(SIZES):
        logits = torch.randn(size, generator=generator, dtype=torch.float64) * 0.3
        target = (torch.rand(size, generator=generator) < 0.5).double()
        target[0] = 1.0
        groups = torch.zeros(size, dtype=torch.long) if rank == 0 else torch.randint(0, 2, (size,), generator=generator)
        if rank == 1:
            groups[:2] = torch.tensor([0, 1])
        shards.append({"logits": logits, "target": target, "groups": groups})
    return shards


def _steps(loss_fn, logits, target, groups):
    """STEPS calls (the multipliers step after each); the last call's loss and gradient, the multipliers."""
    for _ in range(STEPS):
        z = logits.clone().requires_grad_(True)
        loss = loss_fn(z, target, groups=groups)
        loss.backward()
    return {"loss": loss.detach(), "grad": z.grad, "multipliers": loss_fn.multipliers.clone(),
            "values": loss_fn.constraint_values.clone()}


def _worker(rank, port, out_dir):
    out_dir = Path(out_dir)
    try:
        warnings.simplefilter("ignore")
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
        torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE,
                                             timeout=datetime.timedelta(seconds=60))
        try:
            shard = _shards()[rank]
            results = {sync: _steps(metricc.compile_metric("accuracy", sync=sync, **OPTIONS), shard["logits"],
                                    shard["target"], shard["groups"]) for sync in (True, False)}
        finally:
            gc.collect()
            torch.distributed.destroy_process_group()
        torch.save(results, out_dir / f"rank{rank}.pt")
    except BaseException:
        (out_dir / f"rank{rank}.error").write_text(traceback.format_exc())
        raise


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("constraints_ddp")
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    processes = [context.Process(target=_worker, args=(rank, port, str(out_dir)), daemon=True)
                 for rank in range(WORLD_SIZE)]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for process in processes:
            process.start()
        while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
            if any(p.exitcode not in (None, 0) for p in processes):
                break
            multiprocessing.connection.wait([p.sentinel for p in processes if p.exitcode is None],
                                            timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(10)
    errors = [(out_dir / f"rank{rank}.error") for rank in range(WORLD_SIZE)]
    problems = [f"rank {rank}:\n{e.read_text()}" for rank, e in enumerate(errors) if e.exists()]
    problems += [f"rank {rank} exit code {p.exitcode}" for rank, p in enumerate(processes) if p.exitcode != 0]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


def _single_process():
    shards = _shards()
    logits, target, groups = (torch.cat([s[key] for s in shards]) for key in ("logits", "target", "groups"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _steps(metricc.compile_metric("accuracy", **OPTIONS), logits, target, groups)


def test_with_sync_every_rank_gets_the_global_loss_and_its_share_of_the_gradient(ranks):
    expected = _single_process()
    start = 0
    for rank, results in enumerate(ranks):
        mine = results[True]
        torch.testing.assert_close(mine["loss"], expected["loss"], rtol=1e-12, atol=1e-14)
        # DDP averages gradients over ranks: each rank's is the global gradient times the world size
        torch.testing.assert_close(mine["grad"], WORLD_SIZE * expected["grad"][start:start + SIZES[rank]],
                                   rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(mine["multipliers"], expected["multipliers"], rtol=1e-12, atol=0)
        start += SIZES[rank]


def test_without_sync_the_multipliers_still_agree_on_every_rank_with_a_group_missing_on_one(ranks):
    expected = _single_process()
    assert expected["multipliers"].abs().sum() > 0
    for results in ranks:
        torch.testing.assert_close(results[False]["multipliers"], expected["multipliers"], rtol=1e-12, atol=0)
        torch.testing.assert_close(results[False]["values"], expected["values"], rtol=1e-12, atol=0)
    assert not torch.equal(ranks[0][False]["loss"], ranks[1][False]["loss"])  # each rank's own soft loss
