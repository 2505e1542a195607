"""Importing official LAMA generator checkpoints (jaxl2i.models.lama_import).

The PyTorch generator below is written here from reference/lama_lostgan.md
§2–3 with the module names of `ZejianLi/LAMA` (model/resnet_generator.py,
mask_regression.py, components.py), so its `state_dict()` has the official
keys; the widths are parameters so the test can run tiny models. Noise
injection samples fresh noise in eval mode too (pitfall 9): it is switched
off for the comparison by setting every `noise_weight_seed` to −100 in the
torch model before conversion (softplus(−100) ≈ 4e−44), so both models get
the same, noise-free, outputs.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import lama
from jaxl2i.models import lama_import
from jaxl2i.nets import pth

torch = pytest.importorskip('torch')
tnn = torch.nn
F = torch.nn.functional

TOL = 1e-4
SMALL = dict(ch=8, z_dim=8, embed_dim=8, mask_hidden=8, num_classes=10)


def _sn(m, eps=1e-12):
  return tnn.utils.spectral_norm(m, eps=eps)


def _conv2d(i, o, k=3, pad=1, bias=True):   # components.conv2d: SN eps 1e-4
  return _sn(tnn.Conv2d(i, o, k, 1, pad, bias=bias), eps=1e-4)


def _place(boxes, masks, size):
  """masks_to_layout: grid (linspace(0,1) − x0)/w → [−1,1], grid_sample."""
  b, o = boxes.shape[:2]
  bb = boxes.reshape(b * o, 4)
  lin = torch.linspace(0, 1, steps=size)
  gx = (lin[None] - bb[:, :1]) / bb[:, 2:3]
  gy = (lin[None] - bb[:, 1:2]) / bb[:, 3:4]
  grid = torch.stack([gx[:, None, :].expand(-1, size, -1),
                      gy[:, :, None].expand(-1, -1, size)], 3) * 2 - 1
  m = masks.reshape(b * o, 1, *masks.shape[2:])
  return F.grid_sample(m, grid, mode='bilinear', padding_mode='zeros',
                       align_corners=True).reshape(b, o, size, size)


class Isla(tnn.Module):   # SpatialAdaptiveSynBatchGroupNorm2d

  def __init__(self, c, num_w):
    super().__init__()
    self.weight_proj = _sn(tnn.Linear(num_w, c))
    self.bias_proj = _sn(tnn.Linear(num_w, c))
    self.batch_norm2d = tnn.BatchNorm2d(c, affine=False)
    self.group_norm = tnn.GroupNorm(4, c, affine=False)
    self.rho = tnn.Parameter(torch.tensor(0.1))
    self.alpha = tnn.Parameter(torch.tensor(0.0))

  def forward(self, x, w, m):
    h = self.batch_norm2d(x)
    h = h + self.rho.clamp(0, 1) * (self.group_norm(x) - h)
    m = F.interpolate(m, size=x.shape[2:], mode='bilinear',
                      align_corners=False)
    m = m / (m.sum(1, keepdim=True) + 1e-4)
    gam = torch.einsum('bohw,boc->bchw', m, self.weight_proj(w))
    bet = torch.einsum('bohw,boc->bchw', m, self.bias_proj(w))
    return h + self.alpha.clamp(-1, 1) * (gam * h + bet)


class Noise(tnn.Module):   # ChannelwiseNoiseInjection

  def __init__(self, c):
    super().__init__()
    self.noise_weight_seed = tnn.Parameter(torch.zeros(1, c, 1, 1))

  def forward(self, x):
    n = torch.randn(x.shape[0], 1, *x.shape[2:])
    return x + F.softplus(self.noise_weight_seed) * n


class ResBlockG(tnn.Module):

  def __init__(self, cin, cout, num_w):
    super().__init__()
    self.conv1 = _conv2d(cin, cout, bias=False)
    self.conv2 = _conv2d(cout, cout, bias=False)
    self.b1, self.b2 = Isla(cin, num_w), Isla(cout, num_w)
    self.c_sc = _conv2d(cin, cout, 1, 0)
    self.alpha = tnn.Parameter(torch.tensor(0.0))
    self.noise1, self.noise2 = Noise(cout), Noise(cout)

  def forward(self, x, w, m):
    up = lambda t: F.interpolate(t, scale_factor=2, mode='nearest')
    h = self.conv1(up(F.leaky_relu(self.b1(x, w, m), 0.01)))
    h = self.noise1(h)
    h = self.noise2(self.conv2(F.leaky_relu(self.b2(h, w, m), 0.01)))
    return self.alpha * h + self.c_sc(up(x))


class ByPass(tnn.Module):   # ResnetGenerator256 wraps its blocks in .model

  def __init__(self, model):
    super().__init__()
    self.model = model


class Gated(tnn.Module):   # MaskRegressBlock (BN) / MaskAdjustBlock (GN)

  def __init__(self, c, adjust):
    super().__init__()
    norm = tnn.GroupNorm(4, c) if adjust else tnn.BatchNorm2d(c)
    conv = (_sn(tnn.Conv2d(c, c, 3, 1, 1, bias=False)) if adjust else
            _conv2d(c, c, bias=False))
    self.conv = tnn.Sequential(norm, tnn.LeakyReLU(0.01), conv)
    self.alpha = tnn.Parameter(torch.tensor(0.0))

  def forward(self, x):
    return x + self.alpha * self.conv(x)


class MaskRegressNet(tnn.Module):

  def __init__(self, d, hidden, map_size):
    super().__init__()
    self.hidden, self.map_size = hidden, map_size
    self.fc = _sn(tnn.Linear(d, hidden * 16))
    self.conv1, self.conv2, self.conv3 = (Gated(hidden, False)
                                          for _ in range(3))
    self.final = tnn.Sequential(tnn.BatchNorm2d(hidden), tnn.LeakyReLU(0.01),
                                _sn(tnn.Conv2d(hidden, 1, 1, 1)),
                                tnn.Sigmoid())
    self.query_affine = _sn(tnn.Linear(d, d // 4))
    self.key_affine = _sn(tnn.Linear(d, d // 4))
    self.query_local = tnn.Sequential(Gated(d // 4, True),
                                      Gated(d // 4, True))
    self.mask_adjust_alpha = tnn.Parameter(torch.tensor(0.0))

  def forward(self, feat, boxes):
    b, o, d = feat.shape
    f = feat.reshape(b * o, d)
    x = self.fc(f).view(b * o, self.hidden, 4, 4)
    for blk in (self.conv1, self.conv2, self.conv3):
      x = F.interpolate(blk(x), scale_factor=2, mode='bilinear',
                        align_corners=False)
    raw = _place(boxes, self.final(x).view(b, o, 32, 32), self.map_size)
    key = self.key_affine(f).view(b, o, -1)
    query = self.query_affine(f).view(b, o, -1).permute(0, 2, 1)
    small = F.interpolate(raw, size=(64, 64), mode='bilinear',
                          align_corners=False).view(b, o, -1)
    q = self.query_local(torch.bmm(query, small).view(b, -1, 64, 64))
    energy = torch.bmm(key, q.view(b, q.shape[1], -1)).view(b, o, 64, 64)
    adj = torch.tanh(energy * self.mask_adjust_alpha.clamp(-1, 1)) + 1
    adj = F.interpolate(adj, size=(self.map_size,) * 2, mode='bilinear',
                        align_corners=False)
    return raw * adj, raw


class ResnetGenerator(tnn.Module):
  """ResnetGenerator{64,128,256} of LAMA with configurable widths."""

  def __init__(self, res, num_classes, ch, z_dim, embed_dim, mask_hidden):
    super().__init__()
    self.res_ = res
    self.label_embedding = tnn.Embedding(num_classes, embed_dim)
    num_w = z_dim + embed_dim
    widths = [ch * m for m in lama.TRUNK[res]]
    self.fc = _sn(tnn.Linear(z_dim, 16 * widths[0]))
    blocks = [ResBlockG(i, o, num_w) for i, o in zip(widths, widths[1:])]
    if res == 256:
      self.res = tnn.Sequential(*[ByPass(b) for b in blocks])
    else:
      first = {64: 2, 128: 1}[res]
      for i, blk in enumerate(blocks):
        setattr(self, f'res{i + first}', blk)
    self.blocks = blocks   # plain list: not registered twice
    self.final = tnn.Sequential(tnn.BatchNorm2d(ch), tnn.LeakyReLU(0.01),
                                _conv2d(ch, 3), tnn.Tanh())
    self.mapping = tnn.Sequential()
    self.mask_regress = MaskRegressNet(num_w + 2, mask_hidden, res)
    self.style_mapping = tnn.Sequential(
        _sn(tnn.Linear(z_dim, z_dim)), tnn.LeakyReLU(0.01),
        _sn(tnn.Linear(z_dim, z_dim)), tnn.LeakyReLU(0.01),
        _sn(tnn.Linear(z_dim, z_dim)))

  def forward(self, z, bbox, z_im, y):
    b, o = z.shape[:2]
    emb = self.label_embedding(y)
    latent = torch.cat([emb, z, bbox[:, :, 2:]], 2)
    mask, raw = self.mask_regress(latent, bbox)
    w = torch.cat([emb, self.style_mapping(z.view(b * o, -1)).view(b, o, -1)],
                  2)
    x = self.fc(z_im).view(b, -1, 4, 4)
    for blk in self.blocks:
      x = blk(x, w, mask)
    return self.final(x), mask, raw


# ----------------------------------------------------------------- fixtures


BOXES = np.array([[[0.1, 0.2, 0.5, 0.3], [0.6, 0.55, 0.35, 0.4],
                   [-0.6, -0.6, 0.5, 0.5]],
                  [[0.0, 0.0, 1.0, 1.0], [0.3, 0.1, 0.45, 0.7],
                   [0.05, 0.6, 0.4, 0.3]]], np.float32)   # (x0, y0, w, h)
CLASSES = np.array([[3, 7, 0], [1, 9, 4]])


def _randomise(net, seed):
  """Non-trivial weights, α/ρ, BN/GN affine; then BN stats and u by use."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in net.named_parameters():
      if name.endswith('noise_weight_seed'):
        p.fill_(-100.0)   # no noise in either model (module docstring)
      elif p.ndim == 0 and name.endswith('rho'):
        p.uniform_(0.2, 0.8, generator=g)
      elif p.ndim == 0:   # α of blocks, ISLA, mask adjust
        p.uniform_(0.3, 0.7, generator=g)
      elif name.endswith('.weight') and p.ndim == 1:   # BN / GN scale
        p.uniform_(0.6, 1.4, generator=g)
      else:
        p.copy_(torch.randn(p.shape, generator=g) * 0.3)
  net.train()
  torch.manual_seed(seed)
  z, zi, bb, y = _inputs(net, 4, seed)
  for _ in range(3):   # running stats and power iterations
    net(z, bb, zi, y)
  net.eval()


