"""noise → label map → image: the seg GAN trained by the real loop, its
two-stage evaluator, jaxl2i.generate --renderer and jaxl2i.interpolate.

One tiny seg-GAN run (configs/synthetic_seg_gan.py:tiny, 2 steps of the
trainer on 8 simulated devices: the stacked [n_critic, B] batches of the
pipeline, grids without an input column, the in-loop evaluator) rendered
by a freshly initialised tiny pix2pix run.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from jaxl2i import checkpointing
from jaxl2i import config_lib
from jaxl2i import evaluators
from jaxl2i import generate
from jaxl2i import interpolate
from jaxl2i import parallel
from jaxl2i import step as step_lib
from jaxl2i import train
from jaxl2i.data import pipeline
from jaxl2i.evaluators import common
from jaxl2i.evaluators import two_stage
from jaxl2i.metrics import scene_segmenter

import fakes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 32


def _load(name, arg='tiny'):
  return config_lib.load(os.path.join(ROOT, 'configs', name), arg)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def renderer(tmp_path_factory, data_dir):
  """A tiny pix2pix workdir with a checkpoint of a step-0 state (filled
  variables: no initialiser compiles)."""
  path = str(tmp_path_factory.mktemp('p2p'))
  config = _load('synthetic_pix2pix.py')
  config.data.data_dir = data_dir
  setup = train.Setup(config)
  state = fakes.filled_state(
      setup.recipe, parallel.to_global(next(train.train_batches(config, 0)),
                                       setup.mesh),
      setup.tx_g, setup.tx_d, config.ema.decay, config.seed)
  return fakes.save_workdir(path, state, config, setup.meta)


TRAINED = {}   # what the training fixture saw: metrics, traces of the step
_PROJECTION = np.random.default_rng(0).normal(
    size=(TINY * TINY * 3, 16)).astype(np.float32)


def _features(images):
  """uint8 [B, 32, 32, 3] -> float32 [B, 16]: the evaluator's features."""
  x = jnp.asarray(images, jnp.float32) / 255.0
  return x.reshape(x.shape[0], -1) @ _PROJECTION


@pytest.fixture(scope='module')
def seg_run(tmp_path_factory, data_dir, renderer):
  """2 steps of the trainer (checkpoints after each), counting traces."""
  path = str(tmp_path_factory.mktemp('seg'))
  config = _load('synthetic_seg_gan.py', f'tiny,renderer={renderer}')
  config.data.data_dir = data_dir
  config.ckpt_every = 1
  config.evals.two_stage.num_samples = 12   # 2 eval batches, 4 padded rows
  make, traces = step_lib.make_train_step, []

  def counted(*args, **kwargs):
    step = make(*args, **kwargs)
    return lambda *a: (traces.append(1), step(*a))[1]

  with pytest.MonkeyPatch.context() as m:
    m.setattr(step_lib, 'make_train_step', counted)
    # A 16-d random projection stands in for the Inception (its FID is
    # tested against pytorch-fid elsewhere; compiling it would dominate
    # this file's time).
    m.setattr(common.Base, 'dims', 16)
    m.setattr(common.Base, 'load_inception', lambda self: _features)
    TRAINED['metrics'] = train.train_and_evaluate(config, path)
  TRAINED['traces'] = len(traces)
  return path


