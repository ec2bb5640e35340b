"""Checkpoints: bit-exact round trips, resuming training identically, atomic writes, no pickle,
clear errors on corrupt or truncated files, and loading across backends."""
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import minidl as mdl
from minidl import backend, nn
from minidl.io import CheckpointError, load_checkpoint, save_checkpoint
from minidl.optim import SGD, Adam
from minidl.optim import lr_scheduler as S


def linear(device="cpu", seed=0, dtype=np.float32, bias=True):
    """An nn.Linear(3, 4) with seeded weights (float64 for the dtype-coverage case)."""
    mdl.manual_seed(seed)
    return nn.Linear(3, 4, bias=bias).to(device, dtype)


def same_bits(a, b):
    # a Tensor's array; a raw array as itself (a CuPy array's own .data is a MemoryPointer)
    a, b = (backend.to_numpy(v.data if isinstance(v, mdl.Tensor) else v) for v in (a, b))
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def train_steps(model, opt, sched, n, device="cpu"):
    """n SGD steps on a toy regression whose gradients get noise from both RNGs (so RNG state matters)."""
    x = mdl.Tensor(np.linspace(-1, 1, 24).reshape(8, 3), dtype=model.weight.dtype, device=device)
    for _ in range(n):
        opt.zero_grad()
        loss = (model(x) ** 2).mean()
        loss.backward()
        noise = backend.default_generator(np).standard_normal(model.weight.shape)
        noise += np.random.standard_normal(model.weight.shape)
        noise = noise.astype(model.weight.dtype)
        model.weight.grad = mdl.Tensor(model.weight.grad.data + backend.to_device(0.01 * noise, device))
        opt.step()
        sched.step()


def make(device="cpu", opt_cls=Adam, dtype=np.float32, seed=0):
    model = linear(device, seed, dtype)
    opt = opt_cls([{"params": [model.weight]}, {"params": [model.bias], "weight_decay": 0.0}], lr=0.1,
                  weight_decay=1e-2)
    warm = S.LinearLR(opt, start_factor=0.1, total_iters=3)
    sched = S.SequentialLR(opt, [warm, S.CosineAnnealingLR(opt, T_max=10)], milestones=[3])
    return model, opt, sched


EXTRA = {"name": "run-ü", "best": float("inf"), "nan": float("nan"), "flags": [True, None, 3],
         "betas": (0.9, 0.999), "by_int": {1: "a", 2: (3, 4)}, "f32": np.float32(1.5),
         "hist": np.arange(5, dtype=np.int16), "t": mdl.Tensor(np.eye(2)), "__array__": "not a marker"}


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("opt_cls,dtype", [(Adam, np.float32), (SGD, np.float32), (Adam, np.float64)])
def test_round_trip_is_bit_exact(tmp_path, opt_cls, dtype):
    model, opt, sched = make(opt_cls=opt_cls, dtype=dtype)
    if opt_cls is SGD:
        for g in opt.param_groups:
            g["momentum"] = 0.9
    train_steps(model, opt, sched, 4)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, opt, sched, epoch=4, extra=EXTRA)

    model2, opt2, sched2 = make(opt_cls=opt_cls, dtype=dtype, seed=1)
    assert not same_bits(model2.weight, model.weight)
    ckpt = load_checkpoint(path, model2, opt2, sched2)
    assert model2.weight.dtype == dtype
    for k, v in model.state_dict().items():
        assert same_bits(v, model2.state_dict()[k]), k
    for p, p2 in zip(model.parameters(), model2.parameters()):
        assert opt.state[p].keys() == opt2.state[p2].keys()
        for k in opt.state[p]:
            if k == "step":
                assert opt2.state[p2][k] == opt.state[p][k]
            else:
                assert same_bits(opt.state[p][k], opt2.state[p2][k]), k
    assert [dict(g, params=None) for g in opt.param_groups] == [dict(g, params=None) for g in opt2.param_groups]
    assert sched2.state_dict() == sched.state_dict()
    assert ckpt["epoch"] == 4
    ex = ckpt["extra"]
    assert ex["name"] == "run-ü" and ex["best"] == float("inf") and np.isnan(ex["nan"])
    assert ex["flags"] == [True, None, 3] and ex["betas"] == (0.9, 0.999) and ex["by_int"] == {1: "a", 2: (3, 4)}
    assert type(ex["f32"]) is np.float32 and ex["f32"] == 1.5
    assert same_bits(ex["hist"], EXTRA["hist"]) and isinstance(ex["t"], mdl.Tensor) and same_bits(ex["t"], EXTRA["t"])
    assert ex["__array__"] == "not a marker"
    assert list(ckpt["model"]) == ["weight", "bias"]


