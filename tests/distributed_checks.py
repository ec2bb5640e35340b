"""Checks that run inside an MPI job, started by tests/test_distributed.py:

    mpiexec -n N python -m tests.distributed_checks BACKEND DEVICE CHECK [CHECK ...]

Every rank computes the one-process reference itself (the whole batch, rank 0's initial weights) and compares
its own share with it; a failed check raises, and minidl.distributed's hook aborts the job naming the rank, so
the test sees a non-zero exit.  Rank 0 prints "ok CHECK" after each check that passed on every rank.
"""
import sys

import numpy as np

import minidl as mdl
import minidl.distributed as dist
from minidl import nn, optim
from minidl.data import ArrayDataset, DistributedSampler


def everyone(a):
    """Every rank's copy of the host array ``a``, on every rank."""
    return dist.group().comm.allgather(np.asarray(a))


def close(a, b, what, rtol=1e-5, atol=1e-6):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol):
        err = np.abs(a - b).max() if a.shape == b.shape else f"shapes {a.shape} and {b.shape}"
        raise AssertionError(f"rank {dist.get_rank()}: {what} differs from the one-process reference (max {err})")


def share(n):
    """This rank's rows of a batch of n (np.array_split: shares differ by at most one)."""
    r, w = dist.get_rank(), dist.get_world_size()
    bounds = np.cumsum([0] + [len(s) for s in np.array_split(np.arange(n), w)])
    return slice(bounds[r], bounds[r + 1])


def T(a, device, requires_grad=False):
    return mdl.tensor(a, device=device, requires_grad=requires_grad)


# ---------------------------------------------------------------- collectives
def check_collectives(device):
    r, w = dist.get_rank(), dist.get_world_size()
    base = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = T(base + r, device)
    dist.all_reduce(t)
    close(t.numpy(), w * base + sum(range(w)), "all_reduce sum", 0, 0)
    t = T(base * (r + 1), device)
    dist.all_reduce(t, op="mean")
    close(t.numpy(), base * (w + 1) / 2, "all_reduce mean")
    t = T(base - 3 * r, device).T  # not contiguous: reduced through a copy, written back
    work = dist.all_reduce(t, op=dist.ReduceOp.MAX, async_op=True)
    work.wait()
    close(t.numpy(), base.T, "all_reduce max (async, non-contiguous)", 0, 0)
    t = T(np.full(4, r + 1, np.int64), device)
    dist.all_reduce(t)
    assert t.dtype == np.int64 and (t.numpy() == w * (w + 1) // 2).all(), t
    t = T(np.full(3, float(r)), device)
    dist.broadcast(t, src=w - 1)
    close(t.numpy(), np.full(3, w - 1.0), "broadcast", 0, 0)
    dist.barrier()


# ---------------------------------------------------------------- DistributedDataParallel
def cnn(batch_norm=False):
    layers = [nn.Conv2d(1, 4, 3, padding=1)] + ([nn.BatchNorm2d(4)] if batch_norm else []) + [
        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def wrapped_and_reference(device, batch_norm=False, bucket_cap_mb=25.0, sync_bn=False):
    """A DDP model (each rank initialised differently: the wrap must broadcast rank 0's weights) and a plain
    copy of rank 0's initial model, with an SGD optimizer each."""
    mdl.manual_seed(100 + dist.get_rank())
    model = cnn(batch_norm).to(device)
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=bucket_cap_mb)
    ref = cnn(batch_norm).to(device)
    ref.load_state_dict(model.state_dict())
    kw = dict(lr=0.1, momentum=0.9, weight_decay=1e-3)
    return ddp, optim.SGD(model.parameters(), **kw), ref, optim.SGD(ref.parameters(), **kw)


def batch(step, n=12):
    rng = np.random.default_rng(step)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, n)


def train_step(model, opt, x, y, device):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(T(x, device)), T(y, device))
    loss.backward()
    opt.step()
    return loss


def check_ddp_step(device, batch_norm=False, sync_bn=False):
    """One DDP step on N ranks, each on its share, equals one step of one process on the whole batch; after
    several steps the ranks' parameters are bit-identical (and still close to the one-process run)."""
    ddp, opt, ref, ref_opt = wrapped_and_reference(device, batch_norm, bucket_cap_mb=0.001, sync_bn=sync_bn)
    assert len(ddp._buckets) > 2, "the tiny bucket cap should make several buckets"
    mine = share(12)
    for step in range(4):
        x, y = batch(step)
        train_step(ddp, opt, x[mine], y[mine], device)
        train_step(ref, ref_opt, x, y, device)
        if step == 0:
            for (name, p), q in zip(ddp.module.named_parameters(), ref.parameters()):
                close(p.grad.numpy(), q.grad.numpy(), f"gradient of {name} after one step")
                close(p.numpy(), q.numpy(), f"{name} after one step")
    for (name, p), q in zip(ddp.module.named_parameters(), ref.parameters()):
        copies = everyone(p.numpy())
        assert all(np.array_equal(copies[0], c) for c in copies), f"{name} differs between ranks after 4 steps"
        close(p.numpy(), q.numpy(), f"{name} after 4 steps", rtol=1e-4, atol=1e-5)
    if sync_bn:  # running statistics of the whole batch
        for (name, b), c in zip(ddp.module.named_buffers(), ref.buffers()):
            close(b.numpy(), c.numpy(), f"buffer {name} after 4 steps", rtol=1e-4, atol=1e-5)


