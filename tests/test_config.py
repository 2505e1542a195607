"""Configs: variant parsing, every config builds, clear errors."""

import glob
import json
import os

import jax
import pytest

from jaxl2i import config_lib

import fakes

CONFIGS = sorted(glob.glob(os.path.join(
    os.path.dirname(os.path.dirname(__file__)), 'configs', '*.py')))


def test_parse_arg_types():
  opts = config_lib.parse_arg('tiny,res=128', tiny=False, res=64, name='x')
  assert opts.tiny is True and opts.res == 128 and opts.name == 'x'
  assert config_lib.parse_arg(None, tiny=False).tiny is False


@pytest.mark.parametrize('arg,match', [
    ('rez=128', "unknown config option 'rez'"),
    ('res=abc', 'not a literal'),
    ('res', 'needs a value'),
    ('tiny=3', 'True/False'),
])
def test_parse_arg_errors(arg, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.parse_arg(arg, tiny=False, res=64)


def test_locked_config_rejects_unknown_keys():
  c = config_lib.base_config()
  c.lock()
  with pytest.raises(AttributeError):
    c.batchsize = 3
  with pytest.raises(TypeError):
    c.batch_size = 'eight'


@pytest.mark.parametrize('field,value,match', [
    ('batch_size', 12, 'not divisible by the 8 devices'),
    ('dtype', 'float16', 'config.dtype'),
    ('total_steps', 0, 'must be positive'),
])
def test_validate_errors(field, value, match):
  c = config_lib.load(os.path.join(os.path.dirname(CONFIGS[0]),
                                  'synthetic_pix2pix.py'), 'tiny')
  c[field] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(c, num_devices=8)


def test_write_json(tmp_path):
  c = config_lib.base_config()
  path = config_lib.write_json(c, str(tmp_path))
  assert json.load(open(path))['batch_size'] == c.batch_size


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize('arg', [None, 'tiny'])
def test_every_config_builds_and_initialises(path, arg):
  """get_config() and :tiny build, and the state initialises (eval_shape)."""
  from jaxl2i import state as state_lib
  from jaxl2i.recipes import base
  c = config_lib.load(path, arg)
  c.lock()
  recipe = base.get_recipe(c, fakes.FakeMeta())
  tx_g, _ = state_lib.make_optimizer(c, 'g')
  tx_d, _ = state_lib.make_optimizer(c, 'd')
  size = c.model.get('resolution') or (
      2 ** c.model.get('num_downs', 5) if arg is None else 32)
  if c.recipe == 'spade':   # the latent grid needs H divisible by 2^num_up
    from jaxl2i.models import spade  # pylint: disable=g-import-not-at-top
    size = 2 ** spade.NUM_UP[c.model.num_upsampling_layers]
  b = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                   fakes.batch(batch_size=1, size=size))
  s = jax.eval_shape(lambda k, b: state_lib.init_state(
      k, recipe, b, tx_g, tx_d, c.ema.decay), jax.random.key(0), b)
  assert state_lib.count_params(s.g.params) > 0


def test_load_missing_file():
  with pytest.raises(config_lib.ConfigError, match='no config file'):
    config_lib.load('configs/does_not_exist.py')
