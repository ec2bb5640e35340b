"""Training loop: ``Trainer`` / ``fit`` and ``evaluate``.

One epoch = one pass over the training loader with a tqdm bar showing the running loss and
accuracy, then an evaluation on the validation loader.  Each epoch appends a row to the history
(``epoch, train_loss, train_acc, val_loss, val_acc, lr, time_s``), which is written as JSON and
CSV when an output folder is given, together with ``last.ckpt`` (everything needed to resume) and
``best.ckpt`` (the model at the best validation epoch).

Losses and correct counts are summed on the device, as arrays; the host reads them only every
``sync_every`` steps (for the bar and the NaN check) and at the end of the epoch, so a GPU run is
not stalled by a ``float(loss)`` per step.  A non-finite loss stops the run with a
``FloatingPointError`` naming the epoch and the first bad step; so do, after each epoch and before
anything of it is written, a non-finite validation loss and a parameter or buffer holding NaN/inf
(a step whose loss is finite can still overflow the weights).  The JSON files hold no bare NaN.

Data-parallel training (``minidl.distributed``): give the Trainer a ``DistributedDataParallel`` model, a
training loader over this rank's share (a ``DistributedSampler``: the Trainer calls its ``set_epoch`` every
epoch) and a validation loader over this rank's shard of the validation set (disjoint shards that together
make the whole set).  Then training and validation losses and counts are summed over the ranks, so the history
holds the whole job's figures (validation ones equal a one-process evaluation); only rank 0 prints and writes
files, and checkpoints hold the wrapped module (they load into a one-process model as they are).

Resuming (``fit(..., resume=path)``) restores the model, the optimizer, the scheduler, minidl's
random generators (dropout masks, augmentation, initialisation), the training loader's shuffling
generator, the history and the best-so-far, so that a run stopped after epoch k and resumed ends
bit for bit where an uninterrupted run with the same seed ends (on the CPU).
"""
from __future__ import annotations

import csv
import json
import math
import numbers
import os
import time

import numpy as np

from minidl import backend
from minidl import distributed as dist
from minidl.autograd import Tensor, no_grad
from minidl.nn.parallel import DistributedDataParallel

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s")


# ----------------------------------------------------------------- helpers
def _default_loss():
    from minidl.ops import cross_entropy
    return cross_entropy


def _batch_to(batch, device):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"a loader must yield (inputs, targets) pairs, got {type(batch).__name__}"
                         + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    x, y = batch
    x = x if isinstance(x, Tensor) else Tensor(x)
    y = y if isinstance(y, Tensor) else Tensor(y)
    if x.device != device:
        x = x.to(device)
    if y.device != device:
        y = y.to(device)
    return x, y


def _model_device(model) -> str:
    for p in model.parameters():
        return p.device
    return "cpu"


def _loader_state(loader):
    """The shuffling RNG state of a loader (DataLoader.state_dict, or its ``generator``)."""
    if loader is None:
        return None
    if hasattr(loader, "state_dict"):
        return loader.state_dict()
    gen = getattr(loader, "generator", None)
    if gen is not None and hasattr(gen, "bit_generator"):
        return {"generator": gen.bit_generator.state}
    return None


def _load_loader_state(loader, state):
    if loader is None or state is None:
        return
    if hasattr(loader, "load_state_dict"):
        loader.load_state_dict(state)
    elif getattr(loader, "generator", None) is not None and "generator" in state:
        loader.generator.bit_generator.state = state["generator"]


def _is_plateau(scheduler) -> bool:
    return type(scheduler).__name__ == "ReduceLROnPlateau" or \
        any(c.__name__ == "ReduceLROnPlateau" for c in type(scheduler).__mro__)


def _non_finite_tensors(model) -> list:
    """Names of the floating-point parameters and buffers of ``model`` that hold NaN or inf (one host read)."""
    named = [(k, t) for k, t in model.state_dict().items() if t.dtype.kind in "fc"]
    if not named:
        return []
    xp = named[0][1].xp
    finite = backend.to_numpy(xp.stack([xp.isfinite(t.data).all() for _, t in named]))
    return [k for (k, _), ok in zip(named, finite) if not ok]


def _lr(optimizer):
    groups = getattr(optimizer, "param_groups", None)
    return float(groups[0]["lr"]) if groups else None


