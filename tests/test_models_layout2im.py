"""Layout2Im networks: ConvLSTM vs numpy, crops, masks, padding, counts.

Numerical parity of the crops and blocks with PyTorch:
tests/parity/test_layout2im_parity.py.
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i import config_lib
from jaxl2i.models import layers
from jaxl2i.models import layout2im as l2i
from jaxl2i.recipes import base

import fakes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(num_classes=7, resolution=32, crop_size=16, ch=4, z_dim=4,
            embed_dim=4, hidden=(8, 4, 4), kernel=3, num_res=1)


def _count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


# ------------------------------------------------------------- ConvLSTM ----
def _np_conv_same(x, kernel, bias):
  """x [H, W, C] * kernel [k, k, C, O] with zero padding k // 2, float64."""
  p, (h, w) = kernel.shape[0] // 2, x.shape[:2]
  xp = np.pad(x, ((p, p), (p, p), (0, 0)))
  out = np.zeros((h, w, kernel.shape[-1])) + bias
  for dy in range(kernel.shape[0]):
    for dx in range(kernel.shape[1]):
      out += xp[dy:dy + h, dx:dx + w] @ kernel[dy, dx]
  return out


def _np_conv_lstm(params, seq, hidden):
  """The reference's LayoutConvLSTM on one image's objects, step by step."""
  sig = lambda v: 1.0 / (1.0 + np.exp(-v))
  inputs = list(seq)
  for l, hid in enumerate(hidden):
    kernel = np.asarray(params[f'cell{l}']['kernel'], np.float64)
    bias = np.asarray(params[f'cell{l}']['bias'], np.float64)
    h = c = np.zeros(seq[0].shape[:2] + (hid,))
    outs = []
    for x in inputs:
      gates = _np_conv_same(np.concatenate([x, h], -1), kernel, bias)
      i, f, o, g = np.split(gates, 4, axis=-1)
      c = sig(f) * c + sig(i) * np.tanh(g)
      h = sig(o) * np.tanh(c)
      outs.append(h)
    inputs = outs
  return h


def test_conv_lstm_matches_numpy_and_skips_padded_steps():
  hidden, rng = (4, 3, 3), np.random.default_rng(0)
  x = rng.standard_normal((3, 5, 4, 5, 2)).astype(np.float32)   # [B,T,H,W,C]
  valid = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [1, 1, 0, 0, 0]],
                   bool)
  model = layers.ConvLSTM(hidden, kernel=3)
  params = fakes.filled(jax.eval_shape(model.init, jax.random.key(0), x,
                                         valid))
  fn = jax.jit(model.apply)
  out = np.asarray(fn(params, x, valid))
  assert out.shape == (3, 4, 5, 3)
  for b in range(3):   # numpy sees only the valid objects, in order
    want = _np_conv_lstm(params['params'], x[b][valid[b]], hidden)
    np.testing.assert_allclose(out[b], want, atol=2e-5, rtol=1e-5)
  # Garbage in every padded step changes nothing.
  junk = np.where(valid[..., None, None, None], x,
                  100 * rng.standard_normal(x.shape).astype(np.float32))
  np.testing.assert_array_equal(np.asarray(fn(params, junk, valid)), out)
  # The cell's conv has PyTorch's [in + hidden, 4·hidden] shape.
  assert params['params']['cell0']['kernel'].shape == (3, 3, 2 + 4, 16)
  assert params['params']['cell2']['bias'].shape == (12,)


# -------------------------------------------------------- crops, masks ----
def _np_crop(image, box, size):
  """grid_sample(align_corners=True, zeros) at linspace over the box."""
  h, w, c = image.shape
  x0, y0, x1, y1 = np.asarray(box, np.float64)
  ys = (y0 + (y1 - y0) * np.arange(size) / (size - 1)) * (h - 1)
  xs = (x0 + (x1 - x0) * np.arange(size) / (size - 1)) * (w - 1)
  out = np.zeros((size, size, c))
  for j, y in enumerate(ys):
    for k, x in enumerate(xs):
      fy, fx = int(np.floor(y)), int(np.floor(x))
      for yy, wy in ((fy, 1 - (y - fy)), (fy + 1, y - fy)):
        for xx, wx in ((fx, 1 - (x - fx)), (fx + 1, x - fx)):
          if 0 <= yy < h and 0 <= xx < w:
            out[j, k] += wy * wx * image[yy, xx]
  return out


def test_crops_sample_the_boxes_as_grid_sample():
  rng = np.random.default_rng(1)
  image = rng.standard_normal((2, 9, 7, 3)).astype(np.float32)
  boxes = np.float32([[[0.1, 0.2, 0.6, 0.9], [0, 0, 1, 1], [0.5, 0.5, 0.5,
                                                            0.5]],
                      [[-0.2, 0.3, 0.4, 1.3], [0.3, 0.1, 0.35, 0.2],
                       [0, 0, 0, 0]]])   # VG boxes may leave the image
  crops = np.asarray(jax.jit(l2i.crop_boxes, static_argnums=2)(
      jnp.asarray(image), boxes, 5))
  assert crops.shape == (2, 3, 5, 5, 3)
  for b in range(2):
    for o in range(3):
      np.testing.assert_allclose(crops[b, o], _np_crop(image[b], boxes[b, o],
                                                       5), atol=1e-5)
  # The whole image (0, 0, 1, 1): rows 0, 2, .., 8; columns 0, 1.5, .., 6.
  np.testing.assert_allclose(crops[0, 1][:, ::2], image[0, ::2][:, ::3],
                             atol=1e-6)


