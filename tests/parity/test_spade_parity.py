"""Numerical parity of the SPADE building blocks with PyTorch.

The PyTorch modules below are written here from the tables of
reference/spade_pix2pix.md Part A (SPADE layer, SPADEResnetBlock with
torch.nn.utils.spectral_norm, NLayerDiscriminator with spectral-instance norm,
the multiscale avg-pool downsample, the VAE encoder). Random torch weights,
spectral-norm vectors and BN running statistics are copied into the Flax
variables with the converters below; train mode (batch statistics, one power
iteration) and eval mode (running statistics, stored u/v) are compared, and
so are the updated states.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import layers
from jaxl2i.models import spade
from jaxl2i.models import spade_discriminator as sd

torch = pytest.importorskip('torch')
tnn = torch.nn
F = torch.nn.functional
sn = torch.nn.utils.spectral_norm

TOL = 1e-4  # max abs difference, float32
SN = spade.SN_COLLECTION


def _t2n(t):
  return t.detach().cpu().numpy().copy()  # torch updates buffers in place


def _nhwc(t):
  return np.transpose(_t2n(t), (0, 2, 3, 1))


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))))


# ------------------------------------------------------------ PyTorch models


class TorchSPADE(tnn.Module):
  """A1: BN(affine=False) · (1 + γ) + β with a 3×3 shared MLP."""

  def __init__(self, norm_nc, label_nc, hidden):
    super().__init__()
    self.param_free_norm = tnn.BatchNorm2d(norm_nc, affine=False)
    self.mlp_shared = tnn.Conv2d(label_nc, hidden, 3, padding=1)
    self.mlp_gamma = tnn.Conv2d(hidden, norm_nc, 3, padding=1)
    self.mlp_beta = tnn.Conv2d(hidden, norm_nc, 3, padding=1)

  def forward(self, x, seg):
    seg = F.interpolate(seg, size=x.shape[2:], mode='nearest')
    a = torch.relu(self.mlp_shared(seg))
    return (self.param_free_norm(x) * (1 + self.mlp_gamma(a)) +
            self.mlp_beta(a))


class TorchResBlock(tnn.Module):
  """A2 with spectral norm on conv_0, conv_1, conv_s."""

  def __init__(self, fin, fout, label_nc, hidden):
    super().__init__()
    fmid = min(fin, fout)
    self.learned = fin != fout
    self.conv_0 = sn(tnn.Conv2d(fin, fmid, 3, padding=1))
    self.conv_1 = sn(tnn.Conv2d(fmid, fout, 3, padding=1))
    self.norm_0 = TorchSPADE(fin, label_nc, hidden)
    self.norm_1 = TorchSPADE(fmid, label_nc, hidden)
    if self.learned:
      self.conv_s = sn(tnn.Conv2d(fin, fout, 1, bias=False))
      self.norm_s = TorchSPADE(fin, label_nc, hidden)

  def forward(self, x, seg):
    xs = self.conv_s(self.norm_s(x, seg)) if self.learned else x
    act = lambda h: F.leaky_relu(h, 0.2)
    dx = self.conv_0(act(self.norm_0(x, seg)))
    dx = self.conv_1(act(self.norm_1(dx, seg)))
    return xs + dx


class TorchNLayerD(tnn.Module):
  """A5, one scale: returns the outputs of all stages."""

  def __init__(self, in_ch, ndf, n_layers):
    super().__init__()
    stages = [tnn.Sequential(tnn.Conv2d(in_ch, ndf, 4, 2, 2),
                             tnn.LeakyReLU(0.2))]
    nf = ndf
    for n in range(1, n_layers):
      prev, nf = nf, min(nf * 2, 512)
      stride = 1 if n == n_layers - 1 else 2
      stages.append(tnn.Sequential(
          sn(tnn.Conv2d(prev, nf, 4, stride, 2, bias=False)),
          tnn.InstanceNorm2d(nf, affine=False), tnn.LeakyReLU(0.2)))
    stages.append(tnn.Sequential(tnn.Conv2d(nf, 1, 4, 1, 2)))
    self.stages = tnn.ModuleList(stages)

  def forward(self, x):
    out = []
    for s in self.stages:
      x = s(x)
      out.append(x)
    return out


class TorchEncoder(tnn.Module):
  """A4 at a small size: SN conv + IN stages, fc_mu / fc_var."""

  def __init__(self, ndf, n_layers, size, z_dim):
    super().__init__()
    self.size = size
    convs, prev = [], 3
    for i in range(n_layers):
      w = ndf * min(2**i, 8)
      convs.append(sn(tnn.Conv2d(prev, w, 3, 2, 1, bias=False)))
      prev = w
    self.convs = tnn.ModuleList(convs)
    self.norm = tnn.InstanceNorm2d(prev, affine=False)  # stateless
    s = size // 2**n_layers
    self.fc_mu = tnn.Linear(prev * s * s, z_dim)
    self.fc_var = tnn.Linear(prev * s * s, z_dim)

  def forward(self, x):
    x = F.interpolate(x, size=(self.size, self.size), mode='bilinear')
    for i, c in enumerate(self.convs):
      if i:
        x = F.leaky_relu(x, 0.2)
      x = F.instance_norm(c(x), eps=1e-5)
    x = F.leaky_relu(x, 0.2).flatten(1)
    return self.fc_mu(x), self.fc_var(x)


class TorchGenerator(tnn.Module):
  """A3: fc (conv or VAE linear) → 7 ResBlocks with ×2 upsampling → image."""

  def __init__(self, label_nc, ngf, mode, use_vae, z_dim, grid, hidden):
    super().__init__()
    nf, (self.sh, self.sw) = ngf, grid
    self.mode, self.use_vae, self.nf = mode, use_vae, ngf
    if use_vae:
      self.fc = tnn.Linear(z_dim, 16 * nf * self.sh * self.sw)
    else:
      self.fc = tnn.Conv2d(label_nc, 16 * nf, 3, padding=1)
    block = lambda i, o: TorchResBlock(i, o, label_nc, hidden)
    self.head_0 = block(16 * nf, 16 * nf)
    self.G_middle_0 = block(16 * nf, 16 * nf)
    self.G_middle_1 = block(16 * nf, 16 * nf)
    widths = [16 * nf, 8 * nf, 4 * nf, 2 * nf, nf]
    if mode == 'most':
      widths.append(nf // 2)
    self.ups = tnn.ModuleList(
        [block(i, o) for i, o in zip(widths[:-1], widths[1:])])
    self.conv_img = tnn.Conv2d(widths[-1], 3, 3, padding=1)

  def forward(self, seg, z):
    up = lambda h: F.interpolate(h, scale_factor=2, mode='nearest')
    if self.use_vae:
      x = self.fc(z).view(-1, 16 * self.nf, self.sh, self.sw)
    else:
      x = self.fc(F.interpolate(seg, size=(self.sh, self.sw)))
    x = self.G_middle_0(up(self.head_0(x, seg)), seg)
    if self.mode in ('more', 'most'):
      x = up(x)
    x = self.G_middle_1(x, seg)
    for block in self.ups:
      x = block(up(x), seg)
    return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


def _randomise(net, seed):
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, (tnn.Conv2d, tnn.Linear)):
        w = m.weight_orig if hasattr(m, 'weight_orig') else m.weight
        w.normal_(0.0, 0.1, generator=gen)
        if m.bias is not None:
          m.bias.normal_(0.0, 0.1, generator=gen)
      elif isinstance(m, tnn.BatchNorm2d):
        m.running_mean.normal_(0.0, 0.3, generator=gen)
        m.running_var.uniform_(0.5, 2.0, generator=gen)


# ----------------------------------------------------------------- converters


def _conv(m):
  p = {'kernel': layers.torch_conv_kernel_to_flax(_t2n(m.weight))}
  if m.bias is not None:
    p['bias'] = _t2n(m.bias)
  return p


def _sn_conv(m):
  kernel, state = spade.torch_spectral_to_flax(
      _t2n(m.weight_orig), _t2n(m.weight_u), _t2n(m.weight_v))
  p = {'kernel': kernel}
  if m.bias is not None:
    p['bias'] = _t2n(m.bias)
  return p, state


def spade_variables(m):
  params = {k: _conv(getattr(m, k))
            for k in ('mlp_shared', 'mlp_gamma', 'mlp_beta')}
  bn = m.param_free_norm
  stats = {'param_free_norm': {'mean': _t2n(bn.running_mean),
                               'var': _t2n(bn.running_var)}}
  return params, stats


def resblock_variables(m):
  params, stats, spec = {}, {}, {}
  for k in ('norm_0', 'norm_1', 'norm_s'):
    if hasattr(m, k):
      params[k], stats[k] = spade_variables(getattr(m, k))
  for k in ('conv_0', 'conv_1', 'conv_s'):
    if hasattr(m, k):
      params[k], spec[k] = _sn_conv(getattr(m, k))
  return {'params': params, 'batch_stats': stats, SN: spec}


def generator_variables(net):
  params, stats, spec = {}, {}, {}
  names = ['head_0', 'G_middle_0', 'G_middle_1'] + [
      f'up_{i}' for i in range(len(net.ups))]
  blocks = [net.head_0, net.G_middle_0, net.G_middle_1, *net.ups]
  for name, block in zip(names, blocks):
    v = resblock_variables(block)
    params[name], stats[name], spec[name] = v['params'], v['batch_stats'], v[SN]
  params['conv_img'] = _conv(net.conv_img)
  if net.use_vae:
    params['fc'] = {
        'kernel': layers.torch_linear_kernel_to_flax(_t2n(net.fc.weight)),
        'bias': _t2n(net.fc.bias)}
  else:
    params['fc'] = _conv(net.fc)
  return {'params': params, 'batch_stats': stats, SN: spec}


def discriminator_variables(nets):
  params, spec = {}, {}
  for i, net in enumerate(nets):
    p, s = {}, {}
    for n, stage in enumerate(net.stages):
      if hasattr(stage[0], 'weight_orig'):
        p[f'model{n}'], s[f'model{n}'] = _sn_conv(stage[0])
      else:
        p[f'model{n}'] = _conv(stage[0])
    params[f'scale_{i}'], spec[f'scale_{i}'] = p, s
  return {'params': params, SN: spec}


def _check_structure(variables, reference):
  got = jax.tree.map(lambda a: tuple(a.shape), variables)
  want = jax.tree.map(lambda a: tuple(a.shape), reference)
  assert got == want


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
  net = TorchSPADE(norm_nc=6, label_nc=4, hidden=16)
  _randomise(net, seed=2)
  params, stats = spade_variables(net)
  gen = torch.Generator().manual_seed(3)
  x = torch.randn(3, 6, x_size, x_size, generator=gen) * 2 + 0.5
  seg = F.one_hot(torch.randint(0, 4, (3, 16, 16), generator=gen), 4)
  seg = seg.permute(0, 3, 1, 2).float()
  variables = {'params': params, 'batch_stats': stats}
  old = _flat(stats)
  layer = spade.SPADE(hidden=16)
  xj, sj = jnp.asarray(_nhwc(x)), jnp.asarray(_nhwc(seg))
  _check_structure(variables, jax.eval_shape(
      lambda: layer.init(jax.random.key(0), xj, sj, train=False)))
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
  net = TorchResBlock(fin, fout, label_nc=5, hidden=16)
  _randomise(net, seed=5)
  gen = torch.Generator().manual_seed(6)
  x = torch.randn(2, fin, 8, 8, generator=gen)
  seg = torch.rand(2, 5, 32, 32, generator=gen)
  if not train:
    with torch.no_grad():  # Consistent u, v from a training forward first.
      net.train(True)(x, seg)  # (also moves the running statistics)
  variables = resblock_variables(net)
  old = _flat(variables['batch_stats'])
  block = spade.SPADEResnetBlock(fout, spade_hidden=16)
  xj, sj = jnp.asarray(_nhwc(x)), jnp.asarray(_nhwc(seg))
  _check_structure(variables, jax.eval_shape(
      lambda: block.init(jax.random.key(0), xj, sj, train=False)))
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
  t_sn = {}
  for k in ('conv_0', 'conv_1', 'conv_s'):
    if hasattr(net, k):
      _, s = _sn_conv(getattr(net, k))
      t_sn[f'{k}/u'], t_sn[f'{k}/v'] = s['u'], s['v']
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
  nets = [TorchNLayerD(7, 8, 4) for _ in range(2)]
  for i, net in enumerate(nets):
    _randomise(net, seed=9 + i)
  x = torch.randn(2, 7, 24, 24, generator=torch.Generator().manual_seed(11))
  if not train:
    with torch.no_grad():
      for net in nets:
        net.train(True)(torch.randn(2, 7, 24, 24))
  variables = discriminator_variables(nets)
  d = sd.MultiscaleDiscriminator(ndf=8, n_layers=4, num_d=2)
  xj = jnp.asarray(_nhwc(x))
  _check_structure(variables, jax.eval_shape(
      lambda: d.init(jax.random.key(0), xj, train=False)))
  want, h = [], x
  with torch.no_grad():
    for i, net in enumerate(nets):
      net.train(train)
      want.append([_nhwc(f) for f in net(h)])
      h = F.avg_pool2d(h, 3, 2, 1, count_include_pad=False)
  got, new = jax.jit(functools.partial(d.apply, train=train, mutable=[SN]))(
      variables, xj)
  assert [[g.shape for g in s] for s in got] == [
      [w.shape for w in s] for s in want]
  diff = max(_max_diff(g, w) for gs, ws in zip(got, want)
             for g, w in zip(gs, ws))
  assert diff < TOL, diff
  t_sn = _flat(discriminator_variables(nets)[SN])
  assert _compare_state(_flat(new[SN]), t_sn) < 1e-5


@pytest.mark.parametrize('train', [True, False])
def test_encoder_matches_torch(train):
  torch.manual_seed(12)
  net = TorchEncoder(ndf=4, n_layers=3, size=32, z_dim=8)
  _randomise(net, seed=13)
  x = torch.rand(2, 3, 40, 24, generator=torch.Generator().manual_seed(14))
  if not train:
    with torch.no_grad():
      net.train(True)(x)
  params, spec = {}, {}
  for i, c in enumerate(net.convs, start=1):
    params[f'layer{i}'], spec[f'layer{i}'] = _sn_conv(c)
  for k in ('fc_mu', 'fc_var'):
    m = getattr(net, k)
    params[k] = {'kernel': layers.torch_linear_kernel_to_flax(_t2n(m.weight)),
                 'bias': _t2n(m.bias)}
  variables = {'params': params, SN: spec}
  e = sd.ConvEncoder(ndf=4, num_layers=3, input_size=32, z_dim=8)
  xj = jnp.asarray(_nhwc(x))
  _check_structure(variables, jax.eval_shape(
      lambda: e.init(jax.random.key(0), xj, train=False)))
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
  net = TorchGenerator(label_nc, ngf, mode, use_vae, z_dim, grid, hidden)
  _randomise(net, seed=16)
  gen = torch.Generator().manual_seed(17)
  seg = F.one_hot(torch.randint(0, label_nc, (2, *size), generator=gen),
                  label_nc).permute(0, 3, 1, 2).float()
  z = torch.randn(2, z_dim, generator=gen)
  variables = generator_variables(net)
  g = spade.SPADEGenerator(
      ngf=ngf, num_upsampling_layers=mode, use_vae=use_vae, z_dim=z_dim,
      spade_hidden=hidden)
  sj, zj = jnp.asarray(_nhwc(seg)), jnp.asarray(_t2n(z))
  _check_structure(variables, jax.eval_shape(
      lambda: g.init(jax.random.key(0), sj, zj, train=False)))
  with torch.no_grad():
    want = _nhwc(net.train(True)(seg, z))
  got, new = jax.jit(functools.partial(
      g.apply, train=True, mutable=['batch_stats', SN]))(variables, sj, zj)
  assert got.shape == want.shape == (2, *size, 3)
  diff = _max_diff(got, want)
  assert diff < TOL, diff
  assert np.std(want) > 0.1  # not a constant / saturated image
  assert _compare_state(_flat(new[SN]), _flat(generator_variables(net)[SN])
                        ) < 1e-5


def test_spectral_conv_gradient_matches_torch():
  """d loss / d weight_orig through σ(W) (u, v held constant), train mode."""
  torch.manual_seed(18)
  conv = sn(tnn.Conv2d(5, 7, 4, 2, 2))
  _randomise(conv, seed=19)
  gen = torch.Generator().manual_seed(20)
  x = torch.randn(2, 5, 9, 9, generator=gen)
  r = torch.randn(2, 7, 5, 5, generator=gen)
  kernel, state = _sn_conv(conv)  # before the forward updates u, v
  (conv(x) * r).sum().backward()
  layer = spade.SpectralConv(7, 4, 2, 2)
  xj, rj = jnp.asarray(_nhwc(x)), jnp.asarray(_nhwc(r))

  def loss(params):
    out, _ = layer.apply({'params': params, SN: state}, xj,
                         update_stats=True, mutable=[SN])
    return jnp.sum(out * rj)

  grads = jax.grad(loss)(kernel)
  want = layers.torch_conv_kernel_to_flax(_t2n(conv.weight_orig.grad))
  assert _max_diff(grads['kernel'], want) < TOL
  assert _max_diff(grads['bias'], _t2n(conv.bias.grad)) < TOL
  assert np.abs(want).max() > 0.1
