"""Numerical parity of the pix2pix networks and conv helpers with PyTorch.

The PyTorch side is written here from the published topology (U-Net built
from nested skip blocks, NLayerDiscriminator), with random weights copied into
the Flax variables through the converters of jaxl2i.models.layers.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import layers
from jaxl2i.models import pix2pix

torch = pytest.importorskip('torch')
tnn = torch.nn

TOL = 1e-4  # max abs difference, float32


def _t2n(t):
  return t.detach().cpu().numpy()


def _nhwc(t):
  return np.transpose(_t2n(t), (0, 2, 3, 1))


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))))


# ------------------------------------------------------------ PyTorch models


class TorchSkipBlock(tnn.Module):
  """One U-Net level: input → [down → inner → up] → cat(input, up)."""

  def __init__(self, outer, inner, in_ch, sub, outermost, innermost, drop):
    super().__init__()
    self.outermost = outermost
    self.down = tnn.Conv2d(in_ch, inner, 4, 2, 1, bias=False)
    mid = (not outermost) and (not innermost)
    self.down_norm = tnn.BatchNorm2d(inner) if mid else None
    self.sub = sub
    self.up = tnn.ConvTranspose2d(
        inner if innermost else 2 * inner, outer, 4, 2, 1, bias=outermost)
    self.up_norm = None if outermost else tnn.BatchNorm2d(outer)
    self.drop = tnn.Dropout(0.5) if drop else None

  def forward(self, x):
    h = x if self.outermost else tnn.functional.leaky_relu(x, 0.2)
    h = self.down(h)
    if self.down_norm is not None:
      h = self.down_norm(h)
    if self.sub is not None:
      h = self.sub(h)
    h = self.up(torch.relu(h))
    if self.outermost:
      return torch.tanh(h)
    h = self.up_norm(h)
    if self.drop is not None:
      h = self.drop(h)
    return torch.cat([x, h], 1)


def torch_unet(in_ch, out_ch, num_downs, ngf):
  """Nested U-Net, built innermost first; returns (net, blocks outer→inner)."""
  widths = [ngf * min(2**l, 8) for l in range(num_downs)]
  blocks = []
  sub = None
  for l in reversed(range(num_downs)):
    outer = out_ch if l == 0 else widths[l - 1]
    sub = TorchSkipBlock(
        outer, widths[l], in_ch if l == 0 else outer, sub, outermost=l == 0,
        innermost=l == num_downs - 1, drop=False)
    blocks.insert(0, sub)
  return sub, blocks


class TorchPatchGAN(tnn.Module):

  def __init__(self, in_ch, ndf, n_layers):
    super().__init__()
    convs = [tnn.Conv2d(in_ch, ndf, 4, 2, 1)]
    norms = [None]
    prev = ndf
    for i in range(1, n_layers + 1):
      width = ndf * min(2**i, 8)
      stride = 2 if i < n_layers else 1
      convs.append(tnn.Conv2d(prev, width, 4, stride, 1, bias=False))
      norms.append(tnn.BatchNorm2d(width))
      prev = width
    convs.append(tnn.Conv2d(prev, 1, 4, 1, 1))
    self.convs = tnn.ModuleList(convs)
    self.norms = tnn.ModuleList([n for n in norms if n is not None])

  def forward(self, x):
    h = tnn.functional.leaky_relu(self.convs[0](x), 0.2)
    for conv, norm in zip(self.convs[1:-1], self.norms):
      h = tnn.functional.leaky_relu(norm(conv(h)), 0.2)
    return self.convs[-1](h)


class TorchResnetGenerator(tnn.Module):
  """networks.py ResnetGenerator with BatchNorm (use_bias False inside)."""

  def __init__(self, in_ch, out_ch, ngf, n_blocks):
    super().__init__()
    bn = tnn.BatchNorm2d
    layers_ = [tnn.ReflectionPad2d(3), tnn.Conv2d(in_ch, ngf, 7, bias=False),
               bn(ngf), tnn.ReLU(True)]
    for i in range(2):
      m = 2**i
      layers_ += [tnn.Conv2d(ngf * m, ngf * m * 2, 3, 2, 1, bias=False),
                  bn(ngf * m * 2), tnn.ReLU(True)]
    self.head = tnn.Sequential(*layers_)
    w = ngf * 4
    self.blocks = tnn.ModuleList([tnn.Sequential(
        tnn.ReflectionPad2d(1), tnn.Conv2d(w, w, 3, bias=False), bn(w),
        tnn.ReLU(True), tnn.ReflectionPad2d(1), tnn.Conv2d(w, w, 3,
                                                           bias=False),
        bn(w)) for _ in range(n_blocks)])
    tail = []
    for i in range(2):
      m = 2**(2 - i)
      tail += [tnn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, 2, 1, 1,
                                   bias=False), bn(ngf * m // 2),
               tnn.ReLU(True)]
    tail += [tnn.ReflectionPad2d(3), tnn.Conv2d(ngf, out_ch, 7), tnn.Tanh()]
    self.tail = tnn.Sequential(*tail)

  def forward(self, x):
    h = self.head(x)
    for block in self.blocks:
      h = h + block(h)
    return self.tail(h)


def resnet_variables(net):
  """Flax variables of a TorchResnetGenerator (names of ResnetGenerator)."""
  params, stats = {}, {}
  head = [m for m in net.head if isinstance(m, (tnn.Conv2d, tnn.BatchNorm2d))]
  names = ['conv_in', 'norm_in', 'down_0', 'down_norm_0', 'down_1',
           'down_norm_1']
  for name, m in zip(names, head):
    if isinstance(m, tnn.BatchNorm2d):
      _bn(m, params, stats, name)
    else:
      params[name] = _conv(m)
  for b, block in enumerate(net.blocks):
    convs = [m for m in block if isinstance(m, tnn.Conv2d)]
    bns = [m for m in block if isinstance(m, tnn.BatchNorm2d)]
    for j in range(2):
      params[f'block_{b}_conv_{j}'] = _conv(convs[j])
      _bn(bns[j], params, stats, f'block_{b}_norm_{j}')
  tail = [m for m in net.tail if isinstance(
      m, (tnn.ConvTranspose2d, tnn.Conv2d, tnn.BatchNorm2d))]
  for i, (conv, bn) in zip((1, 0), (tail[0:2], tail[2:4])):
    params[f'up_{i}'] = _conv(conv, transpose=True)
    _bn(bn, params, stats, f'up_norm_{i}')
  params['conv_out'] = _conv(tail[4])
  return {'params': params, 'batch_stats': stats}


def _randomise(net, seed):
  """Random weights everywhere, incl. BN affine and running statistics."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, (tnn.Conv2d, tnn.ConvTranspose2d)):
        m.weight.normal_(0.0, 0.1, generator=gen)
        if m.bias is not None:
          m.bias.normal_(0.0, 0.1, generator=gen)
      elif isinstance(m, tnn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5, generator=gen)
        m.bias.normal_(0.0, 0.2, generator=gen)
        m.running_mean.normal_(0.0, 0.2, generator=gen)
        m.running_var.uniform_(0.5, 2.0, generator=gen)