def _inputs(net, o, seed):
  r = np.random.default_rng(seed)
  zd = net.fc.weight_orig.shape[1]
  z = torch.tensor(r.normal(size=(2, o, zd)), dtype=torch.float32)
  zi = torch.tensor(r.normal(size=(2, zd)), dtype=torch.float32)
  bb = torch.tensor(np.concatenate([BOXES, BOXES[:, :1]], 1)[:, :o])
  y = torch.tensor(np.concatenate([CLASSES, CLASSES[:, :1]], 1)[:, :o])
  return z, zi, bb, y


@pytest.fixture(scope='module')
def torch64():
  torch.manual_seed(0)
  net = ResnetGenerator(64, SMALL['num_classes'], SMALL['ch'],
                        SMALL['z_dim'], SMALL['embed_dim'],
                        SMALL['mask_hidden'])
  _randomise(net, 1)
  return net


def _numpy_sd(net, prefix=''):
  return {prefix + k: v.detach().numpy().copy()
          for k, v in net.state_dict().items()}


# -------------------------------------------------------------------- tests


def test_generator_outputs_match_official_eval_mode(torch64, tmp_path):
  path = os.path.join(tmp_path, 'G_64.pth')
  torch.save(torch64.state_dict(), path)
  sd = lama_import.load_state_dict(path)   # torch-free reader
  cfg = lama_import.infer_generator_config(sd)
  assert cfg == dict(resolution=64, mask_adaption=True, **SMALL)
  variables = lama_import.torch_to_flax_generator(
      sd, resolution=64, **{k: v for k, v in cfg.items() if k != 'resolution'})
  # Same tree, shapes and dtypes as the module's own variables.
  gen = lama.LamaGenerator(resolution=64, **SMALL)
  want = lama_import.expected_variables(gen)
  assert (jax.tree.structure(want) ==
          jax.tree.structure(jax.tree.map(jnp.asarray, variables)))
  jax.tree.map(lambda w, v: (w.shape, w.dtype) == (v.shape, v.dtype) or
               pytest.fail(f'{w} vs {v.shape}'), want, variables)

  z, zi, bb, y = _inputs(torch64, 3, 7)
  with torch.no_grad():
    ref_img, ref_m, ref_raw = torch64(z, bb, zi, y)
  xywh = BOXES.copy()
  boxes = np.concatenate([xywh[..., :2], xywh[..., :2] + xywh[..., 2:]], -1)
  valid = CLASSES != 0   # the third slot of image 0 is padding
  apply = jax.jit(lambda v, *a: gen.apply(
      v, *a, train=False, return_masks=True,
      rngs={'noise': jax.random.key(0)}))
  img, m, raw = apply(variables, jnp.asarray(zi.numpy()),
                      jnp.asarray(z.numpy()), jnp.asarray(boxes),
                      jnp.asarray(CLASSES), jnp.asarray(valid))
  d_img = np.abs(np.asarray(img) - ref_img.numpy().transpose(0, 2, 3, 1))
  d_m = np.abs(np.asarray(m) - ref_m.numpy())
  d_raw = np.abs(np.asarray(raw) - ref_raw.numpy())
  print(f'max |Δ| image {d_img.max():.2e} adapted {d_m.max():.2e} '
        f'raw {d_raw.max():.2e}')
  assert d_img.max() <= TOL and d_m.max() <= TOL and d_raw.max() <= TOL
  assert np.isfinite(np.asarray(img)).all()
  # Non-trivial: the image is not saturated and the adaption acts.
  assert 0.05 < float(np.std(np.asarray(img))) and \
      np.mean(np.abs(np.asarray(img)) < 0.99) > 0.5
  assert np.abs(ref_m.numpy() - ref_raw.numpy()).max() > 1e-2