@pytest.mark.parametrize('nonempty', [True, False])
def test_box_masks_round_half_to_even_as_python(nonempty):
  s = 8
  boxes = np.float32([[0.0, 0.0, 1.0, 1.0], [0.0625, 0.1875, 0.3125, 0.5],
                      [0.5, 0.5, 0.52, 0.55], [0.3, 0.3, 0.3, 0.3],
                      [0.123, 0.77, 0.91, 0.99]])
  got = np.asarray(jax.jit(l2i.box_masks, static_argnums=(1, 2))(
      jnp.asarray(boxes), s, nonempty))
  for box, m in zip(boxes, got):
    x0, y0, x1, y1 = (float(v) for v in box)   # the loaders' Python floats
    r0, c0 = round(y0 * s), round(x0 * s)
    r1 = max(r0 + 1, round(y1 * s)) if nonempty else round(y1 * s)
    c1 = max(c0 + 1, round(x1 * s)) if nonempty else round(x1 * s)
    want = np.zeros((s, s))
    want[r0:r1, c0:c1] = 1
    np.testing.assert_array_equal(m, want)
  # 0.0625·8 = 0.5 rounds to 0, 0.1875·8 = 1.5 to 2 (half to even).
  assert got[1, 2, 0] == 1 and got[1, 1, 0] == 0


def test_conditional_batch_norm_uses_valid_rows_only():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
  y = np.array([1, 0, 2, 1])
  mask = np.array([True, True, False, True])
  cbn = layers.ConditionalBatchNorm(num_classes=3)
  v = jax.jit(lambda k: cbn.init(k, x, y, train=False))(jax.random.key(0))
  out, st = jax.jit(lambda v: cbn.apply(v, x, y, train=True, mask=mask,
                                        mutable=['batch_stats']))(v)
  sel = x[mask]
  mean, var = sel.mean((0, 1, 2)), sel.var((0, 1, 2))
  table = np.asarray(v['params']['embed'])
  want = table[y, None, None, :2] * (x - mean) / np.sqrt(var + 1e-5) + \
      table[y, None, None, 2:]
  np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)
  np.testing.assert_allclose(st['batch_stats']['bn']['mean'], 0.1 * mean,
                             atol=1e-6)
  np.testing.assert_allclose(table[:, :2].mean(), 1.0, atol=0.05)
  np.testing.assert_array_equal(table[:, 2:], 0.0)


# ------------------------------------------------------- the generator ----
def _layout(o, junk=False, seed=3):
  """Image 0 has 3 objects, image 1 has 2; slots beyond are padding (zeros,
  or with junk=True random boxes, classes and codes)."""
  rng = np.random.default_rng(seed)
  boxes = np.zeros((2, o, 4), np.float32)
  classes = np.zeros((2, o), np.int32)
  real = np.float32([[[0.1, 0.1, 0.6, 0.7], [0.4, 0.2, 0.9, 0.5],
                      [0.0, 0.5, 1.0, 1.0]],
                     [[0.2, 0.0, 0.8, 0.4], [0.1, 0.3, 0.5, 0.95],
                      [0, 0, 0, 0]]])
  boxes[:, :3], classes[:, :3] = real, [[1, 4, 6], [2, 5, 0]]
  valid = np.zeros((2, o), bool)
  valid[0, :3], valid[1, :2] = True, True
  if junk:
    xy = rng.uniform(0, 0.5, (2, o, 2))
    junk_boxes = np.concatenate([xy, xy + 0.4], -1).astype(np.float32)
    boxes = np.where(valid[..., None], boxes, junk_boxes)
    classes = np.where(valid, classes, rng.integers(1, 7, (2, o)))
  return boxes, classes, valid


@pytest.fixture(scope='module')
def generator():
  g = l2i.Layout2ImGenerator(**TINY)
  image = jnp.asarray(np.random.default_rng(4).standard_normal((2, 32, 32, 3)),
                      jnp.float32)
  boxes, classes, valid = _layout(3)
  shapes = jax.eval_shape(lambda: g.init(
      {'params': jax.random.key(0), 'eps': jax.random.key(1)}, image, boxes,
      classes, valid, jnp.zeros((2, 3, 4)), train=False))
  train = jax.jit(lambda v, *a: g.apply(v, image, *a, train=True,
                                        rngs={'eps': jax.random.key(5)},
                                        mutable=['batch_stats']))
  sample = jax.jit(lambda v, *a: g.apply(
      v, *a, method=l2i.Layout2ImGenerator.generate))
  return g, fakes.filled(shapes), train, sample


