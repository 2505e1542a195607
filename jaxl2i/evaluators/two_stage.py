"""Two-stage evaluation of an unconditional label-map model (seg_gan).

  config.evals.two_stage = dict(type='two_stage', renderer='runs/p2p',
                                segmenter='synthetic', num_samples=500)

For every eval batch: sample label maps from noise (the batch only sets how
many), render them with the renderer run (a pix2pix/SPADE workdir of the
same vocabulary and size; `renderer_generator` ''/'ema'/'live'), and

* FID of the rendered images against the real images of the eval split
  (the paper's protocol, Table 1: the config's pp_eval is the 1024×1024
  crop shrunk to 256²), pytorch-fid's Inception as in the `fid` evaluator;
* structural consistency: pixel accuracy and mean IoU between each
  generated map and the segmentation of its rendering (paper §5: DeepLabv3
  segmentations of generated images). `segmenter`:
    'synthetic'    synthetic_scenes' renderer-fitted classifier
                   (jaxl2i/metrics/scene_segmenter.py);
    'pkg.mod:fn'   your function: uint8 [B,H,W,3] numpy images -> int
                   [B,H,W] class ids of the run's vocabulary
                   (dataset_meta.json), e.g. a DeepLabv3 wrapper for
                   Cityscapes labelIds;
  `consistency=False` skips it. The segmenter's own accuracy on the real
  (image, label) pairs is reported too: the score a perfect model reaches.
Renders run on the host's default device, on every host (the maps are
gathered first).
"""

from __future__ import annotations

import importlib

import jax
import numpy as np

from jaxl2i import generate
from jaxl2i import parallel
from jaxl2i.evaluators import common
from jaxl2i.metrics import fid as fid_lib
from jaxl2i.metrics import scene_segmenter


def load_segmenter(spec: str, size: int):
  """'synthetic' or 'module:function' -> (fn(images) -> ids, description)."""
  if spec == 'synthetic':
    seg = scene_segmenter.fit(size)
    return seg, (f'synthetic_scenes QDA segmenter (scene_segmenter.py), '
                 f'held-out pixel accuracy {seg.accuracy:.4f}')
  module, _, name = spec.partition(':')
  if not module or not name:
    raise ValueError(f"segmenter={spec!r}: use 'synthetic' or "
                     "'package.module:function'")
  try:
    fn = getattr(importlib.import_module(module), name)
  except (ImportError, AttributeError) as e:
    raise ValueError(f'segmenter {spec!r} cannot be imported: {e}') from e
  return fn, f'user segmenter {spec}'


class Evaluator(common.Base):
  """FID of rendered samples and their structural consistency."""

  def __init__(self, name, cfg, **kwargs):
    super().__init__(name, cfg, **kwargs)
    recipe, c = self.recipe, self.cfg
    if not recipe.unconditional or not hasattr(recipe, 'decode'):
      raise ValueError(f'the two_stage evaluator needs an unconditional '
                       f'label-map recipe, not {self.config.recipe!r}')
    if not c.renderer:
      raise ValueError('renderer is empty: set it to the workdir of a '
                       'pix2pix/SPADE run trained on the same dataset')
    self.renderer = generate.Model(c.renderer,
                                   generator=c.renderer_generator or None)
    self.size = int(self.config.model.resolution)
    self.renderer.check_renders(recipe.meta, (self.size,) * 2,
                                'this seg-GAN config')
    self.segment = self.segmenter_info = None
    if c.consistency:
      if not c.segmenter:
        raise ValueError(
            "consistency needs a segmenter: set segmenter='pkg.module:fn' "
            '(uint8 [B,H,W,3] images -> int [B,H,W] class ids of this '
            "dataset), 'synthetic' on synthetic_scenes, or consistency=False")
      self.segment, self.segmenter_info = load_segmenter(c.segmenter,
                                                         self.size)
    self.features = self.load_inception()
    self._sample = jax.jit(recipe.sample_noise, static_argnums=1)
    self._real = None   # (FeatureStats, segmenter confusion) once computed

  def _feats(self, images_u8: np.ndarray) -> np.ndarray:
    return parallel.to_host(self.features(images_u8))

  def _confusion(self, labels, images_u8, mask) -> np.ndarray:
    c = self.recipe.meta.num_classes
    pred = np.asarray(self.segment(images_u8))
    idx = c * np.asarray(labels, np.int64)[mask] + pred[mask]
    return np.bincount(idx.ravel(), minlength=c * c).reshape(c, c)

  def _real_pass(self, mask, batch, real, real_cm):
    images = parallel.to_host(batch['image'])
    real.update(self._feats(images), mask)
    if self.segment is not None:
      real_cm += self._confusion(parallel.to_host(batch['label']), images,
                                 mask)

  def run(self, state):
    gens = self.generators(state)
    nc = self.recipe.meta.num_classes
    real = None if self._real else fid_lib.FeatureStats(self.dims)
    real_cm = np.zeros((nc, nc), np.int64)
    fakes = {w: fid_lib.FeatureStats(self.dims) for w, _ in gens}
    cms = {w: np.zeros((nc, nc), np.int64) for w, _ in gens}
    for i, (mask, batch) in enumerate(self.batches()):
      if real is not None:
        self._real_pass(mask, batch, real, real_cm)
      n = len(mask)
      for which, variables in gens:
        labels = parallel.to_host(
            self._sample(variables, n, self.sample_key(i))['label'])
        images = common.to_uint8(self.renderer.render(
            labels, self.cfg.seed, first=i * n), self.cfg.uint8)
        images = np.asarray(images)
        fakes[which].update(self._feats(images), mask)
        if self.segment is not None:
          cms[which] += self._confusion(labels, images, mask)
    if real is not None:
      self._real = (real, real_cm)
    return self._metrics(fakes, cms), self._protocol(fakes)

  def _metrics(self, fakes, cms) -> dict[str, float]:
    real, real_cm = self._real
    out = {}
    for which, stats in fakes.items():
      out[f'{self.metric_name("fid")}/{which}'] = float(
          fid_lib.frechet_distance(stats.mu, stats.sigma, real.mu,
                                   real.sigma))
      if self.segment is not None:
        out[f'consistency/{which}'], out[f'consistency_miou/{which}'] = (
            _accuracy_miou(cms[which]))
    if self.segment is not None:
      out['segmenter_real_accuracy'] = _accuracy_miou(real_cm)[0]
    return out

  def _protocol(self, fakes):
    r = self.renderer
    return self.protocol(
        inception=self.inception_protocol(),
        num_generated=int(next(iter(fakes.values())).count) if fakes else 0,
        real_stats='computed from the eval split images',
        renderer=f'{r.workdir} ({r.config.recipe}, {r.which} generator of '
                 f'step {r.step}), each map rendered alone',
        segmenter=self.segmenter_info or 'none (consistency=False)',
        consistency='pixel accuracy and mean IoU (classes present in the '
                    'map or the segmentation) of generated map vs the '
                    'segmentation of its rendering')


def _accuracy_miou(cm: np.ndarray) -> tuple[float, float]:
  """Pixel accuracy and mean IoU over classes present, from a confusion
  matrix [target, predicted]."""
  tp = np.diag(cm).astype(np.float64)
  union = cm.sum(0) + cm.sum(1) - tp
  present = union > 0
  return (float(tp.sum() / max(cm.sum(), 1)),
          float(np.mean(tp[present] / union[present])) if present.any()
          else float('nan'))
