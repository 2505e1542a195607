"""The SPADE recipe: its losses, VAE, depth stages and two-stage chaining."""

import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from jaxl2i import checkpointing
from jaxl2i import config_lib
from jaxl2i import generate
from jaxl2i import losses
from jaxl2i import parallel
from jaxl2i import state as state_lib
from jaxl2i import step as step_lib
from jaxl2i import train
from jaxl2i.recipes import base
from jaxl2i.recipes import spade as spade_recipe

import fakes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name='synthetic_spade.py', arg='tiny', **model):
  c = config_lib.load(os.path.join(ROOT, 'configs', name), arg)
  c.model.update(model)
  return c


def _nets(recipe, batch, vgg=None):
  """Nets of filled variables (fakes.filled): SPADE's initialisers run
  op by op would compile for ~17 s; these tests check losses and shapes."""
  g_vars, d_vars = fakes.filled(
      jax.eval_shape(recipe.init, jax.random.key(0), batch))
  g_params, g_state = state_lib.split_variables(g_vars)
  d_params, d_state = state_lib.split_variables(d_vars)
  nets = base.Nets(state_lib.Net(g_params, g_state, None),
                   state_lib.Net(d_params, d_state, None),
                   {} if vgg is None else {'vgg': vgg})
  return nets


def test_losses_are_spades():
  """Hinge averaged over 2 scales, FM over the intermediate layers / num_D,
  weighted VGG on relu*_1; D sees cond ⊕ image."""
  c = _config()
  c.loss.vgg = 10.0
  recipe = spade_recipe.Recipe(c, fakes.FakeMeta())
  batch = jax.tree.map(jnp.asarray, fakes.batch(2, 32))
  nets = _nets(recipe, batch, recipe.frozen_params()['vgg'])
  assert recipe.vgg_random

  @jax.jit   # one compile instead of op-by-op dispatch
  def compute(nets, batch):
    out, _ = recipe.generate(nets.g.params, nets, batch, jax.random.key(1))
    real = base.image_to_float(batch['image'])
    both = jnp.concatenate([
        jnp.concatenate([out['cond'], out['image']], -1),
        jnp.concatenate([out['cond'], real], -1)], 0)
    scales, _ = recipe.d.apply({'params': nets.d.params, **nets.d.state},
                               both, train=True, mutable=list(nets.d.state))
    relu = jax.nn.relu
    r = dict(
        cond=out['cond'],
        want_d=jnp.mean(jnp.stack([jnp.mean(relu(1 - s[-1][2:])) + jnp.mean(
            relu(1 + s[-1][:2])) for s in scales])),
        gan=jnp.mean(jnp.stack([-jnp.mean(s[-1][:2]) for s in scales])),
        feat=sum(jnp.mean(jnp.abs(f[:2] - f[2:])) for s in scales
                 for f in s[:-1]) / 2,
        layers=jnp.asarray([len(s) for s in scales]))
    taps = recipe.vgg.apply(nets.frozen['vgg'], jnp.concatenate(
        [out['image'], real]), spade_recipe.VGG_TAPS)
    r['vgg_manual'] = sum(
        w * jnp.mean(jnp.abs(taps[t][:2] - taps[t][2:]))
        for w, t in zip((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1),
                        spade_recipe.VGG_TAPS))
    r['d_loss'], (r['d_metrics'], _) = recipe.d_loss(
        nets.d.params, nets, batch, jax.lax.stop_gradient(out), None)
    r['g_loss'], (r['g_metrics'], _) = recipe.g_loss(out, nets, batch, None)
    return r

  r = compute(nets, batch)
  assert r['cond'].shape == (2, 32, 32, fakes.NUM_CLASSES + 1)   # + edges
  assert nets.d.params['scale_0']['model0']['kernel'].shape[2] == (
      fakes.NUM_CLASSES + 1 + 3)
  assert list(r['layers']) == [c.model.n_layers_d + 1] * 2
  np.testing.assert_allclose(r['d_loss'], r['want_d'], rtol=1e-5)
  assert set(r['d_metrics']) == {'d/loss_real', 'd/loss_fake',
                                 'd/real_logit', 'd/fake_logit'}
  gm = r['g_metrics']
  np.testing.assert_allclose(gm['g/gan'], r['gan'], rtol=1e-5)
  np.testing.assert_allclose(gm['g/feat'], r['feat'], rtol=1e-5)
  # VGG: Σ w_i L1 at relu1_1..relu5_1 with 1/32 .. 1.
  np.testing.assert_allclose(gm['g/vgg_RANDOM_WEIGHTS'], r['vgg_manual'],
                             rtol=1e-5)
  np.testing.assert_allclose(r['g_loss'],
                             r['gan'] + 10 * r['feat'] + 10 * r['vgg_manual'],
                             rtol=1e-5)