def test_padded_objects_do_not_change_the_generator(generator):
  """Junk in the padded slots (boxes, classes, codes) changes no output and
  no running average; sampling with 3 slots equals sampling with 6."""
  _, variables, train, sample = generator
  key = jax.random.key(6)
  runs = {}
  for o, junk in ((6, False), (6, True), (3, False)):
    boxes, classes, valid = _layout(o, junk)
    z = l2i.slot_normal(key, (2, o, 4))
    if junk:
      z = jnp.where(valid[..., None], z, 50.0)
    runs[o, junk] = (boxes, classes, valid, z)
  (clean, st_clean), (dirty, st_dirty) = (train(variables, *runs[6, j])
                                          for j in (False, True))
  valid = runs[6, False][2]
  for k in clean:
    a, b = np.asarray(dirty[k]), np.asarray(clean[k])
    if k.startswith('img'):
      np.testing.assert_allclose(a, b, atol=1e-5, err_msg=k)
    else:
      np.testing.assert_allclose(a[valid], b[valid], atol=1e-5, err_msg=k)
  for a, b in zip(jax.tree.leaves(st_dirty), jax.tree.leaves(st_clean)):
    np.testing.assert_allclose(a, b, atol=1e-6)   # running averages too
  images = [sample(variables, *runs[k]) for k in ((3, False), (6, True))]
  np.testing.assert_allclose(images[1], images[0], atol=1e-5)
  assert clean['img_rand'].shape == (2, 32, 32, 3)
  assert clean['crops_real'].shape == (2, 6, 16, 16, 3)
  assert float(jnp.abs(clean['img_rec'] - clean['img_rand']).mean()) > 1e-3


def test_latent_regression_reaches_the_encoder_unless_fixed(generator):
  """The z regression's gradient reaches the crop encoder as in train.py;
  with z_rec_fixed_encoder (BicycleGAN's) only the rest of G, whose
  gradients, like the BN statistics, are the same either way."""
  _, variables, _, _ = generator
  image = jnp.asarray(np.random.default_rng(4).standard_normal((2, 32, 32, 3)),
                      jnp.float32)
  boxes, classes, valid = _layout(3)
  z = l2i.slot_normal(jax.random.key(7), (2, 3, 4))

  def grads(fixed):
    model = l2i.Layout2ImGenerator(**TINY, z_rec_fixed_encoder=fixed)

    def loss(params):
      out, st = model.apply({**variables, 'params': params}, image, boxes,
                            classes, valid, z, train=True,
                            rngs={'eps': jax.random.key(5)},
                            mutable=['batch_stats'])
      return jnp.abs(out['z_rand_rec'] - z)[valid].mean(), st

    return jax.jit(jax.grad(loss, has_aux=True))(variables['params'])

  norm = lambda t: float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(t)))
  (ref, st_ref), (fixed, st_fixed) = grads(False), grads(True)
  assert norm(ref['crop_encoder']) > 1e-3
  assert norm(fixed['crop_encoder']) == 0.0
  for part in ('layout_encoder', 'decoder'):
    np.testing.assert_allclose(norm(fixed[part]), norm(ref[part]), rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               st_fixed, st_ref)


def test_layout_encoder_keeps_the_66_pixel_quirk():
  """c1 is a 1×1 conv with padding 1: 64 → 66 → 33 → 16 → 8 (reference)."""
  enc = l2i.LayoutEncoder(num_classes=184)
  args = (jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2, 64, 64)),
          jnp.zeros((1, 2, 64)), jnp.ones((1, 2), bool))
  v = jax.eval_shape(lambda: enc.init(jax.random.key(0), *args, train=False))
  inter = jax.eval_shape(lambda v: enc.apply(
      v, *args, train=False, capture_intermediates=True,
      mutable=['intermediates'])[1]['intermediates'], v)
  sizes = [inter[f'c{i}']['__call__'][0].shape[1:] for i in (1, 2, 3, 4)]
  assert sizes == [(66, 66, 64), (33, 33, 128), (16, 16, 256), (8, 8, 512)]
  assert inter['res5']['__call__'][0].shape == (1, 8, 8, 64)


@pytest.mark.parametrize('name,num_classes,g,d_img,d_obj', [
    ('coco_layout2im.py', 184, 27_684_739, 10_141_440, 10_330_041),
    ('vg_layout2im.py', 179, 27_654_979, 10_141_440, 10_324_916),
])
def test_official_parameter_counts(name, num_classes, g, d_img, d_obj):
  """The official code's counts at 64×64 (spectral norm adds none)."""
  c = config_lib.load(os.path.join(ROOT, 'configs', name))
  meta = fakes.FakeMeta(num_classes=num_classes,
                        class_names=('c',) * num_classes)
  recipe = base.get_recipe(c, meta)
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                       fakes.batch(2, 64, max_objects=c.data.max_objects))
  g_vars, d_vars = jax.eval_shape(recipe.init, jax.random.key(0), batch)
  assert _count(g_vars['params']) == g
  assert _count(d_vars['params']['img']) == d_img
  assert _count(d_vars['params']['obj']) == d_obj
  assert set(g_vars) == {'params', 'batch_stats'}
  assert set(d_vars) == {'params', 'spectral_norm'}