# ----------------------------------------------------------------- converters


def _conv(m, transpose=False):
  conv = (layers.torch_conv_transpose_kernel_to_flax if transpose else
          layers.torch_conv_kernel_to_flax)
  p = {'kernel': conv(_t2n(m.weight))}
  if m.bias is not None:
    p['bias'] = _t2n(m.bias)
  return p


def _bn(m, params, stats, name):
  params[name], stats[name] = layers.torch_batch_norm_to_flax(
      _t2n(m.weight), _t2n(m.bias), _t2n(m.running_mean), _t2n(m.running_var))


def unet_variables(blocks):
  params, stats = {}, {}
  for l, b in enumerate(blocks):
    params[f'down_{l}'] = _conv(b.down)
    params[f'up_{l}'] = _conv(b.up, transpose=True)
    if b.down_norm is not None:
      _bn(b.down_norm, params, stats, f'down_norm_{l}')
    if b.up_norm is not None:
      _bn(b.up_norm, params, stats, f'up_norm_{l}')
  return {'params': params, 'batch_stats': stats}


def patchgan_variables(net):
  params = {f'conv_{i}': _conv(c) for i, c in enumerate(net.convs)}
  stats = {}
  for i, n in enumerate(net.norms, start=1):
    _bn(n, params, stats, f'norm_{i}')
  return {'params': params, 'batch_stats': stats}


def _check_structure(flax_module, variables, x):
  """The converted tree has exactly the Flax module's shapes."""
  ref = jax.eval_shape(
      lambda: flax_module.init(jax.random.key(0), x, train=False))
  got = jax.tree.map(lambda a: a.shape, variables)
  want = jax.tree.map(lambda a: a.shape, ref)
  assert got == want


def _check_running_stats(torch_bns, new_stats, old_stats, counts):
  """Flax momentum 0.9 ≡ PyTorch momentum 0.1 (variance: unbiased in torch)."""
  diffs = []
  for name, m in torch_bns.items():
    new, old, n = new_stats[name], old_stats[name], counts[name]
    diffs.append(_max_diff(new['mean'], _t2n(m.running_mean)))
    # torch: 0.9·v0 + 0.1·var·n/(n−1); Flax: 0.9·v0 + 0.1·var.
    var_t = 0.9 * old['var'] + (new['var'] - 0.9 * old['var']) * n / (n - 1)
    diffs.append(_max_diff(var_t, _t2n(m.running_var)))
  assert max(diffs) < TOL, max(diffs)


# ---------------------------------------------------------------------- tests