def test_resumed_training_matches_uninterrupted_training(tmp_path):
    mdl.manual_seed(1)
    model, opt, sched = make()
    train_steps(model, opt, sched, 3)
    save_checkpoint(tmp_path / "c.npz", model, opt, sched, epoch=3)
    train_steps(model, opt, sched, 5)           # the uninterrupted run, drawing from both RNGs
    mdl.manual_seed(999)                        # scramble the RNGs: the checkpoint must restore them
    np.random.seed(5)
    model2, opt2, sched2 = make(seed=2)
    load_checkpoint(tmp_path / "c.npz", model2, opt2, sched2)
    train_steps(model2, opt2, sched2, 5)
    assert same_bits(model.weight, model2.weight) and same_bits(model.bias, model2.bias)
    assert sched.get_last_lr() == sched2.get_last_lr()


def test_restore_rng_false_leaves_the_generators_alone(tmp_path):
    mdl.manual_seed(3)
    save_checkpoint(tmp_path / "c.npz", epoch=0)
    mdl.manual_seed(4)
    expected = backend.default_generator(np).random(), np.random.random()
    mdl.manual_seed(4)
    load_checkpoint(tmp_path / "c.npz", restore_rng=False)
    assert (backend.default_generator(np).random(), np.random.random()) == expected
    load_checkpoint(tmp_path / "c.npz")
    mdl.manual_seed(3)
    ref = backend.default_generator(np).random(), np.random.random()
    load_checkpoint(tmp_path / "c.npz")
    assert (backend.default_generator(np).random(), np.random.random()) == ref


def test_saving_leaves_the_model_where_it_was(tmp_path, device):
    net, opt, sched = make_net(0, device)
    train_net(net, opt, sched, 2, device)
    live = net.state_dict(keep_vars=True)
    arrays = {k: t.data for k, t in live.items()}
    copies = {k: backend.to_numpy(a).copy() for k, a in arrays.items()}
    buffers = [(p, k, v) for p in net.parameters() for k, v in opt.state[p].items()]
    save_checkpoint(tmp_path / "c.npz", net, opt, sched)
    assert net.training
    for k, t in net.state_dict(keep_vars=True).items():
        assert t is live[k] and t.data is arrays[k] and t.device == device, f"{k} was moved or replaced"
        assert same_bits(t.data, copies[k])
    for p, k, v in buffers:
        assert opt.state[p][k] is v and backend.device_of(v) == device


@pytest.mark.parametrize("dst", ["cpu", "cuda"])
def test_loadable_on_either_backend(tmp_path, device, dst):
    if dst == "cuda" and backend.cupy_status():
        pytest.skip(f"CuPy backend not available: {backend.cupy_status()}")
    model, opt, sched = make(device)
    train_steps(model, opt, sched, 2, device)
    save_checkpoint(tmp_path / "c.npz", model, opt, sched, epoch=2)
    model2, opt2, sched2 = make(dst)
    load_checkpoint(tmp_path / "c.npz", model2, opt2, sched2)
    assert model2.weight.device == dst and same_bits(model2.weight, model.weight)
    for k, v in opt2.state[model2.weight].items():
        if k != "step":
            assert backend.device_of(v) == dst and same_bits(v, opt.state[model.weight][k])
    raw = load_checkpoint(tmp_path / "c.npz", map_location=dst)
    assert raw["model"]["weight"].device == dst and same_bits(raw["model"]["weight"], model.weight)
    train_steps(model2, opt2, sched2, 1, dst)  # and it trains on


