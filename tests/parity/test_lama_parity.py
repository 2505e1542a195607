"""Numerical parity of LAMA's building blocks with PyTorch.

The PyTorch side is written here from reference/lama_lostgan.md (§2–3):
mask placement with grid_sample(align_corners=True), ISLA-Norm with
Batch-Group Norm, the mask net with the LAMA adaption module, and
torch.nn.utils.spectral_norm. Random torch weights are copied into the Flax
variables; outputs, updated running statistics and SN vectors are compared.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import lama
from jaxl2i.models import lama_layers as ll
from jaxl2i.models import layers

torch = pytest.importorskip('torch')
tnn = torch.nn
F = torch.nn.functional

TOL = 1e-4


def _n(t):
  return t.detach().numpy()


def _diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))))


def _sn_state(mod, flax_name):
  """u, v of a torch SN module → Flax 'spectral_norm' entries."""
  w = mod.weight_orig
  v = _n(mod.weight_v)
  if w.ndim == 4:  # (in, kh, kw) → Flax (kh, kw, in) flattening
    o, i, kh, kw = w.shape
    v = v.reshape(i, kh, kw).transpose(1, 2, 0).reshape(-1)
  return {
      f'{flax_name}/kernel/u': jnp.asarray(_n(mod.weight_u)[None]),
      f'{flax_name}/kernel/v': jnp.asarray(v[None]),
      f'{flax_name}/kernel/sigma': jnp.ones(()),
  }


def sn_dense(mod):
  p = {'kernel': layers.torch_linear_kernel_to_flax(_n(mod.weight_orig))}
  if mod.bias is not None:
    p['bias'] = _n(mod.bias)
  return {'dense': p}, {'sn': _sn_state(mod, 'dense')}


def sn_conv(mod):
  p = {'kernel': layers.torch_conv_kernel_to_flax(_n(mod.weight_orig))}
  if mod.bias is not None:
    p['bias'] = _n(mod.bias)
  return {'conv': p}, {'sn': _sn_state(mod, 'conv')}


def _rand_(module, seed, scale=0.3):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      p.copy_(torch.randn(p.shape, generator=g) * scale)


# --------------------------------------------------------- torch reference


def torch_masks_to_layout(boxes_xywh, masks, size):
  """Reference placement: grid (linspace(0,1) − x0)/w → [−1, 1], sample."""
  b, o = boxes_xywh.shape[:2]
  bb = boxes_xywh.reshape(b * o, 4)
  lin = torch.linspace(0, 1, steps=size)
  gx = (lin[None, :] - bb[:, 0:1]) / bb[:, 2:3]  # [bo, W]
  gy = (lin[None, :] - bb[:, 1:2]) / bb[:, 3:4]  # [bo, H]
  grid = torch.stack([gx[:, None, :].expand(-1, size, -1),
                      gy[:, :, None].expand(-1, -1, size)], dim=3) * 2 - 1
  out = F.grid_sample(masks.reshape(b * o, 1, *masks.shape[2:]), grid,
                      mode='bilinear', padding_mode='zeros', align_corners=True)
  return out.reshape(b, o, size, size)


class TorchIsla(tnn.Module):

  def __init__(self, c, num_w):
    super().__init__()
    self.weight_proj = tnn.utils.spectral_norm(tnn.Linear(num_w, c))
    self.bias_proj = tnn.utils.spectral_norm(tnn.Linear(num_w, c))
    self.bn = tnn.BatchNorm2d(c, eps=1e-5, momentum=0.1, affine=False)
    self.gn = tnn.GroupNorm(4, c, eps=1e-5, affine=False)
    self.rho = tnn.Parameter(torch.tensor(0.3))
    self.alpha = tnn.Parameter(torch.tensor(0.6))

  def forward(self, x, w, m):
    xb, xg = self.bn(x), self.gn(x)
    h = xb + self.rho.clamp(0, 1) * (xg - xb)
    m = F.interpolate(m, size=x.shape[2:], mode='bilinear',
                      align_corners=False)
    m = m / (m.sum(1, keepdim=True) + 1e-4)
    gam = torch.einsum('bohw,boc->bchw', m, self.weight_proj(w))
    bet = torch.einsum('bohw,boc->bchw', m, self.bias_proj(w))
    return h + self.alpha.clamp(-1, 1) * (gam * h + bet)


class TorchGated(tnn.Module):

  def __init__(self, c, group_norm):
    super().__init__()
    self.norm = tnn.GroupNorm(4, c) if group_norm else tnn.BatchNorm2d(c)
    conv = tnn.Conv2d(c, c, 3, 1, 1, bias=False)
    self.conv = (tnn.utils.spectral_norm(conv) if group_norm else
                 tnn.utils.spectral_norm(conv, eps=1e-4))
    self.alpha = tnn.Parameter(torch.tensor(0.5))

  def forward(self, x):
    return x + self.alpha * self.conv(F.leaky_relu(self.norm(x), 0.01))


class TorchMaskNet(tnn.Module):

  def __init__(self, d, hidden, map_size):
    super().__init__()
    self.hidden, self.map_size = hidden, map_size
    self.fc = tnn.utils.spectral_norm(tnn.Linear(d, hidden * 16))
    self.blocks = tnn.ModuleList([TorchGated(hidden, False) for _ in range(3)])
    self.final_bn = tnn.BatchNorm2d(hidden)
    self.final_conv = tnn.utils.spectral_norm(tnn.Conv2d(hidden, 1, 1))
    dm = d // 4
    self.key = tnn.utils.spectral_norm(tnn.Linear(d, dm))
    self.query = tnn.utils.spectral_norm(tnn.Linear(d, dm))
    self.local = tnn.ModuleList([TorchGated(dm, True) for _ in range(2)])
    self.mask_alpha = tnn.Parameter(torch.tensor(0.7))

  def forward(self, feat, boxes):
    b, o, d = feat.shape
    f = feat.reshape(b * o, d)
    x = self.fc(f).view(b * o, self.hidden, 4, 4)
    for blk in self.blocks:
      x = F.interpolate(blk(x), scale_factor=2, mode='bilinear',
                        align_corners=False)
    x = torch.sigmoid(self.final_conv(F.leaky_relu(self.final_bn(x), 0.01)))
    raw = torch_masks_to_layout(boxes, x.view(b, o, 32, 32), self.map_size)
    key = self.key(f).view(b, o, -1)
    query = self.query(f).view(b, o, -1).permute(0, 2, 1)
    small = F.interpolate(raw, size=(64, 64), mode='bilinear',
                          align_corners=False).view(b, o, -1)
    q = torch.bmm(query, small).view(b, -1, 64, 64)
    for blk in self.local:
      q = blk(q)
    energy = torch.bmm(key, q.view(b, q.shape[1], -1)).view(b, o, 64, 64)
    adj = torch.tanh(energy * self.mask_alpha.clamp(-1, 1)) + 1
    adj = F.interpolate(adj, size=(self.map_size,) * 2, mode='bilinear',
                        align_corners=False)
    return raw * adj, raw


# ------------------------------------------------------------------- tests


BOXES_XYWH = np.array([
    [[0.1, 0.2, 0.5, 0.3], [-0.6, -0.6, 0.5, 0.5], [0.6, 0.55, 0.7, 0.6]],
    [[0.0, 0.0, 1.0, 1.0], [-0.2, 0.3, 0.45, 0.25], [0.33, 0.01, 0.1, 0.9]],
], np.float32)


def test_mask_placement_matches_grid_sample():
  rng = np.random.default_rng(0)
  masks = rng.uniform(size=(2, 3, 32, 32)).astype(np.float32)
  for size in (64, 37):
    ref = _n(torch_masks_to_layout(torch.tensor(BOXES_XYWH),
                                   torch.tensor(masks), size))
    out = lama.masks_to_layout(jnp.asarray(masks), jnp.asarray(BOXES_XYWH),
                               size)
    assert _diff(out, ref) <= TOL
    assert np.all(np.asarray(out)[0, 1] == 0.0)  # padding box: all zeros
    assert ref[1, 0].min() > 0.0  # full-image box covers the canvas


def test_isla_bgn_block_train_and_eval():
  torch.manual_seed(0)
  c, num_w, b, o = 8, 6, 3, 4
  tm = TorchIsla(c, num_w)
  _rand_(tm.weight_proj, 1)
  _rand_(tm.bias_proj, 2)
  rng = np.random.default_rng(3)
  x = rng.normal(size=(b, c, 8, 8)).astype(np.float32) * 2 + 0.5
  w = rng.normal(size=(b, o, num_w)).astype(np.float32)
  m = rng.uniform(size=(b, o, 16, 16)).astype(np.float32)
  m[:, -1] = 0.0  # a padded slot
  wp, ws = sn_dense(tm.weight_proj)
  bp, bs = sn_dense(tm.bias_proj)
  variables = {
      'params': {'weight_proj': wp, 'bias_proj': bp, 'rho': np.float32(0.3),
                 'alpha': np.float32(0.6)},
      'batch_stats': {'batch_norm2d': {'mean': np.zeros(c, np.float32),
                                       'var': np.ones(c, np.float32)}},
      'spectral_norm': {'weight_proj': ws, 'bias_proj': bs},
  }
  blk = lama.IslaBgn(c)
  args = (jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(w),
          jnp.asarray(m))
  out, new = blk.apply(variables, *args, train=True,
                       mutable=['batch_stats', 'spectral_norm'])
  tm.train()
  ref = tm(torch.tensor(x), torch.tensor(w), torch.tensor(m))
  assert _diff(out, _n(ref).transpose(0, 2, 3, 1)) <= TOL
  assert _diff(new['batch_stats']['batch_norm2d']['mean'],
               _n(tm.bn.running_mean)) <= TOL
  # PyTorch's running var uses the unbiased batch variance, Flax the biased.
  n = b * 8 * 8
  var_t = 0.9 + (_n(tm.bn.running_var) - 0.9) * (n - 1) / n
  assert _diff(new['batch_stats']['batch_norm2d']['var'], var_t) <= TOL
  u_new = new['spectral_norm']['weight_proj']['sn']['dense/kernel/u'][0]
  assert _diff(u_new, _n(tm.weight_proj.weight_u)) <= TOL
  # Eval: running statistics and the stored u, v (no power iteration).
  variables = {**variables, **new}
  variables['batch_stats'] = {'batch_norm2d': {
      'mean': _n(tm.bn.running_mean), 'var': _n(tm.bn.running_var)}}
  tm.eval()
  out = blk.apply(variables, *args, train=False)
  ref = tm(torch.tensor(x), torch.tensor(w), torch.tensor(m))
  assert _diff(out, _n(ref).transpose(0, 2, 3, 1)) <= TOL


def _gated_vars(tb):
  conv_p, conv_s = sn_conv(tb.conv)
  norm = {'scale': _n(tb.norm.weight), 'bias': _n(tb.norm.bias)}
  is_gn = isinstance(tb.norm, tnn.GroupNorm)
  params = {'conv': conv_p, 'alpha': np.float32(tb.alpha.item()),
            ('GroupNorm_0' if is_gn else 'bn'): norm}
  stats = None if is_gn else {'mean': _n(tb.norm.running_mean),
                              'var': _n(tb.norm.running_var)}
  return params, {'conv': conv_s}, stats


@pytest.mark.parametrize('adapt', [True, False])
def test_mask_net_with_lama_module(adapt):
  torch.manual_seed(1)
  d, hidden, size, b, o = 16, 8, 128, 2, 3
  tm = TorchMaskNet(d, hidden, size)
  for i, mod in enumerate([tm.fc, tm.final_conv, tm.key, tm.query]):
    _rand_(mod, 10 + i)
  for i, blk in enumerate(list(tm.blocks) + list(tm.local)):
    _rand_(blk.conv, 20 + i)
    with torch.no_grad():
      blk.norm.weight.uniform_(0.5, 1.5)
      blk.norm.bias.uniform_(-0.3, 0.3)
  if not adapt:
    with torch.no_grad():
      tm.mask_alpha.zero_()
  params, sn, stats = {}, {}, {}
  params['fc'], sn['fc'] = sn_dense(tm.fc)
  params['final_conv'], sn['final_conv'] = sn_conv(tm.final_conv)
  params['key_affine'], sn['key_affine'] = sn_dense(tm.key)
  params['query_affine'], sn['query_affine'] = sn_dense(tm.query)
  params['final_bn'] = {'scale': _n(tm.final_bn.weight),
                        'bias': _n(tm.final_bn.bias)}
  stats['final_bn'] = {'mean': np.zeros(hidden, np.float32),
                       'var': np.ones(hidden, np.float32)}
  for i, blk in enumerate(tm.blocks):
    p, s, st = _gated_vars(blk)
    params[f'conv{i + 1}'], sn[f'conv{i + 1}'] = p, s
    stats[f'conv{i + 1}'] = {'bn': st}
  for i, blk in enumerate(tm.local):
    p, s, _ = _gated_vars(blk)
    params[f'query_local_{i}'], sn[f'query_local_{i}'] = p, s
  params['mask_adjust_alpha'] = np.float32(tm.mask_alpha.item())
  if not adapt:
    params = {k: v for k, v in params.items()
              if not k.startswith(('key', 'query', 'mask_adjust'))}
    sn = {k: v for k, v in sn.items() if not k.startswith(('key', 'query'))}
  rng = np.random.default_rng(4)
  feat = rng.normal(size=(b, o, d)).astype(np.float32)
  net = lama.MaskRegressNet(size, hidden=hidden, mask_adaption=adapt)
  (adapted, raw), _ = net.apply(
      {'params': params, 'batch_stats': stats, 'spectral_norm': sn},
      jnp.asarray(feat), jnp.asarray(BOXES_XYWH), train=True,
      mutable=['batch_stats', 'spectral_norm'])
  tm.train()
  ref_adapted, ref_raw = tm(torch.tensor(feat), torch.tensor(BOXES_XYWH))
  assert _diff(raw, _n(ref_raw)) <= TOL
  assert _diff(adapted, _n(ref_adapted)) <= TOL
  if adapt:  # the adaption really changed the masks
    assert _diff(_n(ref_adapted), _n(ref_raw)) > 1e-2
  else:
    np.testing.assert_array_equal(adapted, raw)


def test_spectral_norm_conv_and_embedding_match_torch():
  torch.manual_seed(2)
  conv = tnn.utils.spectral_norm(tnn.Conv2d(3, 5, 3, 1, 1), eps=1e-4)
  emb = tnn.utils.spectral_norm(tnn.Embedding(7, 4))
  _rand_(conv, 30, scale=1.0)
  _rand_(emb, 31, scale=1.0)
  cp, cs = sn_conv(conv)
  # The table is stored transposed [C, N] (see lama_layers._TransposedEmbed).
  ev = {'params': {'embed': {'embedding': _n(emb.weight_orig).T.copy()}}}
  ev['spectral_norm'] = {'sn': {
      'embed/embedding/u': jnp.asarray(_n(emb.weight_u)[None]),
      'embed/embedding/v': jnp.asarray(_n(emb.weight_v)[None]),
      'embed/embedding/sigma': jnp.ones(())}}
  fconv = ll.SNConv(5, 3, use_bias=True, eps=1e-4)
  femb = ll.SNEmbed(7, 4)
  cvars = {'params': cp, 'spectral_norm': cs}
  x = np.random.default_rng(5).normal(size=(2, 3, 6, 6)).astype(np.float32)
  ids = np.array([[0, 3, 6], [2, 2, 5]])
  conv.train()
  emb.train()
  for _ in range(2):  # u persists across steps
    out, new = fconv.apply(cvars, jnp.asarray(x.transpose(0, 2, 3, 1)),
                           update_stats=True, mutable=['spectral_norm'])
    cvars = {**cvars, **new}
    ref = conv(torch.tensor(x))
    assert _diff(out, _n(ref).transpose(0, 2, 3, 1)) <= TOL
    out, new = femb.apply(ev, jnp.asarray(ids), update_stats=True,
                          mutable=['spectral_norm'])
    ev = {**ev, **new}
    assert _diff(out, _n(emb(torch.tensor(ids)))) <= TOL
  u = cvars['spectral_norm']['sn']['conv/kernel/u'][0]
  assert _diff(u, _n(conv.weight_u)) <= TOL
  conv.eval()  # eval: stored u, v, no power iteration
  out = fconv.apply(cvars, jnp.asarray(x.transpose(0, 2, 3, 1)),
                    update_stats=False)
  assert _diff(out, _n(conv(torch.tensor(x))).transpose(0, 2, 3, 1)) <= TOL
