"""Shapes, collections, resizing and official parameter counts of SPADE.

Numerical parity with PyTorch is in tests/parity/test_spade_parity.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import spade
from jaxl2i.models import spade_discriminator as sd

SN = spade.SN_COLLECTION
MUTABLE = ['batch_stats', SN]
RNGS = {'params': jax.random.key(0), 'noise': jax.random.key(1)}

# reference/README.md, "Parameter counts of the official implementations":
# (semantic_nc, H, W, mode) → (G, D); D sees semantic_nc + 3 channels.
OFFICIAL = {
    'coco': ((184, 256, 256, 'normal'), 97_480_899, 5_904_514),
    'ade20k': ((151, 256, 256, 'normal'), 96_492_483, 5_836_930),
    'cityscapes': ((36, 256, 512, 'more'), 93_048_003, 5_601_410),
}
COCO_VAE_G, COCO_VAE_E = 112_626_883, 10_463_424


def _shapes(module, *args, **kwargs):
  return jax.eval_shape(
      lambda: module.init(RNGS, *args, train=False, **kwargs))


def _changed(a, b):
  return jax.tree.leaves(
      jax.tree.map(lambda x, y: bool(np.any(x != y)), a, b))


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_official_parameter_counts(name):
  (s, h, w, mode), g_count, d_count = OFFICIAL[name]
  g = spade.SPADEGenerator(num_upsampling_layers=mode)
  v = _shapes(g, jnp.zeros((1, h, w, s)))
  assert spade.count_params(v['params']) == g_count
  assert set(v) == {'params', 'batch_stats', SN}
  # SN on conv_0/conv_1 of all 7 blocks and conv_s of the 4 up blocks only.
  sn_layers = {(blk, c) for blk in v[SN] for c in v[SN][blk]}
  assert len(sn_layers) == 7 * 2 + 4
  assert all(c.startswith('conv_') for _, c in sn_layers)
  assert 'fc' not in v[SN] and 'conv_img' not in v[SN]
  assert v['params']['fc']['kernel'].shape == (3, 3, s, 1024)
  d = sd.MultiscaleDiscriminator()
  dv = _shapes(d, jnp.zeros((1, h, w, s + 3)))
  assert spade.count_params(dv['params']) == d_count
  assert set(dv) == {'params', SN}


def test_official_vae_parameter_counts():
  g = spade.SPADEGenerator(use_vae=True)
  v = _shapes(g, jnp.zeros((1, 256, 256, 184)))
  assert spade.count_params(v['params']) == COCO_VAE_G
  assert v['params']['fc']['kernel'].shape == (256, 1024 * 8 * 8)
  e = sd.ConvEncoder()
  ev = _shapes(e, jnp.zeros((1, 256, 256, 3)))
  assert spade.count_params(ev['params']) == COCO_VAE_E
  assert all('bias' not in ev['params'][f'layer{i}'] for i in range(1, 7))
  # The encoder resizes any input to 256² first.
  mu, logvar = jax.eval_shape(
      lambda: e.init_with_output(RNGS, jnp.zeros((2, 300, 200, 3)),
                                 train=False)[0])
  assert mu.shape == logvar.shape == (2, 256)


def test_discriminator_feature_shapes():
  d = sd.MultiscaleDiscriminator()
  x = jnp.zeros((2, 256, 256, 187))
  v = _shapes(d, x)
  out = jax.eval_shape(lambda v: d.apply(v, x, train=False), v)
  got = [[f.shape[1:] for f in scale] for scale in out]
  assert got == [
      [(129, 129, 64), (65, 65, 128), (33, 33, 256), (34, 34, 512),
       (35, 35, 1)],
      [(65, 65, 64), (33, 33, 128), (17, 17, 256), (18, 18, 512),
       (19, 19, 1)]]
  # depth_spade.md §2: 64² D input (155 ch) → 33,17,9,10,11 and 17,9,5,6,7.
  x = jnp.zeros((1, 64, 64, 155))
  v = _shapes(d, x)
  out = jax.eval_shape(lambda v: d.apply(v, x, train=False), v)
  assert [[f.shape[1] for f in s] for s in out] == [
      [33, 17, 9, 10, 11], [17, 9, 5, 6, 7]]


@pytest.mark.parametrize('mode,size,blocks', [
    ('more', (64, 128), 4), ('most', (128, 128), 5)])
def test_generator_modes_shapes(mode, size, blocks):
  g = spade.SPADEGenerator(num_upsampling_layers=mode, ngf=8, out_channels=1,
                           bilinear_channels=(4,))
  hash(g)  # hashable: usable as a static jit argument
  seg = jnp.zeros((2, *size, 5))
  out, v = jax.eval_shape(
      lambda: g.init_with_output(RNGS, seg, train=False))
  assert out.shape == (2, *size, 1)
  assert v['params']['fc']['kernel'].shape[-1] == 128
  ups = sorted(k for k in v['params'] if k.startswith('up_'))
  assert ups == [f'up_{i}' for i in range(blocks)]
  if mode == 'most':  # up_4: 64 → 32 channels at ngf 64 (here 8 → 4).
    assert v['params']['conv_img']['kernel'].shape == (3, 3, 4, 1)
  with pytest.raises(ValueError, match='divisible'):
    jax.eval_shape(lambda: g.init(RNGS, jnp.zeros((1, 32, 128, 5)),
                                  train=False))


def random_variables(shapes, seed):
  """Random variables of the given structure, built on the host.

  Compiling `init` of a whole generator costs ~20 s on CPU (RNG-heavy), so
  tests that only need *some* weights fill them here: kernels N(0, 1/fan_in),
  biases N(0, 0.1²), BN running mean 0 / var 1, SN u random unit and
  v = n(Wᵀu) as SpectralConv's init does.
  """
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda a: rng.normal(0, 1 / np.sqrt(np.prod(a.shape[:-1])), a.shape)
      if len(a.shape) > 1 else rng.normal(0, 0.1, a.shape),
      shapes['params'])
  out = {'params': params}
  if 'batch_stats' in shapes:
    out['batch_stats'] = jax.tree_util.tree_map_with_path(
        lambda p, a: np.full(a.shape, float(p[-1].key == 'var')),
        shapes['batch_stats'])

  def sn(path, node):
    kernel = params
    for k in path:
      kernel = kernel[k.key]
    w = np.asarray(kernel['kernel']).reshape(-1, node['u'].shape[0])
    u = rng.normal(size=node['u'].shape)
    u /= np.linalg.norm(u)
    v = w @ u
    return {'u': u, 'v': v / np.linalg.norm(v)}

  if SN in shapes:
    out[SN] = jax.tree_util.tree_map_with_path(
        sn, shapes[SN], is_leaf=lambda t: isinstance(t, dict) and 'u' in t)
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), out)


@pytest.fixture(scope='module')
def tiny_g():
  """Tiny generator, random variables and ONE jitted apply."""
  g = spade.SPADEGenerator(
      ngf=8, bilinear_channels=(4,))
  seg = jax.nn.one_hot(
      jax.random.randint(jax.random.key(3), (2, 32, 32), 0, 4), 5)
  seg = seg.at[..., 4].set(jax.random.uniform(jax.random.key(4), (2, 32, 32)))
  shapes = jax.eval_shape(lambda: g.init(RNGS, seg, train=False))
  variables = random_variables(shapes, seed=0)

  @functools.partial(jax.jit, static_argnames=('train', 'dtype'))
  def apply(v, s, train, dtype=jnp.float32):
    return g.clone(dtype=dtype).apply(v, s, train=train, mutable=MUTABLE)

  return g, seg, variables, apply


def _check_state_update(old, new, train):
  bn = _changed(old['batch_stats'], new['batch_stats'])
  # v starts at n(Wᵀu), so the first power iteration changes u only.
  u = _changed(*(jax.tree.map(lambda t: t['u'], c, is_leaf=lambda t: 'u' in t)
                 for c in (old[SN], new[SN])))
  if train:
    assert all(bn) and all(u)
  else:
    assert not any(bn) and not any(_changed(old[SN], new[SN]))


def test_tiny_generator_train_eval(tiny_g):
  g, seg, variables, apply = tiny_g
  assert set(variables) == {'params', 'batch_stats', SN}
  for leaf in jax.tree.leaves(variables):
    assert leaf.dtype == jnp.float32
  for train in (True, False):
    out, new = apply(variables, seg, train)
    assert out.shape == (2, 32, 32, 3) and out.dtype == jnp.float32
    out = np.asarray(out)
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    _check_state_update(variables, new, train)


def test_bf16_compute_float32_state(tiny_g):
  g, seg, variables, _ = tiny_g
  low = g.clone(dtype=jnp.bfloat16)
  out, new = jax.eval_shape(functools.partial(
      low.apply, train=True, mutable=MUTABLE), variables, seg)
  assert out.dtype == jnp.bfloat16 and out.shape == (2, 32, 32, 3)
  for leaf in jax.tree.leaves(new):
    assert leaf.dtype == jnp.float32  # BN statistics and u, v stay f32.
  # Numerics on one residual block (random weights, learned shortcut).
  block = spade.SPADEResnetBlock(8)
  x = jax.random.normal(jax.random.key(5), (2, 8, 8, 16))
  seg = jax.random.uniform(jax.random.key(6), (2, 16, 16, 5))
  v = random_variables(jax.eval_shape(
      lambda: block.init(RNGS, x, seg, train=False)), seed=1)

  @functools.partial(jax.jit, static_argnames='dtype')
  def run(dtype):
    return block.clone(dtype=dtype).apply(
        v, x, seg, train=True, mutable=MUTABLE)

  (ref, ref_state), (low_out, low_state) = run(jnp.float32), run(
      jnp.bfloat16)
  assert low_out.dtype == jnp.bfloat16
  ref, low_out = np.asarray(ref), np.asarray(low_out, np.float32)
  rel = np.abs(low_out - ref).mean() / np.abs(ref).mean()
  assert 0 < rel < 0.02, rel
  # Statistics are reduced in f32 from the (bf16) inputs: nearly equal.
  for a, b in zip(jax.tree.leaves(ref_state), jax.tree.leaves(low_state)):
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(b, a, rtol=0.02, atol=0.02)


def test_init_statistics():
  """xavier_normal(0.02) weights and zero biases (A8), from a real init."""
  block = spade.SPADEResnetBlock(16)
  x, seg = jnp.ones((1, 4, 4, 32)), jnp.ones((1, 8, 8, 5))
  p = jax.jit(lambda: block.init(RNGS, x, seg, train=False))()['params']
  k = np.asarray(p['norm_0']['mlp_shared']['kernel'])  # 3,3,5,128
  expected = 0.02 * np.sqrt(2 / (9 * 5 + 9 * 128))
  assert abs(k.std() / expected - 1) < 0.05
  k = np.asarray(p['conv_0']['kernel'])  # 3,3,32,16 (raw SN weight)
  expected = 0.02 * np.sqrt(2 / (9 * 32 + 9 * 16))
  assert abs(k.std() / expected - 1) < 0.05
  np.testing.assert_array_equal(np.asarray(p['conv_1']['bias']), 0.0)
  np.testing.assert_array_equal(np.asarray(p['norm_s']['mlp_beta']['bias']),
                                0.0)
  assert 'bias' not in p['conv_s']
  assert set(p['norm_0']) == {'mlp_shared', 'mlp_gamma', 'mlp_beta'}


def test_vae_generator_and_encoder():
  g = spade.SPADEGenerator(ngf=4, use_vae=True, z_dim=16)
  seg = jnp.ones((2, 32, 64, 3))
  v = jax.eval_shape(lambda: g.init(RNGS, seg, train=False))
  assert v['params']['fc']['kernel'].shape == (16, 64 * 1 * 2)
  z = jnp.zeros((2, 16))
  out = jax.eval_shape(lambda v: g.apply(v, seg, z, train=False), v)
  assert out.shape == (2, 32, 64, 3)
  with pytest.raises(Exception, match='noise'):  # z=None needs 'noise'.
    jax.eval_shape(lambda v: g.apply(v, seg, train=False), v)
  e = sd.ConvEncoder(ndf=4, num_layers=3, input_size=32, z_dim=16)
  img = jax.random.uniform(jax.random.key(9), (2, 40, 24, 3), minval=-1)
  (mu, logvar), ev = jax.eval_shape(lambda: e.init_with_output(
      RNGS, img, train=False))
  assert mu.shape == logvar.shape == (2, 16) and mu.dtype == jnp.float32
  assert ev['params']['fc_mu']['kernel'].shape == (16 * 4 * 4, 16)
  z = sd.reparameterize(
      jax.random.key(10), jnp.full((4000, 16), 3.0),
      jnp.full((4000, 16), np.log(4.0)))
  assert abs(float(z.mean()) - 3) < 0.05 and abs(float(z.std()) - 2) < 0.05


def test_resize_nearest_floor_rule():
  x = jnp.arange(2 * 12 * 10 * 1, dtype=jnp.float32).reshape(2, 12, 10, 1)
  xn = np.asarray(x)
  # ×1/2 picks 2i (PyTorch), not 2i+1 (jax.image.resize 'nearest').
  np.testing.assert_array_equal(spade.resize_nearest(x, (6, 5)),
                                xn[:, ::2, ::2])
  for size in ((5, 3), (7, 10), (24, 20), (18, 15)):
    ih = (np.arange(size[0]) * 12) // size[0]
    iw = (np.arange(size[1]) * 10) // size[1]
    np.testing.assert_array_equal(
        spade.resize_nearest(x, size), xn[:, ih][:, :, iw])


def test_resize_segmap_bilinear_channels():
  key = jax.random.key(11)
  seg = jax.nn.one_hot(jax.random.randint(key, (1, 8, 8), 0, 3), 3)
  depth = jax.random.uniform(jax.random.key(12), (1, 8, 8, 1))
  cond = jnp.concatenate([seg, depth], -1)
  out = np.asarray(jax.jit(functools.partial(
      spade.resize_segmap, size=(4, 4), bilinear_channels=(3,)))(cond))
  np.testing.assert_array_equal(out[..., :3], np.asarray(seg)[:, ::2, ::2])
  d = np.asarray(depth)[0, :, :, 0]
  blocks = d.reshape(4, 2, 4, 2).mean(axis=(1, 3))  # align_corners=False ×½
  np.testing.assert_allclose(out[0, :, :, 3], blocks, atol=1e-6)
  # Default: nearest on every channel.
  np.testing.assert_array_equal(
      spade.resize_segmap(cond, (4, 4)), np.asarray(cond)[:, ::2, ::2])


def test_spectral_conv_converges_to_unit_norm():
  conv = spade.SpectralConv(6, 3, 1, 1)
  x = jnp.ones((1, 5, 5, 4))
  v = conv.init(RNGS, x, update_stats=False)
  out0, new = conv.apply(v, x, update_stats=False, mutable=[SN])
  assert not any(_changed(v[SN], new[SN]))
  step = jax.jit(lambda v: conv.apply(v, x, update_stats=True,
                                      mutable=[SN])[1])
  for _ in range(100):
    v = dict(v, **step(v))
  w = np.asarray(v['params']['kernel']).reshape(-1, 6)
  sigma_true = np.linalg.svd(w, compute_uv=False)[0]
  u, vv = np.asarray(v[SN]['u']), np.asarray(v[SN]['v'])
  assert abs(u @ (vv @ w) / sigma_true - 1) < 1e-4
  assert abs(np.linalg.norm(u) - 1) < 1e-6
  # Eval output = conv with the kernel divided by the stored sigma.
  out = conv.apply(v, x, update_stats=False)
  plain = jax.lax.conv_general_dilated(
      x, v['params']['kernel'] / (u @ (vv @ w)), (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + v['params']['bias']
  np.testing.assert_allclose(out, plain, atol=1e-5)


def test_tiny_discriminator_and_downsample():
  d = sd.MultiscaleDiscriminator(ndf=8, n_layers=4, num_d=2)
  x = jax.random.normal(jax.random.key(13), (4, 32, 32, 6))
  v = random_variables(
      jax.eval_shape(lambda: d.init(RNGS, x, train=False)), seed=2)
  out, new = jax.jit(functools.partial(
      d.apply, train=True, mutable=[SN]))(v, x)
  assert [[f.shape[1:] for f in s] for s in out] == [
      [(17, 17, 8), (9, 9, 16), (5, 5, 32), (6, 6, 64), (7, 7, 1)],
      [(9, 9, 8), (5, 5, 16), (3, 3, 32), (4, 4, 64), (5, 5, 1)]]
  _check_state_update(dict(v, batch_stats={}), dict(new, batch_stats={}),
                      True)
  assert set(v['params']['scale_0']) == {
      'model0', 'model1', 'model2', 'model3', 'model4'}
  assert 'bias' in v['params']['scale_0']['model0']
  assert 'bias' not in v['params']['scale_0']['model1']
  # count_include_pad=False: the corner averages its 4 valid pixels.
  xn = np.asarray(x)
  pooled = np.asarray(sd.downsample(x))
  assert pooled.shape == (4, 16, 16, 6)
  np.testing.assert_allclose(pooled[:, 0, 0], xn[:, :2, :2].mean((1, 2)),
                             atol=1e-6)
  np.testing.assert_allclose(pooled[:, 3, 5], xn[:, 5:8, 9:12].mean((1, 2)),
                             atol=1e-6)


def test_spade_instance_norm_option():
  layer = spade.SPADE(param_free_norm='instance', hidden=8)
  x = jax.random.normal(jax.random.key(14), (2, 4, 4, 3))
  seg = jnp.ones((2, 8, 8, 2))
  out, v = jax.eval_shape(
      lambda: layer.init_with_output(RNGS, x, seg, train=True))
  assert out.shape == x.shape and set(v) == {'params'}
  with pytest.raises(ValueError, match='param_free_norm'):
    spade.SPADE(param_free_norm='layer').init(RNGS, x, seg, train=False)


def test_spade_batch_norm_is_global_under_sharding():
  """Sync BN for free: statistics over the global batch on 8 devices."""
  n = jax.device_count()
  assert n == 8  # tests/conftest.py
  layer = spade.SPADE(hidden=8)
  # Per-example offsets make per-device statistics differ from global ones.
  x = (jax.random.normal(jax.random.key(15), (n, 4, 4, 3)) +
       jnp.arange(n, dtype=jnp.float32)[:, None, None, None])
  seg = jax.random.uniform(jax.random.key(16), (n, 8, 8, 2))
  v = random_variables(
      jax.eval_shape(lambda: layer.init(RNGS, x, seg, train=False)), seed=3)
  run = jax.jit(functools.partial(layer.apply, train=True,
                                  mutable=['batch_stats']))
  mesh = jax.make_mesh((n,), ('data',))
  shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  out_1, stats_1 = run(v, x, seg)
  out_8, stats_8 = run(v, jax.device_put(x, shard), jax.device_put(seg, shard))
  assert len(out_8.sharding.device_set) == n
  np.testing.assert_allclose(out_8, out_1, atol=1e-5)
  np.testing.assert_allclose(
      stats_8['batch_stats']['param_free_norm']['mean'],
      stats_1['batch_stats']['param_free_norm']['mean'], atol=1e-6)
  # Per-device statistics (one example per device) would give other outputs.
  out_local, _ = run(v, x[:1], seg[:1])
  assert float(jnp.max(jnp.abs(out_local - out_1[:1]))) > 0.1
