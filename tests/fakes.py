"""Deterministic fake batches and dataset metadata for trainer tests."""

import dataclasses

import numpy as np

NUM_CLASSES = 11


@dataclasses.dataclass(frozen=True)
class FakeMeta:
  """Quacks like jaxl2i.data.pipeline.DatasetMeta."""
  num_classes: int = NUM_CLASSES
  class_names: tuple = tuple(f'c{i}' for i in range(NUM_CLASSES))
  image_size: tuple = (32, 32)
  ignore_label: int | None = None
  max_objects: int = 4
  num_examples: dict = dataclasses.field(default_factory=dict)


def batch(batch_size=8, size=32, seed=0, max_objects=4):
  """A batch of the data contract: image correlated with label, boxes."""
  rng = np.random.default_rng(seed)
  label = np.zeros((batch_size, size, size), np.int32)
  instance = np.zeros((batch_size, size, size), np.int32)
  label[:, : size // 2] = 1
  label[:, size // 2:] = 2
  boxes = np.zeros((batch_size, max_objects, 4), np.float32)
  classes = np.zeros((batch_size, max_objects), np.int32)
  for b in range(batch_size):
    for o in range(max_objects - 1):
      x0, y0 = rng.uniform(0, 0.6, 2)
      w, h = rng.uniform(0.2, 0.4, 2)
      boxes[b, o] = (x0, y0, x0 + w, y0 + h)
      classes[b, o] = rng.integers(5, NUM_CLASSES)
      r0, r1 = int(y0 * size), int((y0 + h) * size)
      c0, c1 = int(x0 * size), int((x0 + w) * size)
      label[b, r0:r1, c0:c1] = classes[b, o]
      instance[b, r0:r1, c0:c1] = o + 1   # object slot o = instance id o+1
  colours = rng.integers(0, 256, (NUM_CLASSES, 3)).astype(np.uint8)
  image = colours[label]
  edges = np.zeros(instance.shape, bool)   # 4-neighbour instance changes
  dy = instance[:, 1:] != instance[:, :-1]
  dx = instance[:, :, 1:] != instance[:, :, :-1]
  edges[:, 1:] |= dy
  edges[:, :-1] |= dy
  edges[:, :, 1:] |= dx
  edges[:, :, :-1] |= dx
  depth = np.broadcast_to(np.linspace(0, 1, size, dtype=np.float32)[:, None],
                          label.shape).copy()
  depth[instance > 0] = 0.9
  return {
      'edges': edges.astype(np.float32),
      'depth': depth,
      'image': image,
      'label': label,
      'instance': instance,
      'boxes': boxes,
      'classes': classes,
      'objects_mask': classes > 0,
      'num_objects': (classes > 0).sum(-1).astype(np.int32),
  }
