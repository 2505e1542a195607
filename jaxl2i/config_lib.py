"""Configuration helpers shared by every experiment file in `configs/`.

An experiment file defines `get_config(arg=None)` and returns a ConfigDict built
on `base_config()`. The optional `arg` is the text after the colon of
`--config=configs/x.py:tiny,res=128`; `parse_arg` turns it into typed options.

`main.py` locks the config (`lock_config=True`), so a misspelled key on the
command line fails at once, and `validate` turns bad values into one clear
`ConfigError` line.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from typing import Any

from etils import epath
import ml_collections

DTYPES = ('float32', 'bfloat16')
SCHEDULES = ('constant', 'linear_decay', 'step')


class ConfigError(ValueError):
  """A config that cannot run; the message is one line saying what to fix."""


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses 'tiny,res=128' into ConfigDict(tiny=True, res=128).

  Every option must be declared in `defaults`, and its value is converted to
  the type of its default, so `configs/x.py:rez=128` fails instead of being
  ignored.

  Args:
    arg: the variant string (may be None or empty).
    **defaults: option name -> default value (bool flags default to False).

  Returns:
    ConfigDict with every option of `defaults`.
  """
  opts = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    name, eq, value = item.partition('=')
    name = name.strip()
    if name not in defaults:
      raise ConfigError(
          f'unknown config option {name!r} in {arg!r}; known options: '
          f'{", ".join(sorted(defaults)) or "none"}')
    default = defaults[name]
    if not eq:
      if not isinstance(default, bool):
        raise ConfigError(f'config option {name!r} needs a value ({name}=...)')
      opts[name] = True
      continue
    opts[name] = _convert(name, value.strip(), default)
  return ml_collections.ConfigDict(opts)


