"""Shape, collection, dropout and parameter-count tests of the pix2pix networks.

Also covers the initialisers of jaxl2i.models.layers (their PyTorch meaning).
Numerical parity with PyTorch is in tests/parity/test_pix2pix_parity.py.
"""

import collections
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import layers
from jaxl2i.models import pix2pix

# Official counts (reference/README.md, reference/spade_pix2pix.md B2b).
UNET256_PARAMS = 54_413_955
PATCHGAN6_PARAMS = 2_768_705
UNET256_BLOCK_PARAMS = {  # level → (outer, inner) block of B2b
    0: 9_219, 1: 393_600, 2: 1_573_632, 3: 6_292_992,
    4: 12_584_960, 5: 12_584_960, 6: 12_584_960, 7: 8_389_632}


def _count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _init(module, x):
  return module.init(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x,
      train=False)


# One tiny network of each kind, initialised once (init compiles dominate).
@pytest.fixture(scope='module')
def tiny_g():
  g = pix2pix.UNetGenerator(out_channels=3, ngf=4, num_downs=6)
  x = jax.random.normal(jax.random.key(2), (2, 64, 64, 4))
  return g, x, jax.jit(functools.partial(_init, g))(x)


@pytest.fixture(scope='module')
def tiny_d():
  d = pix2pix.PatchDiscriminator(ndf=8, n_layers=3)
  x = jax.random.normal(jax.random.key(7), (2, 32, 32, 5))
  return d, x, jax.jit(functools.partial(_init, d))(x)


def test_unet_tiny_shapes_dtypes_range(tiny_g):
  g, x, variables = tiny_g
  assert set(variables) == {'params', 'batch_stats'}
  for leaf in jax.tree.leaves(variables):
    assert leaf.dtype == jnp.float32
  # Innermost (level 5) and outermost down convs have no BN; up_0 has a bias.
  p = variables['params']
  assert 'down_norm_0' not in p and 'down_norm_5' not in p
  assert 'down_norm_4' in p and 'up_norm_5' in p and 'up_norm_0' not in p
  assert 'bias' not in p['down_0'] and 'bias' not in p['up_1']
  assert 'bias' in p['up_0']
  assert p['down_0']['kernel'].shape == (4, 4, 4, 4)
  assert p['up_5']['kernel'].shape == (4, 4, 32, 32)  # inner → outer 8ngf
  assert p['up_1']['kernel'].shape == (4, 4, 16, 4)  # cat(8, 8) → ngf
  assert p['up_0']['kernel'].shape == (4, 4, 8, 3)  # cat(4, 4) → out
  for train in (False, True):
    out, new = g.apply(
        variables, x, train=train, mutable=['batch_stats'],
        rngs={'dropout': jax.random.key(3)})
    assert out.shape == (2, 64, 64, 3) and out.dtype == jnp.float32
    out = np.asarray(out)
    assert np.isfinite(out).all() and np.all(np.abs(out) <= 1.0)
    changed = jax.tree.leaves(jax.tree.map(
        lambda a, b: bool(np.any(a != b)), variables['batch_stats'],
        new['batch_stats']))
    assert all(changed) if train else not any(changed)


def test_unet_rejects_bad_sizes():
  g = pix2pix.UNetGenerator(ngf=4, num_downs=5)
  with pytest.raises(ValueError, match='divisible'):
    jax.eval_shape(lambda: _init(g, jnp.zeros((1, 48, 32, 3))))
  with pytest.raises(ValueError, match='num_downs'):
    jax.eval_shape(
        lambda: _init(pix2pix.UNetGenerator(num_downs=4), jnp.zeros(
            (1, 16, 16, 3))))


def test_unet_dropout_only_in_train(tiny_g):
  g, x, variables = tiny_g  # num_downs 6: one middle block with dropout

  def run(train, key, module=g):
    out, _ = module.apply(
        variables, x, train=train, mutable=['batch_stats'],
        rngs={'dropout': key})
    return np.asarray(out)

  k1, k2 = jax.random.key(5), jax.random.key(6)
  np.testing.assert_array_equal(run(True, k1), run(True, k1))
  assert np.max(np.abs(run(True, k1) - run(True, k2))) > 1e-3
  np.testing.assert_array_equal(run(False, k1), run(False, k2))
  # Eval mode needs no dropout RNG.
  g.apply(variables, x, train=False)
  no_drop = g.clone(use_dropout=False)
  np.testing.assert_array_equal(
      run(True, k1, no_drop), run(True, k2, no_drop))


def _dropout_sizes(num_downs):
  """Spatial sizes at which a 2**num_downs U-Net applies dropout (no memory)."""
  sizes = []

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dropout):
      sizes.append(args[0].shape[1])
    return next_fun(*args, **kwargs)

  g = pix2pix.UNetGenerator(num_downs=num_downs)
  x = jnp.zeros((1, 2**num_downs, 2**num_downs, 3))
  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda: g.init(
        {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x,
        train=True))
  return sorted(sizes)


