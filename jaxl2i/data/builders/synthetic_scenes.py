"""`synthetic_scenes`: procedurally rendered toy scenes, built with no download.

The embedded default dataset of jaxl2i: every field of the data contract
(DESIGN.md) for layout-to-image, label-to-image and depth-aware models, small
enough to build in seconds and to train on a laptop CPU. Rendering lives in
`scene_render.py` (numpy only); this module wraps it as a TFDS builder.

Examples are deterministic: example `i` of split `s` is rendered from
`np.random.default_rng([_SEED, split_id(s), i])`, so a rebuild gives the same
bytes and the splits never share an example.

Configs: `tiny` (32 px), `res64` / `res128` / `res256`, and `varied64`: the
layouts of res64 with every thing's colours drawn at random per instance.

Class vocabulary (one for `label` and `classes`): 0 = '__pad__' (never in a
label map), 1-5 stuff = sky, grass, water, wall, floor, 6-11 things = ball,
box, tree, house, car, person (`info.metadata['num_classes'] == 12`).

Objects: one entry per stuff region present (<= 3; box = the region's extent),
then 1-8 things, nearest first (box = the thing's full shape extent clipped to
the image, even where occluded), so at most 3 + 8 = 11 objects per example
(`info.metadata['max_objects']`). A layout (boxes + classes) alone determines
the scene's structure.

Stored features and how the pipeline's `decode` op reads them:
  image     uint8 [H,W,3] PNG.
  label     uint8 [H,W,1] PNG of class ids          -> int32 [H,W].
  instance  uint16 [H,W,1] PNG, ids 1..O: stuff region k (0-based) has id
            k+1, thing j of the object list has id n_stuff+j+1 (every pixel
            belongs to some object; no 0, no unlabeled pixels) -> int32 [H,W].
  depth     uint16 [H,W,1] PNG of round(disparity * 65535) -> float32 [H,W]
            in [0,1] (quantisation step 1.5e-5). Normalised disparity, LARGER
            = NEARER (0 = sky), the monodepth2 pseudo-depth convention of the
            depth-aware SPADE (reference/depth_spade.md).
  boxes     float32 [O,4] normalised (x0, y0, x1, y1), x0 < x1, y0 < y1.
  classes   ClassLabel sequence [O] (int64 on disk) -> int32.
  num_objects int32 scalar, == O.
"""
import io

import numpy as np
from PIL import Image as pil_image
import tensorflow_datasets as tfds

from jaxl2i.data.builders import scene_render

_SEED = 20240613  # fixed salt of the dataset; changing it changes every example
_SPLIT_ID = {'train': 0, 'validation': 1}
DEPTH_SCALE = 65535.0  # depth PNG value = round(disparity * DEPTH_SCALE)
DEPTH_CONVENTION = (
    'normalised disparity in [0,1], larger = nearer (0 = sky); stored as '
    'uint16 PNG of round(disparity * 65535)')


class SyntheticScenesConfig(tfds.core.BuilderConfig):
  """Resolution and split sizes of one synthetic_scenes variant."""

  def __init__(self, *, size: int, num_train: int, num_validation: int,
               varied: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.size = size
    self.varied = varied
    self.num_train = num_train
    self.num_validation = num_validation


def _cfg(name, size, num_train, num_validation, varied=False):
  colours = (' Thing colours drawn at random per instance (any hue), the '
             'layouts of res64.' if varied else '')
  return SyntheticScenesConfig(
      name=name, size=size, num_train=num_train,
      num_validation=num_validation, varied=varied,
      description=(f'{size}x{size} px, {num_train} train / '
                   f'{num_validation} validation scenes.{colours}'))


class SyntheticScenes(tfds.core.GeneratorBasedBuilder):
  """Procedural toy scenes with label, instance, depth maps and boxes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      _cfg('res64', 64, 5000, 500),
      _cfg('res128', 128, 5000, 500),
      _cfg('res256', 256, 5000, 500),
      _cfg('tiny', 32, 64, 16),
      _cfg('varied64', 64, 5000, 500, varied=True),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'res64'

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.size
    return self.dataset_info_from_configs(
        description=__doc__.split('\n\n')[0],
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(s, s, 3)),
            'label': tfds.features.Image(shape=(s, s, 1), dtype=np.uint8),
            'instance': tfds.features.Image(shape=(s, s, 1), dtype=np.uint16),
            'depth': tfds.features.Image(shape=(s, s, 1), dtype=np.uint16),
            'boxes': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            'classes': tfds.features.Sequence(
                tfds.features.ClassLabel(names=scene_render.CLASS_NAMES)),
            'num_objects': tfds.features.Tensor(shape=(), dtype=np.int32),
        }),
        supervised_keys=None,
        homepage='https://github.com/jaxl2i/jaxl2i',
        metadata=tfds.core.MetadataDict(
            num_classes=len(scene_render.CLASS_NAMES),
            stuff_classes=list(scene_render.STUFF_CLASSES),
            thing_classes=list(scene_render.THING_CLASSES),
            ignore_label=None,  # every pixel is labelled
            max_objects=scene_render.MAX_OBJECTS,
            depth_convention=DEPTH_CONVENTION,
            depth_scale=DEPTH_SCALE,
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # procedural: nothing to download
    cfg = self.builder_config
    return {
        'train': self._generate_examples('train', cfg.num_train),
        'validation': self._generate_examples('validation',
                                              cfg.num_validation),
    }

  def _generate_examples(self, split: str, num: int):
    cfg = self.builder_config
    for i in range(num):
      yield i, make_example(cfg.size, _SPLIT_ID[split], i, cfg.varied)


def _png(array: np.ndarray) -> bytes:
  """PNG bytes of a uint8 [H,W,3] / [H,W] or uint16 [H,W] array.

  PIL encodes ~5x faster than TFDS's per-image TF eager call; TFDS stores the
  bytes as they are and decodes them with tf.io.decode_png.
  """
  buf = io.BytesIO()
  pil_image.fromarray(array).save(buf, format='PNG', compress_level=1)
  return buf.getvalue()


def make_example(size: int, split_id: int, index: int,
                 varied: bool = False) -> dict[str, np.ndarray]:
  """The stored form of example `index` of a split (images as PNG bytes)."""
  rng = np.random.default_rng([_SEED, split_id, index])
  ex = scene_render.render_scene(rng, size, varied)
  depth = np.round(ex['depth'] * DEPTH_SCALE).astype(np.uint16)
  return {
      'image': _png(ex['image']),
      'label': _png(ex['label']),
      'instance': _png(ex['instance']),
      'depth': _png(depth),
      'boxes': ex['boxes'],
      'classes': ex['classes'],
      'num_objects': np.int32(len(ex['classes'])),
  }