def check_ddp_no_sync(device):
    """Gradient accumulation: two backward passes inside no_sync, then one outside; the averaged sum equals
    the one-process gradient of the two whole micro-batches."""
    ddp, opt, ref, _ = wrapped_and_reference(device)
    mine = share(12)
    opt.zero_grad()
    ref.zero_grad()
    for step in range(3):
        x, y = batch(10 + step)
        if step < 2:
            with ddp.no_sync():
                nn.functional.cross_entropy(ddp(T(x[mine], device)), T(y[mine], device)).backward()
            local = [p.grad.numpy().copy() for p in ddp.parameters()]
        else:
            nn.functional.cross_entropy(ddp(T(x[mine], device)), T(y[mine], device)).backward()
        nn.functional.cross_entropy(ref(T(x, device)), T(y, device)).backward()
    for (name, p), q in zip(ddp.module.named_parameters(), ref.parameters()):
        close(p.grad.numpy(), q.grad.numpy(), f"accumulated gradient of {name}")
    if dist.get_world_size() > 1:  # inside no_sync the gradients stayed local: they differ between ranks
        assert not all(np.array_equal(everyone(g)[0], c) for g in local for c in everyone(g)), "no_sync synced"


def check_ddp_unused_parameter(device):
    mdl.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(4, 3)).to(device)
    ddp = nn.parallel.DistributedDataParallel(model)
    ddp.module[0](T(np.ones((2, 4), np.float32), device)).sum().backward()  # the second layer takes no part
    try:
        ddp(T(np.ones((2, 4), np.float32), device))
    except RuntimeError as e:
        assert "1.weight" in str(e) and "0.weight" not in str(e), e
    else:
        raise AssertionError("a forward after a backward that left parameters without gradients must raise")


