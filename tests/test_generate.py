"""python -m jaxl2i.generate: user layouts / label maps -> images."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from jaxl2i import config_lib
from jaxl2i import generate
from jaxl2i import parallel
from jaxl2i import state as state_lib
from jaxl2i import train
from jaxl2i import visualize
from jaxl2i.data import pipeline

import fakes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# synthetic_scenes: 1 sky .. 5 floor, 6 ball, 7 box, 8 tree, 9 house, 10 car.
LAYOUT = {'objects': [{'class': 'sky', 'box': [0.0, 0.0, 1.0, 0.5]},
                      {'class': 'car', 'box': [0.1, 0.5, 0.45, 0.8]},
                      {'class': 8, 'box': [0.6, 0.2, 0.9, 0.9]}]}


def _config(name, **model):
  c = config_lib.load(os.path.join(ROOT, 'configs', name), 'tiny')
  c.model.update(model)
  return c


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _workdir(path, config, data_dir, pp_eval=None):
  """A workdir as the trainer leaves it before the first checkpoint."""
  config.data.data_dir = data_dir
  if pp_eval is not None:
    config.data.pp_eval = pp_eval
  config_lib.write_json(config, str(path))
  pipeline.save_meta(pipeline.dataset_meta(config.data), str(path))
  return str(path)


def _trained(path, config, data_dir, g_only=False):
  """The same plus a checkpoint (step 1) of a step-0 state.

  Variables are filled (fakes.filled: no initialiser compiles).
  g_only: a state without D (as recipes with order ('g',) have).
  """
  config.data.data_dir = data_dir
  setup = train.Setup(config)
  host = next(train.train_batches(config, 0))
  recipe, key = setup.recipe, jax.random.key(config.seed)
  if g_only:
    b = {k: host[k][:1] for k in ('boxes', 'classes', 'objects_mask')}
    shapes = jax.eval_shape(lambda key, b: recipe.g.init(
        {'params': key, 'noise': key}, *recipe.latents(key, b), b['boxes'],
        b['classes'], b['objects_mask'], train=False), key, b)
    state = state_lib.state_from_variables(key, fakes.filled(shapes), None,
                                           setup.tx_g, None, 0.0)
  else:
    state = recipe.after_init(fakes.filled_state(
        recipe, parallel.to_global(host, setup.mesh), setup.tx_g, setup.tx_d,
        config.ema.decay, config.seed))
  return fakes.save_workdir(path, state, config, setup.meta)


@pytest.fixture(scope='module')
def lama_dir(tmp_path_factory, data_dir):
  return _workdir(tmp_path_factory.mktemp('lama_cfg'),
                  _config('synthetic_lama.py'), data_dir)


@pytest.fixture(scope='module')
def lama_run(tmp_path_factory, data_dir):
  return _trained(tmp_path_factory.mktemp('lama_run'),
                  _config('synthetic_lama.py'), data_dir, g_only=True)


@pytest.fixture(scope='module')
def p2p_run(tmp_path_factory, data_dir):
  return _trained(tmp_path_factory.mktemp('p2p_run'),
                  _config('synthetic_pix2pix.py'), data_dir)


def _obj(cls, box=(0.1, 0.1, 0.5, 0.5)):
  return {'class': cls, 'box': list(box)}


MANY = {'objects': [_obj('ball')] * 12}
LAYOUT_ERRORS = [
    ('{"objects": [', 'not valid JSON: Expecting value at line 1 column 14'),
    ({'objs': []}, "got ['objs']"),
    ({'layouts': []}, 'no layouts given'),
    ({'objects': []}, 'layout 0 has no objects'),
    ([LAYOUT, {'objects': [{'class': 'car'}]}],
     "layout 1, object 0: missing key 'box'"),
    ({'objects': [{'box': [0, 0, 1, 1]}]}, "missing key 'class'"),
    ({'objects': [{**_obj('car'), 'colour': 1}]}, "unknown keys ['colour']"),
    ({'objects': [_obj('car'), _obj('cra')]},
     "layout 0, object 1: unknown class 'cra'; did you mean 'car'?"),
    ({'objects': [_obj(99)]}, 'class id 99 is out of range'),
    ({'objects': [_obj(-1)]}, 'class id -1 is out of range'),
    ({'objects': [_obj(0)]}, "class 0 ('__pad__') is the padding class"),
    ({'objects': [_obj('__pad__')]}, 'is the padding class'),
    ({'objects': [_obj(2.0)]}, 'must be a class name or an integer id'),
    ({'objects': [_obj('car', (0.1, 0.2, 0.3))]}, 'must be 4 numbers'),
    ({'objects': [_obj('car', ('a', 0, 1, 1))]}, 'must be 4 numbers'),
    ({'objects': [_obj('car', (0.1, 0.1, 1.5, 0.5))]},
     'x1=1.5 is outside [0, 1]'),
    ({'objects': [_obj('car', (0.1, -0.1, 0.5, 0.5))]}, 'y0=-0.1 is outside'),
    ({'objects': [_obj('car', (0.5, 0.1, 0.5, 0.6))]}, 'needs x0 < x1'),
    ({'objects': [_obj('car', (0.1, 0.7, 0.5, 0.6))]}, 'and y0 < y1'),
    (MANY, 'layout 0 has 12 objects; the model takes at most 11'),
]


@pytest.mark.parametrize('layout,message', LAYOUT_ERRORS)
def test_layout_errors(lama_dir, tmp_path, layout, message):
  path = tmp_path / 'layout.json'
  path.write_text(layout if isinstance(layout, str) else json.dumps(layout))
  out = tmp_path / 'out'
  with pytest.raises(generate.LayoutError) as e:
    generate.run(lama_dir, str(out), layouts=str(path))
  assert message in str(e.value)
  assert '\n' not in str(e.value)
  assert not out.exists()


def test_image_object_is_appended_not_given(tmp_path, data_dir):
  pp = ('decode', 'resize(64)', 'add_image_object', 'pad_objects(11)',
        'keep("image", "boxes", "classes", "objects_mask")')
  wd = _workdir(tmp_path / 'vg', _config('synthetic_lama.py'), data_dir, pp)
  meta = pipeline.load_meta(wd)
  spec = generate.model_spec(generate.load_config(wd), meta)
  assert spec.slots == 11 and spec.image_class == 0
  batch = generate.parse_layouts(LAYOUT, meta, spec)
  np.testing.assert_array_equal(batch['classes'][0, :5], [1, 10, 8, 0, 0])
  np.testing.assert_array_equal(batch['boxes'][0, 3], [0, 0, 1, 1])
  np.testing.assert_array_equal(batch['objects_mask'][0, :5],
                                [1, 1, 1, 1, 0])
  np.testing.assert_array_equal(batch['user_mask'][0, :5], [1, 1, 1, 0, 0])
  with pytest.raises(generate.LayoutError, match='image object, which is '
                     'appended'):
    generate.parse_layouts({'objects': [_obj(0)]}, meta, spec)
  with pytest.raises(generate.LayoutError, match=r'at most 10 \(11 slots'):
    generate.parse_layouts({'objects': [_obj('ball')] * 11}, meta, spec)


def test_model_and_input_errors(lama_dir, tmp_path, data_dir):
  out = str(tmp_path / 'out')
  png = tmp_path / 'map.png'
  Image.fromarray(np.ones((8, 8), np.uint8)).save(png)
  cases = [
      (dict(label_map=str(png)), generate.InputError,
       'generates from layouts: pass --layout'),
      (dict(layouts=LAYOUT), config_lib.ConfigError, 'no checkpoint in'),
      (dict(layouts=str(tmp_path / 'nope.json')), generate.LayoutError,
       'does not exist'),
      (dict(layouts=LAYOUT, num_samples=0), generate.InputError,
       'num_samples=0'),
  ]
  for kwargs, error, message in cases:
    with pytest.raises(error, match=message):
      generate.run(lama_dir, out, **kwargs)
  gt = _workdir(tmp_path / 'gt', _config('synthetic_lama.py', mask_source='gt'),
                data_dir)
  with pytest.raises(config_lib.ConfigError, match='ground-truth masks'):
    generate.run(gt, out, layouts=LAYOUT)
  with pytest.raises(config_lib.ConfigError, match='no config.json'):
    generate.run(str(tmp_path), out, layouts=LAYOUT)
  assert not os.path.exists(out)


def test_label_map_errors(tmp_path, data_dir):
  wd = _workdir(tmp_path / 'p2p', _config('synthetic_pix2pix.py'), data_dir)
  out = str(tmp_path / 'out')
  rgb, bad, txt = (tmp_path / n for n in ('rgb.png', 'bad.png', 'x.png'))
  Image.fromarray(np.full((8, 8, 3), (1, 2, 3), np.uint8)).save(rgb)
  Image.fromarray(np.full((8, 8), 300, np.uint16)).save(bad)   # 16-bit
  txt.write_text('not a png')
  for source, message in [
      (rgb, r"1 colour\(s\) that are not classes of the model's palette: "
       r'#010203 \(64 px\)'),
      (bad, r"class ids \[300\] outside the model's 0..11 \(64 pixels\)"),
      (txt, 'cannot read'), (tmp_path / 'none.png', 'does not exist')]:
    with pytest.raises(generate.LabelMapError, match=message):
      generate.run(wd, out, label_map=str(source))
  with pytest.raises(generate.InputError, match='pass --label_map'):
    generate.run(wd, out, layouts=LAYOUT)
  assert not os.path.exists(out)


def test_command_line_error_is_one_line(lama_dir, tmp_path):
  path = tmp_path / 'l.json'
  path.write_text(json.dumps({'objects': [_obj('cra')]}))
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': (
      os.environ['XLA_FLAGS'] + ' --xla_force_host_platform_device_count=1')}
  r = subprocess.run(
      [sys.executable, '-m', 'jaxl2i.generate', f'--workdir={lama_dir}',
       f'--layout={path}', f'--out={tmp_path / "out"}'], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300)
  assert r.returncode == 2, r.stderr[-3000:]
  assert ("error: layout 0, object 0: unknown class 'cra'; did you mean "
          "'car'?") in r.stderr
  assert 'Traceback' not in r.stderr
  assert not (tmp_path / 'out').exists()


def test_lama_layout(lama_run, tmp_path):
  model = generate.Model(lama_run)
  pics = model.pictures(layouts=LAYOUT, num_samples=2, seed=0,
                        with_masks=True)
  assert model.which == 'live' and model.step == 1     # LAMA keeps no EMA
  names = [f'layout000_{s}.png' for s in (
      'boxes', 'sample00', 'sample00_masks', 'sample00_raw_masks',
      'sample01', 'sample01_masks', 'sample01_raw_masks')]
  assert list(pics) == names
  for pic in pics.values():
    assert pic.shape == (64, 64, 3) and pic.dtype == np.uint8
  a, b = pics['layout000_sample00.png'], pics['layout000_sample01.png']
  assert np.abs(a.astype(int) - b).mean() > 0.5          # other latents
  again = model.pictures(layouts=LAYOUT, num_samples=2, seed=0,
                         with_masks=True)
  for name in names:
    np.testing.assert_array_equal(again[name], pics[name])
  other = model.pictures(layouts=LAYOUT, num_samples=2, seed=1,
                         with_masks=True)
  assert not np.array_equal(other['layout000_sample00.png'], a)

  # Masks: padded slots empty, each object's raw mask inside its box.
  batch = model.inputs(layouts=LAYOUT)
  _, adapted, raw = model.sample(batch, 0, 2, 0, with_masks=True)
  assert raw.shape == adapted.shape == (2, 11, 64, 64)
  assert not adapted[:, 3:].any() and not raw[:, 3:].any()
  for o, obj in enumerate(LAYOUT['objects']):
    x0, y0, x1, y1 = (np.array(obj['box']) * 64).round().astype(int)
    inside = np.zeros((64, 64), bool)
    inside[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True
    assert raw[:, o][:, inside].max() > 0.05
    assert np.abs(raw[:, o][:, ~inside]).max() < 1e-6

  paths = generate.write(pics, str(tmp_path / 'out'))
  assert sorted(os.listdir(tmp_path / 'out')) == sorted(names)
  for path in paths:
    np.testing.assert_array_equal(np.asarray(Image.open(path)),
                                  pics[os.path.basename(path)])
  for kwargs, message in [(dict(generator='ema'), 'no EMA generator'),
                          (dict(step=7), r'available: \[1\]')]:
    with pytest.raises(config_lib.ConfigError, match=message):
      generate.run(lama_run, str(tmp_path / 'out2'), layouts=LAYOUT,
                   **kwargs)
  assert not (tmp_path / 'out2').exists()


def test_pix2pix_label_map(p2p_run, tmp_path):
  label = np.zeros((48, 48), np.uint16)       # 16-bit, not the model's size
  label[:24], label[24:, :24], label[24:, 24:] = 1, 2, 10
  png = tmp_path / 'map.png'
  Image.fromarray(label).save(png)
  model = generate.Model(p2p_run)
  pics = model.pictures(label_map=str(png), num_samples=2)
  assert model.which == 'ema'          # the pix2pix config keeps an EMA
  assert list(pics) == ['labelmap_input.png', 'labelmap_sample00.png',
                        'labelmap_sample01.png']
  for pic in pics.values():
    assert pic.shape == (32, 32, 3) and pic.dtype == np.uint8
  assert pics['labelmap_sample00.png'].std() > 0
  expected = np.zeros((32, 32), np.int32)   # nearest: rows 0..15 from 0..23
  expected[:16], expected[16:, :16], expected[16:, 16:] = 1, 2, 10
  np.testing.assert_array_equal(pics['labelmap_input.png'],
                                visualize.colorize_labels(expected, 12))
  from_array = model.pictures(label_map=expected, num_samples=2)
  for name in pics:
    np.testing.assert_array_equal(from_array[name], pics[name])