def test_vae_encodes_the_real_image_and_adds_the_kld():
  c = _config(arg='tiny,vae')
  recipe = spade_recipe.Recipe(c, fakes.FakeMeta())
  batch = jax.tree.map(jnp.asarray, fakes.batch(2, 32))
  nets = _nets(recipe, batch)
  assert set(nets.g.params) == {'encoder', 'generator'}

  @jax.jit   # one compile instead of op-by-op dispatch
  def compute(nets, batch):
    out, g_state = recipe.generate(nets.g.params, nets, batch,
                                   jax.random.key(1))
    loss, (gm, _) = recipe.g_loss(out, nets, batch, None)
    g_vars = {'params': nets.g.params, **nets.g.state}
    styled = {**batch, 'style': base.image_to_float(batch['image'])}
    samples = [recipe.sample(g_vars, b, jax.random.key(k))
               for b, k in ((batch, 0), (batch, 1), (styled, 0))]
    return out, g_state, loss, gm, samples

  out, g_state, loss, gm, (a, b, s1) = compute(nets, batch)
  assert out['mu'].shape == out['logvar'].shape == (2, c.model.z_dim)
  assert set(g_state) == {'batch_stats', 'spectral'}
  np.testing.assert_allclose(
      gm['g/kld'], losses.kl_normal(out['mu'], out['logvar']), rtol=1e-6)
  np.testing.assert_allclose(
      loss, gm['g/gan'] + 10 * gm['g/feat'] + 0.05 * gm['g/kld'], rtol=1e-5)
  assert float(jnp.abs(a - b).mean()) > 1e-4   # z ~ N(0, I) per key
  assert float(jnp.abs(s1 - a).mean()) > 1e-4   # z from the style image


def test_depth_stage_one_targets_the_depth_map():
  c = _config('synthetic_depth_spade.py', 'stage=1,tiny')
  recipe = spade_recipe.Recipe(c, fakes.FakeMeta())
  assert not recipe.use_vgg and recipe.out_channels == 1
  batch = jax.tree.map(jnp.asarray, fakes.batch(2, 32))
  np.testing.assert_allclose(recipe.target(batch)[..., 0],
                             batch['depth'] * 2 - 1)
  nets = _nets(recipe, batch)
  assert nets.g.params['conv_img']['kernel'].shape[-1] == 1
  # D sees labels (11) + edges + depth.
  assert nets.d.params['scale_0']['model0']['kernel'].shape[2] == 13
  g_vars = {'params': nets.g.params, **nets.g.state}
  assert jax.eval_shape(recipe.sample, g_vars, batch,
                        jax.random.key(0)).shape == (2, 32, 32, 3)
  data = spade_recipe.Recipe(_config('synthetic_depth_spade.py',
                                     'stage=2,depth=data,tiny'),
                             fakes.FakeMeta())
  cond = data.condition(batch)
  assert cond.shape[-1] == 13
  np.testing.assert_allclose(cond[..., -1], batch['depth'] * 2 - 1)


def _setup_and_batch(config):
  setup = train.Setup(config)
  host = next(train.train_batches(config, 0))
  return setup, parallel.to_global(host, setup.mesh)


def _save(setup, state, config, workdir, step):
  fakes.save_workdir(workdir, state, config, setup.meta, step)


@pytest.fixture(scope='module')
def two_stages(tmp_path_factory):
  """A stage-1 workdir (random weights: training it would only add
  compiles), then one training step of stage 2 on it, saved as a run.

  Stage 2's step is plain SPADE's plus the depth channel and the frozen
  stage-1 generator, so it also stands for synthetic_spade.py's one-step
  test (tests/test_train_step.py skips SPADE to keep the suite's time).
  """
  root = tmp_path_factory.mktemp('depth_spade')
  data_dir = str(root / 'tfds')
  c1 = _config('synthetic_depth_spade.py', 'stage=1,tiny')
  c1.data.data_dir = data_dir
  s1, b1 = _setup_and_batch(c1)
  # Stage 1's weights only need to exist: random normals of its state's
  # shapes (no init compile).
  s1_state = fakes.filled_state(s1.recipe, b1, s1.tx_g, s1.tx_d,
                                c1.ema.decay)
  _save(s1, s1_state, c1, str(root / 's1'), 4)
  c2 = _config('synthetic_depth_spade.py', 'stage=2,tiny')
  c2.data.data_dir = data_dir
  c2.model.stage1_workdir = str(root / 's1')
  s2, b2 = _setup_and_batch(c2)
  # As train.Setup.init, from filled variables (no init compile), then the
  # recipe's after_init, which installs the stage-1 generator.
  before = jax.device_put(s2.recipe.after_init(fakes.filled_state(
      s2.recipe, b2, s2.tx_g, s2.tx_d, c2.ema.decay)), s2.rep)
  step = jax.jit(step_lib.make_train_step(s2.recipe, s2.tx_g, s2.tx_d,
                                          c2.ema.decay))
  frozen = jax.device_put(s2.recipe.frozen_params(), s2.rep)
  after, metrics = step(before, b2, frozen)
  _save(s2, after, c2, str(root / 's2'), 1)
  return root, c2, jax.device_get((before, after, metrics))