def test_load_without_objects_returns_the_state_dicts(tmp_path):
    model, opt, sched = make()
    train_steps(model, opt, sched, 1)
    save_checkpoint(tmp_path / "c.npz", model, opt)
    ckpt = load_checkpoint(tmp_path / "c.npz", device="cpu")
    assert set(ckpt) >= {"model", "optimizer", "epoch", "extra", "rng"} and "scheduler" not in ckpt
    assert list(ckpt["optimizer"]["state"]) == [0, 1]
    assert isinstance(ckpt["model"]["weight"], mdl.Tensor)
    with pytest.raises(CheckpointError, match="holds no scheduler state"):
        load_checkpoint(tmp_path / "c.npz", scheduler=sched)


def test_strict_goes_to_the_model(tmp_path):
    model = linear(seed=1)
    save_checkpoint(tmp_path / "c.npz", model)
    no_bias = linear(seed=2, bias=False)
    with pytest.raises(RuntimeError, match='Unexpected key.*"bias"'):
        load_checkpoint(tmp_path / "c.npz", no_bias)
    assert not same_bits(no_bias.weight, model.weight)  # nothing copied on error
    load_checkpoint(tmp_path / "c.npz", no_bias, strict=False)
    assert same_bits(no_bias.weight, model.weight)


# ---------------------------------------------------------------- atomic writes, no pickle
def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    save_checkpoint(path, epoch=1)
    before = path.read_bytes()
    assert os.listdir(tmp_path) == ["c.npz"]
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before, "a failed save must not touch the existing checkpoint"
    assert os.listdir(tmp_path) == ["c.npz"], "the temporary file must be removed"
    assert load_checkpoint(path)["epoch"] == 1
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\]\['f'\]"):
        save_checkpoint(path, extra={"f": lambda: 0})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c.npz"]


def test_leftovers_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    """A save killed mid-write (kill -9) leaves its temporary file; the next save of that checkpoint removes it,
    and leaves alone other checkpoints' files and a save still being written (it holds a lock on its file)."""
    import fcntl
    import subprocess
    import sys
    killed = ("import os, signal, numpy as np\n"
              "from minidl.io import save_checkpoint\n"
              "def half(f, **arrays):\n"
              "    f.write(b'PK' + bytes(100_000)); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
              "np.savez = half\n"
              f"save_checkpoint({str(tmp_path / 'c.npz')!r}, epoch=1)\n")
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", killed], cwd=os.path.dirname(os.path.dirname(__file__)),
                           timeout=60)
        assert r.returncode == -9
    left = [f for f in os.listdir(tmp_path) if f.startswith(".c.npz.")]
    assert len(left) == 1 and left[0].endswith(".tmp")  # the second save removed the first one's leftover
    (tmp_path / ".other.npz.x1y2z3ab.tmp").write_bytes(b"another checkpoint's")
    (tmp_path / ".c.npz.notes").write_bytes(b"not a temporary file")
    live = tmp_path / ".c.npz.live1234.tmp"
    with open(live, "wb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)                 # as a save in progress holds its file
        save_checkpoint(tmp_path / "c.npz", epoch=2)
        assert sorted(os.listdir(tmp_path)) == [".c.npz.live1234.tmp", ".c.npz.notes", ".other.npz.x1y2z3ab.tmp",
                                                "c.npz"]
    assert load_checkpoint(tmp_path / "c.npz")["epoch"] == 2
    save_checkpoint(tmp_path / "c.npz", epoch=3)      # the lock is gone: a leftover now
    assert sorted(os.listdir(tmp_path)) == [".c.npz.notes", ".other.npz.x1y2z3ab.tmp", "c.npz"]


def test_file_is_plain_npz_with_json_metadata(tmp_path):
    model, opt, sched = make()
    save_checkpoint(tmp_path / "c.npz", model, opt, sched, epoch=2)
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        meta = json.loads(z["__meta__"].tobytes().decode())
        assert meta["format"] == "minidl-checkpoint" and meta["epoch"] == 2
        key = meta["model"]["weight"]["__tensor__"]
        assert z[key].dtype == np.float32 and same_bits(z[key], model.weight)


_UNPICKLED = []


def _mark():
    _UNPICKLED.append(1)
    return 0


class _Evil:
    def __reduce__(self):
        return (_mark, ())


def test_pickled_content_is_refused_and_never_run(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, __meta__=np.frombuffer(json.dumps({"format": "minidl-checkpoint", "version": 1,
                                                      "extra": {"__array__": "a0"}}).encode(), np.uint8),
             a0=np.array([_Evil()], dtype=object))
    with pytest.raises(CheckpointError, match="evil.npz"):
        load_checkpoint(path)
    (tmp_path / "p.npz").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError, match="p.npz"):
        load_checkpoint(tmp_path / "p.npz")
    assert _UNPICKLED == [], "loading a checkpoint ran pickled code"