def _convert(name: str, text: str, default: Any) -> Any:
  if isinstance(default, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise ConfigError(f'config option {name}={text!r} is not a literal') from e
  if isinstance(default, bool) and not isinstance(value, bool):
    raise ConfigError(f'config option {name} takes True/False, got {text!r}')
  if (isinstance(default, (int, float)) and not isinstance(default, bool)
      and not isinstance(value, (int, float))):
    raise ConfigError(f'config option {name} takes a number, got {text!r}')
  return type(default)(value) if isinstance(default, (int, float)) else value


def load_module(path: str, sibling: str | None = None):
  """Imports a config file (or `sibling`, a file beside `path`) by path.

  configs/ is not a package, so experiment files share settings this way:
  `_lama = config_lib.load_module(__file__, 'synthetic_lama.py')`.
  """
  if sibling:
    path = os.path.join(os.path.dirname(os.path.abspath(path)), sibling)
  spec = importlib.util.spec_from_file_location(
      'jaxl2i_config_' + os.path.basename(path)[:-3], path)
  if spec is None or not os.path.exists(path):
    raise ConfigError(f'no config file {path}')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """get_config(arg) of a config file, as --config=path:arg does."""
  return load_module(path).get_config(arg)


def base_config() -> ml_collections.ConfigDict:
  """The trainer's keys with their defaults; experiment files override them."""
  c = ml_collections.ConfigDict()
  c.recipe = ''              # module name in jaxl2i/recipes/
  c.seed = 0
  c.dtype = 'float32'        # compute dtype; params/optimizer/EMA stay fp32
  c.batch_size = 8           # global batch over all devices and hosts
  c.total_steps = 1000
  # > 0: the run length in epochs instead; the trainer sets total_steps to
  # total_epochs · steps_per_epoch once the dataset size is known, where
  # steps_per_epoch = ⌊num_train · data.epoch_multiplier / batch_size⌋.
  c.total_epochs = 0.0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic_scenes/res64'
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.manual_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  c.data.pp_train = ('decode',)
  c.data.pp_eval = ('decode',)
  c.data.shuffle_buffer = 1000
  c.data.max_objects = 8
  # Examples per epoch = multiplier · split size (LAMA's loaders count the
  # mirrored copy of every image: an epoch is 2 passes of random flips).
  c.data.epoch_multiplier = 1

  c.model = ml_collections.ConfigDict()   # the recipe's modules
  c.loss = ml_collections.ConfigDict()    # the recipe's loss weights

  # Optimizers. `lr` is the peak rate; `schedule` is shared by G and D.
  c.optim = ml_collections.ConfigDict()
  c.optim.g = ml_collections.ConfigDict(
      dict(lr=2e-4, b1=0.5, b2=0.999, eps=1e-8, groups=()))
  c.optim.d = ml_collections.ConfigDict(
      dict(lr=2e-4, b1=0.5, b2=0.999, eps=1e-8, groups=()))
  # 'constant'; 'linear_decay': constant until `decay_start` steps then
  # linear to `decay_to` times the peak at `total_steps`; 'step': ×
  # `decay_factor` at each epoch of `decay_epochs` (PyTorch MultiStepLR).
  c.optim.schedule = 'constant'
  c.optim.decay_start = 0
  c.optim.decay_start_epoch = 0.0   # > 0: decay_start in epochs (resolved)
  c.optim.decay_to = 0.0
  c.optim.decay_epochs = ()
  c.optim.decay_factor = 0.1
  # The first `d_only_steps` iterations of every epoch update only D
  # (LAMA/LostGAN train.py: G is stepped only when idx > 30).
  c.optim.d_only_steps = 0
  # Recipes with n_critic > 1: compile the critic updates' lax.scan unrolled
  # (much faster on XLA:CPU; False: one loop body, quicker to compile).
  c.optim.unroll_critic = True

  c.ema = ml_collections.ConfigDict(dict(decay=0.999, start=0))  # decay 0: off

  # A fresh run (not a resume) starts from the G parameters of another run's
  # checkpoint: every parameter whose '/'-joined path does not match the
  # regex `exclude` is copied (same path and shape required); excluded ones
  # keep their initialisation; optimizer state and step start fresh
  # (checkpointing.init_from). CRN's progressive fine-tuning: 512p from 256p
  # except '^g_512'. generator: 'live' or 'ema' weights; step 0: the latest.
  c.init_from = ml_collections.ConfigDict(
      dict(workdir='', exclude='', generator='live', step=0))

  c.log_every = 50
  c.image_every = 500
  c.ckpt_every = 1000
  c.keep_ckpts = 3
  c.num_grid_samples = 8
  c.evals = ml_collections.ConfigDict()
  return c


# Evaluators (jaxl2i/evaluators/<type>.py): keys every evaluator takes, and
# each type's own. `evaluator()` fills them in so the whole entry lives in the
# config and any key can be overridden on the command line.
EVAL_DEFAULTS = dict(
    every=1000,                  # steps between runs in the training loop
    at_end=True,                 # also run after the last training step
    num_samples=5000,            # examples of the eval split (0: all)
    batch_size=0,                # global eval batch; 0: config.batch_size
    generators=('ema', 'live'),  # which G weights ('ema' skipped if no EMA)
    allow_random_weights=False,  # random Inception/AlexNet when offline
    download_weights=True,       # try to download missing weight files
    seed=0,
    samples_per_input=1,         # generated samples per eval input (LAMA: 5)
    uint8='round',               # 'round' or 'truncate' (LAMA's test.py)
)
EVAL_TYPE_DEFAULTS = {
    # dims: Inception features (pytorch-fid --dims 64|192|768|2048); only
    # 2048 (pool3) gives FIDs comparable with published ones. The tiny
    # configs use 64 (cheap smoke tests).
    'fid': dict(reference_stats='', kid=True, kid_subset_size=1000,
                kid_subsets=100, dims=2048),
    'scene_fid': dict(crop_size=224, dims=2048),   # LAMA's crop size
    'diversity': {},
    'mask_entropy': {},
    # Layout2Im: |Δ image| in / outside an object's box when only its z is
    # redrawn (`draws` times), over objects covering <= max_area.
    'object_z': dict(draws=4, max_area=0.25),
    # LAMA Sec. 3: FID / SceneFID / entropy with masks (1−τ)·M + τ/m.
    'tainted_mask': dict(taus=(0.0, 0.02, 0.05, 0.1, 0.2), mask_source='gt',
                         scene_fid=True, crop_size=224, dims=2048),
    # seg_gan: FID of label maps rendered by a pix2pix/SPADE run (renderer:
    # its workdir) and consistency of each map with the segmentation of its
    # rendering (segmenter: 'synthetic' or 'package.module:function').
    'two_stage': dict(renderer='', renderer_generator='', segmenter='',
                      consistency=True, dims=2048),
}


def evaluator(type: str, **overrides: Any) -> ml_collections.ConfigDict:  # pylint: disable=redefined-builtin
  """A complete config.evals entry of `type`; unknown keys fail."""
  if type not in EVAL_TYPE_DEFAULTS:
    raise ConfigError(f'evaluator type {type!r}; known: '
                      f'{", ".join(sorted(EVAL_TYPE_DEFAULTS))}')
  known = {**EVAL_DEFAULTS, **EVAL_TYPE_DEFAULTS[type]}
  unknown = set(overrides) - set(known)
  if unknown:
    raise ConfigError(f'unknown keys {sorted(unknown)} for a {type!r} '
                      f'evaluator; known: {", ".join(sorted(known))}')
  return ml_collections.ConfigDict({'type': type, **known, **overrides})


def smoke_run(config: ml_collections.ConfigDict, steps: int) -> None:
  """The run of a `:tiny` smoke variant: `steps` steps (no epoch count),
  logs, grids and checkpoints every 2 steps, a 16-example shuffle buffer and
  the evaluators at the last step (`shrink_evals`)."""
  config.total_steps = steps
  config.total_epochs = 0
  config.log_every = config.image_every = config.ckpt_every = 2
  config.data.shuffle_buffer = 16
  shrink_evals(config, every=steps)


def shrink_evals(config: ml_collections.ConfigDict, every: int,
                 num_samples: int = 8) -> None:
  """Evaluators of a `:tiny` smoke variant: a few samples, one batch, and
  64-d Inception features (labelled fid_dims64...), whose network is a
  fraction of the full one to compile and whose sqrtm is instant."""
  for e in config.evals.values():
    e.num_samples = e.batch_size = num_samples
    e.every = every
    if 'dims' in e:
      e.dims = 64


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError (one line) when the config cannot run."""
  if not config.recipe:
    raise ConfigError('config.recipe is empty: name a file of jaxl2i/recipes/')
  if config.dtype not in DTYPES:
    raise ConfigError(f'config.dtype={config.dtype!r}: use one of {DTYPES}')
  for key in ('batch_size', 'total_steps', 'log_every', 'image_every',
              'ckpt_every'):
    if int(config[key]) <= 0:
      raise ConfigError(f'config.{key}={config[key]} must be positive')
  if config.batch_size % num_devices:
    raise ConfigError(
        f'config.batch_size={config.batch_size} is not divisible by the '
        f'{num_devices} devices; use a multiple of {num_devices}')
  if not 0.0 <= config.ema.decay < 1.0:
    raise ConfigError(f'config.ema.decay={config.ema.decay} must be in [0, 1)')
  if config.optim.schedule not in SCHEDULES:
    raise ConfigError(f'config.optim.schedule={config.optim.schedule!r}: use '
                      f'one of {SCHEDULES}')
  if config.optim.schedule == 'step' and not config.optim.decay_epochs:
    raise ConfigError("config.optim.schedule='step' needs "
                      'config.optim.decay_epochs, e.g. (120, 160)')
  if config.total_epochs < 0 or config.optim.d_only_steps < 0:
    raise ConfigError('config.total_epochs and config.optim.d_only_steps '
                      'must be >= 0')
  for net in ('g', 'd'):
    if config.optim[net].lr < 0:
      raise ConfigError(f'config.optim.{net}.lr must be >= 0')


def resolve_epochs(config: ml_collections.ConfigDict,
                   num_train_examples: int) -> int:
  """Returns steps_per_epoch; sets total_steps from total_epochs if > 0.

  steps_per_epoch = ⌊num_train · data.epoch_multiplier / batch_size⌋ (at
  least 1), PyTorch's DataLoader with drop_last. Also converts
  optim.decay_start_epoch to optim.decay_start. Writes into `config` (a
  locked ConfigDict accepts new values of existing keys), so config.json
  records the step count the run uses.
  """
  steps_per_epoch = epoch_steps(config, num_train_examples)
  if config.total_epochs > 0:
    config.total_steps = max(1, round(config.total_epochs * steps_per_epoch))
  if config.optim.get('decay_start_epoch', 0) > 0:
    config.optim.decay_start = round(config.optim.decay_start_epoch *
                                     steps_per_epoch)
  return steps_per_epoch


def epoch_steps(config: ml_collections.ConfigDict,
                num_train_examples: int) -> int:
  """⌊num_train · data.epoch_multiplier / batch_size⌋, at least 1."""
  n = num_train_examples * config.data.epoch_multiplier
  return max(1, n // config.batch_size)


def _tuples(x):
  """JSON lists back to the tuples configs use."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def read_json(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config of a run, from `workdir/config.json`."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    raise ConfigError(
        f'no config.json in {workdir}: not a training workdir (the trainer '
        'writes it at the start of a run)')
  return ml_collections.ConfigDict(_tuples(json.loads(path.read_text())))


def write_json(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the resolved config to `workdir/config.json` (local or gs://)."""
  path = epath.Path(workdir) / 'config.json'
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / 'config.json.tmp'
  tmp.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True,
                            default=repr))
  tmp.replace(path)
  return str(path)
