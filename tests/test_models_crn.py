"""CRN modules: parameter counts, layer norm, upsampling, label pyramid, head.

The reference ops themselves are TensorFlow 1 ops that TF 2 still ships
under tf.compat.v1 (resize_bilinear with align_corners, resize_area), so
the upsampling and the label pyramid are compared with them directly.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from jaxl2i import config_lib
from jaxl2i import state as state_lib
from jaxl2i.models import crn
from jaxl2i.recipes import crn as crn_recipe

import fakes

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'configs')


def _module_params(d_in: int, d: int, labels: int = 20) -> int:
  """One refinement module: conv3x3 (d_in + labels → d) and conv3x3 (d → d),
  no biases, two layer norms with per-channel γ and β."""
  return 9 * (d_in + labels) * d + 9 * d * d + 2 * 2 * d


def _reference_count(ladder, k: int) -> int:
  """Σ modules (M0 sees only the 20 label channels) + the 1×1 head with a
  bias from the last width to 3k channels (reference/crn.md §1-3)."""
  total, prev = 0, 0
  for d in ladder:
    total += _module_params(prev, d)
    prev = d
  return total + prev * 3 * k + 3 * k


@pytest.mark.parametrize('res,k,expected', [
    # M0 9,625,600 + 4 × 19,062,784 + M5 7,172,096 + M6 4,812,800 + head
    # 512·27 + 27 = 13,851 (reference/crn.md §9).
    (256, 9, 97_875_483),
    # + M7 760,832, head 128·3 + 3.
    (512, 1, 98_622_851),
    # + M7, M8 51,968, head 32·3 + 3 (reference/crn.md §9).
    (1024, 1, 98_674_531),
])
def test_reference_parameter_counts_through_the_config(res, k, expected):
  ladder = crn.reference_channels(res)
  assert ladder == (1024,) * 5 + (512, 512, 128, 32)[:len(ladder) - 5]
  assert _reference_count(ladder, k) == expected
  c = config_lib.load(os.path.join(CONFIGS, 'cityscapes_crn.py'),
                      f'res={res}')
  assert c.model.num_images == k
  recipe = crn_recipe.Recipe(c, fakes.FakeMeta())
  batch = {'label': jax.ShapeDtypeStruct((1, res, 2 * res), jnp.int32),
           'image': jax.ShapeDtypeStruct((1, res, 2 * res, 3), jnp.uint8)}
  g_vars, d_vars = jax.eval_shape(recipe.init, jax.random.key(0), batch)
  assert d_vars is None
  assert state_lib.count_params(g_vars['params']) == expected
  p = g_vars['params']
  assert p['g_4']['conv1']['kernel'].shape == (3, 3, 20, 1024)
  assert f'g_{res}_head' in p and 'bias' not in p[f'g_{res}']['conv1']


def test_layer_norm_over_hwc_with_per_channel_affine():
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(2, 4, 6, 5)) * 30 + 100).astype(np.float32)
  gamma = rng.normal(size=5).astype(np.float32)
  beta = rng.normal(size=5).astype(np.float32)
  ln = crn.layer_norm(jnp.float32, 'norm')
  assert ln.epsilon == 1e-12
  got = ln.apply({'params': {'scale': gamma, 'bias': beta}}, x)
  mean = x.mean(axis=(1, 2, 3), keepdims=True, dtype=np.float64)
  var = ((x - mean)**2).mean(axis=(1, 2, 3), keepdims=True)
  want = (x - mean) / np.sqrt(var + 1e-12) * gamma + beta
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('src,dst', [((4, 8), (8, 16)), ((3, 5), (7, 4)),
                                     ((1, 2), (2, 4))])
def test_upsampling_is_tf1_align_corners_bilinear(src, dst):
  x = np.random.default_rng(1).normal(size=(2, *src, 3)).astype(np.float32)
  want = tf.compat.v1.image.resize_bilinear(x, dst, align_corners=True)
  got = crn.upsample_bilinear_align_corners(jnp.asarray(x), dst)
  np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
  # The formula itself: output i reads input position i·(n−1)/(m−1).
  if src[0] > 1:
    pos = 3 * (src[0] - 1) / (dst[0] - 1)
    lo = int(pos)
    row = x[:, lo] + (x[:, min(lo + 1, src[0] - 1)] - x[:, lo]) * (pos - lo)
    up_rows = crn.upsample_bilinear_align_corners(jnp.asarray(x),
                                                  (dst[0], src[1]))
    np.testing.assert_allclose(up_rows[:, 3], row, atol=1e-5)
  np.testing.assert_allclose(got[:, 0, 0], x[:, 0, 0], atol=1e-6)
  np.testing.assert_allclose(got[:, -1, -1], x[:, -1, -1], atol=1e-6)


def test_label_pyramid_is_tf1_resize_area():
  labels = jax.nn.one_hot(
      jax.random.randint(jax.random.key(0), (1, 32, 64), 0, 6), 6)
  pyramid = crn.label_pyramid(labels, 4)
  assert [p.shape[1:3] for p in pyramid] == [(32, 64), (16, 32), (8, 16),
                                             (4, 8)]
  for p in pyramid[1:]:
    want = tf.compat.v1.image.resize_area(np.asarray(labels), p.shape[1:3])
    np.testing.assert_allclose(p, want.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.sum(p, -1), 1.0, atol=1e-6)


def test_head_channel_to_image_mapping_and_output_range():
  """Image u takes head channels (u, k+u, 2k+u) as RGB; (x + 1)/2·255."""
  k = 3
  g = crn.CRN(resolution=4, channels=(4,), num_images=k)
  labels = jnp.zeros((1, 4, 8, 2)).at[..., 0].set(1.0)
  v = jax.eval_shape(g.init, jax.random.key(0), labels)
  v = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), v)
  bias = jnp.arange(3 * k, dtype=jnp.float32)
  v['params']['g_4_head']['kernel'] = jnp.zeros((1, 1, 4, 3 * k))
  v['params']['g_4_head']['bias'] = bias
  out = jax.jit(g.apply)(v, labels)
  assert out.shape == (1, k, 4, 8, 3) and out.dtype == jnp.float32
  for u in range(k):
    for c in range(3):
      np.testing.assert_allclose(out[0, u, :, :, c],
                                 (bias[c * k + u] + 1) / 2 * 255)
  with pytest.raises(ValueError, match='height 4'):
    jax.eval_shape(g.apply, v, jnp.zeros((1, 8, 8, 2)))

