"""Shape, collection, RNG and parameter-count tests of the LAMA networks.

Numerical parity with PyTorch: tests/parity/test_lama_parity.py and
tests/parity/test_roi_align_parity.py.
"""

import functools
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import lama
from jaxl2i.models import lama_discriminator as lama_d

# Official counts with 184 classes (reference/README.md).
G_PARAMS = {64: 14_849_438, 128: 12_701_299, 256: 22_635_336}
D_PARAMS = {64: 23_308_998, 128: 43_987_401, 256: 45_495_242}
B, O = 2, 3
TINY_G = dict(num_classes=5, ch=4, z_dim=8, embed_dim=8, mask_hidden=8)


def _count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _layout(key, b=B, o=O, res=64):
  k1, k2, k3, k4 = jax.random.split(key, 4)
  xy = jax.random.uniform(k1, (b, o, 2), minval=0.0, maxval=0.5)
  wh = jax.random.uniform(k2, (b, o, 2), minval=0.2, maxval=0.5)
  boxes = jnp.concatenate([xy, xy + wh], -1)
  classes = jax.random.randint(k3, (b, o), 1, 5)
  mask = jnp.ones((b, o), bool).at[:, -1].set(False)
  classes = jnp.where(mask, classes, 0)
  z_img = jax.random.normal(k4, (b, 8))
  z_obj = jax.random.normal(k4, (b, o, 8))
  return z_img, z_obj, boxes, classes, mask


