"""Parameter counts, collections, routing and initialisers of LostGAN-V1.

Forward behaviour (shapes, ranges, padded slots, train vs eval BatchNorm,
SN state) is checked against PyTorch in
tests/parity/test_lostgan_v1_parity.py.

Official parameter counts (WillSuen/LostGANs, 184 classes, ch 64, z 128),
derived layer by layer from model/resnet_generator_v1.py,
model/mask_regression.py, model/norm_module.py and
model/rcnn_discriminator.py (SN layers count `weight_orig` + bias; buffers
do not count; ISLA's own BatchNorm base class is affine=False):

  conv(i, o, k) = i·o·k² + o        lin(i, o) = i·o + o        bn(c) = 2c
  G (d_y = 128 / 180, num_w = 128 + d_y):
    label_embedding  184·d_y
    fc               lin(128, 16·1024)
    ResBlock(i→o)    conv(i,o,3) + conv(o,o,3) + conv(i,o,1)
                     + 2·lin(num_w, i) + 2·lin(num_w, o)    (b1, b2)
                     64²: 1024→512→256→128→64; 128²: 1024→1024→…→64
    final            bn(64) + conv(64, 3, 3)
    mask_regress     lin(num_w, 2048) + 3·(conv(128,128,3) + bn(128))
                     + conv(128, 1, 1)
  D:
    OptimizedBlock(i→o)  conv(i,o,3) + conv(o,o,3) + conv(i,o,1)
    ResBlock(i→o)        conv(i,o,3) + conv(o,o,3) [+ conv(i,o,1) if i ≠ o
                         or down]
    64²:  Opt(3→64) + RB 64→128→256→512→1024 + l_im lin(1024,1)
          + block_obj4 RB(256→512) + l_obj lin(512,1) + l_y 184·512
    128²: Opt(3→64) + RB 64→128→256→512→1024 + RB(1024→1024, no sc)
          + l7 lin(1024,1) + block_obj3 RB(128→256) + block_obj4
          RB(256→512) + block_obj5 RB(512→1024) + l_obj lin(1024,1)
          + l_y 184·1024
  ⇒ G 14,688,772 (64²), 36,296,036 (128²); D 23,308,994 (64²),
    57,881,538 (128²). Cross-check: the D64 is LAMA's D64 (23,308,998)
    minus its 6 ReZero α plus the 2 head biases.
"""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import lostgan_v1 as lg

B, O = 2, 3


def _conv(i, o, k):
  return i * o * k * k + o


def _lin(i, o):
  return i * o + o


def official_g(res, nc=184, ch=64, z=128, hidden=128):
  d_y = lg.EMBED_DIM[res]
  num_w = z + d_y
  w = [ch * m for m in lg.TRUNK[res]]
  n = nc * d_y + _lin(z, 16 * w[0])
  for i, o in zip(w[:-1], w[1:]):
    n += (_conv(i, o, 3) + _conv(o, o, 3) + _conv(i, o, 1) +
          2 * _lin(num_w, i) + 2 * _lin(num_w, o))
  n += 2 * ch + _conv(ch, 3, 3)
  n += (_lin(num_w, 16 * hidden) + 3 * (_conv(hidden, hidden, 3) +
                                         2 * hidden) + _conv(hidden, 1, 1))
  return n


def official_d(res, nc=184, ch=64):
  rb = lambda i, o, sc=True: (_conv(i, o, 3) + _conv(o, o, 3) +
                              (_conv(i, o, 1) if sc else 0))
  trunk = rb(3, ch) + sum(rb(ch * 2**k, ch * 2**(k + 1)) for k in range(4))
  if res == 64:
    return (trunk + _lin(16 * ch, 1) + rb(4 * ch, 8 * ch) + _lin(8 * ch, 1) +
            nc * 8 * ch)
  return (trunk + rb(16 * ch, 16 * ch, sc=False) + _lin(16 * ch, 1) +
          rb(2 * ch, 4 * ch) + rb(4 * ch, 8 * ch) + rb(8 * ch, 16 * ch) +
          _lin(16 * ch, 1) + nc * 16 * ch)


