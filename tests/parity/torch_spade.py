"""PyTorch SPADE networks with the official module names (test helper).

Written from reference/spade_pix2pix.md Part A with the module structure of
`NVlabs/SPADE` `models/networks/{normalization,architecture,generator,
discriminator,encoder}.py`, so that `state_dict()` has the official keys
(`head_0.norm_0.mlp_shared.0.weight`, `discriminator_0.model1.0.0.weight_orig`,
`layer1.0.weight_u`, ...). Widths, the SPADE hidden width and the encoder's
input size are parameters so tests can run tiny models; the official code
hard-codes 128, 256 and 256. SyncBatchNorm is plain BatchNorm2d (same keys,
same single-process behaviour). Used by test_spade_parity.py (block-level
parity) and test_spade_import.py (whole-checkpoint import).
"""

import contextlib

import numpy as np
import torch

tnn = torch.nn
F = torch.nn.functional
sn = torch.nn.utils.spectral_norm


def get_nonspade_norm_layer(norm_type='spectralinstance'):
  """`normalization.get_nonspade_norm_layer` for 'spectral…' norm types."""

  def add_norm_layer(layer):
    sub = norm_type
    if norm_type.startswith('spectral'):
      layer = sn(layer)
      sub = norm_type[len('spectral'):]
    if not sub or sub == 'none':
      return layer
    # "remove bias in the previous layer, which is meaningless"
    if getattr(layer, 'bias', None) is not None:
      delattr(layer, 'bias')
      layer.register_parameter('bias', None)
    if sub != 'instance':
      raise ValueError(f'not ported: {sub}')
    return tnn.Sequential(layer, tnn.InstanceNorm2d(
        layer.weight_orig.shape[0] if hasattr(layer, 'weight_orig') else
        layer.weight.shape[0], affine=False))

  return add_norm_layer


class SPADE(tnn.Module):
  """A1: param-free BN · (1 + γ) + β; mlp_shared = Sequential(conv, ReLU)."""

  def __init__(self, norm_nc, label_nc, hidden=128, ks=3):
    super().__init__()
    pw = ks // 2
    self.param_free_norm = tnn.BatchNorm2d(norm_nc, affine=False)
    self.mlp_shared = tnn.Sequential(
        tnn.Conv2d(label_nc, hidden, ks, padding=pw), tnn.ReLU())
    self.mlp_gamma = tnn.Conv2d(hidden, norm_nc, ks, padding=pw)
    self.mlp_beta = tnn.Conv2d(hidden, norm_nc, ks, padding=pw)

  def forward(self, x, segmap):
    normalized = self.param_free_norm(x)
    segmap = F.interpolate(segmap, size=x.size()[2:], mode='nearest')
    actv = self.mlp_shared(segmap)
    return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(tnn.Module):
  """A2 (`norm_G = spectralspadesyncbatch3x3`)."""

  def __init__(self, fin, fout, semantic_nc, hidden=128):
    super().__init__()
    self.learned_shortcut = fin != fout
    fmiddle = min(fin, fout)
    self.conv_0 = sn(tnn.Conv2d(fin, fmiddle, 3, padding=1))
    self.conv_1 = sn(tnn.Conv2d(fmiddle, fout, 3, padding=1))
    if self.learned_shortcut:
      self.conv_s = sn(tnn.Conv2d(fin, fout, 1, bias=False))
    self.norm_0 = SPADE(fin, semantic_nc, hidden)
    self.norm_1 = SPADE(fmiddle, semantic_nc, hidden)
    if self.learned_shortcut:
      self.norm_s = SPADE(fin, semantic_nc, hidden)

  def forward(self, x, seg):
    x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
    actvn = lambda h: F.leaky_relu(h, 2e-1)
    dx = self.conv_0(actvn(self.norm_0(x, seg)))
    dx = self.conv_1(actvn(self.norm_1(dx, seg)))
    return x_s + dx


