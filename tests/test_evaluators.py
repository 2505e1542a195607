"""Evaluators on the tiny synthetic dataset (random Inception, CPU)."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxl2i import config_lib
from jaxl2i import evaluators
from jaxl2i import train
from jaxl2i.recipes import base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir, **fid):
  c = config_lib.load(os.path.join(ROOT, 'configs', 'synthetic_pix2pix.py'),
                      'tiny')
  c.data.data_dir = data_dir
  c.evals.fid.update(fid)
  return c


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  c = _config(str(tmp_path_factory.mktemp('tfds')), num_samples=12,
              generators=('ema',), kid=True, kid_subset_size=6,
              kid_subsets=3, samples_per_input=2)
  s = train.Setup(c)
  batch = next(train.train_batches(c, 0))
  from jaxl2i import parallel
  state = s.init(parallel.to_global(batch, s.mesh))
  return s, state


def test_fid_of_a_perfect_generator_is_zero(setup, tmp_path, monkeypatch):
  s, state = setup
  # A generator that returns the real image: FID against the reals must be
  # ~0, which checks batching, padding masks and the uint8 quantisation.
  monkeypatch.setattr(s.recipe, 'sample',
                      lambda v, batch, key: base.image_to_float(batch['image']))
  evals = evaluators.build(s.config, s.recipe, s.mesh, str(tmp_path))
  metrics, protocols = evaluators.run(evals, state, step=7)
  assert abs(metrics['eval/fid/fid_dims64_RANDOM_WEIGHTS/ema']) < 1e-2, metrics
  assert 'eval/fid/kid_dims64_RANDOM_WEIGHTS/ema' in metrics
  p = protocols['fid']
  # 2 batches of 8 (4 padded), 2 samples per input.
  assert p['num_generated'] == 24 and p['samples_per_input'] == 2
  # Real statistics are not saved for random weights (not reusable).
  assert not os.path.exists(os.path.join(str(tmp_path), 'fid_stats'))
  assert 'RANDOM' in p['WARNING'] and 'RANDOM' in p['inception']
  path = evaluators.write_json(str(tmp_path), 7, metrics, protocols)
  assert json.load(open(path))['protocol']['fid']['num_samples'] == 12


def test_num_samples_zero_is_the_whole_split(setup, tmp_path, monkeypatch):
  s, state = setup
  c = _config(s.config.data.data_dir, num_samples=0, generators=('ema',),
              kid=False)
  monkeypatch.setattr(s.recipe, 'sample',
                      lambda v, batch, key: base.image_to_float(batch['image']))
  _, protocols = evaluators.run(
      evaluators.build(c, s.recipe, s.mesh, str(tmp_path)), state, step=1)
  # synthetic_scenes/tiny has 16 validation examples.
  assert protocols['fid']['num_generated'] == 16
  assert protocols['fid']['num_samples'] == 'the whole split'


def test_unknown_evaluator_type(setup, tmp_path):
  s, _ = setup
  c = _config(s.config.data.data_dir)
  c.evals.fid.type = 'fdi'
  with pytest.raises(config_lib.ConfigError, match="'fdi' is not an evaluator"):
    evaluators.build(c, s.recipe, s.mesh, str(tmp_path))


def test_unknown_evaluator_key(setup, tmp_path):
  s, _ = setup
  c = _config(s.config.data.data_dir)
  c.evals.fid.num_sample = 3
  with pytest.raises(config_lib.ConfigError, match='num_sample'):
    evaluators.build(c, s.recipe, s.mesh, str(tmp_path))


def test_missing_inception_weights_fail_clearly(setup, tmp_path):
  s, _ = setup
  c = _config(s.config.data.data_dir, allow_random_weights=False)
  from jaxl2i.nets import weights
  with pytest.raises(weights.WeightsUnavailableError,
                     match='pt_inception-2015-12-05'):
    evaluators.build(c, s.recipe, s.mesh, str(tmp_path))


def _with_evals(config, **evals):
  c = ml_collections.ConfigDict(config.to_dict())
  c.data.pp_eval = ('decode', 'resize(32)', 'pad_objects(2)',
                    'keep("image", "label", "boxes", "classes", '
                    '"objects_mask")')
  c.evals = ml_collections.ConfigDict(evals)
  return c


def test_scene_fid_of_a_perfect_generator_is_zero(setup, tmp_path,
                                                  monkeypatch):
  s, state = setup
  monkeypatch.setattr(s.recipe, 'sample',
                      lambda v, batch, key: base.image_to_float(batch['image']))
  c = _with_evals(s.config, scene=dict(
      type='scene_fid', num_samples=8, batch_size=8, generators=('live',),
      allow_random_weights=True, dims=64))
  metrics, protocols = evaluators.run(
      evaluators.build(c, s.recipe, s.mesh, str(tmp_path)), state, step=1)
  assert abs(metrics['eval/scene/scene_fid_dims64_RANDOM_WEIGHTS/live']) < 1e-2
  assert protocols['scene']['num_real_crops'] > 8   # up to 2 objects each


def test_diversity_measures_sample_differences(setup, tmp_path, monkeypatch):
  s, state = setup
  c = _with_evals(s.config, div=dict(
      type='diversity', num_samples=8, batch_size=8, generators=('live',),
      allow_random_weights=True))

  def noisy(v, batch, key):   # differs between the two keys of a pair
    real = base.image_to_float(batch['image'])
    return jnp.clip(real + 0.3 * jax.random.normal(key, real.shape), -1, 1)

  monkeypatch.setattr(s.recipe, 'sample', noisy)
  metrics, _ = evaluators.run(
      evaluators.build(c, s.recipe, s.mesh, str(tmp_path)), state, step=1)
  assert metrics['eval/div/diversity_RANDOM_WEIGHTS/live'] > 1e-4, metrics

  monkeypatch.setattr(s.recipe, 'sample',
                      lambda v, batch, key: base.image_to_float(batch['image']))
  metrics, _ = evaluators.run(
      evaluators.build(c, s.recipe, s.mesh, str(tmp_path)), state, step=1)
  assert metrics['eval/div/diversity_RANDOM_WEIGHTS/live'] == 0.0, metrics


def _fake_layout_model(monkeypatch, recipe):
  """Gives the pix2pix recipe LAMA's sample_outputs, driven by the masks.

  Masks are ground truth from the instance map; the image is the real one
  plus noise that grows with the masks' distance from one-hot, so a clean
  mask is a perfect generator and a tainted one is not.
  """
  from jaxl2i.recipes import lama as lama_recipe

  def sample_outputs(variables, batch, key, *, masks=None):
    del variables
    gt = lama_recipe.gt_masks(batch, batch['classes'].shape[1])
    m = gt if masks is None else masks
    blur = jnp.mean(jnp.abs(m - gt), axis=(1, 2, 3))[:, None, None, None]
    real = base.image_to_float(batch['image'])
    noise = jax.random.normal(key, real.shape)
    image = jnp.clip(real + 20.0 * blur * noise, -1, 1)
    return image, gt, 0.5 * gt + 0.5 / m.shape[1]

  monkeypatch.setattr(recipe, 'sample_outputs', sample_outputs, raising=False)


def _layout_evals(config, **evals):
  c = _with_evals(config, **evals)
  c.data.pp_eval = ('decode', 'resize(32)', 'pad_objects(4)',
                    'keep("image", "instance", "boxes", "classes", '
                    '"objects_mask")')
  return c


def test_object_z_averages_the_chosen_objects(setup, tmp_path, monkeypatch):
  """object_z: real rows, valid slots, boxes within max_area; the effect
  itself is tested in test_layout2im_recipe.py."""
  s, state = setup
  c = _layout_evals(s.config, oz=dict(type='object_z', num_samples=12,
                                      batch_size=8, generators=('live',),
                                      max_area=0.05))
  with pytest.raises(config_lib.ConfigError, match='per-object codes'):
    evaluators.build(c, s.recipe, s.mesh, str(tmp_path))   # pix2pix

  def effect(variables, batch, key, draws):   # inside: the box's area
    del variables, key, draws
    b = batch['boxes']
    area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return (jnp.where(batch['objects_mask'], area, 100.0),
            jnp.full(area.shape, 0.5))

  monkeypatch.setattr(s.recipe, 'object_z_effect', effect, raising=False)
  for bad in (dict(max_area=0.0), dict(draws=0)):
    wrong = _layout_evals(s.config, oz=dict(type='object_z', **bad))
    with pytest.raises(config_lib.ConfigError, match='0 < max_area <= 1'):
      evaluators.build(wrong, s.recipe, s.mesh, str(tmp_path))
  metrics, protocols = evaluators.run(
      evaluators.build(c, s.recipe, s.mesh, str(tmp_path)), state, step=1)
  from jaxl2i.data import pipeline
  areas, valid = [], 0
  for ex in pipeline.eval_dataset(c.data, host_batch_size=8,
                                  num_examples=12).as_numpy_iterator():
    b = ex['boxes']
    area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    real = ex['objects_mask'] & ex['_mask'][:, None]
    valid += int(real.sum())
    areas.extend(area[real & (area <= 0.05)])
  assert 0 < len(areas) == protocols['oz']['num_objects'] < valid
  assert metrics['eval/oz/object_z_inside/live'] == pytest.approx(
      np.mean(areas), rel=1e-5)
  assert metrics['eval/oz/object_z_outside/live'] == pytest.approx(0.5)
  assert metrics['eval/oz/object_z_ratio/live'] == pytest.approx(
      2 * np.mean(areas), rel=1e-5)


@pytest.mark.parametrize('kind,match', [
    ('mask_entropy', 'produces no object masks'),
    ('tainted_mask', 'takes no object masks')])
def test_mask_evaluators_need_a_mask_model(setup, tmp_path, kind, match):
  s, _ = setup   # pix2pix: no sample_outputs
  c = _layout_evals(s.config, ev=dict(type=kind, generators=('live',)))
  with pytest.raises(config_lib.ConfigError, match=match):
    evaluators.build(c, s.recipe, s.mesh, str(tmp_path))


def test_mask_entropy_of_clean_and_blurred_masks(setup, tmp_path,
                                                 monkeypatch):
  s, state = setup
  _fake_layout_model(monkeypatch, s.recipe)
  c = _layout_evals(s.config, ent=dict(type='mask_entropy', num_samples=8,
                                       batch_size=8, generators=('live',)))
  metrics, protocols = evaluators.run(
      evaluators.build(c, s.recipe, s.mesh, str(tmp_path)), state, step=1)
  # One-hot masks: 0. Raw = 0.5·one-hot + 0.5/4 on every slot, normalised
  # over the valid slots of a pixel: positive, below log(4).
  assert metrics['eval/ent/mask_entropy/live'] == pytest.approx(0.0, abs=1e-6)
  raw = metrics['eval/ent/mask_entropy_raw/live']
  assert 0.05 < raw < np.log(4), metrics
  assert protocols['ent']['num_layouts'] == 8
  assert 'eval/ent/mask_alpha/live' not in metrics   # pix2pix has no α


def test_tainted_masks_degrade_a_mask_driven_model(setup, tmp_path,
                                                   monkeypatch):
  s, state = setup
  _fake_layout_model(monkeypatch, s.recipe)
  from jaxl2i.evaluators import common
  # A 16-d random projection stands in for the Inception (FID itself is
  # tested against pytorch-fid elsewhere): small covariance, fast sqrtm.
  monkeypatch.setattr(common.Base, 'dims', 16)
  proj = jax.random.normal(jax.random.key(3), (32 * 32 * 3, 16))

  def features(images):
    x = jax.image.resize(images.astype(jnp.float32) / 255.0,
                         (images.shape[0], 32, 32, 3), 'linear')
    return x.reshape(x.shape[0], -1) @ proj

  monkeypatch.setattr(common.Base, 'load_inception', lambda self: features)
  c = _layout_evals(s.config, taint=dict(
      type='tainted_mask', taus=(0.0, 0.5), num_samples=16, batch_size=8,
      generators=('live',), crop_size=16))
  metrics, protocols = evaluators.run(
      evaluators.build(c, s.recipe, s.mesh, str(tmp_path)), state, step=1)
  m = {k.split('/', 2)[2]: v for k, v in metrics.items()}
  assert m['tainted/fid_dims16/tau0/live'] == pytest.approx(0.0, abs=1e-3), m
  assert m['tainted/fid_dims16/tau0.5/live'] > 1.0, m
  sfid0 = m['tainted/scene_fid_dims16/tau0/live']
  assert sfid0 == pytest.approx(0.0, abs=1e-3)
  assert m['tainted/scene_fid_dims16/tau0.5/live'] > sfid0
  assert m['tainted/mask_entropy/tau0/live'] == pytest.approx(0.0, abs=1e-6)
  assert m['tainted/mask_entropy/tau0.5/live'] > 0.3
  assert protocols['taint']['taus'] == [0.0, 0.5]
