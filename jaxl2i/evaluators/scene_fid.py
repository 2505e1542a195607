"""SceneFID: FID over object crops (LAMA's protocol) against the eval split.

  config.evals.scene_fid = dict(type='scene_fid', every=5000, num_samples=2048)

Every valid object box of a real image and of the generated image of the same
layout is cropped and resized to 224×224 (jaxl2i.metrics.scene_fid, bicubic
as PIL, LAMA's ceil/floor box rounding), then both crop sets go through the
FID Inception and the Fréchet distance. pp_eval must keep `boxes` and produce
`objects_mask` (the `pad_objects(N)` op).
"""

from __future__ import annotations

from jaxl2i.evaluators import common
from jaxl2i.metrics import scene_fid as scene_fid_lib



class Evaluator(common.Base):
  """SceneFID of each generator."""

  def __init__(self, name, cfg, **kwargs):
    super().__init__(name, cfg, **kwargs)
    self.features = self.load_inception()

  def run(self, state):
    gens = self.generators(state)
    scores = {w: scene_fid_lib.SceneFID(self.features, dim=self.dims,
                                        size=self.cfg.crop_size)
              for w, _ in gens}
    first = next(iter(scores.values()))
    for s in scores.values():   # real crops are accumulated once, shared
      s.real = first.real
    for i, (_, batch) in enumerate(self.batches()):
      if 'objects_mask' not in batch:
        raise ValueError('scene_fid needs boxes and objects_mask in the eval '
                         "batches: add 'pad_objects(N)' to config.data.pp_eval")
      objects = batch['objects_mask'] & batch['_mask'][:, None]
      first.update_real(batch['image'], batch['boxes'], objects)
      for which, variables in gens:
        for images in self.fake_images(variables, batch, i):
          scores[which].update_fake(images, batch['boxes'], objects)
    metrics = {f'{self.metric_name("scene_fid")}/{w}': float(s.result())
               for w, s in scores.items()}
    crops = next(iter(scores.values())).real.count if scores else 0
    return metrics, self.protocol(
        inception=self.inception_protocol(),
        crop=f'{self.cfg.crop_size}x{self.cfg.crop_size} bicubic (PIL), '
             'LAMA box rounding', num_real_crops=int(crops))
