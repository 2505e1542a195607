"""The LAMA recipe and configs: losses, latents, masks, schedules, epochs."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i import config_lib
from jaxl2i import state as state_lib
from jaxl2i.evaluators import common
from jaxl2i.recipes import base
from jaxl2i.recipes import lama as lama_recipe

import fakes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO_TRAIN = 74_777


def _load(name, arg=None):
  c = config_lib.load(os.path.join(ROOT, 'configs', name), arg)
  c.lock()
  return c


@pytest.mark.parametrize('res,batch,steps_per_epoch',
                         [(64, 32, 4673), (128, 20, 7477), (256, 24, 6231)])
def test_coco_lama_epochs_and_schedule(res, batch, steps_per_epoch):
  c = _load('coco_lama.py', f'res={res}')
  config_lib.validate(c, 1)
  assert c.batch_size == batch
  # An epoch is the doubled dataset (mirrored copies), drop_last.
  assert config_lib.resolve_epochs(c, COCO_TRAIN) == steps_per_epoch
  assert c.total_steps == 200 * steps_per_epoch
  sched = state_lib.make_schedule(c, 1e-4, steps_per_epoch)
  at = lambda epoch, off=0: float(sched(epoch * steps_per_epoch + off))
  assert at(0) == pytest.approx(1e-4)
  assert at(120, -1) == pytest.approx(1e-4)
  assert at(120) == pytest.approx(1e-5)
  assert at(160) == pytest.approx(1e-6)
  assert at(199) == pytest.approx(1e-6)


def test_lama_optimizer_groups_match_the_reference():
  """mapping/ρ at lr×0.1 in G, ReZero α at lr×0.2 in D (train.py)."""
  c = _load('coco_lama.py', 'res=64')
  g = {'style_mapping_0': {'kernel': jnp.ones(2)},
       'res1': {'b1': {'rho': jnp.ones(()), 'alpha': jnp.ones(())},
                'conv1': {'kernel': jnp.ones(2)}}}
  tx, _ = state_lib.make_optimizer(c, 'g')
  up, _ = tx.update(jax.tree.map(jnp.ones_like, g), tx.init(g), g)
  # Adam's first step with β1 = 0 moves every entry by lr·g/|g| = lr.
  assert float(up['style_mapping_0']['kernel'][0]) == pytest.approx(
      -1e-5, rel=1e-4)
  assert float(up['res1']['b1']['rho']) == pytest.approx(
      -1e-5, rel=1e-4)
  assert float(up['res1']['b1']['alpha']) == pytest.approx(
      -1e-4, rel=1e-4)
  assert float(up['res1']['conv1']['kernel'][0]) == pytest.approx(
      -1e-4, rel=1e-4)
  d = {'block1': {'alpha': jnp.ones(()), 'conv1': {'kernel': jnp.ones(2)}}}
  tx, _ = state_lib.make_optimizer(c, 'd')
  up, _ = tx.update(jax.tree.map(jnp.ones_like, d), tx.init(d), d)
  assert float(up['block1']['alpha']) == pytest.approx(
      -6e-5, rel=1e-4)
  assert float(up['block1']['conv1']['kernel'][0]) == pytest.approx(
      -3e-4, rel=1e-4)


def test_other_layout_configs():
  vg = _load('vg_lama.py')
  assert (vg.data.name, vg.data.max_objects) == ('visual_genome_layout', 11)
  assert 'add_image_object' in vg.data.pp_eval
  v1 = _load('coco_lostgan.py')
  assert (v1.model.arch, v1.model.mask_adaption, v1.optim.d_only_steps,
          v1.optim.d.lr) == ('lostgan_v1', False, 0, 1e-4)
  ablation = _load('coco_lostgan.py', 'no_adaption')
  assert (ablation.model.arch, ablation.model.mask_adaption) == ('lama', False)
  with pytest.raises(config_lib.ConfigError, match='64 and 128'):
    _load('coco_lostgan.py', 'res=256')
  with pytest.raises(config_lib.ConfigError, match='res=32'):
    _load('coco_lama.py', 'res=32')


def test_truncation_redraws_once():
  z = lama_recipe.truncated_normal(jax.random.key(0), (200_000,), 2.0)
  plain = lama_recipe.truncated_normal(jax.random.key(0), (200_000,), 0.0)
  frac = lambda x: float(jnp.mean(jnp.abs(x) > 2.0))
  assert frac(plain) == pytest.approx(0.0455, abs=0.003)
  # One redraw: P(|z| > 2) squared, not zero (utils/util.py truncted_random).
  assert frac(z) == pytest.approx(0.0455 ** 2, abs=0.0008)
  assert frac(z) > 0


def test_ground_truth_masks_from_instances():
  batch = fakes.batch(2, 16, seed=1)
  m = np.asarray(lama_recipe.gt_masks(batch, 4))
  assert m.shape == (2, 4, 16, 16)
  for o in range(3):
    np.testing.assert_array_equal(m[:, o], batch['instance'] == o + 1)
  assert not m[:, 3].any()          # the padded slot
  assert m.sum(1).max() <= 1.0


def test_mask_colours_blend_overlaps_and_darken_weak_cover():
  masks = jnp.zeros((1, 2, 1, 3)).at[0, 0, 0, 0].set(1.0)
  masks = masks.at[0, :, 0, 1].set(1.0).at[0, 1, 0, 2].set(0.5)
  pic = np.asarray(lama_recipe.colorize_masks(
      masks, jnp.array([[1, 2]]), jnp.array([[True, True]]), 4))
  from jaxl2i import visualize
  lut = visualize.palette(4) / 255.0 * 2 - 1
  np.testing.assert_allclose(pic[0, 0, 0], lut[1], atol=1e-6)
  np.testing.assert_allclose(pic[0, 0, 1], (lut[1] + lut[2]) / 2, atol=1e-6)
  np.testing.assert_allclose(pic[0, 0, 2], (lut[2] + 1) / 2 - 1, atol=1e-6)


def test_hinge_losses_with_the_reference_weights(monkeypatch):
  """L_D and L_G of train.py on given logits; objects averaged over valid."""
  c = _load('synthetic_lama.py', 'tiny')
  recipe = base.get_recipe(c, fakes.FakeMeta())
  batch = fakes.batch(2, 64, seed=0)
  valid = jnp.asarray(batch['objects_mask'])
  logits = {'real': (jnp.array([0.5, 2.0]), jnp.full((2, 4), -0.5)),
            'fake': (jnp.array([-3.0, 0.2]), jnp.full((2, 4), 0.7))}

  def fake_d(d_params, d_state, images, batch):
    del d_params, batch
    which = 'fake' if float(images.sum()) == 0 else 'real'
    img, obj = logits[which]
    return img, jnp.where(valid, obj, 0.0), valid, d_state

  monkeypatch.setattr(recipe, '_d', fake_d)
  out = {'image': jnp.zeros((2, 64, 64, 3)),
         'masks': jnp.ones((2, 4, 64, 64)), 'raw_masks': jnp.ones((2, 4, 64,
                                                                   64))}
  nets = base.Nets(None, state_lib.Net({}, {}, None), {})
  loss, (metrics, _) = recipe.d_loss({}, nets, batch, out, None)
  img = np.mean(np.maximum(0, 1 - np.array([0.5, 2.0]))) + np.mean(
      np.maximum(0, 1 + np.array([-3.0, 0.2])))
  obj = 1.5 + 1.7    # relu(1 + 0.5), relu(1 + 0.7) on every valid object
  assert float(loss) == pytest.approx(1.0 * obj + 0.1 * img, rel=1e-6)
  assert float(metrics['d/obj_real']) == pytest.approx(1.5)
  g_loss, (g_metrics, _) = recipe.g_loss(out, nets, batch, None)
  assert float(g_loss) == pytest.approx(-0.7 - 0.1 * np.mean([-3.0, 0.2]))
  # 4 slots, 3 valid: every pixel's mass is spread evenly over 3 objects.
  assert float(g_metrics['g/mask_entropy']) == pytest.approx(np.log(3),
                                                             rel=1e-5)


def test_uint8_conversions():
  x = jnp.array([-1.0, -0.999, 0.0, 0.5, 0.999, 1.0])
  np.testing.assert_array_equal(common.to_uint8(x),
                                [0, 0, 128, 191, 255, 255])
  # LAMA test.py: uint8(((x·0.5) + 0.5)·255), a truncating cast.
  np.testing.assert_array_equal(common.to_uint8(x, 'truncate'),
                                [0, 0, 127, 191, 254, 255])