@pytest.mark.parametrize('k,s,p', [(4, 2, 1), (3, 2, 1), (3, 1, 1), (5, 3, 2)])
def test_conv_transpose_matches_torch(k, s, p):
  torch.manual_seed(0)
  tconv = tnn.ConvTranspose2d(5, 7, k, s, p)
  x = torch.randn(2, 5, 6, 9)
  want = _nhwc(tconv(x))
  xj = jnp.asarray(_nhwc(x))
  got = layers.torch_conv_transpose(7, k, s, p).apply(
      {'params': _conv(tconv, transpose=True)}, xj)
  assert got.shape == want.shape
  assert _max_diff(got, want) < TOL
  # The documented alternative: transpose_kernel=True with reorder only.
  alt = nn.ConvTranspose(
      7, (k, k), (s, s), padding=[(k - 1 - p, k - 1 - p)] * 2,
      transpose_kernel=True)
  alt_params = {'kernel': _t2n(tconv.weight).transpose(2, 3, 1, 0),
                'bias': _t2n(tconv.bias)}
  assert _max_diff(alt.apply({'params': alt_params}, xj), want) < TOL


@pytest.mark.parametrize('k,s,p', [(4, 2, 1), (3, 1, 1), (4, 1, 2)])
def test_conv_matches_torch(k, s, p):
  torch.manual_seed(1)
  tconv = tnn.Conv2d(5, 7, k, s, p)
  x = torch.randn(2, 5, 8, 11)
  got = layers.torch_conv(7, k, s, p).apply(
      {'params': _conv(tconv)}, jnp.asarray(_nhwc(x)))
  want = _nhwc(tconv(x))
  assert got.shape == want.shape and _max_diff(got, want) < TOL


@pytest.mark.parametrize('train', [True, False])
def test_unet_matches_torch(train):
  num_downs, ngf, size, batch = 5, 4, 32, 3
  net, blocks = torch_unet(4, 3, num_downs, ngf)
  _randomise(net, seed=2)
  variables = unet_variables(blocks)
  x = torch.randn(batch, 4, size, size, generator=torch.Generator()
                  .manual_seed(3))
  xj = jnp.asarray(_nhwc(x))
  g = pix2pix.UNetGenerator(
      out_channels=3, ngf=ngf, num_downs=num_downs, use_dropout=False)
  _check_structure(g, variables, xj)
  net.train(train)
  with torch.no_grad():
    want = _nhwc(net(x))
  got, new = g.apply(variables, xj, train=train, mutable=['batch_stats'])
  diff = _max_diff(got, want)
  assert diff < TOL, diff
  assert np.std(want) > 0.1  # not a saturated / trivial output
  if train:
    bns, counts = {}, {}
    for l, b in enumerate(blocks):
      if b.down_norm is not None:
        bns[f'down_norm_{l}'] = b.down_norm
        counts[f'down_norm_{l}'] = batch * (size // 2**(l + 1))**2
      if b.up_norm is not None:
        bns[f'up_norm_{l}'] = b.up_norm
        counts[f'up_norm_{l}'] = batch * (size // 2**l)**2
    _check_running_stats(
        bns, new['batch_stats'], variables['batch_stats'], counts)


@pytest.mark.parametrize('train', [True, False])
def test_patchgan_matches_torch(train):
  ndf, n_layers, size, batch = 8, 3, 40, 2
  net = TorchPatchGAN(6, ndf, n_layers)
  _randomise(net, seed=4)
  variables = patchgan_variables(net)
  x = torch.randn(batch, 6, size, size, generator=torch.Generator()
                  .manual_seed(5))
  xj = jnp.asarray(_nhwc(x))
  d = pix2pix.PatchDiscriminator(ndf=ndf, n_layers=n_layers)
  _check_structure(d, variables, xj)
  net.train(train)
  with torch.no_grad():
    want = _nhwc(net(x))
  got, new = d.apply(variables, xj, train=train, mutable=['batch_stats'])
  assert got.shape == want.shape == (batch, 3, 3, 1)
  diff = _max_diff(got, want)
  assert diff < TOL, diff
  if train:
    sizes = {1: size // 4, 2: size // 8, 3: size // 8 - 1}
    bns = {f'norm_{i}': m for i, m in enumerate(net.norms, start=1)}
    counts = {f'norm_{i}': batch * s * s for i, s in sizes.items()}
    _check_running_stats(
        bns, new['batch_stats'], variables['batch_stats'], counts)


@pytest.mark.parametrize('train', [True, False])
def test_resnet_generator_matches_torch(train):
  """Reflection pads, output_padding=1 transposed convs, residual blocks."""
  net = TorchResnetGenerator(4, 3, ngf=4, n_blocks=2)
  _randomise(net, seed=6)
  variables = resnet_variables(net)
  x = torch.randn(2, 4, 16, 12, generator=torch.Generator().manual_seed(7))
  xj = jnp.asarray(_nhwc(x))
  g = pix2pix.ResnetGenerator(out_channels=3, ngf=4, n_blocks=2,
                              use_dropout=False)
  _check_structure(g, variables, xj)
  net.train(train)
  with torch.no_grad():
    want = _nhwc(net(x))
  got, _ = g.apply(variables, xj, train=train, mutable=['batch_stats'])
  assert got.shape == want.shape == (2, 16, 12, 3)
  diff = _max_diff(got, want)
  assert diff < TOL, diff
  assert np.std(want) > 0.1
