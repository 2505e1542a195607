"""Importing official SPADE checkpoints (jaxl2i.models.spade_import, convert).

The PyTorch networks (tests/parity/torch_spade.py) carry the module names of
`NVlabs/SPADE`, so their `state_dict()`s have the keys of the released
`latest_net_{G,D,E}.pth`. Random weights and BN running statistics, then
train-mode forwards (running statistics, power iterations of the spectral
norms) and eval mode: the converted Flax networks must reproduce the eval
outputs. Tiny widths keep the file fast.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import spade
from jaxl2i.models import spade_discriminator as sdisc
from jaxl2i.models import spade_import
from jaxl2i.models import spade_vae

torch = pytest.importorskip('torch')
# pylint: disable=g-import-not-at-top,g-bad-import-order
import torch_spade as ts
# pylint: enable=g-import-not-at-top,g-bad-import-order

tnn = torch.nn
F = torch.nn.functional

TOL = 1e-4
NC, NGF, HIDDEN, Z = 13, 8, 16, 16   # 12 classes + instance edges
SIZE = (64, 64)                      # 'normal': a 2×2 latent grid
SN = spade.SN_COLLECTION


@pytest.fixture(scope='module', autouse=True)
def _torch_one_thread():
  with ts.one_thread():
    yield


def _nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))))


def _seg(n, size, seed):
  gen = torch.Generator().manual_seed(seed)
  lab = F.one_hot(torch.randint(0, NC - 1, (n, *size), generator=gen), NC - 1)
  edges = (torch.rand(n, *size, 1, generator=gen) > 0.8).float()
  return torch.cat([lab.float(), edges], -1).permute(0, 3, 1, 2)


def _settle(net, *inputs):
  """Train-mode forwards, then eval: running statistics of a real batch
  (momentum 1, then 0.1) and three power iterations per spectral norm."""
  bns = [m for m in net.modules() if isinstance(m, tnn.BatchNorm2d)]
  net.train()
  with torch.no_grad():
    for momentum in (1.0, 0.1, 0.1):
      for bn in bns:
        bn.momentum = momentum
      net(*inputs)
  return net.eval()


def _generator(use_vae, ngf=NGF, hidden=HIDDEN, nc=NC, grid=(2, 2), seed=0):
  torch.manual_seed(seed)
  net = ts.SPADEGenerator(nc, ngf, 'normal', use_vae, Z, grid, hidden)
  ts.randomise(net, seed + 1)
  size = (grid[0] * 32, grid[1] * 32)
  return _settle(net, _seg(2, size, seed + 2) if nc == NC else torch.rand(
      2, nc, *size), torch.randn(2, Z))


@pytest.fixture(scope='module')
def torch_g():
  return {False: _generator(False), True: _generator(True, seed=10)}


def _flax_g(variables, seg, z, **cfg):
  g = spade.SPADEGenerator(**cfg)
  return np.asarray(jax.jit(functools.partial(g.apply, train=False))(
      variables, jnp.asarray(_nhwc(seg)), z))


@pytest.mark.parametrize('use_vae', [False, True], ids=['normal', 'vae'])
def test_generator_matches_official_eval_mode(torch_g, use_vae, tmp_path):
  net = torch_g[use_vae]
  path = os.path.join(tmp_path, 'latest_net_G.pth')
  torch.save(net.state_dict(), path)
  sd = spade_import.load_state_dict(path)   # torch-free reader
  assert 'head_0.norm_0.mlp_shared.0.weight' in sd
  assert 'head_0.norm_0.param_free_norm.num_batches_tracked' in sd
  cfg = spade_import.infer_generator_config(sd)
  assert cfg == dict(semantic_nc=NC, ngf=NGF, num_upsampling_layers='normal',
                     use_vae=use_vae, z_dim=Z if use_vae else spade.Z_DIM,
                     out_channels=3, spade_hidden=HIDDEN, spectral=True,
                     param_free_norm='batch')
  variables = spade_import.torch_to_flax_generator(sd, image_size=SIZE)
  seg, z = _seg(2, SIZE, 5), torch.randn(2, Z, generator=torch.Generator(
      ).manual_seed(6))
  with torch.no_grad():
    want = _nhwc(net(seg, z))
  del cfg['semantic_nc']
  got = _flax_g(variables, seg, jnp.asarray(z.numpy()) if use_vae else None,
                **cfg)
  diff = _max_diff(got, want)
  print(f'generator ({"vae" if use_vae else "normal"}) max |Δ| {diff:.2e}')
  assert diff <= TOL
  assert np.std(want) > 0.1 and np.mean(np.abs(want) < 0.99) > 0.5


def test_discriminator_matches_official_eval_mode(tmp_path):
  torch.manual_seed(20)
  net = ts.MultiscaleDiscriminator(NC + 3, ndf=8, n_layers=4, num_d=2)
  ts.randomise(net, 21)
  x = torch.cat([_seg(2, SIZE, 22), torch.rand(2, 3, *SIZE) * 2 - 1], 1)
  _settle(net, torch.randn(2, NC + 3, *SIZE))
  path = os.path.join(tmp_path, 'latest_net_D.pth')
  torch.save(net.state_dict(), path)
  sd = spade_import.load_state_dict(path, 'D')
  assert 'discriminator_1.model2.0.0.weight_orig' in sd
  assert 'discriminator_1.model2.0.0.bias' not in sd   # deleted by the norm
  cfg = spade_import.infer_discriminator_config(sd)
  assert cfg == dict(in_channels=NC + 3, ndf=8, n_layers=4, num_d=2)
  variables = spade_import.torch_to_flax_discriminator(sd)
  d = sdisc.MultiscaleDiscriminator(ndf=8, n_layers=4, num_d=2)
  got = jax.jit(functools.partial(d.apply, train=False))(
      variables, jnp.asarray(_nhwc(x)))
  with torch.no_grad():
    want = net(x)
  assert [len(s) for s in got] == [5, 5]
  diff = max(_max_diff(g, _nhwc(w)) for gs, ws in zip(got, want)
             for g, w in zip(gs, ws))
  print(f'discriminator (all 2×5 outputs) max |Δ| {diff:.2e}')
  assert diff <= TOL


def test_vae_encoder_and_generator(torch_g, tmp_path):
  torch.manual_seed(30)
  enc = ts.ConvEncoder(ndf=8, n_layers=4, size=64, z_dim=Z)
  ts.randomise(enc, 31)
  _settle(enc, torch.rand(2, 3, 64, 64))
  path = os.path.join(tmp_path, 'latest_net_E.pth')
  torch.save({'module.' + k: v for k, v in enc.state_dict().items()}, path)
  sd = spade_import.load_state_dict(path, 'E')
  cfg = spade_import.infer_encoder_config(sd)
  assert cfg == dict(ndf=8, num_layers=4, input_size=64, z_dim=Z)
  e_vars = spade_import.torch_to_flax_encoder(sd)
  g_vars = spade_import.torch_to_flax_generator(
      ts.numpy_state_dict(torch_g[True]), image_size=SIZE)
  variables = spade_import.vae_generator_variables(g_vars, e_vars)
  vae = spade_vae.VAEGenerator(
      generator=spade.SPADEGenerator(ngf=NGF, use_vae=True, z_dim=Z,
                                     spade_hidden=HIDDEN),
      encoder=sdisc.ConvEncoder(**cfg))
  style = torch.rand(2, 3, 80, 48, generator=torch.Generator().manual_seed(32))
  seg = _seg(2, SIZE, 33)
  with torch.no_grad():
    mu_t, logvar_t = enc(style * 2 - 1)
    img_t = torch_g[True](seg, mu_t)
  run = lambda m, s, st: (m.encoder(st, train=False),
                          m.generator(s, m.encoder(st, train=False)[0],
                                      train=False))
  (mu, logvar), img = jax.jit(functools.partial(vae.apply, method=run))(
      variables, jnp.asarray(_nhwc(seg)), jnp.asarray(_nhwc(style * 2 - 1)))
  diff_e = max(_max_diff(mu, mu_t.numpy()), _max_diff(logvar,
                                                       logvar_t.numpy()))
  diff_g = _max_diff(img, _nhwc(img_t))
  print(f'encoder max |Δ| {diff_e:.2e}; generator from its μ {diff_g:.2e}')
  assert diff_e <= TOL and diff_g <= TOL


def _legacy(sd):
  """The state_dict as PyTorch < 1.0 saved it: `weight` instead of `_v`."""
  out = dict(sd)
  for k in [k for k in sd if k.endswith('.weight_v')]:
    p = k[:-len('_v')]
    w, u, v = sd[p + '_orig'], sd[p + '_u'], out.pop(k)
    sigma = u @ w.reshape(w.shape[0], -1) @ v
    out[p] = w / sigma
  return out


def test_legacy_wrapped_and_prefixed_files(torch_g, tmp_path):
  net = torch_g[False]
  sd = ts.numpy_state_dict(net)
  plain = spade_import.torch_to_flax_generator(sd)
  seg = _seg(2, SIZE, 40)
  with torch.no_grad():
    want = _nhwc(net(seg))
  cfg = spade_import.infer_generator_config(sd)
  del cfg['semantic_nc']
  got = _flax_g(spade_import.torch_to_flax_generator(_legacy(sd)), seg, None,
                **cfg)
  diff = _max_diff(got, want)
  print(f'generator from a pre-1.0 spectral-norm file max |Δ| {diff:.2e}')
  assert diff <= TOL
  # netG and netD in one wrapper dict, with DataParallel prefixes.
  disc = ts.MultiscaleDiscriminator(NC + 3, ndf=4, n_layers=3, num_d=2)
  path = os.path.join(tmp_path, 'both.pth')
  torch.save({'netD': {'module.' + k: v for k, v in disc.state_dict().items()},
              'netG': {'module.' + k: v for k, v in net.state_dict().items()},
              'epoch': 3}, path)
  a = spade_import.torch_to_flax_generator(
      spade_import.load_state_dict(path, 'G'))
  jax.tree.map(np.testing.assert_array_equal, a, plain)
  d = spade_import.load_state_dict(path, 'D')
  assert spade_import.infer_discriminator_config(d)['n_layers'] == 3


def test_most_and_depth_stage1_generators():
  """'most' (up_4, nf/2 at the end) and a 1-channel (depth stage 1) G."""
  net = ts.SPADEGenerator(5, 4, 'most', False, grid=(1, 1), hidden=4,
                          out_nc=1)
  sd = ts.numpy_state_dict(net)
  cfg = spade_import.infer_generator_config(sd)
  assert (cfg['num_upsampling_layers'], cfg['out_channels']) == ('most', 1)
  variables = spade_import.torch_to_flax_generator(sd)
  np.testing.assert_array_equal(
      variables['params']['conv_img']['kernel'],
      sd['conv_img.weight'].transpose(2, 3, 1, 0))
  assert variables['params']['conv_img']['kernel'].shape == (3, 3, 2, 1)
  assert variables['batch_stats']['up_4']['norm_s']['param_free_norm'][
      'var'].shape == (4,)


def _error(fn, *args, **kwargs):
  with pytest.raises(ValueError) as e:
    fn(*args, **kwargs)
  assert '\n' not in str(e.value)
  return str(e.value)


def test_key_and_shape_errors_are_one_line(torch_g):
  sd = ts.numpy_state_dict(torch_g[False])
  conv = spade_import.torch_to_flax_generator
  bad = dict(sd)
  del bad['up_1.norm_s.mlp_beta.bias']
  bad['up_1.extra.weight'] = np.zeros(3, np.float32)
  assert 'missing keys [up_1.norm_s.mlp_beta.bias]; unknown keys [up_1.' \
      'extra.weight]' in _error(conv, bad)
  bad = {**sd, 'conv_img.bias': np.zeros(4, np.float32)}
  assert _error(conv, bad).startswith(
      'conv_img.bias: shape (4,) after conversion does not fit '
      'params/conv_img/bias (3,)')
  assert 'G_middle_0.norm_0.mlp_beta.weight: shape (3, 3, 16, 128)' in _error(
      conv, sd, spade_hidden=8)
  assert 'missing keys [up_4.' in _error(conv, sd,
                                         num_upsampling_layers='most')
  bad = {**sd, 'up_0.conv_0.weight_u': np.zeros(5, np.float32)}
  assert 'are not a spectral-norm conv' in _error(conv, bad)
  vae = ts.numpy_state_dict(torch_g[True])
  assert 'need a 2×4 grid' in _error(conv, vae, image_size=(64, 128))
  assert 'not a SPADE generator state_dict' in _error(
      spade_import.infer_generator_config, {'x.weight': np.zeros(1)})
  disc = ts.numpy_state_dict(ts.MultiscaleDiscriminator(7, 4, 3, 1))
  msg = _error(spade_import.torch_to_flax_discriminator, disc, n_layers=2)
  assert 'missing keys [discriminator_0.model2.0.bias, ' in msg
  assert 'discriminator_0.model3.0.weight]' in msg


# ---------------------------------------------------------------------- CLI

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TINY = os.path.join(REPO, 'configs', 'synthetic_spade.py')


@pytest.fixture(scope='module')
def tiny_batch():
  """A host batch of synthetic_spade.py:tiny (also that of `:tiny,vae`)."""
  # pylint: disable=g-import-not-at-top
  from jaxl2i import config_lib
  from jaxl2i import train
  # pylint: enable=g-import-not-at-top
  return next(train.train_batches(config_lib.load(TINY, 'tiny'), 0))


def _restore(config, workdir, host_batch, sample_with=None):
  """Restores the imported run as a trainer would; with `sample_with`
  (converted G variables) checks that both generate the same images."""
  # pylint: disable=g-import-not-at-top
  from jaxl2i import checkpointing
  from jaxl2i import parallel
  from jaxl2i import train
  # pylint: enable=g-import-not-at-top
  setup = train.Setup(config)
  batch = parallel.to_global(host_batch, setup.mesh)
  ckpt = checkpointing.Checkpointer(workdir, every=1, keep=3,
                                    asynchronous=False)
  state = ckpt.restore(setup.abstract_state(batch))
  ckpt.close()
  if sample_with is None:
    return state
  variables = sample_with
  sample = jax.jit(setup.recipe.sample)
  key = jax.random.key(0)
  got = np.asarray(sample({'params': state.g.params, **state.g.state}, batch,
                          key))
  want = np.asarray(sample(jax.device_put(variables, setup.rep), batch, key))
  assert np.isfinite(got).all() and got.std() > 0.01
  np.testing.assert_array_equal(got, want)
  return state


def test_cli_import_restores_and_generates(tmp_path, monkeypatch,
                                           tiny_batch):
  # pylint: disable=g-import-not-at-top
  from jaxl2i import config_lib
  from jaxl2i import convert
  from jaxl2i.data import pipeline
  from jaxl2i.data.errors import DatasetUnavailableError
  # pylint: enable=g-import-not-at-top
  config = config_lib.load(TINY, 'tiny')
  m = config.model
  nc = pipeline.dataset_meta(config.data).num_classes + 1   # + edges
  g = _generator(False, ngf=m.ngf, hidden=m.spade_hidden, nc=nc, grid=(1, 1))
  d = ts.MultiscaleDiscriminator(nc + 3, m.ndf, m.n_layers_d, m.num_d)
  ts.randomise(d, 50)
  _settle(d, torch.randn(2, nc + 3, 32, 32))
  g_path, d_path = (os.path.join(tmp_path, f'latest_net_{n}.pth')
                    for n in 'GD')
  torch.save({'module.' + k: v for k, v in g.state_dict().items()}, g_path)
  torch.save(d.state_dict(), d_path)
  workdir = os.path.join(tmp_path, 'run')
  with pytest.raises(config_lib.ConfigError, match='step >= 1'):
    convert.import_spade(config, g_path, workdir, step=0)
  bad = config_lib.load(TINY, 'tiny')
  bad.model.ngf = 8
  with pytest.raises(config_lib.ConfigError,
                     match='ngf is 4 in the checkpoint, 8 in the config'):
    convert.import_spade(bad, g_path, workdir)

  def unavailable(data_cfg):
    raise DatasetUnavailableError(f'{data_cfg.name} is not prepared. Fetch')

  with monkeypatch.context() as mp:   # the import needs no dataset
    mp.setattr(pipeline, 'dataset_meta', unavailable)
    convert.import_spade(config, g_path, workdir, step=3, net_d=d_path)
  assert sorted(os.listdir(workdir)) == [
      'checkpoints', 'config.json', 'dataset_meta.json', 'imported_from.json']
  with pytest.raises(config_lib.ConfigError, match='already holds'):
    convert.import_spade(config, g_path, workdir, step=5)

  g_vars = spade_import.torch_to_flax_generator(
      spade_import.load_state_dict(g_path), image_size=(32, 32))
  state = _restore(config, workdir, tiny_batch, sample_with=g_vars)
  assert int(state.step) == 3
  d_vars = spade_import.torch_to_flax_discriminator(ts.numpy_state_dict(d))
  jax.tree.map(np.testing.assert_array_equal,
               {'params': state.d.params, **state.d.state}, d_vars)


def test_cli_import_vae_with_encoder(tmp_path, tiny_batch):
  # pylint: disable=g-import-not-at-top
  from jaxl2i import config_lib
  from jaxl2i import convert
  from jaxl2i.data import pipeline
  # pylint: enable=g-import-not-at-top
  config = config_lib.load(TINY, 'tiny,vae')
  m = config.model
  nc = pipeline.dataset_meta(config.data).num_classes + 1
  torch.manual_seed(60)
  g = ts.SPADEGenerator(nc, m.ngf, 'normal', True, m.z_dim, (1, 1),
                        m.spade_hidden)
  ts.randomise(g, 61)
  _settle(g, torch.rand(2, nc, 32, 32), torch.randn(2, m.z_dim))
  e = ts.ConvEncoder(m.ngf, m.encoder_layers, m.encoder_size, m.z_dim)
  ts.randomise(e, 62)
  _settle(e, torch.rand(2, 3, 32, 32))
  paths = {}
  for n, net in (('G', g), ('E', e)):
    paths[n] = os.path.join(tmp_path, f'latest_net_{n}.pth')
    torch.save(net.state_dict(), paths[n])
  workdir = os.path.join(tmp_path, 'run')
  convert.import_spade(config, paths['G'], workdir, net_e=paths['E'],
                       verify=False)
  variables = spade_import.vae_generator_variables(
      spade_import.torch_to_flax_generator(ts.numpy_state_dict(g)),
      spade_import.torch_to_flax_encoder(ts.numpy_state_dict(e)))
  state = _restore(config, workdir, tiny_batch)
  jax.tree.map(np.testing.assert_array_equal,
               {'params': state.g.params, **state.g.state}, variables)


def test_cli_error_is_one_line(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  proc = subprocess.run(
      [sys.executable, '-m', 'jaxl2i.convert', 'spade',
       f'--netG={tmp_path}/missing.pth', f'--config={TINY}:tiny',
       f'--workdir={tmp_path}/run'],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert errors == [f'error: no such checkpoint file: {tmp_path}/missing.pth']
