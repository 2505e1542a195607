"""Evaluators run by the trainer (in the loop) and by jaxl2i.evaluate.

`config.evals` maps a name to an evaluator config whose `type` is a module of
this package (fid, scene_fid, diversity); see common.py for the shared keys.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import time
from typing import Any

from absl import logging
from etils import epath
import jax

from jaxl2i import config_lib

NOT_EVALUATORS = ('common',)


def available() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__)
                if m.name not in NOT_EVALUATORS)


def build(config, recipe, mesh, workdir: str) -> dict[str, Any]:
  """Instantiates every evaluator of config.evals (name -> Evaluator)."""
  out = {}
  for name, cfg in config.evals.items():
    kind = cfg.get('type')
    if kind not in available():
      raise config_lib.ConfigError(
          f'config.evals.{name}.type={kind!r} is not an evaluator; available: '
          f'{", ".join(available())}')
    module = importlib.import_module(f'jaxl2i.evaluators.{kind}')
    try:
      out[name] = module.Evaluator(name, cfg, config=config, recipe=recipe,
                                   mesh=mesh, workdir=workdir)
    except ValueError as e:
      raise config_lib.ConfigError(f'config.evals.{name}: {e}') from e
  return out


def run(evaluators: dict[str, Any], state, step: int) -> tuple[
    dict[str, float], dict[str, Any]]:
  """Runs evaluators -> ({'eval/<name>/<metric>': value}, {name: protocol})."""
  metrics, protocols = {}, {}
  for name, ev in evaluators.items():
    start = time.perf_counter()
    values, protocol = ev.run(state)
    protocol['seconds'] = round(time.perf_counter() - start, 1)
    protocols[name] = protocol
    metrics.update({f'eval/{name}/{k}': v for k, v in values.items()})
    logging.info('eval %s at step %d (%.0f s): %s', name, step,
                 protocol['seconds'], values)
  return metrics, protocols


def write_json(workdir: str, step: int, metrics: dict[str, float],
               protocols: dict[str, Any]) -> str:
  """workdir/eval_<step>.json with every number and how it was computed."""
  path = epath.Path(workdir) / f'eval_{step}.json'
  if jax.process_index() == 0:
    tmp = path.parent / (path.name + '.tmp')
    tmp.write_text(json.dumps(
        {'step': step, 'metrics': metrics, 'protocol': protocols}, indent=2,
        sort_keys=True, default=str))
    tmp.replace(path)
  return str(path)
