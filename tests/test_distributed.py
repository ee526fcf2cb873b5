"""sync=True under real torch.distributed: gloo on loopback, 2 and 3 spawned CPU processes (issue 7).

One group of worker processes per world size runs every case (a loss on uneven shards,
weights, several thresholds, an empty shard, the standalone module written by the CLI,
multi-class and multi-label with a class missing on one rank, a curve metric, two steps of
the running estimator, DDP training) and saves what it saw; the tests compare that, in this process, with the
same loss computed by one process on the concatenated batch, and with tests/oracle.py's
autograd composition of the metric's text, built from what each case states (never from the loss).
"""

import ast
import builtins
import datetime
import gc
import importlib.util
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
from metricc.cli import main as cli_main

from .oracle import ReferenceMetric, Relaxation, autograd_loss, catalog_direction, class_autograd_loss

WORLD_SIZES = (2, 3)
INIT_TIMEOUT_S = 60  # rendezvous and every collective in a worker
GROUP_TIMEOUT_S = 120  # the whole group of workers, start-up included
SHARD_SIZES = {2: (7, 13), 3: (5, 11, 8)}  # uneven on purpose
EMPTY_SHARD_SIZES = {2: (0, 13), 3: (5, 0, 8)}
DDP_SHARD_SIZES = {2: (18, 30), 3: (10, 22, 16)}
DDP_STEPS, DDP_LR, DDP_SEED = 5, 0.5, 0

