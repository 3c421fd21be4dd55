"""The jitted train step on the tiny model: per-token log-probs against the plain forward pass,
sharded == single-device on several meshes (compiled once per shape), gradient accumulation,
NaN/inf skipping, the frozen vision tower and the weight-decay mask."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vital_jax
from vital_jax.models.qwen2_5_vl import ModelConfig, init_params
from vital_jax.sharding import make_mesh
from vital_jax.testing import CompileCounter, no_recompiles
from vital_jax.trainers.batch import Sequence_, batch_shardings, build_batch
from vital_jax.trainers.common import put_batch
from vital_jax.config.run_config import OptimConfig
from vital_jax.trainers.optim import decay_mask, make_optimizer
from vital_jax.trainers.step import init_state, jit_train_step, sft_loss, token_logps

CFG = ModelConfig.tiny()
TOKEN_BUCKETS, VISION_BUCKETS = (48, 64), (32,)
# Adam's first steps move every weight by ~lr, so differences in the 7th digit of a gradient stay
# far below the tolerances used here; eps keeps near-zero gradients from amplifying round-off.
OPTIM = OptimConfig(learning_rate=1e-3, warmup_steps=0, schedule="constant", weight_decay=0.1, eps=1e-6)


# --------------------------------------------------------------------------- hand-made rows


def _visual(rng, kind, t, h, w, sec=1.0):
    return types.SimpleNamespace(kind=kind, grid_thw=np.array([t, h, w]), second_per_grid_t=sec,
                                 pixel_values=rng.standard_normal((t * h * w, CFG.vision.patch_dim)).astype(np.float32))


def _row(rng, parts, *, length=None):
    """``parts``: ints (that many random text tokens) and visual inputs (start, pads, end), then
    random text up to ``length`` tokens. The loss mask covers the second half."""
    ids, visuals = [], []
    for p in parts:
        if isinstance(p, int):
            ids += [int(x) for x in rng.integers(0, 300, p)]   # < 304: no special ids
        else:
            pad = CFG.image_token_id if p.kind == "image" else CFG.video_token_id
            ids += [CFG.vision_start_token_id] + [pad] * (int(np.prod(p.grid_thw)) // 4) + [CFG.vision_end_token_id]
            visuals.append(p)
    if length is not None:
        ids += [int(x) for x in rng.integers(0, 300, length - len(ids))]
    start = len(ids) // 2
    # generated=0: the host inserted every vision token (the loss mask may still cover them)
    return Sequence_(ids, [0] * start + [1] * (len(ids) - start), visuals, generated=[0] * len(ids))


def _visual_rows(seed, n, length=None):
    """``n`` rows cycling through: an image; two videos of different grids and frame rates
    (a question video + a tool clip); text only; one video. Every visual row has 32 patches
    (one vision bucket, and one compile of the reference forward for equal-length rows)."""
    rng = np.random.default_rng(seed)
    make = [
        lambda: [5, _visual(rng, "image", 1, 4, 8), 7],
        lambda: [3, _visual(rng, "video", 2, 2, 4, 0.5), 4, _visual(rng, "video", 1, 4, 4, 2.0), 6],
        lambda: [int(rng.integers(10, 40))],
        lambda: [2, _visual(rng, "video", 2, 4, 4), int(rng.integers(3, 12))],
    ]
    return [_row(rng, make[i % 4](), length=length) for i in range(n)]


def _batch(rows, micro_batches=1):
    return build_batch(CFG, rows, micro_batches=micro_batches, token_buckets=TOKEN_BUCKETS,
                       vision_buckets=VISION_BUCKETS)


@pytest.fixture(scope="module")
def host_params():
    _, params = init_params(CFG, seed=0)
    return jax.tree.map(np.asarray, params)


def _loss_fn(cfg):
    """SFT loss plus a test hook that is exactly 0 in value and gradient unless the batch sets
    ``advantages`` (unused by SFT): then the gradient of ``final_norm[0]`` becomes their sum while
    the loss stays finite. Lets the non-finite-gradient test reuse the compiled step."""
    def loss_fn(p, mb, ctx):
        loss, aux = sft_loss(cfg, p, mb, ctx["token_count"])
        a = p["final_norm"][0] * jnp.sum(mb["advantages"])
        return loss + (a - jax.lax.stop_gradient(a)), aux
    return loss_fn


def _one_device_mesh():
    return make_mesh(1, 1, 1, devices=jax.devices()[:1])


_COMPILED: dict = {}   # jitted steps shared by the tests (compiling is most of their cost)


class Trainer:
    """What sft.py does around the step: state on a mesh, declared shardings, donation."""

    def __init__(self, mesh, host_params, *, cfg=CFG, optim=OPTIM, freeze_vision=False):
        self.mesh, self.cfg = mesh, cfg
        self._key = (mesh.devices.shape, tuple(d.id for d in mesh.devices.flat), cfg, optim, freeze_vision)
        opt_key = self._key + ("optimizer",)
        if opt_key not in _COMPILED:
            _COMPILED[opt_key] = make_optimizer(optim, 10, freeze_vision=freeze_vision)
        self.optimizer = _COMPILED[opt_key]
        self.loss_fn = _loss_fn(cfg)
        self.state, self.state_sh = init_state(cfg, self.optimizer, host_params, mesh)
        self.last_batch = None

    def step(self, np_batch):
        sh = batch_shardings(self.mesh, np_batch)
        key = self._key + tuple(np.shape(x) for x in jax.tree.leaves(np_batch))
        if key not in _COMPILED:
            _COMPILED[key] = jit_train_step(self.loss_fn, self.optimizer, self.state_sh, sh)
        self.last_batch = put_batch(np_batch, sh)
        with jax.set_mesh(self.mesh):
            self.state, metrics = _COMPILED[key](self.state, self.last_batch)
        return {k: float(v) for k, v in jax.device_get(metrics).items()}

    def host(self):
        return jax.tree.map(np.asarray, jax.device_get(self.state))


def _assert_trees_close(a, b, atol, rtol=0.0):
    pa, pb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in pa] == [p for p, _ in pb]
    for (path, x), (_, y) in zip(pa, pb):
        np.testing.assert_allclose(x, y, atol=atol, rtol=rtol, err_msg=jax.tree_util.keystr(path))


def _max_change(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --------------------------------------------------------------------------- log-probs


def _reference_logps(params, row):
    """log p(ids[t] | ids[<t]) from ``vital_jax.forward`` on the unpadded row alone, with its own
    rope index and vision encoding, log-softmax in float64."""
    img = [v for v in row.visuals if v.kind == "image"]
    vid = [v for v in row.visuals if v.kind != "image"]
    batch = {"input_ids": np.asarray(row.ids, np.int32)[None]}
    if img:
        batch.update(pixel_values=np.concatenate([v.pixel_values for v in img]),
                     image_grid_thw=np.stack([v.grid_thw for v in img]))
    if vid:
        batch.update(pixel_values_videos=np.concatenate([v.pixel_values for v in vid]),
                     video_grid_thw=np.stack([v.grid_thw for v in vid]),
                     second_per_grid_ts=[v.second_per_grid_t for v in vid])
    logits = np.asarray(vital_jax.forward(CFG, params, batch), np.float64)[0]
    z = logits - logits.max(-1, keepdims=True)
    logsm = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return logsm[np.arange(len(row.ids) - 1), np.asarray(row.ids)[1:]]


@pytest.fixture(scope="module")
def logp_case(host_params):
    rows = _visual_rows(1, 4, length=32)
    assert {len(r.visuals) for r in rows} == {0, 1, 2}
    return rows, [_reference_logps(host_params, r) for r in rows]


def test_token_logps_match_forward_reference(host_params, logp_case):
    rows, refs = logp_case
    # a 4th row shorter than the rest: padding must not change the other rows' numbers
    rows = rows[:3] + [_visual_rows(1, 4)[3]]
    refs = refs[:3] + [_reference_logps(host_params, rows[3])]
    assert len(rows[3].ids) < 32
    batch = _batch(rows)
    assert "vision" in batch and batch["input_ids"].shape == (1, 4, 48)   # rows really padded
    mb = jax.tree.map(lambda x: x[0], batch)
    logp, ent = jax.jit(lambda p, mb: token_logps(CFG, p, mb, with_entropy=True))(host_params, mb)
    logp, ent = np.asarray(logp), np.asarray(ent)
    for i, (row, ref) in enumerate(zip(rows, refs)):
        k = len(row.ids)
        assert logp[i, 0] == 0.0
        np.testing.assert_allclose(logp[i, 1:k], ref, atol=2e-5, err_msg=f"row {i}")
        assert np.all(ent[i, 1:k] > 0) and np.all(ent[i, 1:k] <= np.log(CFG.text.vocab_size) + 1e-4)


def test_token_logps_only_loss_tokens(host_params, logp_case):
    """What the trainers ask for: the same numbers on loss tokens (lm head in chunks of 8 here,
    chunks without a loss token skipped), 0 on the rest."""
    rows, refs = logp_case
    mb = jax.tree.map(lambda x: x[0], _batch(rows))
    cfg = CFG.with_runtime(logits_chunk=8)
    logp, ent = jax.jit(lambda p, mb: token_logps(cfg, p, mb, with_entropy=True, only_loss_tokens=True))(host_params, mb)
    full_ent = jax.jit(lambda p, mb: token_logps(CFG, p, mb, with_entropy=True)[1])(host_params, mb)
    logp, ent = np.asarray(logp), np.asarray(ent)
    mask = np.asarray(mb["loss_mask"]) > 0
    mask[:, 0] = False
    for i, (row, ref) in enumerate(zip(rows, refs)):
        k = len(row.ids)
        on = mask[i, 1:k]
        np.testing.assert_allclose(logp[i, 1:k][on], ref[on], atol=2e-5, err_msg=f"row {i}")
        np.testing.assert_allclose(ent[i][mask[i]], np.asarray(full_ent)[i][mask[i]], atol=2e-5)
    assert np.all(logp[~mask] == 0) and np.all(ent[~mask] == 0)


def test_sft_loss_is_masked_mean_nll(host_params, logp_case):
    rows, refs = logp_case
    batch = _batch(rows)
    mb = jax.tree.map(lambda x: x[0], batch)
    count = float(batch["loss_mask"][..., 1:].sum())
    loss, aux = jax.jit(lambda p, mb: sft_loss(CFG, p, mb, jnp.float32(count)))(host_params, mb)
    want = sum(-(ref * np.asarray(r.loss_mask[1:])).sum() for r, ref in zip(rows, refs)) / count
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert float(aux["tokens"]) == sum(sum(r.loss_mask) for r in rows)


# --------------------------------------------------------------------------- sharding


@pytest.fixture(scope="module")
def two_batches():
    # 16 rows in 2 micro-batches: 8 rows each, so every batch axis of the meshes below divides them
    return _batch(_visual_rows(3, 16), 2), _batch(_visual_rows(4, 16), 2)


def _two_steps(mesh, host_params, batches):
    tr = Trainer(mesh, host_params)
    with CompileCounter() as first:
        m1 = tr.step(batches[0])
    old = tr.state
    with CompileCounter() as second, no_recompiles():
        m2 = tr.step(batches[1])   # same shapes: no tracing, no compilation
    # the state was donated: its buffers were reused for the new state
    assert all(x.is_deleted() for x in jax.tree.leaves(old))
    return tr, (m1, m2), first.count, second.count


@pytest.fixture(scope="module")
def single_device_run(host_params, two_batches):
    tr, metrics, _, _ = _two_steps(_one_device_mesh(), host_params, two_batches)
    return tr.host(), metrics


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2), (2, 1, 4)])
def test_sharded_step_equals_single_device(shape, host_params, two_batches, single_device_run):
    ref_state, ref_metrics = single_device_run
    mesh = make_mesh(*shape)
    tr, metrics, first, second = _two_steps(mesh, host_params, two_batches)
    assert first >= 1 and second == 0
    # rows really are split over data x fsdp, and with fsdp/tensor > 1 the state is spread too
    # (params by the logical rules, Adam moments with their parameters)
    ids = tr.last_batch["input_ids"]
    assert ids.addressable_shards[0].data.shape[1] == 8 // (shape[0] * shape[1])
    assert all(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(tr.state))
    sharded = {jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(tr.state.params)
               if not x.sharding.is_fully_replicated}
    assert bool(sharded) == (shape[1] * shape[2] > 1), sharded
    got = tr.host()
    for m, r in zip(metrics, ref_metrics):
        assert m["skipped"] == r["skipped"] == 0
        np.testing.assert_allclose(m["loss"], r["loss"], rtol=1e-5)
        np.testing.assert_allclose(m["grad_norm"], r["grad_norm"], rtol=1e-4)
    assert int(got.step) == int(ref_state.step) == 2
    _assert_trees_close(got.params, ref_state.params, atol=1e-5)
    _assert_trees_close(got.opt_state, ref_state.opt_state, atol=1e-5, rtol=1e-4)
    assert _max_change(got.params, host_params) > 1e-4  # the step did move the weights


# --------------------------------------------------------------------------- accumulation


def test_gradient_accumulation_equals_one_big_batch(host_params, two_batches, single_device_run):
    """The single-device run above takes its 16 rows as 2 micro-batches of 8; the same rows as one
    batch of 16 give the same losses and weights. The rows differ a lot in target count, so this
    needs the global token normaliser (a per-micro-batch mean would differ)."""
    ref_state, ref_metrics = single_device_run
    tr = Trainer(_one_device_mesh(), host_params)
    metrics = []
    for seed, two in zip((3, 4), two_batches):
        one = _batch(_visual_rows(seed, 16), 1)
        assert one["input_ids"].shape == (1, 16) + two["input_ids"].shape[2:]
        np.testing.assert_array_equal(one["input_ids"].reshape(two["input_ids"].shape), two["input_ids"])
        metrics.append(tr.step(one))
    per_micro = two_batches[0]["loss_mask"][:, :, 1:].sum(axis=(1, 2))
    assert per_micro[0] != per_micro[1]
    for m, r in zip(metrics, ref_metrics):
        assert m["skipped"] == 0
        np.testing.assert_allclose(m["loss"], r["loss"], rtol=1e-6)
        np.testing.assert_allclose(m["grad_norm"], r["grad_norm"], rtol=1e-5)
    got = tr.host()
    _assert_trees_close(got.params, ref_state.params, atol=1e-6)
    _assert_trees_close(got.opt_state, ref_state.opt_state, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- NaN / inf skip


def _assert_unchanged(before, after):
    assert int(after.step) == int(before.step) + 1           # the attempt is counted
    _assert_trees_close(after.params, before.params, atol=0)  # NaN == NaN at the same places
    _assert_trees_close(after.opt_state, before.opt_state, atol=0)


def test_nan_loss_skips_update(host_params, two_batches, single_device_run):
    poisoned = jax.tree.map(np.copy, host_params)
    poisoned["layers"]["q_bias"][0, 0, 0] = np.nan
    tr = Trainer(_one_device_mesh(), poisoned)
    before = tr.host()
    m = tr.step(two_batches[0])   # the single-device run's compiled step, only the weights differ
    assert m["skipped"] == 1 and not np.isfinite(m["loss"])
    _assert_unchanged(before, tr.host())


def test_nonfinite_gradient_with_finite_loss_skips_update(host_params, two_batches, single_device_run):
    batch = jax.tree.map(np.copy, two_batches[0])
    batch["advantages"][0, 0] = 3e38   # the loss hook: a finite loss, a gradient norm that overflows
    tr = Trainer(_one_device_mesh(), host_params)
    before = tr.host()
    m = tr.step(batch)
    assert m["skipped"] == 1 and np.isfinite(m["loss"]) and not np.isfinite(m["grad_norm"])
    np.testing.assert_allclose(m["loss"], single_device_run[1][0]["loss"], rtol=1e-6)  # the hook adds 0
    _assert_unchanged(before, tr.host())
    # the next good step trains from the untouched state exactly like the single-device run
    m = tr.step(two_batches[0])
    assert m["skipped"] == 0
    np.testing.assert_allclose(m["loss"], single_device_run[1][0]["loss"], rtol=1e-6)


# --------------------------------------------------------------------------- frozen vision, decay


def test_frozen_vision_tower(host_params):
    cfg = CFG.with_runtime(freeze_vision=True)
    tr = Trainer(_one_device_mesh(), host_params, cfg=cfg, freeze_vision=True)
    before = tr.host()
    m = tr.step(_batch(_visual_rows(7, 4)))
    after = tr.host()
    assert m["skipped"] == 0
    _assert_trees_close(after.params["vision"], before.params["vision"], atol=0)
    text = {k: v for k, v in after.params.items() if k != "vision"}
    for path, x in jax.tree_util.tree_leaves_with_path(text):
        name = jax.tree_util.keystr(path)
        y = _lookup(before.params, path)
        if name != "['embed']":  # embed rows of unused tokens only decay
            assert np.max(np.abs(x - y)) > 1e-5, f"{name} did not train"
    # no Adam moments are kept for the frozen tower: the optimizer state is text-sized
    n_text = sum(x.size for x in jax.tree.leaves(text))
    n_opt = sum(x.size for x in jax.tree.leaves(after.opt_state) if np.ndim(x) > 0)
    assert n_opt == 2 * n_text


def test_vision_trains_when_not_frozen(host_params, single_device_run):
    # the counterpart of the frozen test: the same kind of step without freezing moves the tower
    state, _ = single_device_run
    assert _max_change(state.params["vision"], host_params["vision"]) > 1e-4


def test_weight_decay_mask_by_name_for_stacked_layers(host_params):
    mask = decay_mask(host_params)
    assert mask["layers"]["attn_norm"] is False and host_params["layers"]["attn_norm"].ndim == 2  # stacked norm
    assert mask["layers"]["q_bias"] is False and mask["vision"]["blocks"]["qkv_bias"] is False
    assert mask["vision"]["blocks"]["norm1"] is False and mask["final_norm"] is False
    assert mask["layers"]["q_kernel"] is True and mask["embed"] is True and mask["lm_head"] is True
    assert mask["vision"]["patch_kernel"] is True

    # behaviour: zero gradients -> Adam's update is 0, only decoupled weight decay moves weights
    opt = make_optimizer(OptimConfig(learning_rate=0.1, warmup_steps=0, schedule="constant",
                                     weight_decay=0.5, grad_clip=0.0), 10)
    params = jax.tree.map(jnp.asarray, host_params)
    updates = jax.jit(lambda p: opt.update(jax.tree.map(jnp.zeros_like, p), opt.init(p), p)[0])(params)
    for path, u in jax.tree_util.tree_leaves_with_path(updates):
        p = _lookup(host_params, path)
        want = -0.1 * 0.5 * p if _lookup(mask, path) else np.zeros_like(p)
        np.testing.assert_allclose(np.asarray(u), want, rtol=1e-6, atol=1e-9, err_msg=jax.tree_util.keystr(path))


def _lookup(tree, path):
    for k in path:
        tree = tree[k.key]
    return tree