class _Running:
    """Sums of loss*n, correct and n, kept as device arrays until read."""

    def __init__(self):
        self.loss = None      # device scalar
        self.correct = None   # device scalar
        self.n = 0
        self.step_losses = []  # per-step device scalars not yet checked for NaN/inf
        self.first_unchecked = 0

    def add(self, loss: Tensor, logits: Tensor, y: Tensor):
        n = y.shape[0]
        l = loss.data * n
        self.loss = l if self.loss is None else self.loss + l
        if logits.ndim == 2 and y.ndim == 1:
            c = (logits.data.argmax(axis=1) == y.data).sum()
            self.correct = c if self.correct is None else self.correct + c
        self.n += n
        self.step_losses.append(loss.data)

    def check_finite(self, epoch):
        """Raise if any step loss since the last check is NaN/inf (one host read)."""
        if not self.step_losses:
            return
        xp = backend.get_array_module(self.step_losses[0])
        vals = xp.stack([xp.asarray(v) for v in self.step_losses])
        finite = backend.to_numpy(xp.isfinite(vals))
        if not finite.all():
            i = int((~finite).argmax())
            bad = float(backend.to_numpy(vals[i]))
            step = self.first_unchecked + i + 1
            raise FloatingPointError(
                f"the training loss became {bad} at epoch {epoch}, step {step} (batch {step} of the epoch): "
                "stopping; lower the learning rate, check the inputs for NaN/inf, or clip gradients")
        self.first_unchecked += len(self.step_losses)
        self.step_losses = []

    def values(self, across_ranks: bool = False):
        """(mean loss, accuracy) on the host; ``across_ranks``: of the samples of every rank together."""
        totals = np.array([0.0 if self.loss is None else float(backend.to_numpy(self.loss)),
                           0.0 if self.correct is None else float(backend.to_numpy(self.correct)), self.n])
        if across_ranks:
            dist.group().all_reduce(totals, "sum")
        loss_sum, correct, n = totals
        loss = loss_sum / n if n else float("nan")
        acc = correct / n if (n and self.correct is not None) else None
        return float(loss), (None if acc is None else float(acc))


# ----------------------------------------------------------------- evaluate
def evaluate(model, loader, loss_fn=None, device=None, return_outputs: bool = False, progress: bool = False,
             desc: str = "eval", sharded: bool = False):
    """Mean loss and accuracy of ``model`` over ``loader``, in eval mode and without a graph.

    Returns ``{"loss", "acc", "n"}``; with ``return_outputs=True`` also ``"logits"`` (N, C) and
    ``"targets"`` (N,) as NumPy arrays.  The model's train/eval mode is restored afterwards.
    ``sharded=True`` (a data-parallel job): ``loader`` holds this rank's shard of the set; sums and counts are
    reduced over the ranks and the outputs gathered in rank order, so every rank returns what one process
    evaluating the shards one after the other would.
    """
    loss_fn = loss_fn or _default_loss()
    device = backend.check_device(device) if device is not None else _model_device(model)
    was_training = getattr(model, "training", False)
    model.eval()
    run = _Running()
    outs, tgts = [], []
    try:
        with no_grad():
            it = loader
            if progress:
                from tqdm.auto import tqdm
                it = tqdm(loader, desc=desc, leave=False, unit="batch")
            for batch in it:
                x, y = _batch_to(batch, device)
                logits = model(x)
                run.add(loss_fn(logits, y), logits, y)
                if return_outputs:
                    outs.append(logits.data)
                    tgts.append(y.data)
    finally:
        if was_training:
            model.train()
    n = run.n
    if sharded:
        n = int(np.asarray(dist.group().all_gather_object(run.n)).sum())
    if n == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    loss, acc = run.values(across_ranks=sharded)
    result = {"loss": loss, "acc": acc, "n": n}
    if return_outputs:
        logits = [backend.to_numpy(o) for o in outs]
        targets = [backend.to_numpy(t) for t in tgts]
        if sharded:
            logits = [a for part in dist.group().all_gather_object(logits) for a in part]
            targets = [a for part in dist.group().all_gather_object(targets) for a in part]
        result["logits"] = np.concatenate(logits)
        result["targets"] = np.concatenate(targets)
    return result