# ---------------------------------------------------------------- corrupt and truncated files
@pytest.fixture
def good_file(tmp_path):
    model, opt, sched = make()
    train_steps(model, opt, sched, 1)
    path = tmp_path / "good.npz"
    save_checkpoint(path, model, opt, sched, epoch=1)
    return path


@pytest.mark.parametrize("keep", [0, 1, 30, 0.5, -100, -22, -1])
def test_truncated_file_raises_a_clear_error(good_file, tmp_path, keep):
    data = good_file.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated.npz") as e:
        load_checkpoint(bad, *make())
    assert "corrupt" in str(e.value) or "truncated" in str(e.value)


def test_corrupted_bytes_raise_a_clear_error(good_file, tmp_path):
    data = bytearray(good_file.read_bytes())
    with zipfile.ZipFile(good_file) as zf:  # flip one byte inside each stored array's data
        infos = zf.infolist()
    assert len(infos) > 3
    for info in infos:
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        corrupt = bytearray(data)
        corrupt[start + info.compress_size - 1] ^= 0xFF
        bad = tmp_path / "corrupt.npz"
        bad.write_bytes(bytes(corrupt))
        with pytest.raises(CheckpointError, match="corrupt.npz.*Bad CRC-32"):
            load_checkpoint(bad, *make())