def test_wrapped_prefixed_checkpoint_is_deterministic(torch64, tmp_path):
  path = os.path.join(tmp_path, 'G_ddp.pth')
  torch.save({'netG': _numpy_sd_torch(torch64, 'module.'), 'epoch': 5}, path)
  raw = pth.read(path)
  kw = dict(resolution=64, **SMALL)
  a = lama_import.torch_to_flax_generator(raw, **kw)
  b = lama_import.torch_to_flax_generator(_numpy_sd(torch64), **kw)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(a))
  # Eval-mode σ is the torch one: u·(W v) of the stored vectors.
  sn = a['spectral_norm']['res1']['conv1']['sn']
  c = torch64.res2.conv1
  want = torch.dot(c.weight_u, c.weight_orig.detach().flatten(1) @ c.weight_v)
  assert abs(float(sn['conv/kernel/sigma']) - float(want)) < 1e-5


def _numpy_sd_torch(net, prefix):
  return {prefix + k: v for k, v in net.state_dict().items()}


def test_key_and_shape_errors(torch64):
  sd = _numpy_sd(torch64)
  kw = dict(resolution=64, **SMALL)
  bad = dict(sd)
  del bad['res3.b1.weight_proj.weight_u']
  bad['res3.extra.weight'] = np.zeros(3, np.float32)
  with pytest.raises(ValueError, match=r'missing keys \[res3\.b1\.weight_'
                     r'proj\.weight_u\]; unknown keys \[res3\.extra\.weight\]'):
    lama_import.torch_to_flax_generator(bad, **kw)
  bad = dict(sd)
  bad['final.2.bias'] = np.zeros(4, np.float32)
  with pytest.raises(ValueError, match=r'final\.2\.bias: shape \(4,\)'):
    lama_import.torch_to_flax_generator(bad, **kw)
  with pytest.raises(ValueError, match=r'label_embedding\.weight: shape'):
    lama_import.torch_to_flax_generator(sd, **{**kw, 'num_classes': 11})
  with pytest.raises(ValueError, match=r'ResnetGenerator128 \(it looks like a '
                     r'ResnetGenerator64, .*missing keys \[res1\.alpha'):
    lama_import.torch_to_flax_generator(sd, **{**kw, 'resolution': 128})
  # The ablation accepts the adaption keys only while they are inert.
  with pytest.raises(ValueError, match='uses mask adaption'):
    lama_import.torch_to_flax_generator(sd, mask_adaption=False, **kw)
  inert = {**sd, 'mask_regress.mask_adjust_alpha': np.zeros((), np.float32)}
  out = lama_import.torch_to_flax_generator(inert, mask_adaption=False, **kw)
  assert 'key_affine' not in out['params']['mask_regress']