# Each case: keyword arguments of compile_metric (sync=True is added), or "standalone" for the module
# that `metricc compile f1 --sync` writes (used with its defaults: sync=True, grad_average=True).
# Rank 0 holds no positives except where the case empties a shard instead.
CASES = {
    "f1": dict(compile=dict(metric="f1", grad_average=False)),
    "f1_grad_average": dict(compile=dict(metric="f1", grad_average=True)),
    "f1_weighted": dict(compile=dict(metric="f1", grad_average=False), weighted=True),
    "f1_three_thresholds": dict(compile=dict(metric="f1", thresholds=[0.3, 0.5, 0.7], grad_average=False)),
    "balanced_accuracy_weighted": dict(compile=dict(metric="balanced_accuracy", grad_average=True), weighted=True),
    "f1_empty_shard": dict(compile=dict(metric="f1", grad_average=False), empty_shard=True),
    "f1_three_thresholds_empty_shard": dict(compile=dict(metric="f1", thresholds=[0.3, 0.5, 0.7],
                                                         grad_average=True), empty_shard=True),
    "standalone_f1": dict(standalone=True),
    # process_group=: ranks 0 and 1 reduce over a group of their own; in a world of 3, rank 2 is outside it.
    "f1_subgroup": dict(compile=dict(metric="f1", grad_average=False), subgroup=True),
    # (N, 3) logits; rank 0 holds no sample of class 2 (multi-class) or no positive of label 2 (multi-label).
    "multiclass_macro_f1": dict(compile=dict(metric="f1", task="multiclass", num_classes=3, grad_average=False),
                                columns=3),
    "multiclass_weighted_mcc": dict(compile=dict(metric="mcc", task="multiclass", num_classes=3,
                                                 average="weighted", grad_average=True), columns=3, weighted=True),
    "multilabel_micro_f1": dict(compile=dict(metric="f1", task="multilabel", num_classes=3, average="micro",
                                             grad_average=False), columns=3),
    # A metric of the threshold curve: the (4, 1, T) table is all-reduced like any other.
    "auroc": dict(compile=dict(metric="auroc", grad_average=False)),
    # The running estimator: two steps, the second on the shard's logits negated; every rank mixes the global
    # batch into the same state, so the second step is the single process's second step on the whole batch.
    "f1_running_two_steps": dict(compile=dict(metric="f1", estimator="running", momentum=0.5, grad_average=False),
                                 two_steps=True),
    # Dense (N, 3, 4, 5) logits and class indices: reduce='batch' all-reduces the (4, 1, 3, 1) table;
    # reduce='image' keeps each image's entries and all-reduces only (Σ image losses, number of images).
    "dense_dice_batch": dict(compile=dict(metric="dice", task="multiclass", num_classes=3, grad_average=False),
                             columns=3, dense=True),
    "dense_dice_image": dict(compile=dict(metric="dice", task="multiclass", num_classes=3, reduce="image",
                                          grad_average=True), columns=3, dense=True),
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        yield


# ---------------------------------------------------------------------------------------------
# Data and references (this process)


def _shards(sizes, seed, no_positives_rank, weighted, columns=None, task=None, dense=False):
    """Float64 logits, 0/1 targets and optional weights, one dict per rank; with ``columns``, (N, C) logits
    and class indices (multi-class) or (N, C) 0/1 labels (multi-label), the last class or label absent
    from rank 0's shard."""
    generator = torch.Generator().manual_seed(seed)
    shards = []
    for rank, size in enumerate(sizes):
        if dense:
            logits = torch.randn(size, columns, 4, 5, generator=generator, dtype=torch.float64)
            target = torch.randint(columns, (size, 4, 5), generator=generator)
            shards.append({"logits": logits, "target": target, "weight": None})
            continue
        if columns is not None:
            logits = torch.randn(size, columns, generator=generator, dtype=torch.float64)
            if task == "multiclass":
                target = torch.randint(columns - 1 if rank == 0 else columns, (size,), generator=generator)
            else:
                target = (torch.rand(size, columns, generator=generator) < 0.4).long()
                target[:, -1] = 0 if rank == 0 else target[:, -1]
            weight = torch.rand(size, generator=generator, dtype=torch.float64) + 0.2 if weighted else None
            shards.append({"logits": logits, "target": target, "weight": weight})
            continue
        logits = torch.randn(size, generator=generator, dtype=torch.float64) * 0.3  # p near the 0.5 threshold
        target = (torch.rand(size, generator=generator) < 0.4).long()
        if rank == no_positives_rank:
            target.zero_()
        elif size:
            target[0] = 1
        weight = torch.rand(size, generator=generator, dtype=torch.float64) + 0.2 if weighted else None
        shards.append({"logits": logits, "target": target, "weight": weight})
    return shards


def _concatenated(shards):
    weights = [shard["weight"] for shard in shards]
    return (torch.cat([shard["logits"] for shard in shards]), torch.cat([shard["target"] for shard in shards]),
            None if weights[0] is None else torch.cat(weights))


def _reference_loss(case):
    """The same loss without sync, for one process on the concatenated batch."""
    options = dict(case.get("compile", {"metric": "f1"}))
    return metricc.compile_metric(options.pop("metric"), **{**options, "sync": False})


def _oracle_loss(case, logits, target, weight):
    """The oracle's loss for a case, from the case's own statement: its metric's catalog text, the default
    relaxation (AnyLoss's amplifier; the identity, softmax(z), for multi-class), the catalog's direction,
    the case's thresholds and average. None for the curve and running cases, whose references live in
    test_curves.py and test_running.py."""
    options = case.get("compile", {"metric": "f1"})
    name = options["metric"]
    if case.get("two_steps") or name == "auroc" or case.get("dense"):
        return None  # dense: tests/test_dense.py holds MONAI and the plain sums as oracles
    task = options.get("task", "binary")
    if task != "binary":
        relaxation = Relaxation.from_spec("identity" if task == "multiclass" else "anyloss")
        return class_autograd_loss(ReferenceMetric(name), relaxation, catalog_direction(name), logits, target,
                                   task=task, average=options.get("average", "macro"), weight=weight)
    return autograd_loss(ReferenceMetric(name), Relaxation.from_spec("anyloss"), catalog_direction(name), logits,
                         target, weight, options.get("thresholds"))


def _reference_call(case, loss_fn, logits, target, weight):
    """One call of a case's loss (two for the running estimator: the second on the negated logits)."""
    if case.get("two_steps"):
        loss_fn(logits.detach().neg(), target, weight)
    return loss_fn(logits, target, weight)


def _members(case, world_size):
    """The ranks whose shards make the case's global batch."""
    return [0, 1] if case.get("subgroup") else list(range(world_size))


def _ddp_data(world_size):
    generator = torch.Generator().manual_seed(11)
    n = sum(DDP_SHARD_SIZES[world_size])
    x = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    y = ((x[:, 0] + 0.5 * x[:, 1] + 0.7 * torch.randn(n, generator=generator, dtype=torch.float64)) > 1.0).long()
    return x, y


def _mlp():
    # No BatchNorm: under DDP each rank would normalize with its own shard's batch statistics, so the
    # forward itself would differ from one process on the full batch and no loss could be exact
    # (SyncBatchNorm fixes that, but supports only GPU inputs). The seed makes every rank start alike.
    torch.manual_seed(DDP_SEED)
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()


def _train(model, loss_fn, x, y):
    optimizer = torch.optim.SGD(model.parameters(), lr=DDP_LR)
    losses = []
    for _ in range(DDP_STEPS):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def _plan(world_size, folder: Path):
    standalone = folder / "standalone_f1_loss.py"
    assert cli_main(["compile", "f1", "--sync", "--standalone", "-o", str(standalone)]) == 0
    cases = {}
    for index, (name, case) in enumerate(CASES.items()):
        sizes = EMPTY_SHARD_SIZES[world_size] if case.get("empty_shard") else SHARD_SIZES[world_size]
        no_positives = None if case.get("empty_shard") else 0
        cases[name] = {"shards": _shards(sizes, 100 + index, no_positives, case.get("weighted", False),
                                         case.get("columns"), case.get("compile", {}).get("task"),
                                         case.get("dense", False))}
    x, y = _ddp_data(world_size)
    return {"cases": cases, "standalone": str(standalone), "ddp": {"x": x, "y": y}}


# ---------------------------------------------------------------------------------------------
# Workers (spawned processes)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load_standalone(path):
    """Import the CLI-written file by path, with metricc (and sympy, numpy) made unimportable meanwhile."""
    spec = importlib.util.spec_from_file_location("standalone_f1_loss", path)
    module = importlib.util.module_from_spec(spec)
    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name.split(".")[0] in {"metricc", "sympy", "numpy"}:
            raise ImportError(f"the standalone module must not import {name}")
        return real_import(name, *args, **kwargs)

    builtins.__import__ = guarded
    try:
        spec.loader.exec_module(module)
    finally:
        builtins.__import__ = real_import
    return module


def _run_cases(rank, world_size, plan):
    results = {}
    subgroup = torch.distributed.new_group([0, 1])  # every rank takes part in creating it
    for name, case in CASES.items():
        shard = plan["cases"][name]["shards"][rank]
        if case.get("subgroup") and rank not in (0, 1):
            continue
        if case.get("standalone"):
            loss_fn = _load_standalone(plan["standalone"]).F1Loss()  # its default: sync=True
        else:
            options = dict(case["compile"])
            group = subgroup if case.get("subgroup") else None
            loss_fn = metricc.compile_metric(options.pop("metric"), sync=True, process_group=group, **options)
        z = shard["logits"].clone().requires_grad_(True)
        loss = _reference_call(case, loss_fn, z, shard["target"], shard["weight"])
        loss.backward()
        results[name] = {"loss": loss.detach(), "grad": z.grad}

    sizes = DDP_SHARD_SIZES[world_size]
    start = sum(sizes[:rank])
    x, y = (t[start:start + sizes[rank]] for t in (plan["ddp"]["x"], plan["ddp"]["y"]))
    for sync in (True, False):
        model = _mlp()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        losses = _train(ddp, metricc.compile_metric("f1", sync=sync), x, y)
        results[f"ddp_sync={sync}"] = {"losses": losses, "params": [p.detach().clone() for p in model.parameters()]}
    return results


def _worker(rank, world_size, port, plan_path, out_dir):
    out_dir = Path(out_dir)
    try:
        warnings.simplefilter("ignore")
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size,
                                             timeout=datetime.timedelta(seconds=INIT_TIMEOUT_S))
        try:
            results = _run_cases(rank, world_size, torch.load(plan_path))
        finally:
            gc.collect()  # DDP's reducer sits in reference cycles: free it while the group exists, or
            torch.distributed.destroy_process_group()  # gloo can abort at exit ("terminate called ...")
        torch.save(results, out_dir / f"rank{rank}.pt")
    except BaseException:
        (out_dir / f"rank{rank}.error").write_text(traceback.format_exc())
        raise


