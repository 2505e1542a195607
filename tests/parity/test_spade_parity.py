"""Numerical parity of the SPADE building blocks with PyTorch.

The PyTorch modules (tests/parity/torch_spade.py) are written from the tables
of reference/spade_pix2pix.md Part A with the official module names (SPADE
layer, SPADEResnetBlock with torch.nn.utils.spectral_norm,
MultiscaleDiscriminator of spectral-instance NLayerDiscriminators, the VAE
encoder). Random torch weights, spectral-norm vectors and BN running
statistics are copied into the Flax variables by the checkpoint importer's
converter (jaxl2i.models.spade_import.torch_to_flax); train mode (batch
statistics, one power iteration) and eval mode (running statistics, stored
u/v) are compared, and so are the updated states.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import layers
from jaxl2i.models import spade
from jaxl2i.models import spade_discriminator as sd
from jaxl2i.models import spade_import

torch = pytest.importorskip('torch')
# pylint: disable=g-import-not-at-top,g-bad-import-order
import torch_spade as ts
# pylint: enable=g-import-not-at-top,g-bad-import-order

tnn = torch.nn
F = torch.nn.functional
sn = torch.nn.utils.spectral_norm

TOL = 1e-4  # max abs difference, float32
SN = spade.SN_COLLECTION


@pytest.fixture(scope='module', autouse=True)
def _torch_one_thread():
  with ts.one_thread():
    yield


def _t2n(t):
  return t.detach().cpu().numpy().copy()  # torch updates buffers in place


def _nhwc(t):
  return np.transpose(_t2n(t), (0, 2, 3, 1))


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))))


# ------------------------------------------------ converters (spade_import)


def _convert(net, expected, torch_name=spade_import.generator_torch_name):
  """The torch module's state_dict → Flax variables (the import converter)."""
  return spade_import.torch_to_flax(ts.numpy_state_dict(net), expected,
                                    torch_name)


def _init_shapes(module, *args, **kwargs):
  return jax.eval_shape(
      lambda: module.init(jax.random.key(0), *args, train=False, **kwargs))


def _compare_state(new, torch_state, old=None, counts=None):
  """Updated u/v (and BN running stats, torch's unbiased variance)."""
  diffs = []
  for name, value in torch_state.items():
    if name.endswith('/var') and counts is not None:
      n = counts[name]
      value = (value - 0.9 * old[name]) * (n - 1) / n + 0.9 * old[name]
    diffs.append(_max_diff(new[name], value))
  return max(diffs)


def _flat(tree, prefix=''):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}/'))
    else:
      out[f'{prefix}{k}'] = np.asarray(v)
  return out


# ---------------------------------------------------------------------- tests


@pytest.mark.parametrize('in_size,out_size', [
    ((16, 16), (8, 8)), ((16, 12), (4, 3)), ((15, 9), (6, 4)),
    ((8, 8), (12, 20))])
def test_resize_matches_torch(in_size, out_size):
  x = torch.randn(2, 3, *in_size, generator=torch.Generator().manual_seed(0))
  xj = jnp.asarray(_nhwc(x))
  want = _nhwc(F.interpolate(x, size=out_size, mode='nearest'))
  got = jax.jit(spade.resize_nearest, static_argnums=1)(xj, out_size)
  np.testing.assert_array_equal(got, want)
  want = _nhwc(F.interpolate(x, size=out_size, mode='bilinear',
                             align_corners=False))
  got = jax.jit(spade.resize_bilinear, static_argnums=1)(xj, out_size)
  assert _max_diff(got, want) < 1e-5


@pytest.mark.parametrize('x_size', [8, 6])
@pytest.mark.parametrize('train', [True, False])
def test_spade_layer_matches_torch(train, x_size):
  torch.manual_seed(1)
  net = ts.SPADE(norm_nc=6, label_nc=4, hidden=16)
  ts.randomise(net, seed=2)
  gen = torch.Generator().manual_seed(3)
  x = torch.randn(3, 6, x_size, x_size, generator=gen) * 2 + 0.5
  seg = F.one_hot(torch.randint(0, 4, (3, 16, 16), generator=gen), 4)
  seg = seg.permute(0, 3, 1, 2).float()
  layer = spade.SPADE(hidden=16)
  xj, sj = jnp.asarray(_nhwc(x)), jnp.asarray(_nhwc(seg))
  variables = _convert(net, _init_shapes(layer, xj, sj))
  old = _flat(variables['batch_stats'])
  net.train(train)
  with torch.no_grad():
    want = _nhwc(net(x, seg))
  got, new = layer.apply(variables, xj, sj, train=train,
                         mutable=['batch_stats'])
  diff = _max_diff(got, want)
  assert diff < TOL, diff
  assert np.std(want) > 0.3
  if train:
    t_state = {'param_free_norm/mean': _t2n(net.param_free_norm.running_mean),
               'param_free_norm/var': _t2n(net.param_free_norm.running_var)}
    counts = {'param_free_norm/var': 3 * x_size * x_size}
    assert _compare_state(
        _flat(new['batch_stats']), t_state, old, counts) < TOL