def _count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _inputs(res, b=1, o=8, z=128):
  return (jnp.zeros((b, z)), jnp.zeros((b, o, z)), jnp.zeros((b, o, 4)),
          jnp.zeros((b, o), jnp.int32), jnp.ones((b, o), bool))


@pytest.mark.parametrize('res', [64, 128])
def test_official_parameter_counts(res):
  assert official_g(64) == 14_688_772 and official_g(128) == 36_296_036
  assert official_d(64) == 23_308_994 and official_d(128) == 57_881_538
  g = lg.LostGanV1Generator(resolution=res)
  d = lg.LostGanV1Discriminator(resolution=res)
  gv = jax.eval_shape(lambda: g.init(jax.random.key(0), *_inputs(res),
                                     train=False))
  z_img, _, boxes, classes, mask = _inputs(res)
  dv = jax.eval_shape(lambda: d.init(
      jax.random.key(0), jnp.zeros((1, res, res, 3)), boxes, classes, mask,
      train=False))
  assert _count(gv['params']) == official_g(res)
  assert _count(dv['params']) == official_d(res)
  assert set(gv) == {'params', 'batch_stats', 'spectral_norm'}
  assert set(dv) == {'params', 'spectral_norm'}
  # The official 'mapping' (lr × 0.1) group is empty for V1: its `mapping`
  # is an empty nn.Sequential. No ReZero gates either.
  names = ['/'.join(k) for k in flax.traverse_util.flatten_dict(
      {**gv['params'], **dv['params']})]
  assert not [n for n in names if 'mapping' in n or 'alpha' in n]
  assert 'mask_regress/conv3_3/conv/kernel' in names
  assert f'res{lg.FIRST_BLOCK[res]}/b1/weight_proj/dense/kernel' in names
  if res == 64:  # given masks (GT-mask variant): no mask net, bf16 compute
    g16 = lg.LostGanV1Generator(resolution=res, dtype=jnp.bfloat16)
    masks = jnp.zeros((1, 8, 32, 32))
    (out, m, _), v = jax.eval_shape(lambda: g16.init_with_output(
        jax.random.key(0), *_inputs(res), train=False, return_masks=True,
        masks=masks))
    no_net = official_g(res) - _count(gv['params']['mask_regress'])
    assert _count(v['params']) == no_net
    assert 'mask_regress' not in v['params']
    assert out.dtype == jnp.bfloat16 and out.shape == (1, res, res, 3)
    assert m.dtype == jnp.float32 and m.shape == (1, 8, res, res)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(v))


def test_small_box_routing():
  px = jnp.array([[10., 10., 50., 60.],   # small, small corner
                  [70., 70., 100., 100.],  # small size, corner beyond 64
                  [0., 0., 64., 20.],      # width 64: large (strict)
                  [20., 30., 70., 60.]])   # small size, x1 > 64
  np.testing.assert_array_equal(lg.small_boxes(px, 128),
                                [True, True, False, True])
  np.testing.assert_array_equal(lg.small_boxes(px, 128, corner=True),
                                [True, False, False, False])


def test_discriminator_initialisers():
  """64²: orthogonal weights, zero biases; 128²: PyTorch defaults."""
  k_ortho, b_zero = lg._inits(False, 36)
  k_torch, b_torch = lg._inits(True, 36)
  key = jax.random.key(0)
  k = np.asarray(k_ortho(key, (3, 3, 4, 8))).reshape(-1, 8)
  np.testing.assert_allclose(k.T @ k, np.eye(8), atol=1e-5)
  assert np.all(np.asarray(b_zero(key, (8,))) == 0.0)
  bound = 1 / math.sqrt(36)  # U(±1/sqrt(fan_in)) for weight and bias
  for init, shape in ((k_torch, (3, 3, 4, 8)), (b_torch, (8,))):
    v = np.asarray(init(key, shape))
    assert np.all(np.abs(v) <= bound) and np.abs(v).max() > 0.5 * bound