def _fake_init(init_fn, seed=0):
  """Variables with the structure of `init_fn()` filled with numpy values.

  The real initialisers (orthogonal via QR) take ~40 s to compile on CPU;
  the tests here only need well-scaled values. Scalars: ρ 0.1, gates α 0.5;
  BN scale/var 1; SN u, v unit vectors; other tensors N(0, 0.3²).
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(init_fn)

  def fill(path, s):
    name = str(path[-1].key)
    if name in ('rho',):
      return jnp.full(s.shape, 0.1, s.dtype)
    if name.endswith('alpha'):
      return jnp.full(s.shape, 0.5, s.dtype)
    if name in ('scale', 'var', 'sigma'):
      return jnp.ones(s.shape, s.dtype)
    v = rng.normal(size=s.shape) * (1.0 if name.endswith(('/u', '/v')) else
                                     0.3)
    if name.endswith(('/u', '/v')):
      v = v / np.linalg.norm(v)
    return jnp.asarray(v, s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _set(params, suffix, value):
  """Sets every scalar param whose path ends in `suffix`."""
  flat = flax.traverse_util.flatten_dict(params)
  flat = {k: (jnp.full_like(v, value) if k[-1] == suffix else v)
          for k, v in flat.items()}
  return flax.traverse_util.unflatten_dict(flat)


@pytest.fixture(scope='module')
def tiny_g():
  g = lama.LamaGenerator(resolution=64, **TINY_G)
  inputs = _layout(jax.random.key(0))
  rngs = {'params': jax.random.key(1), 'noise': jax.random.key(2)}
  variables = _fake_init(lambda: g.init(rngs, *inputs, train=False))
  # Gates open (0.5, α_mask 0.7) so that each path influences the output.
  params = _set(variables['params'], 'mask_adjust_alpha', 0.7)
  variables = {**variables, 'params': params}

  @functools.partial(jax.jit, static_argnames='train')
  def run(variables, inputs, key, train=False):
    return g.apply(variables, *inputs, train=train, return_masks=True,
                   rngs={'noise': key},
                   mutable=['batch_stats', 'spectral_norm'] if train else False)

  return g, variables, inputs, run


@pytest.mark.parametrize('res', [64, 128, 256])
def test_official_parameter_counts(res):
  b, o = 1, 8

  def init_g():
    g = lama.LamaGenerator(resolution=res)
    return g.init({'params': jax.random.key(0), 'noise': jax.random.key(1)},
                  jnp.zeros((b, 128)), jnp.zeros((b, o, 128)),
                  jnp.zeros((b, o, 4)), jnp.zeros((b, o), jnp.int32),
                  jnp.ones((b, o), bool), train=False)

  def init_d():
    d = lama_d.LamaDiscriminator(resolution=res)
    return d.init(jax.random.key(0), jnp.zeros((b, res, res, 3)),
                  jnp.zeros((b, o, 4)), jnp.zeros((b, o), jnp.int32),
                  jnp.ones((b, o), bool), train=False)

  gv, dv = jax.eval_shape(init_g), jax.eval_shape(init_d)
  assert _count(gv['params']) == G_PARAMS[res]
  assert _count(dv['params']) == D_PARAMS[res]
  assert set(gv) == {'params', 'batch_stats', 'spectral_norm'}
  assert set(dv) == {'params', 'spectral_norm'}


def test_no_adaption_ablation_drops_only_lama_params():
  args = (jnp.zeros((1, 128)), jnp.zeros((1, 8, 128)), jnp.zeros((1, 8, 4)),
          jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), bool))
  counts = []
  for adapt in (True, False):
    g = lama.LamaGenerator(resolution=64, mask_adaption=adapt)
    v = jax.eval_shape(lambda g=g: g.init(
        {'params': jax.random.key(0), 'noise': jax.random.key(1)}, *args,
        train=False))
    counts.append(_count(v['params']))
  d, dm = 258, 64  # LAMA at 64: key/query SN-Linear(d→d'), 2 adjust blocks.
  lama_params = 2 * (d * dm + dm) + 2 * (9 * dm * dm + 2 * dm + 1) + 1
  assert counts[0] - counts[1] == lama_params


def test_generator_shapes_ranges_and_padding(tiny_g):
  _, variables, inputs, run = tiny_g
  image, adapted, raw = run(variables, inputs, jax.random.key(3), False)
  assert image.shape == (B, 64, 64, 3) and image.dtype == jnp.float32
  assert adapted.shape == raw.shape == (B, O, 64, 64)
  assert np.all(np.abs(np.asarray(image)) <= 1.0)
  raw, adapted = np.asarray(raw), np.asarray(adapted)
  assert raw.min() >= 0.0 and raw.max() <= 1.0 and raw.max() > 0.1
  assert adapted.min() >= 0.0 and adapted.max() <= 2.0  # tanh saturates
  # Padded slot (objects_mask False): off-canvas box → all-zero masks.
  assert np.all(raw[:, -1] == 0.0) and np.all(adapted[:, -1] == 0.0)
  # Masks vanish outside the (box + 1 pixel) footprint.
  boxes = np.asarray(inputs[2])
  x1 = int(np.ceil(boxes[0, 0, 2] * 63)) + 1
  assert np.all(raw[0, 0, :, x1 + 1:] == 0.0)
  # With α_mask ≠ 0 the adaption changes the masks.
  assert np.max(np.abs(adapted - raw)) > 1e-3


def test_generator_noise_stream_and_train_mode(tiny_g):
  _, variables, inputs, run = tiny_g
  a = run(variables, inputs, jax.random.key(3), False)[0]
  b = run(variables, inputs, jax.random.key(3), False)[0]
  c = run(variables, inputs, jax.random.key(4), False)[0]
  np.testing.assert_array_equal(a, b)
  assert np.max(np.abs(np.asarray(a) - np.asarray(c))) > 1e-4
  (image, _, _), new = run(variables, inputs, jax.random.key(3), True)
  assert image.shape == (B, 64, 64, 3)
  assert set(new) == {'batch_stats', 'spectral_norm'}
  old_u = jax.tree.leaves(variables['spectral_norm'])
  new_u = jax.tree.leaves(new['spectral_norm'])
  assert any(not np.allclose(x, y) for x, y in zip(old_u, new_u))


def test_generator_bfloat16_compute():
  g = lama.LamaGenerator(resolution=64, dtype=jnp.bfloat16, **TINY_G)
  inputs = _layout(jax.random.key(5))
  out = jax.eval_shape(lambda: g.init_with_output(
      {'params': jax.random.key(1), 'noise': jax.random.key(2)}, *inputs,
      train=False, return_masks=True))
  (image, adapted, raw), variables = out
  assert image.dtype == jnp.bfloat16
  assert adapted.dtype == raw.dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))


@pytest.mark.parametrize('res', [64, 128])
def test_discriminator_shapes_and_validity(res):
  d = lama_d.LamaDiscriminator(resolution=res, num_classes=5, ch=2)
  _, _, boxes, classes, mask = _layout(jax.random.key(6), res=res)
  images = jax.random.uniform(jax.random.key(7), (B, res, res, 3),
                              minval=-1.0, maxval=1.0)
  # A large box (routed to the large-box path at 128) in slot 1.
  boxes = boxes.at[:, 1].set(jnp.array([0.0, 0.0, 0.9, 0.8]))
  classes = classes.at[0, 0].set(0)  # class 0 is dropped like a pad.
  variables = _fake_init(lambda: d.init(
      jax.random.key(8), images, boxes, classes, mask, train=False))
  fn = jax.jit(lambda v, x: d.apply(v, x, boxes, classes, mask, train=True,
                                    mutable=['spectral_norm']))
  (d_img, d_obj, valid), _ = fn(variables, images)
  assert d_img.shape == (B,) and d_obj.shape == (B, O)
  expect = np.asarray(mask) & (np.asarray(classes) != 0)
  np.testing.assert_array_equal(valid, expect)
  assert np.all(np.asarray(d_obj)[~expect] == 0.0)
  assert np.all(np.asarray(d_obj)[expect] != 0.0)
  # Object scores depend on the image inside the box.
  (_, d_obj2, _), _ = fn(variables, images.at[:, :8, :8].set(0.0))
  assert np.max(np.abs(np.asarray(d_obj2 - d_obj))[expect]) > 0


def test_reference_initialisation_of_one_block():
  """init_parameter: orthogonal ≥2-D weights, zero biases, ρ 0.1, α 0."""
  blk = lama.IslaBgn(8)
  x = jnp.ones((2, 4, 4, 8))
  w = jnp.ones((2, 3, 6))
  m = jnp.ones((2, 3, 8, 8))
  v = blk.init(jax.random.key(0), x, w, m, train=False)['params']
  k = np.asarray(v['weight_proj']['dense']['kernel'])  # [6, 8]: rows ⟂
  np.testing.assert_allclose(k @ k.T, np.eye(6), atol=1e-5)
  assert np.all(np.asarray(v['bias_proj']['dense']['bias']) == 0)
  assert float(v['rho']) == pytest.approx(0.1) and float(v['alpha']) == 0.0