def _run_group(world_size, plan_path: Path, out_dir: Path):
    """Start one worker per rank; stop them all on the first failure or at the deadline, always."""
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    processes = [context.Process(target=_worker, args=(rank, world_size, port, str(plan_path), str(out_dir)),
                                 name=f"metricc-rank{rank}", daemon=True) for rank in range(world_size)]
    deadline = time.monotonic() + GROUP_TIMEOUT_S
    try:
        for process in processes:
            process.start()
        while True:
            running = [p for p in processes if p.exitcode is None]
            failed = [p for p in processes if p.exitcode not in (None, 0)]
            if not running or failed or time.monotonic() >= deadline:
                break
            multiprocessing.connection.wait([p.sentinel for p in running], timeout=deadline - time.monotonic())
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(10)
    problems = []
    for rank, process in enumerate(processes):
        error = out_dir / f"rank{rank}.error"
        if error.exists():
            problems.append(f"rank {rank} failed:\n{error.read_text()}")
        elif process.exitcode != 0:
            problems.append(f"rank {rank} exit code {process.exitcode}"
                            + (" (stopped at the deadline or after another rank failed)" if process.exitcode < 0
                               else ""))
    if problems:
        pytest.fail(f"world size {world_size}: " + "\n".join(problems), pytrace=False)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(world_size)]