class SPADEGenerator(tnn.Module):
  """A3. grid = (sh, sw) of the latent map; out_nc 3 (1: depth stage 1)."""

  def __init__(self, semantic_nc, ngf=64, mode='normal', use_vae=False,
               z_dim=256, grid=(8, 8), hidden=128, out_nc=3):
    super().__init__()
    nf = ngf
    self.mode, self.use_vae, self.nf, self.z_dim = mode, use_vae, nf, z_dim
    self.sh, self.sw = grid
    if use_vae:
      self.fc = tnn.Linear(z_dim, 16 * nf * self.sw * self.sh)
    else:
      self.fc = tnn.Conv2d(semantic_nc, 16 * nf, 3, padding=1)
    block = lambda i, o: SPADEResnetBlock(i, o, semantic_nc, hidden)
    self.head_0 = block(16 * nf, 16 * nf)
    self.G_middle_0 = block(16 * nf, 16 * nf)
    self.G_middle_1 = block(16 * nf, 16 * nf)
    self.up_0 = block(16 * nf, 8 * nf)
    self.up_1 = block(8 * nf, 4 * nf)
    self.up_2 = block(4 * nf, 2 * nf)
    self.up_3 = block(2 * nf, 1 * nf)
    final_nc = nf
    if mode == 'most':
      self.up_4 = block(1 * nf, nf // 2)
      final_nc = nf // 2
    self.conv_img = tnn.Conv2d(final_nc, out_nc, 3, padding=1)
    self.up = tnn.Upsample(scale_factor=2)

  def forward(self, seg, z=None):
    if self.use_vae:
      if z is None:
        z = torch.randn(seg.size(0), self.z_dim)
      x = self.fc(z).view(-1, 16 * self.nf, self.sh, self.sw)
    else:
      x = self.fc(F.interpolate(seg, size=(self.sh, self.sw)))
    x = self.head_0(x, seg)
    x = self.up(x)
    x = self.G_middle_0(x, seg)
    if self.mode in ('more', 'most'):
      x = self.up(x)
    x = self.G_middle_1(x, seg)
    for i in range(5 if self.mode == 'most' else 4):
      x = getattr(self, f'up_{i}')(self.up(x), seg)
    x = self.conv_img(F.leaky_relu(x, 2e-1))
    return torch.tanh(x)


class NLayerDiscriminator(tnn.Module):
  """A5, one scale; returns the outputs of all stages (ganFeat on)."""

  def __init__(self, input_nc, ndf=64, n_layers=4):
    super().__init__()
    kw, padw = 4, int(np.ceil((4 - 1.0) / 2))
    nf = ndf
    norm_layer = get_nonspade_norm_layer('spectralinstance')
    sequence = [[tnn.Conv2d(input_nc, nf, kw, stride=2, padding=padw),
                 tnn.LeakyReLU(0.2, False)]]
    for n in range(1, n_layers):
      nf_prev, nf = nf, min(nf * 2, 512)
      stride = 1 if n == n_layers - 1 else 2
      sequence += [[norm_layer(tnn.Conv2d(nf_prev, nf, kw, stride=stride,
                                          padding=padw)),
                    tnn.LeakyReLU(0.2, False)]]
    sequence += [[tnn.Conv2d(nf, 1, kw, stride=1, padding=padw)]]
    for n, seq in enumerate(sequence):
      self.add_module('model' + str(n), tnn.Sequential(*seq))

  def forward(self, x):
    results = [x]
    for submodel in self.children():
      results.append(submodel(results[-1]))
    return results[1:]


class MultiscaleDiscriminator(tnn.Module):
  """A5: `discriminator_{i}` on avg-pooled inputs (count_include_pad off)."""

  def __init__(self, input_nc, ndf=64, n_layers=4, num_d=2):
    super().__init__()
    for i in range(num_d):
      self.add_module(f'discriminator_{i}',
                      NLayerDiscriminator(input_nc, ndf, n_layers))

  def forward(self, x):
    result = []
    for d in self.children():
      result.append(d(x))
      x = F.avg_pool2d(x, 3, 2, [1, 1], count_include_pad=False)
    return result


class ConvEncoder(tnn.Module):
  """A4 with `layer{i}` = Sequential(SN conv, IN); input resized to size²."""

  def __init__(self, ndf=64, n_layers=6, size=256, z_dim=256):
    super().__init__()
    self.size, self.n_layers = size, n_layers
    norm_layer = get_nonspade_norm_layer('spectralinstance')
    prev = 3
    for i in range(n_layers):
      w = ndf * min(2**i, 8)
      self.add_module(f'layer{i + 1}', norm_layer(
          tnn.Conv2d(prev, w, 3, stride=2, padding=1)))
      prev = w
    s0 = size // 2**n_layers
    self.fc_mu = tnn.Linear(prev * s0 * s0, z_dim)
    self.fc_var = tnn.Linear(prev * s0 * s0, z_dim)

  def forward(self, x):
    if x.size(2) != self.size or x.size(3) != self.size:
      x = F.interpolate(x, size=(self.size, self.size), mode='bilinear')
    for i in range(self.n_layers):
      if i:
        x = F.leaky_relu(x, 0.2)
      x = getattr(self, f'layer{i + 1}')(x)
    x = F.leaky_relu(x, 0.2).view(x.size(0), -1)
    return self.fc_mu(x), self.fc_var(x)


def randomise(net, seed):
  """Non-trivial weights (N(0, 0.1)) and BN running statistics."""
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


def numpy_state_dict(net, prefix=''):
  """{prefix + key: numpy copy} of `net.state_dict()`."""
  return {prefix + k: v.detach().cpu().numpy().copy()
          for k, v in net.state_dict().items()}


@contextlib.contextmanager
def one_thread():
  """torch on one thread: these tiny nets run 10× faster than with several
  threads competing for a shared CPU."""
  n = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    yield
  finally:
    torch.set_num_threads(n)