# PyTorch UnetGenerator: dropout after the up BN of the num_downs − 5 middle
# levels 4 … num_downs−2, i.e. on the 16², 8², 4² decoder maps at 256 (not on
# the innermost decoder, unlike the Torch original's d1–d3 = 2², 4², 8²).
@pytest.mark.parametrize('num_downs,sizes', [
    (8, [4, 8, 16]), (7, [4, 8]), (5, [])])
def test_unet_dropout_placement(num_downs, sizes):
  assert _dropout_sizes(num_downs) == sizes


def test_unet256_parameter_counts():
  g = pix2pix.UNetGenerator(out_channels=3, ngf=64, num_downs=8)
  shapes = jax.eval_shape(lambda: _init(g, jnp.zeros((1, 256, 256, 3))))
  params = shapes['params']
  assert _count(params) == UNET256_PARAMS
  per_level = collections.Counter()
  for name, sub in params.items():
    per_level[int(name.rsplit('_', 1)[1])] += _count(sub)
  assert dict(per_level) == UNET256_BLOCK_PARAMS
  # Another input width changes only the outermost down conv: 64·16·C.
  shapes1 = jax.eval_shape(lambda: _init(g, jnp.zeros((1, 256, 256, 1))))
  assert UNET256_PARAMS - _count(shapes1['params']) == 64 * 16 * 2
  # BN running stats: mean and var per BN channel (6 down + 7 up BNs).
  n_bn_channels = (128 + 256 + 512 * 4) + (64 + 128 + 256 + 512 * 4)
  assert _count(shapes['batch_stats']) == 2 * n_bn_channels


# ResnetGenerator(3, 3, ngf=64, BatchNorm, n_blocks=9) of networks.py,
# layer by layer (convs followed by BN have no bias):
#   c7s1-64 7·7·3·64 = 9,408 (+ BN 128); d128 3·3·64·128 = 73,728 (+ 256);
#   d256 3·3·128·256 = 294,912 (+ 512); 9 blocks × (2 · 3·3·256·256 +
#   2 BN · 512) = 9 × 1,180,672 = 10,626,048; u128 294,912 (+ 256);
#   u64 73,728 (+ 128); c7s1-3 7·7·64·3 + 3 = 9,411.  Total 11,383,427 (the
#   paper's "11.4 M" stage 2). InstanceNorm: no norm parameters, biased
#   convs: 11,383,427 − 10,496 + 5,248 = 11,378,179.
RESNET9_PARAMS = {'batch': 11_383_427, 'instance': 11_378_179}


@pytest.mark.parametrize('norm', ['batch', 'instance'])
def test_resnet9_parameter_count(norm):
  g = pix2pix.ResnetGenerator(out_channels=3, ngf=64, n_blocks=9, norm=norm)
  shapes = jax.eval_shape(lambda: _init(g, jnp.zeros((1, 256, 256, 3))))
  assert _count(shapes['params']) == RESNET9_PARAMS[norm]
  out = jax.eval_shape(lambda v: g.apply(
      v, jnp.zeros((2, 256, 256, 3)), train=True, mutable=['batch_stats'],
      rngs={'dropout': jax.random.key(0)})[0], shapes)
  assert out.shape == (2, 256, 256, 3)
  assert ('batch_stats' in shapes) == (norm == 'batch')


def test_resnet9_through_the_stage2_config():
  """configs/cityscapes_pix2pix.py:seg_gan builds the 11.4 M renderer."""
  import os  # pylint: disable=g-import-not-at-top
  from jaxl2i import config_lib  # pylint: disable=g-import-not-at-top
  from jaxl2i.recipes import base  # pylint: disable=g-import-not-at-top
  import fakes  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  c = config_lib.load(os.path.join(root, 'configs', 'cityscapes_pix2pix.py'),
                      'seg_gan')
  recipe = base.get_recipe(c, fakes.FakeMeta())
  batch = {'label': jax.ShapeDtypeStruct((1, 256, 256), jnp.int32),
           'image': jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.uint8)}
  g_vars, _ = jax.eval_shape(recipe.init, jax.random.key(0), batch)
  assert _count(g_vars['params']) == RESNET9_PARAMS['batch']   # colour input


def test_patchgan_shapes_and_parameter_count():
  d = pix2pix.PatchDiscriminator(ndf=64, n_layers=3)
  x = jnp.zeros((2, 256, 256, 6))
  shapes = jax.eval_shape(lambda: _init(d, x))
  assert _count(shapes['params']) == PATCHGAN6_PARAMS
  out = jax.eval_shape(
      lambda v: d.apply(v, x, train=True, mutable=['batch_stats'])[0], shapes)
  assert out.shape == (2, 30, 30, 1) and out.dtype == jnp.float32
  p = shapes['params']
  assert 'bias' in p['conv_0'] and 'bias' in p['conv_4']
  assert all('bias' not in p[f'conv_{i}'] for i in (1, 2, 3))
  assert set(shapes) == {'params', 'batch_stats'}
  assert set(shapes['batch_stats']) == {'norm_1', 'norm_2', 'norm_3'}