@pytest.fixture(scope="module", params=WORLD_SIZES, ids=lambda w: f"world{w}")
def group(request, tmp_path_factory):
    """(world size, plan, one result dict per rank), from one spawned group per world size."""
    world_size = request.param
    folder = tmp_path_factory.mktemp(f"world{world_size}")
    plan = _plan(world_size, folder)
    torch.save(plan, folder / "plan.pt")
    return world_size, plan, _run_group(world_size, folder / "plan.pt", folder)


# ---------------------------------------------------------------------------------------------
# Tests against the spawned groups


@pytest.mark.parametrize("name", list(CASES))
def test_every_rank_gets_the_global_batch_loss(group, name):
    world_size, plan, results = group
    members = _members(CASES[name], world_size)
    shards = [plan["cases"][name]["shards"][rank] for rank in members]
    logits, target, weight = _concatenated(shards)
    case = CASES[name]
    expected = _reference_call(case, _reference_loss(case), logits, target, weight)
    independent = _oracle_loss(case, logits, target, weight)
    losses = [results[rank][name]["loss"] for rank in members]
    local = [_reference_call(case, _reference_loss(case), s["logits"], s["target"], s["weight"])
             for s in shards if s["logits"].numel()]
    for loss in losses:
        assert torch.equal(loss, losses[0])  # the same all-reduced statistics on every rank
        torch.testing.assert_close(loss, expected, rtol=1e-10, atol=0)
        if independent is not None:
            torch.testing.assert_close(loss, independent, rtol=1e-10, atol=0)
    if len(local) > 1:  # ... and not what a rank would compute on its shard alone (why sync exists)
        assert any(abs(float(value - expected)) > 1e-3 for value in local)


@pytest.mark.parametrize("name", list(CASES))
def test_local_gradients_are_the_global_batch_gradient(group, name):
    world_size, plan, results = group
    members = _members(CASES[name], world_size)
    shards = [plan["cases"][name]["shards"][rank] for rank in members]
    logits, target, weight = _concatenated(shards)
    case = CASES[name]
    z = logits.clone().requires_grad_(True)
    _reference_call(case, _reference_loss(case), z, target, weight).backward()
    z_plain = logits.clone().requires_grad_(True)
    oracle = _oracle_loss(case, z_plain, target, weight)
    if oracle is not None:
        oracle.backward()
    grads = [results[rank][name]["grad"] for rank in members]
    for grad, shard in zip(grads, shards):
        assert grad.shape == shard["logits"].shape
    gathered = torch.cat(grads)
    # grad_average=True scales by the world size, so that DDP's mean over ranks is the global gradient.
    grad_average = CASES[name].get("compile", {}).get("grad_average", True)
    scale = len(members) if grad_average else 1
    assert gathered.abs().max() > 0
    torch.testing.assert_close(gathered, scale * z.grad, rtol=1e-10, atol=1e-15)
    if oracle is not None:
        torch.testing.assert_close(gathered, scale * z_plain.grad, rtol=1e-8, atol=1e-12)