@pytest.mark.parametrize('fin,fout', [(8, 4), (6, 6)])
@pytest.mark.parametrize('train', [True, False])
def test_resblock_matches_torch(train, fin, fout):
  torch.manual_seed(4)
  net = ts.SPADEResnetBlock(fin, fout, semantic_nc=5, hidden=16)
  ts.randomise(net, seed=5)
  gen = torch.Generator().manual_seed(6)
  x = torch.randn(2, fin, 8, 8, generator=gen)
  seg = torch.rand(2, 5, 32, 32, generator=gen)
  if not train:
    with torch.no_grad():  # Consistent u, v from a training forward first.
      net.train(True)(x, seg)  # (also moves the running statistics)
  block = spade.SPADEResnetBlock(fout, spade_hidden=16)
  xj, sj = jnp.asarray(_nhwc(x)), jnp.asarray(_nhwc(seg))
  shapes = _init_shapes(block, xj, sj)
  variables = _convert(net, shapes)
  old = _flat(variables['batch_stats'])
  net.train(train)
  with torch.no_grad():
    want = _nhwc(net(x, seg))
  got, new = jax.jit(functools.partial(
      block.apply, train=train, mutable=['batch_stats', SN]))(
          variables, xj, sj)
  diff = _max_diff(got, want)
  assert diff < TOL, diff
  assert np.std(want) > 0.3
  # Updated spectral-norm vectors (train) or untouched ones (eval).
  t_sn = _flat(_convert(net, shapes)[SN])
  assert _compare_state(_flat(new[SN]), t_sn) < 1e-5
  if train:
    t_bn, counts = {}, {}
    for k in ('norm_0', 'norm_1', 'norm_s'):
      if hasattr(net, k):
        bn = getattr(net, k).param_free_norm
        t_bn[f'{k}/param_free_norm/mean'] = _t2n(bn.running_mean)
        t_bn[f'{k}/param_free_norm/var'] = _t2n(bn.running_var)
        counts[f'{k}/param_free_norm/var'] = 2 * 8 * 8
    assert _compare_state(_flat(new['batch_stats']), t_bn, old, counts) < TOL


@pytest.mark.parametrize('train', [True, False])
def test_multiscale_discriminator_matches_torch(train):
  torch.manual_seed(8)
  net = ts.MultiscaleDiscriminator(7, ndf=8, n_layers=4, num_d=2)
  ts.randomise(net, seed=9)
  x = torch.randn(2, 7, 24, 24, generator=torch.Generator().manual_seed(11))
  if not train:
    with torch.no_grad():
      net.train(True)(torch.randn(2, 7, 24, 24))
  d = sd.MultiscaleDiscriminator(ndf=8, n_layers=4, num_d=2)
  xj = jnp.asarray(_nhwc(x))
  shapes = _init_shapes(d, xj)
  variables = _convert(net, shapes, spade_import.discriminator_torch_name)
  with torch.no_grad():
    want = [[_nhwc(f) for f in s] for s in net.train(train)(x)]
  got, new = jax.jit(functools.partial(d.apply, train=train, mutable=[SN]))(
      variables, xj)
  assert [[g.shape for g in s] for s in got] == [
      [w.shape for w in s] for s in want]
  diff = max(_max_diff(g, w) for gs, ws in zip(got, want)
             for g, w in zip(gs, ws))
  assert diff < TOL, diff
  t_sn = _flat(_convert(net, shapes, spade_import.discriminator_torch_name
                        )[SN])
  assert _compare_state(_flat(new[SN]), t_sn) < 1e-5


