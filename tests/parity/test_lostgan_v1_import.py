"""Importing official LostGAN-V1 generators (jaxl2i.models.lostgan_v1_import).

The PyTorch generator (tests/parity/torch_lostgan_v1.py) carries the module
names of `WillSuen/LostGANs` `ResnetGenerator64/128`, so its `state_dict()`
has the keys of an official `netG.state_dict()`. Random weights (BN affines
too), then train-mode forwards (BN running statistics, SN power iterations)
and eval mode: the converted Flax generator must reproduce the eval images
and masks. LostGAN-V1 draws no noise, so nothing needs switching off. Tiny
widths keep the file fast.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import lama_import
from jaxl2i.models import lostgan_v1
from jaxl2i.models import lostgan_v1_import as li

torch = pytest.importorskip('torch')
# pylint: disable=g-import-not-at-top,g-bad-import-order
import torch_lostgan_v1 as tl
# pylint: enable=g-import-not-at-top,g-bad-import-order

TOL = 1e-4
SMALL = dict(ch=2, z_dim=8, embed_dim=6, mask_hidden=4, num_classes=7)
B, O = 2, 4
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.fixture(scope='module', autouse=True)
def _torch_one_thread():
  with tl.one_thread():
    yield


def _latents(z_dim, b, o, seed):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(b, o, z_dim)).astype(np.float32),
          rng.normal(size=(b, z_dim)).astype(np.float32))


def _trained(res, seed, **widths):
  """Random weights, then 3 train-mode forwards (BN stats, u/v); eval."""
  torch.manual_seed(seed)
  net = tl.ResnetGenerator(res, **widths)
  tl.randomise(net, seed)
  net.train()
  with torch.no_grad():
    for i in range(3):
      xywh, y = tl.random_layout(B, O, seed + i)
      z, zi = _latents(widths['z_dim'], B, O, seed + i)
      net(torch.tensor(z), torch.tensor(xywh), torch.tensor(zi),
          torch.tensor(y))
  net.eval()
  return net


@pytest.fixture(scope='module')
def torch64():
  return _trained(64, 1, **SMALL)


def _one_line(excinfo):
  assert '\n' not in str(excinfo.value)


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize('res', [64, 128])
def test_generator_outputs_match_official_eval_mode(res, torch64, tmp_path):
  net = torch64 if res == 64 else _trained(128, 2, **SMALL)
  path = os.path.join(tmp_path, f'G_{res}.pth')
  torch.save(net.state_dict(), path)
  sd = lama_import.load_state_dict(path)   # torch-free reader
  assert li.architecture(sd) == 'lostgan_v1'
  cfg = li.infer_generator_config(sd)
  assert cfg == dict(resolution=res, **SMALL)
  variables = li.torch_to_flax_generator(sd, **cfg)
  gen = lostgan_v1.LostGanV1Generator(**cfg)
  want = lama_import.expected_variables(gen)   # same tree, shapes, dtypes
  assert (jax.tree.structure(want) ==
          jax.tree.structure(jax.tree.map(jnp.asarray, variables)))
  jax.tree.map(lambda w, v: (w.shape, w.dtype) == (v.shape, v.dtype) or
               pytest.fail(f'{w} vs {v.shape}'), want, variables)

  xywh, classes = tl.random_layout(B, O, 10)
  z, zi = _latents(SMALL['z_dim'], B, O, 11)
  with torch.no_grad():
    ref_img, ref_map = net(torch.tensor(z), torch.tensor(xywh),
                           torch.tensor(zi), torch.tensor(classes), True)
    ref_m = torch.nn.functional.interpolate(
        ref_map, size=(res, res), mode='bilinear', align_corners=False)
  boxes = np.concatenate([xywh[..., :2], xywh[..., :2] + xywh[..., 2:]], -1)
  valid = classes != 0   # the last slot is the padding object
  img, m, _ = jax.jit(lambda v, *a: gen.apply(
      v, *a, train=False, return_masks=True))(
          variables, zi, z, boxes, classes, valid)
  d_img = float(np.abs(np.asarray(img) -
                       ref_img.numpy().transpose(0, 2, 3, 1)).max())
  d_m = float(np.abs(np.asarray(m) - ref_m.numpy()).max())
  print(f'res {res}: max |Δ| image {d_img:.2e} masks {d_m:.2e}')
  assert d_img <= TOL and d_m <= TOL
  # Non-trivial: unsaturated images, masks inside their boxes.
  img = np.asarray(img)
  assert np.std(img) > 0.05 and np.mean(np.abs(img) < 0.99) > 0.5
  assert float(np.max(m)) > 0.1 and np.all(np.asarray(m)[~valid] == 0.0)


def test_prefixed_wrapped_file_and_architecture(torch64, tmp_path):
  plain = tl.numpy_state_dict(torch64)
  path = os.path.join(tmp_path, 'G_ddp.pth')
  torch.save({'netG': {'module.' + k: v for k, v in
                       torch64.state_dict().items()}, 'epoch': 3}, path)
  sd = lama_import.load_state_dict(path)
  assert sorted(sd) == sorted(plain)
  kw = dict(resolution=64, **SMALL)
  a = li.torch_to_flax_generator(sd, **kw)
  b = li.torch_to_flax_generator(
      {'module.' + k: v for k, v in plain.items()}, **kw)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  # The ISLA modules' own BatchNorm buffers are never read: optional.
  assert 'res2.b1.num_batches_tracked' in plain
  lean = {k: v for k, v in plain.items()
          if not k.endswith(('b1.running_mean', 'b1.running_var',
                             'b1.num_batches_tracked'))}
  jax.tree.map(np.testing.assert_array_equal, a,
               li.torch_to_flax_generator(lean, **kw))
  # Told apart from LAMA and LostGAN-V2 files.
  with pytest.raises(ValueError, match='LostGAN-V1 .*lostgan_v1_import') as e:
    lama_import.infer_generator_config(plain)
  _one_line(e)
  lama = {'style_mapping.0.weight_orig': np.zeros((2, 2), np.float32)}
  assert li.architecture(lama) == 'lama'
  with pytest.raises(ValueError, match='a LAMA generator .*lama_import'):
    li.infer_generator_config(lama)
  with pytest.raises(ValueError, match='LostGAN-V2'):
    li.architecture({**plain, 'alpha1': np.zeros((1, 184, 1), np.float32)})
  with pytest.raises(ValueError, match='neither a LAMA nor a LostGAN-V1'):
    li.architecture({'fc.weight': np.zeros(2, np.float32)})


def test_key_and_shape_errors(torch64):
  sd = tl.numpy_state_dict(torch64)
  kw = dict(resolution=64, **SMALL)

  def fails(bad, pattern, **over):
    with pytest.raises(ValueError, match=pattern) as e:
      li.torch_to_flax_generator(bad, **{**kw, **over})
    _one_line(e)

  bad = dict(sd)
  del bad['res3.b1.weight_proj.weight_u']
  bad['res3.extra.weight'] = np.zeros(3, np.float32)
  fails(bad, r'missing keys \[res3\.b1\.weight_proj\.weight_u\]; unknown '
        r'keys \[res3\.extra\.weight\]')
  fails({**sd, 'final.2.bias': np.zeros(4, np.float32)},
        r'final\.2\.bias: shape \(4,\)')
  fails({**sd, 'res2.conv1.weight_u': np.zeros(5, np.float32)},
        r'res2\.conv1: weight_u \(5,\) .* do not fit weight_orig')
  fails({**sd, 'mask_regress.conv2.1.running_var': np.ones(3, np.float32)},
        r'mask_regress\.conv2\.1\.running_var: shape \(3,\)')
  fails(sd, r'label_embedding\.weight: shape', num_classes=8)
  fails(sd, r'ResnetGenerator128 \(it looks like a LostGAN-V1 '
        r'ResnetGenerator64\): missing keys \[res1\.', resolution=128)


# ---------------------------------------------------------------------- CLI


def _config(name, arg):
  from jaxl2i import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load(os.path.join(REPO, 'configs', name), arg)


def test_cli_import_restores_and_samples(tmp_path, monkeypatch):
  # pylint: disable=g-import-not-at-top
  from jaxl2i import checkpointing
  from jaxl2i import config_lib
  from jaxl2i import convert
  from jaxl2i import parallel
  from jaxl2i import train
  from jaxl2i.data import pipeline
  from jaxl2i.data.errors import DatasetUnavailableError
  # pylint: enable=g-import-not-at-top
  config = _config('coco_lostgan.py', 'res=64,tiny=True')
  m, nc = config.model, 9
  # coco_lostgan keeps V1's label embedding (embed_dim 0: 128 at 64²).
  widths = dict(ch=m.ch, z_dim=m.z_dim,
                embed_dim=m.embed_dim or lostgan_v1.EMBED_DIM[64],
                mask_hidden=m.mask_hidden, num_classes=nc)
  net = _trained(64, 3, **widths)
  path = os.path.join(tmp_path, 'G_64.pth')
  torch.save({'module.' + k: v for k, v in net.state_dict().items()}, path)
  workdir = os.path.join(tmp_path, 'run')

  def refused(cfg, pattern, file=path):
    with pytest.raises(config_lib.ConfigError, match=pattern) as e:
      convert.import_lama(cfg, file, workdir)
    _one_line(e)

  refused(_config('coco_lama.py', 'res=64,tiny=True'),
          r'is a LostGAN-V1 generator .*arch \'lama\': use a LostGAN-V1 '
          r'config \(e\.g\. configs/coco_lostgan\.py:res=64\)')
  refused(_config('coco_lostgan.py', 'res=128,tiny=True'),
          r'holds a LostGAN-V1 ResnetGenerator64 .*resolution=128: use the '
          r'64 variant \(e\.g\. --config=configs/coco_lostgan\.py:res=64\)')
  wide = _config('coco_lostgan.py', 'res=64,tiny=True')
  wide.model.ch = 8
  refused(wide, 'ch is 4 in the checkpoint, 8 in the config')
  lama_file = os.path.join(tmp_path, 'G_lama.pth')
  torch.save({'label_embedding.weight': torch.zeros(nc, 8),
              'fc.weight_orig': torch.zeros(64, 8),
              'final.0.weight': torch.zeros(4),
              'mask_regress.fc.weight_orig': torch.zeros(128, 138),
              'res2.alpha': torch.zeros(()),
              'style_mapping.0.weight_orig': torch.zeros(8, 8)}, lama_file)
  refused(config, r'is a LAMA generator .*arch \'lostgan_v1\': use a LAMA '
          r'config \(e\.g\. configs/coco_lama\.py:res=64\)', lama_file)
  assert not os.path.exists(workdir)

  def unavailable(data_cfg):
    raise DatasetUnavailableError(f'{data_cfg.name} is not prepared. Fetch')

  with monkeypatch.context() as mp:   # the import needs no dataset
    mp.setattr(pipeline, 'dataset_meta', unavailable)
    # verify=False: the restore below checks the checkpoint (and samples).
    convert.import_lama(config, path, workdir, step=2, verify=False)
  assert sorted(os.listdir(workdir)) == [
      'checkpoints', 'config.json', 'dataset_meta.json', 'imported_from.json']
  with open(os.path.join(workdir, 'imported_from.json')) as f:
    record = json.load(f)
  assert record['generator'] == dict(arch='lostgan_v1', resolution=64,
                                     **widths)

  # Restores into the config's state and samples the converted generator.
  setup = train.Setup(config, pipeline.load_meta(workdir))
  rng = np.random.default_rng(4)
  b, o = config.batch_size, config.data.max_objects
  xy = rng.uniform(0.0, 0.5, size=(b, o, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(0.2, 0.5, size=(b, o, 2))],
                         -1).astype(np.float32)
  valid = np.arange(o)[None] < rng.integers(1, o, size=(b, 1))
  batch = parallel.to_global(
      {'image': np.zeros((b, 64, 64, 3), np.uint8), 'boxes': boxes,
       'classes': np.where(valid, rng.integers(1, nc, size=(b, o)),
                           0).astype(np.int32),
       'objects_mask': valid}, setup.mesh)
  ckpt = checkpointing.Checkpointer(workdir, every=1, keep=3,
                                    asynchronous=False)
  state = ckpt.restore(setup.abstract_state(batch))
  ckpt.close()
  assert ckpt.all_steps() == [2] and int(state.step) == 2
  variables = li.torch_to_flax_generator(
      lama_import.load_state_dict(path), resolution=64, **widths)
  sample = jax.jit(setup.recipe.sample)
  key = jax.random.key(0)
  got = np.asarray(sample({'params': state.g.params, **state.g.state}, batch,
                          key))
  want = np.asarray(sample(jax.device_put(variables, setup.rep), batch, key))
  assert got.shape == (b, 64, 64, 3)
  assert np.isfinite(got).all() and got.std() > 0.01
  np.testing.assert_array_equal(got, want)
