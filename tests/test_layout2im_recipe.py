"""The Layout2Im recipe and configs: losses, the two G passes, sampling,
generation from a checkpoint."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxl2i import config_lib
from jaxl2i import evaluate
from jaxl2i import generate
from jaxl2i import state as state_lib
from jaxl2i import step as step_lib
from jaxl2i.data import pipeline
from jaxl2i.models import layout2im as l2i
from jaxl2i.recipes import base

import fakes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name, arg=None):
  c = config_lib.load(os.path.join(ROOT, 'configs', name), arg)
  c.lock()
  return c


@pytest.fixture(scope='module')
def tiny():
  """The :tiny recipe on synthetic_scenes/tiny's vocabulary (12 classes),
  variables filled without compiling the initialisers."""
  c = _load('synthetic_layout2im.py', 'tiny')
  meta = pipeline.dataset_meta(c.data)
  recipe = base.get_recipe(c, meta)
  batch = fakes.batch(2, 32, seed=0)
  shapes = jax.eval_shape(recipe.init, jax.random.key(0), batch)
  g_vars, d_vars = fakes.filled(shapes)
  return recipe, batch, g_vars, d_vars, c, meta


def test_reference_settings():
  c = _load('coco_layout2im.py')
  assert (c.recipe, c.batch_size, c.total_steps, c.ema.decay) == (
      'layout2im', 8, 300_000, 0.0)
  assert dict(c.loss) == dict(img_adv=1.0, obj_adv=1.0, obj_cls=1.0,
                              img_rec=1.0, z_rec=10.0, kl=0.01, adv_warmup=0)
  for net in 'gd':
    o = c.optim[net]
    assert (o.lr, o.b1, o.b2, tuple(o.groups)) == (1e-4, 0.5, 0.999, ())
  m = c.model
  assert (m.resolution, m.crop_size, m.z_dim, m.embed_dim,
          tuple(m.clstm_hidden), m.clstm_kernel, m.num_res) == (
              64, 32, 64, 64, (128, 64, 64), 5, 6)
  assert c.data.name == 'coco_stuff_layout/layout2im'
  assert 'random_flip' not in c.data.pp_train
  assert c.data.pp_train == c.data.pp_eval     # test.py shuffles too
  assert {e.uint8 for e in c.evals.values()} == {'truncate'}
  assert {e.num_samples for e in c.evals.values()} == {0}   # whole split
  vg = _load('vg_layout2im.py')
  assert (vg.data.max_objects, vg.data.eval_split,
          vg.model.box_mask_nonempty) == (9, 'test', False)
  assert 'sg2im_select_objects(10, max_related=9)' in vg.data.pp_train
  assert not any('add_image_object' in p for p in vg.data.pp_train)


def _softplus(x):
  return np.logaddexp(0.0, x)


def _bce(logits, target):
  return target * _softplus(-logits) + (1 - target) * _softplus(logits)


def _ce(logits, y):
  lse = np.log(np.exp(logits).sum(-1))
  return lse - np.take_along_axis(logits, y[..., None], -1)[..., 0]


def test_losses_as_train_py(tiny, monkeypatch):
  """L_D and L_G of train.py on given D logits with the config's weights
  (the demo's λ_img_rec 10 and λ_kl 1e-4, and a λ_z_rec of 3, all unlike
  the reference's, which test_reference_settings checks, so that a swapped
  weight shows); objects over valid slots; no ramp first."""
  recipe, batch, lam = tiny[0], tiny[1], tiny[4].loss
  monkeypatch.setitem(lam, 'z_rec', 3.0)
  monkeypatch.setitem(lam, 'adv_warmup', 0)
  assert len({lam.img_rec, lam.z_rec, lam.kl, 1.0}) == 4
  rng = np.random.default_rng(0)
  valid = batch['objects_mask']                         # 3 of 4 slots
  y = batch['classes']
  img_logits = {1.0: np.float32([0.3, -1.2]), 2.0: np.float32([2.0, 0.1]),
                'real': np.float32([1.5, -0.4])}
  obj_logits = {k: (rng.standard_normal((2, 4)).astype(np.float32),
                    rng.standard_normal((2, 4, 12)).astype(np.float32))
                for k in (1.0, 2.0, 3.0)}

  def fake_img(d_params, st, images):
    key = float(images[0, 0, 0, 0])
    return jnp.asarray(img_logits.get(key, img_logits['real'])), st

  def fake_obj(d_params, st, crops):
    src, cls = obj_logits[float(crops[0, 0, 0, 0, 0])]
    return jnp.asarray(src), jnp.asarray(cls), st

  monkeypatch.setattr(recipe, '_d_img', fake_img)
  monkeypatch.setattr(recipe, '_d_obj', fake_obj)
  crops = lambda v: jnp.full((2, 4, 16, 16, 3), v)
  mu = rng.standard_normal((2, 4, 4)).astype(np.float32)
  logvar = 0.3 * rng.standard_normal((2, 4, 4)).astype(np.float32)
  z_rand = rng.standard_normal((2, 4, 4)).astype(np.float32)
  z_rec = rng.standard_normal((2, 4, 4)).astype(np.float32)
  out = {'img_rec': jnp.ones((2, 32, 32, 3)),
         'img_rand': jnp.full((2, 32, 32, 3), 2.0),
         'crops_rec': crops(1.0), 'crops_rand': crops(2.0),
         'crops_real': crops(3.0), 'mu': mu, 'logvar': logvar,
         'z_rand': z_rand, 'z_rand_rec': z_rec}
  nets = base.Nets(None, state_lib.Net({}, {}, None), {})
  vmean = lambda x: x[valid].mean()
  loss, (m, _) = recipe.d_loss({}, nets, batch, out, None)
  d_img = (_bce(img_logits['real'], 1).mean() + 0.5 * (
      _bce(img_logits[1.0], 0).mean() + _bce(img_logits[2.0], 0).mean()))
  d_obj = vmean(_bce(obj_logits[3.0][0], 1)) + 0.5 * (
      vmean(_bce(obj_logits[1.0][0], 0)) + vmean(_bce(obj_logits[2.0][0], 0)))
  d_cls = vmean(_ce(obj_logits[3.0][1], y))
  assert float(loss) == pytest.approx(d_img + d_obj + d_cls, rel=1e-5)
  assert float(m['d/obj_cls']) == pytest.approx(d_cls, rel=1e-5)

  g, (m, _) = recipe.g_loss(out, nets, batch, None)
  real = np.asarray(l2i.normalize_images(batch['image']))
  rec_img = np.abs(1.0 - real).mean()
  rec_z = np.abs(z_rec - z_rand)[valid].mean()
  kl = -0.5 * (1 + logvar - mu ** 2 - np.exp(logvar))[valid].sum()
  adv = 0.5 * (_bce(img_logits[1.0], 1).mean() + _bce(img_logits[2.0],
                                                      1).mean())
  obj = 0.5 * (vmean(_bce(obj_logits[1.0][0], 1)) +
               vmean(_bce(obj_logits[2.0][0], 1)))
  cls = 0.5 * (vmean(_ce(obj_logits[1.0][1], y)) +
               vmean(_ce(obj_logits[2.0][1], y)))
  want = (lam.img_rec * rec_img + lam.z_rec * rec_z + lam.img_adv * adv +
          lam.obj_adv * obj + lam.obj_cls * cls + lam.kl * kl)
  assert float(g) == pytest.approx(want, rel=1e-5)
  for k, v in (('g/kl', kl), ('g/rec_z', rec_z), ('g/rec_img', rec_img)):
    assert float(m[k]) == pytest.approx(v, rel=1e-5), k

  # adv_warmup N (not the reference's): at step 3 of 8, G's adversarial
  # and classifier terms weigh (3 + 1) / 8; the D loss is unchanged.
  rest = lam.img_rec * rec_img + lam.z_rec * rec_z + lam.kl * kl
  monkeypatch.setitem(lam, 'adv_warmup', 8)
  nets3 = base.Nets(None, nets.d, {}, jnp.int32(3))
  g3, (m, _) = recipe.g_loss(out, nets3, batch, None)
  assert float(g3) == pytest.approx(rest + 0.5 * (want - rest), rel=1e-5)
  assert float(m['g/adv_ramp']) == 0.5
  nets9 = base.Nets(None, nets.d, {}, jnp.int32(9))
  assert float(recipe.g_loss(out, nets9, batch, None)[0]) == pytest.approx(
      want, rel=1e-5)
  assert float(recipe.d_loss({}, nets3, batch, out, None)[0]) == (
      pytest.approx(d_img + d_obj + d_cls, rel=1e-5))


def test_second_pass_reuses_z_and_draws_a_new_eps(tiny, monkeypatch):
  """generate(key) and regenerate(key, fresh): the same z_rand key, the
  crop encoder's ε from `fresh` (train.py's second netG call)."""
  recipe = tiny[0]
  calls = []
  monkeypatch.setattr(recipe, '_forward', lambda p, n, b, k_z, k_eps: (
      calls.append((jax.random.key_data(k_z), jax.random.key_data(k_eps)))))
  key, fresh = jax.random.key(1), jax.random.key(2)
  recipe.generate(None, None, None, key)
  recipe.regenerate(None, None, None, key, fresh)
  (z1, eps1), (z2, eps2) = calls
  np.testing.assert_array_equal(z1, z2)
  np.testing.assert_array_equal(eps2, jax.random.key_data(fresh))
  assert not np.array_equal(eps1, eps2) and not np.array_equal(z1, eps1)


def _fake_generator(local: bool):
  """g.apply stand-in: grey plus z[..., 0] of each object painted into its
  box (local codes) or added to the whole image (global codes)."""
  def apply(variables, boxes, classes, valid, z, *, train, method):
    del variables, classes, train, method
    m = l2i.box_masks(boxes, 32, True) * valid[..., None, None]
    w = m if local else jnp.ones_like(m) * valid[..., None, None]
    x = 0.5 + 0.2 * jnp.tanh(jnp.einsum('bohw,bo->bhw', w, z[..., 0]))
    x = jnp.broadcast_to(x[..., None], (*x.shape, 3))
    return (x - jnp.asarray(l2i.IMAGENET_MEAN)) / jnp.asarray(l2i.IMAGENET_STD)
  return apply


def test_object_z_effect_separates_local_from_global_codes(tiny,
                                                           monkeypatch):
  recipe, batch, g_vars, _, _, _ = tiny
  valid = batch['objects_mask']
  assert not valid.all()                      # the last slot is padding
  # The real (filled) tiny generator: a padded slot's z changes nothing.
  inside, outside = jax.jit(recipe.object_z_effect, static_argnames='draws')(
      g_vars, batch, jax.random.key(0), draws=2)
  assert inside.shape == outside.shape == valid.shape
  # (Up to rounding: the redraws run as a vmapped batch, the base image not.)
  np.testing.assert_allclose(inside[~valid], 0.0, atol=1e-6)
  np.testing.assert_allclose(outside[~valid], 0.0, atol=1e-6)
  noise = max(inside[~valid].max(), outside[~valid].max())
  assert inside[valid].min() > 100 * noise and np.isfinite(outside).all()

  monkeypatch.setattr(recipe, 'g', type('G', (), {})())
  recipe.g.apply = _fake_generator(local=True)
  inside, outside = recipe.object_z_effect(None, batch, jax.random.key(0))
  assert (inside[valid] > 1e-3).all()
  # A local code changes nothing outside its own box.
  np.testing.assert_allclose(outside, 0.0, atol=1e-7)
  recipe.g.apply = _fake_generator(local=False)
  inside, outside = recipe.object_z_effect(None, batch, jax.random.key(0))
  np.testing.assert_allclose(inside[valid], outside[valid], rtol=1e-5)
  assert (outside[valid] > 1e-3).all()


def test_deprocess_stretches_each_image_or_clips():
  rng = np.random.default_rng(3)
  x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32) * 3
  mean, std = np.float32(l2i.IMAGENET_MEAN), np.float32(l2i.IMAGENET_STD)
  un = x * std + mean                    # imagenet_deprocess, then rescale
  lo, hi = un.min((1, 2, 3), keepdims=True), un.max((1, 2, 3), keepdims=True)
  np.testing.assert_allclose(l2i.deprocess(x, True),
                             (un - lo) / (hi - lo) * 2 - 1, atol=1e-6)
  np.testing.assert_allclose(l2i.deprocess(x, False),
                             np.clip(un, 0, 1) * 2 - 1, atol=1e-6)
  np.testing.assert_allclose(
      l2i.normalize_images(np.full((1, 1, 1, 3), 255, np.uint8))[0, 0, 0],
      (1 - mean) / std, rtol=1e-6)


@pytest.fixture(scope='module')
def stepped(tiny):
  """Two jitted training steps of the :tiny config from filled variables
  (this recipe's one-step test; tests/test_train_step.py skips it)."""
  recipe, _, g_vars, d_vars, c, _ = tiny
  tx_g, _ = state_lib.make_optimizer(c, 'g')
  tx_d, _ = state_lib.make_optimizer(c, 'd')
  state0 = state_lib.state_from_variables(jax.random.key(0), g_vars, d_vars,
                                          tx_g, tx_d, c.ema.decay)
  step = step_lib.make_train_step(recipe, tx_g, tx_d, c.ema.decay)
  traces = []
  jitted = jax.jit(lambda *a: (traces.append(1), step(*a))[1])
  # A 4-step ramp of G's adversarial terms while tracing: its weight reads
  # the state's step inside the compiled step (1/4, then 2/4).
  warmup, c.loss.adv_warmup = c.loss.adv_warmup, 4
  try:
    state1, metrics = jitted(state0, fakes.batch(c.batch_size, 32, seed=1),
                             {})
    state2, metrics2 = jitted(state1, fakes.batch(c.batch_size, 32, seed=2),
                              {})
  finally:
    c.loss.adv_warmup = warmup
  ramps = [float(m['g/adv_ramp']) for m in (metrics, metrics2)]
  return (c, jax.device_get((state0, state1, state2, metrics)), len(traces),
          ramps)


def _changed(a, b):
  return any(not np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_one_step(stepped):
  _, (s0, s1, s2, metrics), traces, ramps = stepped
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert {'d/loss', 'g/loss', 'g/kl', 'g/rec_z', 'd/obj_cls'} <= set(metrics)
  assert int(s1.step) == 1 and int(s2.step) == 2
  for a, b in ((s0.g.params, s1.g.params), (s0.d.params, s1.d.params),
               (s0.g.state, s1.g.state), (s0.d.state, s1.d.state)):
    assert _changed(a, b)
  assert traces == 1, 'the step retraced on step 2'
  assert ramps == [0.25, 0.5]


@pytest.fixture(scope='module')
def run(tmp_path_factory, tiny, stepped):
  """A workdir with the checkpoint of the first step."""
  meta = tiny[-1]
  c, (_, s1, _, _), _, _ = stepped
  workdir = fakes.save_workdir(tmp_path_factory.mktemp('l2i_run'), s1, c,
                               meta)
  return workdir


LAYOUT = {'objects': [{'class': 'sky', 'box': [0.0, 0.0, 1.0, 0.5]},
                      {'class': 'car', 'box': [0.1, 0.5, 0.45, 0.8]},
                      {'class': 'tree', 'box': [0.6, 0.2, 0.9, 0.9]}]}


def test_generate_from_a_layout(run, tmp_path):
  """jaxl2i.generate on a Layout2Im run: several diverse, stretched samples."""
  model = generate.Model(run)
  pics = model.pictures(layouts=LAYOUT, num_samples=3, seed=0)
  assert model.which == 'live' and model.step == 1   # no EMA in Layout2Im
  assert list(pics) == ['layout000_boxes.png'] + [
      f'layout000_sample{k:02d}.png' for k in range(3)]
  samples = [pics[f'layout000_sample{k:02d}.png'] for k in range(3)]
  for s in samples:
    assert s.shape == (32, 32, 3) and s.dtype == np.uint8
    assert s.min() == 0 and s.max() >= 254          # min-max stretched
  for a, b in ((0, 1), (0, 2), (1, 2)):   # other z (diversity of a trained
    assert not np.array_equal(samples[a], samples[b])   # model: README)
  again = model.pictures(layouts=LAYOUT, num_samples=3, seed=0)
  for name, pic in pics.items():
    np.testing.assert_array_equal(again[name], pic)
  paths = generate.write(pics, str(tmp_path / 'out'))
  assert len(paths) == 4
  with pytest.raises(config_lib.ConfigError, match='object masks'):
    model.pictures(layouts=LAYOUT, with_masks=True)


def test_evaluate_object_z_of_a_checkpoint(run, tiny):
  """jaxl2i.evaluate's object_z on the run's checkpoint, real generator."""
  c = ml_collections.ConfigDict(tiny[4].to_dict())
  c.evals = ml_collections.ConfigDict({'object_z': c.evals.object_z})
  c.evals.object_z.draws = 2
  path = evaluate.evaluate(c, run)
  with open(path) as f:
    out = json.load(f)
  m = out['metrics']
  inside, outside = (m[f'eval/object_z/object_z_{k}/live']
                     for k in ('inside', 'outside'))
  assert inside > 0 and outside > 0, m
  assert m['eval/object_z/object_z_ratio/live'] == pytest.approx(
      inside / outside, rel=1e-5)
  assert out['protocol']['object_z']['num_objects'] > 0