def test_patchgan_tiny_forward(tiny_d):
  d, x, variables = tiny_d
  out = d.apply(variables, x, train=False)
  assert out.shape == (2, 2, 2, 1) and out.dtype == jnp.float32
  assert np.isfinite(np.asarray(out)).all()


def test_bf16_compute_float32_params(tiny_g, tiny_d):
  for (module, x, variables), out_c in ((tiny_g, 3), (tiny_d, 1)):
    low_module = module.clone(dtype=jnp.bfloat16)
    out, new = jax.jit(functools.partial(
        low_module.apply, train=True, mutable=['batch_stats']))(
            variables, x, rngs={'dropout': jax.random.key(9)})
    assert out.dtype == jnp.bfloat16 and out.shape[-1] == out_c
    assert np.isfinite(np.asarray(out, np.float32)).all()
    for leaf in jax.tree.leaves(new):
      assert leaf.dtype == jnp.float32
    # bf16 output stays close to the float32 network with the same params.
    ref = jax.jit(functools.partial(module.apply, train=False))(variables, x)
    low = jax.jit(functools.partial(low_module.apply, train=False))(
        variables, x)
    scale = float(jnp.max(jnp.abs(ref)))
    assert scale > 0
    err = float(jnp.max(jnp.abs(low.astype(jnp.float32) - ref)))
    assert err < 0.05 * scale, (err, scale)


def test_pix2pix_initialisers(tiny_d):
  v = tiny_d[2]['params']
  w = np.asarray(v['conv_2']['kernel'])  # 4·4·16·32 = 8192 weights
  assert abs(w.mean()) < 1e-3 and abs(w.std() / 0.02 - 1) < 0.05
  np.testing.assert_array_equal(np.asarray(v['conv_0']['bias']), 0.0)
  s = np.asarray(v['norm_3']['scale'])  # 64 channels
  assert abs(s.mean() - 1.0) < 0.01 and 0.01 < s.std() < 0.03
  np.testing.assert_array_equal(np.asarray(v['norm_3']['bias']), 0.0)


def test_layer_initialisers_match_torch_formulas():
  key = jax.random.key(10)
  # kaiming_uniform(a=√5): U(±1/sqrt(fan_in)); conv fan_in = in·kh·kw.
  w = np.asarray(layers.torch_default_conv_init()(key, (3, 3, 64, 32)))
  bound = 1 / math.sqrt(64 * 9)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
  # ConvTranspose2d(in=64, out=32): PyTorch's fan_in is out·kh·kw.
  w = np.asarray(layers.torch_default_conv_init(transpose=True)(
      key, (3, 3, 64, 32)))
  bound = 1 / math.sqrt(32 * 9)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
  b = np.asarray(layers.torch_default_bias_init(576)(key, (8192,)))
  assert np.abs(b).max() <= 1 / 24 and np.abs(b).max() > 0.99 / 24
  # xavier_normal(gain): std = gain·sqrt(2 / (fan_in + fan_out)).
  w = np.asarray(layers.xavier_normal(0.02)(key, (3, 3, 64, 32)))
  expected = 0.02 * math.sqrt(2 / (64 * 9 + 32 * 9))
  assert abs(w.std() / expected - 1) < 0.03
  w = np.asarray(layers.bn_scale_init(0.02)(key, (8192,)))
  assert abs(w.mean() - 1) < 1e-3 and abs(w.std() / 0.02 - 1) < 0.05


def test_layer_helpers_geometry():
  assert layers.torch_padding(1) == ((1, 1), (1, 1))
  assert layers.torch_padding((2, 0)) == ((2, 2), (0, 0))
  bn = layers.batch_norm(use_running_average=True)
  assert bn.momentum == 0.9 and bn.epsilon == 1e-5
  x = jnp.zeros((1, 5, 7, 3))
  for k, s, p in ((4, 2, 1), (3, 2, 1), (3, 1, 1), (5, 3, 2), (2, 2, 0)):
    m = layers.torch_conv_transpose(6, k, s, p)
    out = jax.eval_shape(lambda m=m: m.init_with_output(jax.random.key(0), x))
    h = (5 - 1) * s - 2 * p + k
    w = (7 - 1) * s - 2 * p + k
    assert out[0].shape == (1, h, w, 6)
    c = layers.torch_conv(6, k, s, p)
    out = jax.eval_shape(lambda c=c: c.init_with_output(jax.random.key(0), x))
    assert out[0].shape == (1, (5 + 2 * p - k) // s + 1,
                            (7 + 2 * p - k) // s + 1, 6)
  with pytest.raises(ValueError):
    layers.torch_conv_transpose(6, 3, 2, 3)