# ---------------------------------------------------------------- DistributedSampler
def check_sampler(device):
    r, w = dist.get_rank(), dist.get_world_size()
    ds = ArrayDataset(np.zeros((10, 1, 1, 1), np.uint8), np.arange(10))
    for drop_last in (False, True):
        sampler = DistributedSampler(ds, shuffle=True, seed=3, drop_last=drop_last)
        assert (sampler.num_replicas, sampler.rank) == (w, r)
        epochs = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            mine = sampler.index_array()
            assert len(mine) == len(sampler), (len(mine), len(sampler))
            parts = everyone(mine)
            assert len({len(p) for p in parts}) == 1, "the ranks' shares differ in length"
            whole = np.concatenate(parts)
            if drop_last:  # disjoint, and all but the tail that does not fill a round
                assert len(set(whole.tolist())) == len(whole) == w * (10 // w), whole
            else:  # every index, padded with repeats to a multiple of the world size
                assert set(whole.tolist()) == set(range(10)) and len(whole) == w * -(-10 // w), whole
            epochs.append(whole)
        assert not np.array_equal(epochs[0], epochs[1]), "set_epoch must change the order"


# ---------------------------------------------------------------- SyncBatchNorm
def check_sync_batch_norm(device):
    """SyncBatchNorm on unequal shares against BatchNorm on the whole batch (float64): output, the input's
    gradient, the parameters' gradients summed over the ranks, running statistics, evaluation mode."""
    for shape, ref_cls in (((10, 3, 4, 5), nn.BatchNorm2d), ((7, 4), nn.BatchNorm1d)):
        rng = np.random.default_rng(7)
        x = rng.standard_normal(shape) * 3 + rng.standard_normal((1, shape[1]) + (1,) * (len(shape) - 2))
        upstream = rng.standard_normal(shape)
        ref = ref_cls(shape[1], momentum=0.3).to(device).double()
        ref.weight.data[...] = T(rng.uniform(0.5, 1.5, shape[1]), device).data
        ref.bias.data[...] = T(rng.standard_normal(shape[1]), device).data
        layer = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(ref_cls(shape[1], momentum=0.3)))[0]
        layer.to(device).double().load_state_dict(ref.state_dict())
        assert type(layer) is nn.SyncBatchNorm
        mine = share(shape[0])
        xs, xw = T(x[mine], device, True), T(x, device, True)
        ys, yw = layer(xs), ref(xw)
        close(ys.numpy(), yw.numpy()[mine], f"SyncBatchNorm output {shape}", 1e-10, 1e-12)
        (ys * T(upstream[mine], device)).sum().backward()
        (yw * T(upstream, device)).sum().backward()
        close(xs.grad.numpy(), xw.grad.numpy()[mine], f"SyncBatchNorm input gradient {shape}", 1e-9, 1e-11)
        for name in ("weight", "bias"):
            g = getattr(layer, name).grad
            dist.all_reduce(g)
            close(g.numpy(), getattr(ref, name).grad.numpy(), f"SyncBatchNorm {name} gradient {shape}", 1e-9, 1e-11)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            close(getattr(layer, name).numpy(), getattr(ref, name).numpy(), f"SyncBatchNorm {name}", 1e-10, 1e-12)
        layer.eval()
        ref.eval()
        close(layer(T(x[mine], device)).numpy(), ref(T(x, device)).numpy()[mine], "SyncBatchNorm in eval mode")


# ---------------------------------------------------------------- Trainer
def check_trainer(device):
    """Trainer on a DDP model over DistributedSamplers equals a one-process Trainer over the same global batches
    (the one-process run visits the same permutation: DistributedSampler with one replica): history, weights;
    validation on unequal shards equals a one-process evaluation; only rank 0 writes; a run stopped after one
    epoch and resumed ends where the uninterrupted one does."""
    import os
    import tempfile

    from minidl.data import DataLoader, Subset
    from minidl.train import Trainer, evaluate
    r, w = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(5)
    x = rng.integers(0, 255, (48, 1, 8, 8)).astype(np.uint8)
    y = rng.integers(0, 3, 48)
    x[np.arange(48), 0, y * 2, :] = 255  # something to learn
    train, val = ArrayDataset(x[:36], y[:36]), ArrayDataset(x[36:46], y[36:46])  # 10: unequal shards for 3 ranks
    mine = np.array_split(np.arange(len(val)), w)[r]
    out = dist.broadcast_object(tempfile.mkdtemp(prefix="minidl-trainer-") if r == 0 else None)

    def trainer(distributed, out_dir, epochs, resume=None):
        mdl.manual_seed(0)
        model = cnn(batch_norm=True).to(device)
        if distributed:
            model = nn.parallel.DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(model))
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sampler = DistributedSampler(train, seed=1) if distributed else DistributedSampler(train, 1, 0, seed=1)
        loader = DataLoader(train, batch_size=12 // w if distributed else 12, sampler=sampler, device=device,
                            seed=2)
        vl = DataLoader(Subset(val, mine) if distributed else val, batch_size=4, device=device)
        t = Trainer(model, opt, loader, vl, device=device, out_dir=out_dir, progress=False)
        t.fit(epochs, resume=resume)
        return t

    one = trainer(False, None, 2)
    many = trainer(True, os.path.join(out, "run"), 2)
    for a, b in zip(one.history, many.history):
        for k in ("train_loss", "train_acc", "val_loss", "val_acc"):
            close(b[k], a[k], f"history {k} of epoch {a['epoch']}")
    for (name, p), q in zip(many.module.named_parameters(), one.module.parameters()):
        close(p.numpy(), q.numpy(), f"{name} after 2 epochs", rtol=1e-4, atol=1e-5)
    val_loader = DataLoader(Subset(val, mine), batch_size=3, device=device)
    ev, ev_one = evaluate(many.module, val_loader, sharded=True), evaluate(many.module, DataLoader(val, batch_size=5))
    assert ev["n"] == ev_one["n"] == 10 and ev["acc"] == ev_one["acc"], (ev, ev_one)
    close(ev["loss"], ev_one["loss"], "sharded evaluation loss")
    dist.barrier()
    files = sorted(os.listdir(os.path.join(out, "run")))
    assert files == ["best.ckpt", "history.csv", "history.json", "last.ckpt"], files
    resumed_dir = os.path.join(out, "resumed")
    trainer(True, resumed_dir, 1)
    dist.barrier()
    resumed = trainer(True, resumed_dir, 2, resume=os.path.join(resumed_dir, "last.ckpt"))
    for (name, p), q in zip(resumed.module.named_parameters(), many.module.parameters()):
        close(p.numpy(), q.numpy(), f"{name}, resumed after epoch 1, against the uninterrupted run", 0, 0)
    assert [h["val_acc"] for h in resumed.history] == [h["val_acc"] for h in many.history]
    dist.barrier()
    if r == 0:
        import shutil
        shutil.rmtree(out)


def check_fail(device):
    """The last rank raises after a collective; the others go on to the next collective, where they would wait
    forever if the failing rank did not abort the job."""
    dist.barrier()
    if dist.get_rank() == dist.get_world_size() - 1:
        raise ValueError("a deliberate failure on the last rank")
    t = T(np.ones(3, np.float32), device)
    dist.all_reduce(t)
    raise AssertionError("unreachable: the all_reduce should never complete")


CHECKS = {"collectives": check_collectives, "ddp": check_ddp_step,
          "ddp_sync_bn": lambda device: check_ddp_step(device, batch_norm=True, sync_bn=True),
          "no_sync": check_ddp_no_sync, "unused": check_ddp_unused_parameter, "sampler": check_sampler,
          "sync_bn": check_sync_batch_norm, "trainer": check_trainer, "fail": check_fail}


def main(argv):
    backend, device, names = argv[0], argv[1], argv[2:]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise SystemExit(f"unknown checks {unknown}; known: {sorted(CHECKS)}")
    dist.init_process_group(backend)
    for name in names:
        CHECKS[name](device)
        dist.barrier()
        if dist.get_rank() == 0:
            print(f"ok {name} (world size {dist.get_world_size()}, backend {backend}, device {device})", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
