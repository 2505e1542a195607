"""Smoke tests of the entry point, as a user runs it."""

import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=600):
  return _python('-m', 'jaxl2i.main', *args, timeout=timeout)


def _python(*args, timeout=600):
  env = dict(os.environ)
  env['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=2'
  env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = 'true'
  env['JAXL2I_OFFLINE'] = '1'
  return subprocess.run([sys.executable, *args], cwd=ROOT,
                        env=env, capture_output=True, text=True,
                        timeout=timeout)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def test_train_writes_everything(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  common = ['--config=configs/synthetic_pix2pix.py:tiny', f'--workdir={workdir}',
            f'--config.data.data_dir={data_dir}']
  r = _run(*common)
  assert r.returncode == 0, r.stderr[-4000:]
  assert json.load(open(os.path.join(workdir, 'config.json')))['recipe'] == (
      'pix2pix')
  assert glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  assert sorted(os.listdir(os.path.join(workdir, 'images'))) == [
      'step_0000002.png', 'step_0000004.png']
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  assert 'steps_per_sec' in r.stderr or 'steps/s' in r.stderr, r.stderr[-3000:]
  # In-loop FID at the last step, loudly labelled: no Inception file cached.
  report = json.load(open(os.path.join(workdir, 'eval_4.json')))
  assert set(report['metrics']) == {'eval/fid/fid_dims64_RANDOM_WEIGHTS/ema'}
  assert 'RANDOM' in report['protocol']['fid']['WARNING']
  assert report['protocol']['fid']['num_samples'] == 8

  # Resuming (a rerun continues from the last checkpoint) is tested in
  # process, after a preemption: test_train_loop.py.

  # Evaluating a checkpoint: evaluate() runs in the colab test
  # (tests/test_colabs.py); --mode=eval only dispatches to it. Its error
  # (printed as one line by main, like the dataset error below):
  from jaxl2i import config_lib  # pylint: disable=g-import-not-at-top
  from jaxl2i import evaluate  # pylint: disable=g-import-not-at-top
  config = config_lib.load(
      os.path.join(ROOT, 'configs', 'synthetic_pix2pix.py'), 'tiny')
  with pytest.raises(config_lib.ConfigError, match='no checkpoint in'):
    evaluate.evaluate(config, str(tmp_path / 'empty'))


def test_missing_dataset_fails_clearly(tmp_path):
  r = _run('--config=configs/cityscapes_pix2pix.py:tiny',
           f'--workdir={tmp_path}')
  assert r.returncode == 2, r.stderr[-3000:]
  assert "dataset 'cityscapes_maps/fine' is not prepared" in r.stderr
  assert 'Traceback' not in r.stderr


def test_unknown_config_key_fails_clearly(tmp_path):
  r = _run('--config=configs/synthetic_pix2pix.py:tiny',
           f'--workdir={tmp_path}', '--config.batchsize=3')
  assert r.returncode != 0
  assert 'batchsize' in r.stderr
