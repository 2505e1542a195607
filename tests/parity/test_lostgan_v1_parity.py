"""Numerical parity of the LostGAN-V1 networks with PyTorch.

The PyTorch modules are written from the facts of `WillSuen/LostGANs`
(recorded in jaxl2i/models/lostgan_v1.py and reference/lama_lostgan.md), with
the official module/attribute names so that `_to_flax` (state-dict names →
Flax variables) also exercises the naming a checkpoint importer relies on:
the generator's in torch_lostgan_v1.py (shared with
test_lostgan_v1_import.py), the discriminator's below. Tiny widths; random weights (also BN affines);
train mode (batch statistics, one SN power iteration) and eval mode (running
statistics, stored u/v) compared at ≤ 1e-4 max abs in float32.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import lostgan_v1 as lg

torch = pytest.importorskip('torch')
tv_ops = pytest.importorskip('torchvision.ops')
# pylint: disable=g-import-not-at-top,g-bad-import-order
import torch_lostgan_v1 as tl
# pylint: enable=g-import-not-at-top,g-bad-import-order
tnn = torch.nn
F = torch.nn.functional
sn = tnn.utils.spectral_norm

TOL = 1e-4
B, O = 2, 4


def _n(t):
  return t.detach().numpy()


def _diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))))


def _nhwc(t):
  return _n(t).transpose(0, 2, 3, 1)


# ------------------------------------------------ torch → Flax conversion


def _flax_path(name):
  """'mask_regress.conv1.0' → ('mask_regress', 'conv1_0'); '' → ()."""
  out = []
  for part in filter(None, name.split('.')):
    if part.isdigit():
      out[-1] = f'{out[-1]}_{part}'
    else:
      out.append(part)
  return tuple(out)


def _to_flax(model):
  """Flax variables from an official-style `state_dict` (numpy values).

  SN layers: `weight_orig` (+ `bias`) → params, `weight_u/v` → 'spectral_norm'
  (`l_y` is the SN embedding, stored transposed); BatchNorm `weight/bias` →
  scale/bias, running stats → 'batch_stats'; the unused running stats of
  each ISLA module's own BatchNorm base class and `num_batches_tracked` are
  dropped.
  """
  # Copies: torch updates u, v and running stats in place.
  sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  flat = {}
  for key, val in sd.items():
    mod, leaf = key.rsplit('.', 1) if '.' in key else ('', key)
    path, pre = _flax_path(mod), f'{mod}.' if mod else ''
    sn_w = sd.get(f'{pre}weight_orig')
    if sn_w is not None and leaf in ('weight_orig', 'bias'):
      inner = ('conv' if sn_w.ndim == 4 else
               'embed' if path[-1] == 'l_y' else 'dense')
      if leaf == 'bias':
        flat[('params',) + path + (inner, 'bias')] = val
        continue
      u, v = sd[f'{pre}weight_u'], sd[f'{pre}weight_v']
      if inner == 'conv':  # OIHW → HWIO; v over (in, kh, kw) → (kh, kw, in)
        kernel, name = val.transpose(2, 3, 1, 0), 'kernel'
        v = v.reshape(val.shape[1:]).transpose(1, 2, 0).reshape(-1)
      else:
        kernel, name = val.T, 'embedding' if inner == 'embed' else 'kernel'
      flat[('params',) + path + (inner, name)] = kernel
      for k, x in (('u', u[None]), ('v', v[None]), ('sigma', np.ones(()))):
        flat[('spectral_norm',) + path + ('sn', f'{inner}/{name}/{k}')] = x
    elif leaf in ('running_mean', 'running_var'):
      if f'{pre}weight_proj.weight_orig' not in sd:  # not ISLA's own base
        flat[('batch_stats',) + path + (leaf[8:12],)] = val
    elif leaf == 'weight' and val.ndim == 2:  # plain label embedding
      flat[('params',) + path + ('embedding',)] = val
    elif leaf in ('weight', 'bias') and sn_w is None:  # BatchNorm affine
      name = 'scale' if leaf == 'weight' else 'bias'
      flat[('params',) + path + (name,)] = val
  flat = {k: jnp.asarray(v, jnp.float32) for k, v in flat.items()}
  return flax.traverse_util.unflatten_dict(flat)


def _randomise(model, seed):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('weight') and p.ndim == 1:  # BN affine scale
        p.copy_(torch.rand(p.shape, generator=g) + 0.5)
      else:
        p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _check_structure(variables, init_fn):
  """Converted variables have exactly the Flax module's tree (small modules;
  for G and D a successful apply shows none is missing, and the paper-size
  counts of test_models_lostgan_v1.py that none is extra)."""
  ref = jax.eval_shape(init_fn)
  want = jax.tree.map(lambda s: s.shape, ref)
  got = jax.tree.map(lambda a: a.shape, variables)
  assert got == want


# --------------------------------------------------------- torch modules
# The generator side is the official-name rebuild in torch_lostgan_v1.py
# (ResBlock, MaskRegressNet, SpatialAdaptiveSynBatchNorm2d, ResnetGenerator);
# the discriminator is written here.


class TorchBlockD(tnn.Module):
  """ResBlock (first=False) / OptimizedBlock (first=True), ReLU."""

  def __init__(self, cin, cout, down, first=False):
    super().__init__()
    self.down, self.first = down, first
    self.conv1 = sn(tnn.Conv2d(cin, cout, 3, 1, 1), eps=1e-4)
    self.conv2 = sn(tnn.Conv2d(cout, cout, 3, 1, 1), eps=1e-4)
    self.learnable = first or cin != cout or down
    if self.learnable:
      self.c_sc = sn(tnn.Conv2d(cin, cout, 1, 1, 0), eps=1e-4)

  def forward(self, x):
    pool = (lambda t: F.avg_pool2d(t, 2)) if self.down else (lambda t: t)
    h = self.conv1(x if self.first else F.relu(x))
    h = pool(self.conv2(F.relu(h)))
    if self.first:
      return h + self.c_sc(pool(x))
    return h + (pool(self.c_sc(x)) if self.learnable else x)


class TorchDisc(tnn.Module):
  """ResnetDiscriminator{64,128} behind the Combine* box handling."""

  def __init__(self, res, nc, ch):
    super().__init__()
    self.res = res
    # (out width × ch, downsample) of block1..: 64² keeps 64² for two
    # blocks; 128² halves five times and ends with a 16ch→16ch block.
    spec = ([(1, False), (2, False), (4, True), (8, True), (16, True)]
            if res == 64 else [(1, True), (2, True), (4, True), (8, True),
                               (16, True), (16, False)])
    widths = [3] + [ch * m for m, _ in spec]
    for i, (_, down) in enumerate(spec):
      setattr(self, f'block{i + 1}',
              TorchBlockD(widths[i], widths[i + 1], down, i == 0))
    self.n_img = len(spec)
    top = ch * 16
    setattr(self, 'l_im' if res == 64 else 'l7', sn(tnn.Linear(top, 1)))
    if res == 64:
      self.block_obj4 = TorchBlockD(ch * 4, ch * 8, True)
      top = ch * 8
    else:
      self.block_obj3 = TorchBlockD(ch * 2, ch * 4, False)
      self.block_obj4 = TorchBlockD(ch * 4, ch * 8, False)
      self.block_obj5 = TorchBlockD(ch * 8, ch * 16, True)
    self.l_obj = sn(tnn.Linear(top, 1))
    self.l_y = sn(tnn.Embedding(nc, top))

  def forward(self, images, boxes_xyxy, y):
    """Returns d_img [B], d_obj of the kept boxes and their slot indices."""
    b, o = y.shape
    taps, x = [], images
    for i in range(self.n_img):
      x = getattr(self, f'block{i + 1}')(x)
      taps.append(x)
    x = F.relu(x)
    x = x.mean((2, 3)) if self.res == 64 else x.sum((2, 3))
    d_img = (self.l_im if self.res == 64 else self.l7)(x)[:, 0]
    idx = torch.arange(b, dtype=torch.float32).repeat_interleave(o)[:, None]
    rois = torch.cat([idx, boxes_xyxy.reshape(-1, 4) * images.shape[2]], 1)
    y = y.reshape(-1)
    keep = (y != 0).nonzero().view(-1)
    rois, y = rois[keep], y[keep]
    roi = lambda f, r, s: tv_ops.roi_align(f, r, (8, 8), s, 0, aligned=False)
    if self.res == 64:
      feat = self.block_obj4(roi(taps[2], rois, 0.5))
    else:
      half = images.shape[2] / 2
      small = ((rois[:, 3] - rois[:, 1]) < half) & (
          (rois[:, 4] - rois[:, 2]) < half)
      fs = roi(self.block_obj4(self.block_obj3(taps[1])), rois[small], 0.25)
      fl = roi(self.block_obj4(taps[2]), rois[~small], 0.125)
      feat = self.block_obj5(torch.cat([fl, fs], 0))
      y = torch.cat([y[~small], y[small]])
      keep = torch.cat([keep[~small], keep[small]])
    feat = F.relu(feat).sum((2, 3))
    d_obj = self.l_obj(feat)[:, 0] + (self.l_y(y) * feat).sum(1)
    return d_img, d_obj, keep


# ------------------------------------------------------------------ inputs


def _layout(res, seed=0):
  """Boxes (x0, y0, x1, y1), classes with a pad (class 0) slot per image."""
  rng = np.random.default_rng(seed)
  xy = rng.uniform(0.0, 0.55, size=(B, O, 2))
  wh = rng.uniform(0.1, 0.45, size=(B, O, 2))
  boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  boxes[0, 1] = [0.05, 0.1, 0.95, 0.9]  # large box
  boxes[1, 0] = [0.6, 0.55, 0.9, 0.8]  # small, corner beyond half
  classes = rng.integers(1, 5, size=(B, O))
  classes[:, -1] = 0
  mask = classes != 0
  xywh = np.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], -1)
  xywh[~mask] = [-0.6, -0.6, 0.5, 0.5]
  return boxes, xywh.astype(np.float32), classes, mask


# ------------------------------------------------------------------- tests


def _run_both(tmod, fmod, t_args, f_args, check_fn, eval_mode=True):
  """Train step (then eval step); check_fn(t_out, f_out) each time."""
  apply = jax.jit(fmod.apply, static_argnames=('train', 'mutable'))
  variables = _to_flax(tmod)
  tmod.train()
  t_out = tmod(*t_args)
  f_out, _ = apply(variables, *f_args, train=True,
                   mutable=('batch_stats', 'spectral_norm'))
  check_fn(t_out, f_out)
  if eval_mode:
    tmod.eval()
    variables = _to_flax(tmod)  # running stats and u, v after the step
    check_fn(tmod(*t_args), apply(variables, *f_args, train=False))


@pytest.mark.parametrize('block', ['isla', 'resblock'])
def test_isla_and_resblock_v1_train_and_eval(block):
  torch.manual_seed(0)
  c, num_w = 4, 5
  if block == 'isla':
    tm, fm, out_shape = (tl.SpatialAdaptiveSynBatchNorm2d(c, num_w),
                         lg.IslaV1(c), (B, 8, 8, c))
  else:
    tm, fm, out_shape = (tl.ResBlock(c, 3, num_w), lg.ResBlockGV1(3),
                         (B, 16, 16, 3))
  _randomise(tm, 1)
  rng = np.random.default_rng(2)
  x = (rng.normal(size=(B, c, 8, 8)) * 2 + 0.5).astype(np.float32)
  w = rng.normal(size=(B, O, num_w)).astype(np.float32)
  m = rng.uniform(size=(B, O, 16, 16)).astype(np.float32)
  m[:, -1] = 0.0  # padded slot
  m[:, :, :3, :3] = 0.0  # pixels outside every mask
  t_args = (torch.tensor(x), torch.tensor(w), torch.tensor(m))
  f_args = (jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(w),
            jnp.asarray(m))
  _check_structure(_to_flax(tm), lambda: fm.init(
      jax.random.key(0), *f_args, train=False))

  def check(t_out, f_out):
    assert f_out.shape == out_shape
    assert _diff(f_out, _nhwc(t_out)) <= TOL
    if block == 'isla':  # uncovered pixels (3×3 of 16² → 1×1 of 8²): BN
      plain = _nhwc(tm.batch_norm2d(torch.tensor(x)))
      assert _diff(np.asarray(f_out)[:, :1, :1], plain[:, :1, :1]) <= TOL
      assert _diff(np.asarray(f_out)[:, 2:, 2:], plain[:, 2:, 2:]) > 1e-2

  _run_both(tm, fm, t_args, f_args, check)


def test_mask_net_v1_train_and_eval():
  torch.manual_seed(1)
  num_w, hidden = 7, 8
  tm = tl.MaskRegressNet(num_w, hidden=hidden)
  _randomise(tm, 3)
  _, xywh, _, _ = _layout(64, seed=4)
  w = np.random.default_rng(5).normal(size=(B, O, num_w)).astype(np.float32)
  fm = lg.MaskRegressNetV1(hidden=hidden)
  t_args = (torch.tensor(w), torch.tensor(xywh))
  f_args = (jnp.asarray(w), jnp.asarray(xywh))
  _check_structure(_to_flax(tm), lambda: fm.init(
      jax.random.key(0), *f_args, train=False))

  def check(t_out, f_out):
    assert f_out.shape == (B, O, 64, 64)
    assert _diff(f_out, _n(t_out)) <= TOL
    assert np.all(np.asarray(f_out)[:, -1] == 0.0)  # padded slot
    assert float(np.max(f_out)) > 0.1

  _run_both(tm, fm, t_args, f_args, check)


def test_generator_v1_end_to_end(res=128):
  """Whole 128² generator (64² canvas resized per layer), train mode.

  Eval-mode semantics (running statistics, stored u/v) are covered per
  block above; the 64² trunk differs only in widths (see the unit tests).
  """
  torch.manual_seed(2)
  kw = dict(num_classes=5, ch=1, z_dim=6, embed_dim=4, mask_hidden=4)
  tm = tl.ResnetGenerator(res, ch=1, z_dim=6, num_classes=5, embed_dim=4,
                          mask_hidden=4)
  _randomise(tm, 6)
  boxes, xywh, classes, mask = _layout(res, seed=7)
  rng = np.random.default_rng(8)
  z_img = rng.normal(size=(B, 6)).astype(np.float32)
  z_obj = rng.normal(size=(B, O, 6)).astype(np.float32)
  fm = lg.LostGanV1Generator(resolution=res, **kw)
  t_args = tuple(torch.tensor(a) for a in (z_obj, xywh, z_img, classes)) + (
      True,)   # return_mask
  f_args = tuple(jnp.asarray(a) for a in (z_img, z_obj, boxes, classes, mask))

  class Wrapped:
    apply = functools.partial(fm.apply, return_masks=True)

  def check(t_out, f_out):
    image, masks, raw = f_out
    np.testing.assert_array_equal(masks, raw)
    assert image.shape == (B, res, res, 3)
    assert masks.shape == (B, O, res, res) and masks.dtype == jnp.float32
    assert _diff(image, _nhwc(t_out[0])) <= TOL
    assert np.all(np.abs(np.asarray(image)) <= 1.0)
    bbmap = F.interpolate(t_out[1], size=(res, res), mode='bilinear',
                          align_corners=False)
    assert _diff(masks, _n(bbmap)) <= TOL
    m = np.asarray(masks)
    assert m.min() >= 0.0 and m.max() <= 1.0 and m.max() > 0.1
    assert np.all(m[~mask] == 0.0)  # padded slots: off-canvas box

  _run_both(tm, Wrapped, t_args, f_args, check, eval_mode=False)


@pytest.mark.parametrize('res', [64, 128])
def test_discriminator_v1(res):
  """Whole discriminator vs boolean-filtered torch reference (train mode).

  Eval mode differs only by skipping the SN power iteration (tested in
  test_lama_parity); the corner routing variant in the unit tests.
  """
  torch.manual_seed(3)
  tm = TorchDisc(res, 5, 1)
  _randomise(tm, 9)
  boxes, _, classes, mask = _layout(res, seed=10)
  images = np.random.default_rng(11).uniform(
      -1, 1, size=(B, 3, res, res)).astype(np.float32)
  fm = lg.LostGanV1Discriminator(resolution=res, num_classes=5, ch=1)
  f_args = (jnp.asarray(images.transpose(0, 2, 3, 1)), jnp.asarray(boxes),
            jnp.asarray(classes), jnp.asarray(mask))
  variables = _to_flax(tm)
  tm.train()
  d_img, d_obj, keep = tm(torch.tensor(images), torch.tensor(boxes),
                          torch.tensor(classes))
  (f_img, f_obj, valid), new = jax.jit(
      lambda v: fm.apply(v, *f_args, train=True, mutable=['spectral_norm']))(
          variables)
  np.testing.assert_array_equal(valid, mask)
  assert _diff(f_img, _n(d_img)) <= TOL
  slots = np.asarray(f_obj).reshape(-1)[_n(keep)]
  assert _diff(slots, _n(d_obj)) <= TOL
  assert np.all(np.asarray(f_obj)[~mask] == 0.0)
  if res == 128:  # both routes are exercised
    px = boxes[mask] * res
    small = np.asarray(lg.small_boxes(jnp.asarray(px), res))
    assert small.any() and not small.all()
  # u after one power iteration (block_obj4 twice at 128, as in torch).
  ref = _to_flax(tm)['spectral_norm']
  for blk in ('block1', 'block_obj4'):
    got = new['spectral_norm'][blk]['conv1']['sn']['conv/kernel/u']
    assert _diff(got, ref[blk]['conv1']['sn']['conv/kernel/u']) <= TOL