@pytest.mark.parametrize('res', [128, 256])
def test_other_resolutions_key_names(res):
  widths = dict(ch=4, z_dim=8, embed_dim=6, mask_hidden=4, num_classes=5)
  net = ResnetGenerator(res, widths['num_classes'], widths['ch'],
                        widths['z_dim'], widths['embed_dim'],
                        widths['mask_hidden'])
  sd = _numpy_sd(net)
  assert ('res.0.model.conv1.weight_orig' in sd) == (res == 256)
  cfg = lama_import.infer_generator_config(sd)
  assert cfg == dict(resolution=res, mask_adaption=True, **widths)
  out = lama_import.torch_to_flax_generator(sd, **cfg)
  n = len(lama.TRUNK[res]) - 1
  last = 'res.5.model' if res == 256 else 'res5'
  np.testing.assert_array_equal(
      out['params'][f'res{n}']['c_sc']['conv']['bias'], sd[f'{last}.c_sc.bias'])


# ---------------------------------------------------------------------- CLI

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TINY = os.path.join(REPO, 'configs', 'synthetic_lama.py')


def _tiny_config():
  from jaxl2i import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load(TINY, 'tiny')


def _tiny_checkpoint(config, path, num_classes):
  m = config.model
  net = ResnetGenerator(m.resolution, num_classes, m.ch, m.z_dim,
                        m.embed_dim, m.mask_hidden)
  _randomise(net, 3)
  torch.save({'module.' + k: v for k, v in net.state_dict().items()}, path)
  return net