def _changed(a, b):
  return any(not np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_one_step_of_the_trainer(seg_run):
  """tests/test_train_step.py's checks, on the n_critic step: finite
  losses, G, D, EMA and BN statistics move every step, no retrace."""
  m = TRAINED['metrics']
  assert all(np.isfinite(v) for v in m.values()), m
  assert {'d/loss', 'd/gp', 'd/wasserstein', 'g/loss', 'g/grad_norm'} <= set(m)
  ckpt = checkpointing.Checkpointer(seg_run, every=1, keep=3,
                                    asynchronous=False)
  s1, s2 = ckpt.restore_raw(1), ckpt.restore_raw(2)
  ckpt.close()
  assert int(s2['step']) == 2
  for part in (('g', 'params'), ('d', 'params'), ('g', 'state'), ('ema_g',)):
    a, b = s1, s2
    for k in part:
      a, b = a[k], b[k]
    assert _changed(a, b), f'{part} did not move'
  assert TRAINED['traces'] == 1, 'the step retraced'


def test_training_writes_grids_and_the_two_stage_eval(seg_run, renderer):
  # Grids: EMA G | live G | real map — no input column (unconditional).
  grid = np.asarray(Image.open(os.path.join(seg_run, 'images',
                                            'step_0000002.png')))
  assert grid.shape[1] == 3 * (TINY + 2) + 2
  report = json.load(open(os.path.join(seg_run, 'eval_2.json')))
  m = {k.split('/', 2)[2]: v for k, v in report['metrics'].items()}
  assert set(m) == {f'{k}/ema' for k in (
      'fid_dims16', 'consistency', 'consistency_miou')} | {
          'segmenter_real_accuracy'}
  assert all(np.isfinite(v) for v in m.values())
  assert m['fid_dims16/ema'] > 0   # an untrained renderer's images
  # The eval split's real scenes (labels known) through the segmenter.
  assert m['segmenter_real_accuracy'] > 0.9, m
  assert 0 <= m['consistency/ema'] <= 1
  p = report['protocol']['two_stage']
  assert p['num_generated'] == 12 and renderer in p['renderer']
  assert 'held-out pixel accuracy' in p['segmenter']


def test_segmenter_accuracy_on_its_renderer():
  seg = scene_segmenter.fit(TINY)
  assert seg.accuracy > 0.9, seg.accuracy


def sky_segmenter(images):
  """A user segmenter hook ('test_two_stage:sky_segmenter'): all sky."""
  return np.ones(images.shape[:3], np.int32)


def test_segmenter_hooks(seg_run, renderer, tmp_path):
  fn, about = two_stage.load_segmenter('test_two_stage:sky_segmenter', TINY)
  assert fn is sky_segmenter and 'test_two_stage:sky_segmenter' in about
  for bad, match in (('nomodule', "use 'synthetic'"),
                     ('jaxl2i.nothing:fn', 'cannot be imported')):
    with pytest.raises(ValueError, match=match):
      two_stage.load_segmenter(bad, TINY)
  # Consistency without a segmenter (e.g. Cityscapes) stops with one line.
  config = _load('synthetic_seg_gan.py', f'tiny,renderer={renderer}')
  config.evals.two_stage.segmenter = ''
  setup = train.Setup(config, pipeline.load_meta(seg_run))
  with pytest.raises(config_lib.ConfigError,
                     match='consistency needs a segmenter'):
    evaluators.build(config, setup.recipe, setup.mesh, str(tmp_path))


def test_consistency_scores_from_a_confusion_matrix():
  cm = np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
  acc, miou = two_stage._accuracy_miou(cm)   # pylint: disable=protected-access
  assert acc == 7 / 8 and np.isclose(miou, (3 / 4 + 4 / 5) / 2)


def test_generate_renders_noise_samples(seg_run, renderer, tmp_path):
  model, painter = generate.Model(seg_run), generate.Model(renderer)
  out = model.pictures(num_samples=3, renderer=painter)
  assert sorted(out) == sorted(
      [f'sample{k:03d}{s}.png' for k in range(3) for s in ('', '_labels')]
      + ['samples.png'])
  assert out['samples.png'].shape == (3 * (TINY + 2) + 2, 2 * (TINY + 2) + 2,
                                      3)
  again = model.pictures(num_samples=3, renderer=painter)
  for name in out:
    np.testing.assert_array_equal(again[name], out[name])
  # The colour maps read back as label maps (jaxl2i's palette).
  generate.write(out, str(tmp_path))
  ids = generate.read_label_map(str(tmp_path / 'sample000_labels.png'),
                                model.meta, model.spec)
  assert ids.shape == (TINY, TINY)
  maps = model.pictures(num_samples=3)   # no renderer: the maps alone
  assert sorted(maps) == [f'sample{k:03d}_labels.png' for k in range(3)] + [
      'samples.png']
  np.testing.assert_array_equal(maps['sample002_labels.png'],
                                out['sample002_labels.png'])


def test_generate_input_errors(seg_run, renderer, tmp_path):
  with pytest.raises(generate.InputError, match='generates from noise'):
    generate.generate(seg_run, label_map=np.zeros((TINY, TINY), np.int32))
  with pytest.raises(generate.InputError, match='renders images itself'):
    generate.generate(renderer, label_map=np.zeros((TINY, TINY), np.int32),
                      renderer=renderer)
  # A renderer of another size fails before anything is sampled.
  other = tmp_path / 'p2p64'
  config = config_lib.read_json(renderer)
  config.data.pp_eval = ('decode', 'resize(64)', 'keep("image", "label")')
  config_lib.write_json(config, str(other))
  pipeline.save_meta(pipeline.load_meta(renderer), str(other))
  with pytest.raises(config_lib.ConfigError,
                     match='takes 64x64 maps of 12 classes, but .* makes '
                     '32x32 maps of 12 classes'):
    generate.generate(seg_run, num_samples=1, renderer=str(other))


def test_interpolate_between_two_label_maps(seg_run, renderer, tmp_path):
  maps = generate.generate(seg_run, num_samples=3)
  generate.write(maps, str(tmp_path / 'maps'))
  paths = interpolate.run(
      seg_run, str(tmp_path / 'out'), renderer=renderer, frames=3,
      start=str(tmp_path / 'maps' / 'sample000_labels.png'),
      end=str(tmp_path / 'maps' / 'sample001_labels.png'),
      restarts=2, steps=3)
  strip = np.asarray(Image.open(paths[0]))
  assert strip.shape == (2 * (TINY + 2) + 2, 3 * (TINY + 2) + 2, 3)
  gif = Image.open(paths[1])
  assert gif.n_frames == 3 and gif.size == (2 * (TINY + 2) + 2, TINY + 4)
  report = json.load(open(paths[2]))
  assert report['restarts'] == 2 and report['steps'] == 3
  assert len(report['agreement']) == 2 and all(
      0 <= a <= 1 for a in report['agreement'])
  with pytest.raises(generate.InputError, match='both --start and --end'):
    interpolate.pictures(seg_run, start=paths[0])