@pytest.mark.parametrize('train', [True, False])
def test_encoder_matches_torch(train):
  torch.manual_seed(12)
  net = ts.ConvEncoder(ndf=4, n_layers=3, size=32, z_dim=8)
  ts.randomise(net, seed=13)
  x = torch.rand(2, 3, 40, 24, generator=torch.Generator().manual_seed(14))
  if not train:
    with torch.no_grad():
      net.train(True)(x)
  e = sd.ConvEncoder(ndf=4, num_layers=3, input_size=32, z_dim=8)
  xj = jnp.asarray(_nhwc(x))
  variables = _convert(net, _init_shapes(e, xj),
                       spade_import.encoder_torch_name)
  net.train(train)
  with torch.no_grad():
    mu_t, logvar_t = net(x)
  (mu, logvar), _ = jax.jit(functools.partial(
      e.apply, train=train, mutable=[SN]))(variables, xj)
  diff = max(_max_diff(mu, _t2n(mu_t)), _max_diff(logvar, _t2n(logvar_t)))
  assert diff < TOL, diff


@pytest.mark.parametrize('mode,use_vae,size', [('more', True, (64, 128))])
def test_generator_matches_torch(mode, use_vae, size):
  """Whole tiny generator in train mode (block-level eval is tested above).

  The VAE input on a 1×2 latent grid checks the (C, sh, sw) reshape order;
  'more' the extra upsampling. Other cases (5–7 s each) were checked once:
  max diffs 1.9e-6 ('normal', VAE, 32×64) and 1.4e-5 ('more', conv input,
  64×64).
  """
  ngf, hidden, label_nc, z_dim = 2, 8, 3, 6
  n_up = spade.NUM_UP[mode]
  grid = (size[0] // 2**n_up, size[1] // 2**n_up)
  torch.manual_seed(15)
  net = ts.SPADEGenerator(label_nc, ngf, mode, use_vae, z_dim, grid, hidden)
  ts.randomise(net, seed=16)
  gen = torch.Generator().manual_seed(17)
  seg = F.one_hot(torch.randint(0, label_nc, (2, *size), generator=gen),
                  label_nc).permute(0, 3, 1, 2).float()
  z = torch.randn(2, z_dim, generator=gen)
  g = spade.SPADEGenerator(
      ngf=ngf, num_upsampling_layers=mode, use_vae=use_vae, z_dim=z_dim,
      spade_hidden=hidden)
  sj, zj = jnp.asarray(_nhwc(seg)), jnp.asarray(_t2n(z))
  shapes = _init_shapes(g, sj, zj)
  variables = _convert(net, shapes)
  with torch.no_grad():
    want = _nhwc(net.train(True)(seg, z))
  got, new = jax.jit(functools.partial(
      g.apply, train=True, mutable=['batch_stats', SN]))(variables, sj, zj)
  assert got.shape == want.shape == (2, *size, 3)
  diff = _max_diff(got, want)
  assert diff < TOL, diff
  assert np.std(want) > 0.1  # not a constant / saturated image
  assert _compare_state(_flat(new[SN]), _flat(_convert(net, shapes)[SN])
                        ) < 1e-5


def test_spectral_conv_gradient_matches_torch():
  """d loss / d weight_orig through σ(W) (u, v held constant), train mode."""
  torch.manual_seed(18)
  conv = sn(tnn.Conv2d(5, 7, 4, 2, 2))
  ts.randomise(conv, seed=19)
  gen = torch.Generator().manual_seed(20)
  x = torch.randn(2, 5, 9, 9, generator=gen)
  r = torch.randn(2, 7, 5, 5, generator=gen)
  layer = spade.SpectralConv(7, 4, 2, 2)
  xj, rj = jnp.asarray(_nhwc(x)), jnp.asarray(_nhwc(r))
  variables = _convert(conv, jax.eval_shape(lambda: layer.init(
      jax.random.key(0), xj, update_stats=False)))  # before u, v move
  kernel, state = variables['params'], variables[SN]
  (conv(x) * r).sum().backward()

  def loss(params):
    out, _ = layer.apply({'params': params, SN: state}, xj,
                         update_stats=True, mutable=[SN])
    return jnp.sum(out * rj)

  grads = jax.grad(loss)(kernel)
  want = layers.torch_conv_kernel_to_flax(_t2n(conv.weight_orig.grad))
  assert _max_diff(grads['kernel'], want) < TOL
  assert _max_diff(grads['bias'], _t2n(conv.bias.grad)) < TOL
  assert np.abs(want).max() > 0.1