def test_cli_import_restores_and_generates(tmp_path, monkeypatch):
  # pylint: disable=g-import-not-at-top
  from jaxl2i import convert
  from jaxl2i import parallel
  from jaxl2i import train
  from jaxl2i.data import pipeline
  from jaxl2i.data.errors import DatasetUnavailableError
  # pylint: enable=g-import-not-at-top
  config = _tiny_config()
  config.ema.decay = 0.999   # the EMA copy starts as the imported G
  meta = pipeline.dataset_meta(config.data)
  path = os.path.join(tmp_path, 'G_tiny.pth')
  _tiny_checkpoint(config, path, meta.num_classes)
  workdir = os.path.join(tmp_path, 'run')
  from jaxl2i import config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(config_lib.ConfigError, match='step >= 1'):
    convert.import_lama(config, path, workdir, step=0)
  bad = _tiny_config()
  bad.model.resolution = 128
  with pytest.raises(config_lib.ConfigError,
                     match=r'ResnetGenerator64 .*use the 64 variant'):
    convert.import_lama(bad, path, workdir)
  other = os.path.join(tmp_path, 'G_other.pth')
  _tiny_checkpoint(config, other, meta.num_classes + 1)
  with pytest.raises(config_lib.ConfigError, match='13 label-embedding rows'):
    convert.import_lama(config, other, workdir)

  def unavailable(data_cfg):
    raise DatasetUnavailableError(f'{data_cfg.name} is not prepared. Fetch')

  with monkeypatch.context() as mp:   # the import needs no dataset
    mp.setattr(pipeline, 'dataset_meta', unavailable)
    convert.import_lama(config, path, workdir, step=3, verify=False)
  files = sorted(os.listdir(workdir))
  assert files == ['checkpoints', 'config.json', 'dataset_meta.json',
                   'imported_from.json']
  with pytest.raises(config_lib.ConfigError, match='already holds'):
    convert.import_lama(config, path, workdir, step=5)

  # The checkpoint restores like a trained one and generates the images of
  # the converted variables.
  setup = train.Setup(config)
  batch = parallel.to_global(next(train.train_batches(config, 0)), setup.mesh)
  from jaxl2i import checkpointing  # pylint: disable=g-import-not-at-top
  ckpt = checkpointing.Checkpointer(workdir, every=1, keep=3,
                                    asynchronous=False)
  state = ckpt.restore(setup.abstract_state(batch))
  ckpt.close()
  assert ckpt.all_steps() == [3] and int(state.step) == 3
  variables = lama_import.torch_to_flax_generator(
      lama_import.load_state_dict(path), resolution=64,
      num_classes=meta.num_classes, ch=4, z_dim=8, embed_dim=8,
      mask_hidden=8)
  sample = jax.jit(setup.recipe.sample)
  key = jax.random.key(0)
  got = np.asarray(sample({'params': state.g.params, **state.g.state}, batch,
                          key))
  want = np.asarray(sample(jax.device_put(variables, setup.rep), batch, key))
  assert np.isfinite(got).all() and got.std() > 0.01
  np.testing.assert_array_equal(got, want)
  jax.tree.map(np.testing.assert_array_equal, state.ema_g,
               variables['params'])