def test_ddp_training_with_sync_is_single_process_full_batch_training(group):
    world_size, plan, results = group
    x, y = plan["ddp"]["x"], plan["ddp"]["y"]
    model = _mlp()
    losses = _train(model, metricc.compile_metric("f1"), x, y)
    assert losses[-1] < losses[0]  # it trains
    for rank in range(world_size):
        synced = results[rank]["ddp_sync=True"]
        torch.testing.assert_close(synced["losses"], losses, rtol=1e-10, atol=0)
        for got, expected in zip(synced["params"], model.parameters()):
            torch.testing.assert_close(got, expected.detach(), rtol=1e-10, atol=1e-13)


def test_ddp_training_without_sync_optimizes_a_different_objective(group):
    world_size, plan, results = group
    x, y = plan["ddp"]["x"], plan["ddp"]["y"]
    model = _mlp()
    _train(model, metricc.compile_metric("f1"), x, y)
    expected = torch.cat([p.detach().flatten() for p in model.parameters()])
    for rank in range(world_size):
        unsynced = torch.cat([p.flatten() for p in results[rank]["ddp_sync=False"]["params"]])
        # DDP keeps the ranks' parameters equal, but the mean of per-shard F1 gradients is not the F1
        # gradient of the global batch: the parameters drift away from full-batch training.
        assert torch.equal(unsynced, torch.cat([p.flatten() for p in results[0]["ddp_sync=False"]["params"]]))
        assert (unsynced - expected).norm() > 1e-3 * expected.norm()
    per_rank_first_losses = [results[rank]["ddp_sync=False"]["losses"][0] for rank in range(world_size)]
    assert len({float(loss) for loss in per_rank_first_losses}) == world_size  # each rank sees its own F1


# ---------------------------------------------------------------------------------------------
# Single process


def test_standalone_sync_module_imports_only_torch(tmp_path):
    path = tmp_path / "f1_loss.py"
    assert cli_main(["compile", "f1", "--sync", "--standalone", "-o", str(path)]) == 0
    tree = ast.parse(path.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"torch", "math", "warnings"}
    module = _load_standalone(path)
    assert module.F1Loss().sync is True
    assert "all_reduce" in path.read_text()


@pytest.fixture(params=["no_group", "world_of_one"])
def single_process(request, monkeypatch):
    """This process alone: no process group at all, or an initialized gloo group of world size 1."""
    if torch.distributed.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    if request.param == "no_group":
        yield request.param
        return
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                                         world_size=1, timeout=datetime.timedelta(seconds=INIT_TIMEOUT_S))
    try:
        assert torch.distributed.get_world_size() == 1
        yield request.param
    finally:
        torch.distributed.destroy_process_group()


def test_sync_in_a_single_process_is_sync_false(single_process):
    shards = _shards((9, 14), seed=5, no_positives_rank=None, weighted=True)
    logits, target, weight = _concatenated(shards)
    for options in (dict(), dict(thresholds=[0.3, 0.5, 0.7]), dict(grad_average=False)):
        outputs = []
        for sync in (True, False):
            loss_fn = metricc.compile_metric("f1", sync=sync, **options)
            z = logits.clone().requires_grad_(True)
            loss = loss_fn(z, target, weight)
            loss.backward()
            outputs.append((loss.detach(), z.grad))
        (loss_sync, grad_sync), (loss_plain, grad_plain) = outputs
        assert torch.equal(loss_sync, loss_plain)
        assert torch.equal(grad_sync, grad_plain)  # no world-size scaling either


@pytest.mark.parametrize("single_process", ["world_of_one"], indirect=True)
def test_process_group_of_one_rank_is_sync_false(single_process):
    group = torch.distributed.new_group([0])
    loss_fn = metricc.compile_metric("f1", sync=True, process_group=group)
    assert loss_fn.process_group is group
    logits, target, weight = _concatenated(_shards((9, 14), seed=6, no_positives_rank=None, weighted=True))
    outputs = []
    for candidate in (loss_fn, metricc.compile_metric("f1")):
        z = logits.clone().requires_grad_(True)
        loss = candidate(z, target, weight)
        loss.backward()
        outputs.append((loss.detach(), z.grad))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])


def test_empty_batch_in_a_single_process_is_an_error_with_sync_too(single_process):
    for sync in (False, True):
        with pytest.raises(ValueError, match="batch is empty"):
            metricc.compile_metric("f1", sync=sync)(torch.zeros(0, dtype=torch.float64), torch.zeros(0))