def test_stage_two_trains_on_the_frozen_stage_one(two_stages, tmp_path):
  root, c2, (before, after, metrics) = two_stages
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  for a, b in ((before.g.params, after.g.params),
               (before.d.params, after.d.params),
               (before.g.state['batch_stats'], after.g.state['batch_stats'])):
    assert any(not np.array_equal(x, y) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  s1 = checkpointing.restore_generator(str(root / 's1'))[0]
  # The stage-1 generator was installed at init and rides along unchanged.
  jax.tree.map(np.testing.assert_array_equal, before.g.state['stage1'], s1)
  jax.tree.map(np.testing.assert_array_equal, after.g.state['stage1'], s1)
  # D sees labels (12 classes + edges) ⊕ depth ⊕ image.
  assert after.d.params['scale_0']['model0']['kernel'].shape[2] == 12 + 1 + 1 + 3

  label = np.zeros((64, 64), np.uint8)          # any size of that aspect
  label[:32], label[32:], label[40:60, 8:30] = 1, 2, 10
  png = tmp_path / 'map.png'
  Image.fromarray(label).save(png)
  s2 = generate.Model(str(root / 's2'))
  pics = s2.pictures(label_map=str(png), num_samples=1)
  assert list(pics) == ['labelmap_input.png', 'labelmap_sample00.png',
                        'labelmap_sample00_depth.png']
  depth = pics['labelmap_sample00_depth.png']
  assert depth.shape == (32, 32, 3) and (depth[..., 0] == depth[..., 2]).all()

  bad = c2.copy_and_resolve_references()
  bad.model.stage1_workdir = ''
  with pytest.raises(config_lib.ConfigError, match='needs model.stage1_w'):
    spade_recipe.Recipe(bad, fakes.FakeMeta())
  bad.model.stage1_workdir = str(root / 's2')      # an image model
  with pytest.raises(config_lib.ConfigError, match='not a depth-SPADE'):
    spade_recipe.Recipe(bad, fakes.FakeMeta())


def test_label_map_inputs_for_spade(two_stages, tmp_path):
  root = two_stages[0]
  model = generate.Model(str(root / 's1'))
  assert model.spec.edges
  label = np.zeros((32, 32), np.uint8)
  label[:, 16:] = 3
  inst = np.zeros((32, 32), np.uint16)
  inst[8:12, 8:12] = 5
  Image.fromarray(inst).save(tmp_path / 'inst.png')
  edges = model.inputs(label_map=label)['edges'][0]
  assert edges[:, 15:17].all() and edges.sum() == 64   # class boundary
  edges = model.inputs(label_map=label,
                       instance_map=str(tmp_path / 'inst.png'))['edges'][0]
  assert edges.sum() == 28 and edges[8, 8] == 1   # rim + outside ring
  with pytest.raises(generate.InputError, match='--style needs a model'):
    model.inputs(label_map=label, style=str(tmp_path / 'inst.png'))
  with pytest.raises(generate.LabelMapError, match='is 32x20'):
    model.inputs(label_map=label[:, :20])


@pytest.mark.parametrize('name,arg,classes,hw,g_count,d_count', [
    ('coco_spade.py', None, 183, (256, 256), 97_480_899, 5_904_514),
    ('ade20k_spade.py', None, 151, (256, 256), 96_492_483, 5_836_930),
    ('cityscapes_spade.py', None, 35, (256, 512), 93_048_003, 5_601_410),
    ('coco_spade.py', 'vae', 183, (256, 256), 112_626_883, 5_904_514),
])
def test_configs_build_the_official_networks(name, arg, classes, hw,
                                              g_count, d_count):
  """Parameter counts of the official code (reference/README.md), through
  the configs and the recipe (jax.eval_shape: nothing is computed)."""
  c = _config(name, arg)
  meta = fakes.FakeMeta(num_classes=classes,
                        class_names=tuple(map(str, range(classes))))
  recipe = spade_recipe.Recipe(c, meta)
  batch = {'image': jax.ShapeDtypeStruct((1, *hw, 3), jnp.uint8),
           'label': jax.ShapeDtypeStruct((1, *hw), jnp.int32),
           'edges': jax.ShapeDtypeStruct((1, *hw), jnp.float32)}
  g_vars, d_vars = jax.eval_shape(recipe.init, jax.random.key(0), batch)
  count = state_lib.count_params
  if arg == 'vae':
    assert count(g_vars['params']['generator']) == g_count
    assert count(g_vars['params']['encoder']) == 10_463_424
  else:
    assert count(g_vars['params']) == g_count
  assert count(d_vars['params']) == d_count