def test_foreign_files_raise_clear_errors(tmp_path):
    cases = {"text.npz": b"hello, not a checkpoint", "empty.npz": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=name):
            load_checkpoint(tmp_path / name)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="single .npy array"):
        load_checkpoint(tmp_path / "one.npy")
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(CheckpointError, match="no '__meta__' entry"):
        load_checkpoint(tmp_path / "plain.npz")
    meta = {"format": "minidl-checkpoint", "version": 99}
    np.savez(tmp_path / "future.npz", __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "future.npz")
    meta = {"format": "minidl-checkpoint", "version": 1, "extra": {"__array__": "a5"}}
    np.savez(tmp_path / "dangling.npz", __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with pytest.raises(CheckpointError, match="dangling.npz.*does not match"):
        load_checkpoint(tmp_path / "dangling.npz")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz")




# ---------------------------------------------------------------- all or nothing
def snapshot(model, opt, sched):
    """Everything load_checkpoint may change, as plain bytes and JSON."""
    enc = lambda v: backend.to_numpy(v.data if isinstance(v, mdl.Tensor) else v).tobytes() \
        if isinstance(v, mdl.Tensor) or backend.is_array(v) else repr(v)
    sd = opt.state_dict()
    return ({k: enc(v) for k, v in model.state_dict().items()},
            {i: {k: enc(v) for k, v in s.items()} for i, s in sd["state"].items()}, repr(sd["param_groups"]),
            repr(sched.state_dict()), repr(backend.get_rng_state()), repr(np.random.get_state(legacy=False)))


def rewrite_meta(src, dst, change):
    """Copy checkpoint ``src`` to ``dst`` with ``change(meta)`` applied to its JSON metadata."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    change(meta)
    np.savez(dst, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return dst


def test_a_mismatched_optimizer_leaves_the_model_untouched(tmp_path):
    model, opt, sched = make(seed=0, opt_cls=SGD)
    train_steps(model, opt, sched, 2)
    save_checkpoint(tmp_path / "sgd.npz", model, opt, sched, epoch=2)
    other, adam, adam_sched = make(seed=1, opt_cls=Adam)
    train_steps(other, adam, adam_sched, 1)
    before = snapshot(other, adam, adam_sched)
    with pytest.raises(CheckpointError, match=r"sgd\.npz.*optimizer") as e:
        load_checkpoint(tmp_path / "sgd.npz", other, adam, adam_sched)
    assert "momentum" in str(e.value)
    assert snapshot(other, adam, adam_sched) == before, "a failed load changed the model, optimizer or RNG"
    one_group = SGD(other.parameters(), lr=0.1)   # one group where the checkpoint has two
    with pytest.raises(CheckpointError, match="parameter groups"):
        load_checkpoint(tmp_path / "sgd.npz", other, one_group)
    assert snapshot(other, adam, adam_sched) == before


def test_a_model_mismatch_is_a_checkpoint_error_and_still_pytorchs_runtime_error(tmp_path):
    save_checkpoint(tmp_path / "c.npz", linear(seed=1))
    no_bias = linear(seed=2, bias=False)
    with pytest.raises(CheckpointError, match=r"(?s)c\.npz.*Unexpected key") as e:
        load_checkpoint(tmp_path / "c.npz", no_bias)
    assert isinstance(e.value, RuntimeError)


def _flag_bits(data, bit):
    """The zip with general-purpose flag bit ``bit`` set in every local and central header."""
    d = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = d.find(sig)
        while i >= 0:
            d[i + offset] |= 1 << bit
            i = d.find(sig, i + 4)
    return bytes(d)


@pytest.mark.parametrize("bit", [0, 5, 6])
def test_zip_flag_bits_raise_a_checkpoint_error(good_file, tmp_path, bit):
    bad = tmp_path / "flags.npz"
    bad.write_bytes(_flag_bits(good_file.read_bytes(), bit))
    model, opt, sched = make(seed=3)
    before = snapshot(model, opt, sched)
    with pytest.raises(CheckpointError, match="flags.npz"):
        load_checkpoint(bad, model, opt, sched)
    assert snapshot(model, opt, sched) == before


def test_deeply_nested_metadata_raises_a_checkpoint_error(tmp_path):
    meta = '{"format": "minidl-checkpoint", "version": 1, "extra": ' + "[" * 100_000 + "]" * 100_000 + "}"
    np.savez(tmp_path / "deep.npz", __meta__=np.frombuffer(meta.encode(), np.uint8))
    with pytest.raises(CheckpointError, match="deep.npz"):
        load_checkpoint(tmp_path / "deep.npz")
    for depth in (990, 1500, 5000):   # around the depths where json, then the decoding of markers, give up
        meta = ('{"format": "minidl-checkpoint", "version": 1, "extra": ' + '{"__tuple__": [' * depth + "1"
                + "]}" * depth + "}")
        np.savez(tmp_path / "deep2.npz", __meta__=np.frombuffer(meta.encode(), np.uint8))
        try:
            ckpt = load_checkpoint(tmp_path / "deep2.npz")
        except CheckpointError as e:
            assert "deep2.npz" in str(e)
        else:
            assert isinstance(ckpt["extra"], tuple)


CRAFTED = {
    "rng a string": lambda m: m.update(rng="x"),
    "rng of ints": lambda m: m.update(rng={"minidl": 5, "numpy": 3}),
    "bad bit generator": lambda m: m["rng"]["minidl"].update(bit_generator=5),
    "bad numpy state": lambda m: m["rng"].update(numpy={"bit_generator": "MT19937", "state": 5}),
    "model a list": lambda m: m.update(model=[1, 2]),
    "model of numbers": lambda m: m["model"].update(weight=3),
    "optimizer state a list": lambda m: m["optimizer"].update(state=[1]),
    "optimizer params not ints": lambda m: m["optimizer"]["param_groups"][0].update(params=["a"]),
    "optimizer lr a string": lambda m: m["optimizer"]["param_groups"][1].update(lr="fast"),
    "optimizer group not a dict": lambda m: m["optimizer"]["param_groups"].__setitem__(0, 7),
    "scheduler another kind": lambda m: m.update(scheduler={"last_epoch": 1, "step_size": 3}),
    "scheduler a number": lambda m: m.update(scheduler=4),
    "epoch a dict": lambda m: m.update(epoch={"a": 1}),
    "momentum of another shape": lambda m: m["optimizer"]["state"]["__items__"][0][1].update(
        exp_avg={"__array__": m["optimizer"]["state"]["__items__"][1][1]["exp_avg"]["__array__"]}),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_metadata_raises_a_checkpoint_error_and_changes_nothing(good_file, tmp_path, case):
    bad = rewrite_meta(good_file, tmp_path / "crafted.npz", CRAFTED[case])
    model, opt, sched = make(seed=3)
    train_steps(model, opt, sched, 1)
    before = snapshot(model, opt, sched)
    with pytest.raises(CheckpointError, match="crafted.npz"):
        load_checkpoint(bad, model, opt, sched)
    assert snapshot(model, opt, sched) == before, "a failed load changed something"


# ---------------------------------------------------------------- a network with buffers
def make_net(seed, device="cpu"):
    mdl.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).to(device)
    decay = [p for n, p in net.named_parameters() if n.endswith("weight") and p.ndim > 1]
    rest = [p for n, p in net.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
    opt = SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest}], lr=0.1, momentum=0.9, nesterov=True)
    sched = S.SequentialLR(opt, [S.LinearLR(opt, 0.2, total_iters=2), S.CosineAnnealingLR(opt, 8)], [2])
    return net, opt, sched


def train_net(net, opt, sched, n, device="cpu"):
    x = mdl.Tensor(np.linspace(-2, 2, 48, dtype=np.float32).reshape(16, 3), device=device)
    y = mdl.Tensor(np.arange(16) % 2, device=device)
    for _ in range(n):
        opt.zero_grad()
        mdl.cross_entropy(net(x), y).backward()
        opt.step()
        sched.step()


def test_nn_model_round_trip_and_resume(tmp_path, device):
    net, opt, sched = make_net(0, device)
    train_net(net, opt, sched, 3, device)
    arrays = [t.data for t in net.state_dict(keep_vars=True).values()]
    save_checkpoint(tmp_path / "net.npz", net, opt, sched, epoch=3)
    assert all(t.data is a for t, a in zip(net.state_dict(keep_vars=True).values(), arrays)), "save moved the model"
    assert "1.num_batches_tracked" in net.state_dict() and "1.running_mean" in net.state_dict()
    net2, opt2, sched2 = make_net(1, device)  # different initial weights
    ckpt = load_checkpoint(tmp_path / "net.npz", net2, opt2, sched2)
    assert ckpt["epoch"] == 3
    for (k, a), b in zip(net.state_dict().items(), net2.state_dict().values()):
        assert same_bits(a, b), k
    train_net(net, opt, sched, 4, device)
    train_net(net2, opt2, sched2, 4, device)
    for (k, a), b in zip(net.state_dict().items(), net2.state_dict().values()):
        assert same_bits(a, b), f"{k} differs after resuming"
    net3 = nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 2))
    with pytest.raises(RuntimeError, match="Missing key|Unexpected key"):
        load_checkpoint(tmp_path / "net.npz", net3)


def test_a_checkpoint_from_before_a_setting_existed_still_loads(good_file, tmp_path):
    """A group that only lacks a setting (an older minidl's Adam without decoupled_weight_decay) takes the
    optimizer's current value, as PyTorch's __setstate__ defaults do; lacking and foreign ones is another kind."""
    def drop(m):
        for g in m["optimizer"]["param_groups"]:
            del g["decoupled_weight_decay"]
    old = rewrite_meta(good_file, tmp_path / "old.npz", drop)
    model, opt, sched = make(seed=3)
    load_checkpoint(old, model, opt, sched)
    assert all(g["decoupled_weight_decay"] is False for g in opt.param_groups)