# ----------------------------------------------------------------- history
def json_ready(obj):
    """``obj`` with every NaN or infinite float replaced by None: JSON has no such numbers, and Python's
    ``json`` would write them as bare ``NaN``/``Infinity``, which other readers refuse."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def save_history(history: list, out_dir, stem: str = "history"):
    """Write the per-epoch rows as ``{stem}.json`` (non-finite numbers as null) and ``{stem}.csv``;
    returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    jp, cp = os.path.join(out_dir, f"{stem}.json"), os.path.join(out_dir, f"{stem}.csv")
    with open(jp, "w") as f:
        json.dump(json_ready(history), f, indent=1, allow_nan=False)
    fields = list(HISTORY_FIELDS) + sorted({k for row in history for k in row} - set(HISTORY_FIELDS))
    with open(cp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in history:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return jp, cp


# ----------------------------------------------------------------- Trainer
class Trainer:
    """Fit ``model`` with ``optimizer`` on ``train_loader``, validating on ``val_loader``.

    Arguments:
        loss_fn: ``loss_fn(logits, targets) -> scalar Tensor`` (mean over the batch);
            default ``cross_entropy``.
        scheduler: stepped once per epoch after validation (``scheduler_interval="epoch"``) or after
            every optimizer step (``"step"``, e.g. OneCycleLR).  ReduceLROnPlateau gets the monitored
            metric.
        device: 'cpu' or 'cuda'; the model is moved there, batches too.
        out_dir: where history.json/csv, last.ckpt and best.ckpt go (None: nothing written).
        monitor: 'val_acc' (higher is better) or 'val_loss' (lower is better); falls back to
            the training metric when there is no validation loader.
        early_stopping: stop when ``monitor`` has not improved for this many epochs (None: never).
        sync_every: read the running loss/accuracy on the host (bar update, NaN check) every this
            many steps; default 1 on the CPU (free) and 50 on the GPU.
    """

    def __init__(self, model, optimizer, train_loader, val_loader=None, loss_fn=None, scheduler=None,
                 scheduler_interval: str = "epoch", device=None, out_dir=None, monitor: str = "val_acc",
                 early_stopping: int | None = None, progress: bool = True, sync_every: int | None = None,
                 checkpoint: bool = True):
        if monitor not in ("val_acc", "val_loss", "train_acc", "train_loss"):
            raise ValueError(f"monitor must be 'val_acc', 'val_loss', 'train_acc' or 'train_loss', got {monitor!r}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        if early_stopping is not None and early_stopping < 1:
            raise ValueError(f"early_stopping is a patience in epochs (>= 1) or None, got {early_stopping}")
        self.device = backend.check_device(device) if device is not None else _model_device(model)
        self.model = model.to(self.device)
        self.ddp = model if isinstance(model, DistributedDataParallel) else None
        self.module = model.module if self.ddp is not None else model  # what checkpoints hold
        is_main = self.ddp is None or self.ddp.process_group.rank == 0  # the rank that prints and writes
        progress, out_dir = (progress, out_dir) if is_main else (False, None)
        self.optimizer = optimizer
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.loss_fn = loss_fn or _default_loss()
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.out_dir = os.fspath(out_dir) if out_dir is not None else None
        if val_loader is None and monitor.startswith("val_"):
            monitor = "train_" + monitor[4:]
        self.monitor = monitor
        self.early_stopping = early_stopping
        self.progress = progress
        self.sync_every = sync_every or (1 if self.device == "cpu" else 50)
        self.checkpoint = checkpoint
        self.history: list = []
        self.epoch = 0               # epochs completed
        self.best_epoch = None
        self.best_value = None
        self.stopped_early = False

    # ------------------------------------------------------------ state
    def _better(self, value) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.monitor.endswith("acc") else value < self.best_value

    def _extra_state(self) -> dict:
        return {"train_loader": _loader_state(self.train_loader), "history": self.history,
                "best_epoch": self.best_epoch, "best_value": self.best_value, "monitor": self.monitor}

    def _load_extra(self, epoch, extra: dict):
        _load_loader_state(self.train_loader, extra.get("train_loader"))
        self.epoch = int(epoch)
        self.history = list(extra.get("history") or [])
        self.best_epoch = extra.get("best_epoch")
        self.best_value = extra.get("best_value")

    def state_dict(self) -> dict:
        """Everything a resumed run needs, in memory (``save_checkpoint`` writes the same to a file)."""
        return {"epoch": self.epoch, "model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "rng": backend.get_rng_state(), "extra": self._extra_state()}

    def load_state_dict(self, state: dict):
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        backend.set_rng_state(state["rng"])
        self._load_extra(state["epoch"], state["extra"])

    def save_checkpoint(self, path):
        """Write model, optimizer, scheduler, RNG states, loader shuffling state, history and
        best-so-far to ``path`` with ``minidl.io.save_checkpoint``."""
        from minidl import io
        io.save_checkpoint(path, model=self.module, optimizer=self.optimizer, scheduler=self.scheduler,
                           epoch=self.epoch, extra=self._extra_state())
        return os.fspath(path)

    def resume(self, path):
        """Load a checkpoint written by ``save_checkpoint`` (e.g. ``out_dir/last.ckpt``); all or nothing: a
        checkpoint that does not fit raises CheckpointError with the trainer and its objects unchanged."""
        from minidl import io
        ckpt = io.load_checkpoint(path, model=self.module, optimizer=self.optimizer, scheduler=self.scheduler,
                                  map_location=self.device, validate=self._check_resumable)  # restores the RNGs too
        self._load_extra(ckpt["epoch"], ckpt.get("extra") or {})
        return self

    def _check_resumable(self, ckpt: dict):
        """Raise unless ``ckpt`` holds what ``_load_extra`` needs, of the right types (changes nothing)."""
        epoch, extra = ckpt.get("epoch"), ckpt.get("extra") or {}
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"its epoch is {epoch!r:.60}, not a count of epochs")
        if not isinstance(extra, dict):
            raise TypeError(f"its 'extra' is a {type(extra).__name__}, not the trainer's dict")
        history = extra.get("history") or []
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise TypeError("its history is not a list of per-epoch dicts")
        best_epoch, best_value = extra.get("best_epoch"), extra.get("best_value")
        if best_epoch is not None and (not isinstance(best_epoch, int) or isinstance(best_epoch, bool)):
            raise TypeError(f"its best_epoch is {best_epoch!r:.60}, not an epoch")
        if best_value is not None and (not isinstance(best_value, numbers.Real) or isinstance(best_value, bool)):
            raise TypeError(f"its best_value is {best_value!r:.60}, not a number")
        state = extra.get("train_loader")
        gen = getattr(self.train_loader, "generator", None)
        if state is not None and not hasattr(self.train_loader, "load_state_dict") and gen is not None:
            if not isinstance(state, dict) or "generator" not in state:
                raise TypeError(f"its loader state is {state!r:.60}, not a dict with a 'generator' state")
            type(gen.bit_generator)().state = state["generator"]  # on a scratch generator

    # ------------------------------------------------------------ loop
    def train_epoch(self, epoch: int, epochs: int | None = None):
        """One pass over the training loader; returns (mean loss, accuracy)."""
        self.model.train()
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # a DistributedSampler: a new order each epoch, the same on every rank
            sampler.set_epoch(epoch)
        run = _Running()
        bar = None
        it = self.train_loader
        if self.progress:
            from tqdm.auto import tqdm
            total = len(self.train_loader) if hasattr(self.train_loader, "__len__") else None
            bar = it = tqdm(self.train_loader, total=total, unit="batch", dynamic_ncols=True,
                            desc=f"epoch {epoch}" + (f"/{epochs}" if epochs else ""))
        try:
            for step, batch in enumerate(it, 1):
                x, y = _batch_to(batch, self.device)
                logits = self.model(x)
                loss = self.loss_fn(logits, y)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                if self.scheduler is not None and self.scheduler_interval == "step":
                    self.scheduler.step()
                run.add(loss, logits, y)
                if step % self.sync_every == 0:
                    run.check_finite(epoch)
                    if bar is not None:
                        l, a = run.values()
                        bar.set_postfix(loss=f"{l:.4f}", acc="-" if a is None else f"{a:.4f}", refresh=False)
            run.check_finite(epoch)
        finally:
            if bar is not None:
                bar.close()
        if run.n == 0:
            raise ValueError("the training loader yielded no samples")
        return run.values(across_ranks=self.ddp is not None)

    def fit(self, epochs: int, resume=None):
        """Train until ``epochs`` epochs are done (counting those of a resumed checkpoint);
        returns the history (a list of per-epoch dicts).  Sets minidl's malloc thresholds for the process
        (``backend.set_malloc_thresholds``: MINIDL_MALLOC=system leaves glibc's defaults)."""
        backend.set_malloc_thresholds()
        if resume is not None:
            self.resume(resume)
        since_best = 0 if self.best_epoch is None else self.epoch - self.best_epoch
        while self.epoch < epochs:
            epoch = self.epoch + 1
            t0 = time.perf_counter()
            lr = _lr(self.optimizer)
            train_loss, train_acc = self.train_epoch(epoch, epochs)
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                   "val_loss": None, "val_acc": None, "lr": lr}
            if self.val_loader is not None:
                if self.ddp is not None:
                    self.ddp.sync_buffers()  # one model on every shard: rank 0's running statistics
                ev = evaluate(self.module, self.val_loader, self.loss_fn, self.device, sharded=self.ddp is not None)
                row["val_loss"], row["val_acc"] = ev["loss"], ev["acc"]
            self._check_finite(epoch, row["val_loss"])
            backend.synchronize(self.device)
            row["time_s"] = time.perf_counter() - t0
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                if _is_plateau(self.scheduler):
                    self.scheduler.step(row[self.monitor])
                else:
                    self.scheduler.step()
            self.history.append(row)
            self.epoch = epoch
            improved = self._better(row[self.monitor])
            if improved:
                self.best_epoch, self.best_value = epoch, row[self.monitor]
                since_best = 0
            else:
                since_best += 1
            self._report(row, improved)
            if self.out_dir is not None:
                save_history(self.history, self.out_dir)
                if self.checkpoint:
                    if improved:
                        from minidl import io
                        io.save_checkpoint(os.path.join(self.out_dir, "best.ckpt"), model=self.module,
                                           epoch=epoch, extra={self.monitor: row[self.monitor]})
                    self.save_checkpoint(os.path.join(self.out_dir, "last.ckpt"))
            if self.early_stopping is not None and since_best >= self.early_stopping:
                self.stopped_early = True
                if self.progress:
                    print(f"early stopping: {self.monitor} has not improved for {since_best} epochs "
                          f"(best {self.best_value:.4f} at epoch {self.best_epoch})")
                break
        return self.history

    def _check_finite(self, epoch, val_loss):
        """Stop before epoch ``epoch`` writes anything when a weight or the validation loss is NaN/inf."""
        kept = ""
        if self.out_dir is not None:
            kept = "; its history and checkpoints were not written" + (
                f" ({self.out_dir} holds epoch {self.epoch}'s)" if self.epoch else "")
        bad = _non_finite_tensors(self.model)
        if bad:
            raise FloatingPointError(
                f"after epoch {epoch} the model's {', '.join(bad[:8])}{' and more' if len(bad) > 8 else ''} hold NaN "
                f"or inf although every training loss was finite (an update overflowed): stopping{kept}; lower the "
                f"learning rate or clip gradients")
        if val_loss is not None and not math.isfinite(val_loss):
            raise FloatingPointError(
                f"the validation loss became {val_loss} at epoch {epoch} with finite weights: stopping{kept}; check "
                f"the validation inputs for NaN/inf")

    def _report(self, row, improved):
        if not self.progress:
            return
        parts = [f"epoch {row['epoch']}", f"train loss {row['train_loss']:.4f}"]
        if row["train_acc"] is not None:
            parts.append(f"acc {row['train_acc']:.4f}")
        if row["val_loss"] is not None:
            parts.append(f"| val loss {row['val_loss']:.4f}")
            if row["val_acc"] is not None:
                parts.append(f"acc {row['val_acc']:.4f}")
        parts.append(f"| {row['time_s']:.1f}s")
        if improved:
            parts.append("*")
        print("  ".join(parts), flush=True)


def fit(model, optimizer, train_loader, epochs: int, val_loader=None, resume=None, **kwargs):
    """Build a ``Trainer`` and run it for ``epochs`` epochs; returns the Trainer (its
    ``history``, ``best_epoch``, ``best_value`` hold the results)."""
    trainer = Trainer(model, optimizer, train_loader, val_loader=val_loader, **kwargs)
    trainer.fit(epochs, resume=resume)
    return trainer
