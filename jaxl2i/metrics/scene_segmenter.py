"""A segmenter for synthetic_scenes renderings (structural consistency).

The paper measures how well a rendered image keeps the structure of the
label map it was rendered from by segmenting the image (DeepLabv3 on
Cityscapes) and comparing. On the synthetic scenes the image renderer is
known (jaxl2i/data/builders/scene_render.py): every class has its own
colours, textures and image height (sky on top, ground below, things
standing on it). `SceneSegmenter` is a Gaussian classifier (quadratic
discriminant analysis) of per-pixel features — the pixel's colour, the
local mean colour at two scales, the local brightness deviation (texture)
and the row — fitted on scenes drawn by that renderer at the evaluation
size, so it needs no training run and no weights. Its own pixel accuracy
on fresh renderings is measured at fit time and reported with every score
(the ceiling a perfect two-stage model would reach).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from jaxl2i.data.builders import scene_render

MEAN_SIZES = (5, 13)     # box-filter sides of the local mean colours
TEXTURE_SIZE = 5         # box side of the local brightness deviation
RIDGE = 1e-4             # added to each class covariance's diagonal
FIT_SCENES = 200
HELD_OUT_SCENES = 50
FIT_SEED, HELD_OUT_SEED = 7301, 7302   # not the dataset's seeds


def pixel_features(images: np.ndarray) -> np.ndarray:
  """uint8 [B,H,W,3] -> float32 [B,H,W,11] per-pixel features."""
  x = np.asarray(images, np.float32) / 255.0
  b, h, w, _ = x.shape
  feats = [x]
  for s in MEAN_SIZES:
    feats.append(ndimage.uniform_filter(x, size=(1, s, s, 1), mode='reflect'))
  lum = x.mean(-1)
  box = lambda a: ndimage.uniform_filter(
      a, size=(1, TEXTURE_SIZE, TEXTURE_SIZE), mode='reflect')
  m = box(lum)
  feats.append(np.sqrt(np.maximum(box(lum * lum) - m * m, 0.0))[..., None])
  rows = (np.arange(h, dtype=np.float32) + 0.5) / h
  feats.append(np.broadcast_to(rows[None, :, None, None], (b, h, w, 1)))
  return np.concatenate(feats, axis=-1)


def render_scenes(size: int, num: int, seed: int):
  """(uint8 images [num,size,size,3], int32 labels [num,size,size])."""
  scenes = [scene_render.render_scene(np.random.default_rng([seed, i]), size)
            for i in range(num)]
  return (np.stack([s['image'] for s in scenes]),
          np.stack([s['label'] for s in scenes]).astype(np.int32))


class SceneSegmenter:
  """QDA on `pixel_features`: images uint8 [B,H,W,3] -> ids int32 [B,H,W].

  Attributes:
    accuracy: pixel accuracy on HELD_OUT_SCENES fresh renderings.
    classes: the class ids it can predict (those the renderer draws).
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    """Fits one Gaussian per class present in `labels` (int [B,H,W])."""
    x = pixel_features(images).reshape(-1, 11).astype(np.float64)
    y = np.asarray(labels).reshape(-1)
    self.classes = np.unique(y)
    self._mean, self._precision, self._offset = [], [], []
    for c in self.classes:
      xc = x[y == c]
      cov = np.cov(xc.T) + RIDGE * np.eye(x.shape[1])
      self._mean.append(xc.mean(0))
      self._precision.append(np.linalg.inv(cov))
      # log prior − ½ log det Σ
      self._offset.append(np.log(len(xc) / len(x)) -
                          0.5 * np.linalg.slogdet(cov)[1])
    self.accuracy = float('nan')

  def __call__(self, images: np.ndarray) -> np.ndarray:
    f = pixel_features(images)
    shape = f.shape[:-1]
    x = f.reshape(-1, f.shape[-1]).astype(np.float64)
    scores = np.empty((len(x), len(self.classes)))
    for i, (mu, prec, off) in enumerate(
        zip(self._mean, self._precision, self._offset)):
      d = x - mu
      scores[:, i] = off - 0.5 * np.sum((d @ prec) * d, axis=1)
    return self.classes[np.argmax(scores, -1)].reshape(shape).astype(np.int32)


@functools.lru_cache(maxsize=4)
def fit(size: int) -> SceneSegmenter:
  """A segmenter for `size`² renderings, with its held-out accuracy
  (deterministic; cached per size)."""
  seg = SceneSegmenter(*render_scenes(size, FIT_SCENES, FIT_SEED))
  images, labels = render_scenes(size, HELD_OUT_SCENES, HELD_OUT_SEED)
  seg.accuracy = float(np.mean(seg(images) == labels))
  return seg
