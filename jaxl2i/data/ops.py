"""Preprocessing ops on whole example dicts, registered by name.

An op string such as `'resize(286)'`, `'random_crop(256)'`, `'random_flip'`
or `'onehot(12, key="label")'` names a registered op factory and its
arguments (Python literals, positional and keyword, parsed with
`ast.literal_eval`). `get_op(spec)` returns a function mapping an example dict
of tf tensors to a new dict, meant to run inside `tf.data` `map`. Every op
moves all spatial fields together (`image`, `label`, `instance`, `depth`,
`edges`, `label_onehot`) plus `boxes`; fields an example lacks are passed
over.

Randomness: random ops read the per-example stateless seed `ex['_seed']`
(int64 [2], attached by the pipeline), split it, use one half and store the
other back, so chained random ops draw independent streams and results are
deterministic for a given seed. Keys starting with '_' are internal
(`_seed`, `_mask`).

Images stay uint8 ([H,W,3]); models normalise on the device.
"""
import ast
from typing import Any, Callable, Sequence

import tensorflow as tf

Example = dict[str, Any]
Op = Callable[[Example], Example]

_REGISTRY: dict[str, Callable[..., Op]] = {}
# Spatial [H,W] or [H,W,C] fields and how they are resampled.
_NEAREST_KEYS = ('label', 'instance', 'edges', 'label_onehot')
_SMOOTH_KEYS = ('image', 'depth')
_SPATIAL_KEYS = _SMOOTH_KEYS + _NEAREST_KEYS


def register(name: str):
  """Decorator registering an op factory `f(*args, **kwargs) -> Op`."""

  def deco(factory):
    if name in _REGISTRY:
      raise ValueError(f'data op {name!r} registered twice')
    _REGISTRY[name] = factory
    return factory

  return deco


def known_ops() -> list[str]:
  return sorted(_REGISTRY)


def parse(spec: str) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
  """'name(a, b, k=v)' -> ('name', (a, b), {'k': v}); 'name' -> no args."""
  try:
    node = ast.parse(spec.strip(), mode='eval').body
    if isinstance(node, ast.Name):
      return node.id, (), {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      args = tuple(ast.literal_eval(a) for a in node.args)
      kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
      return node.func.id, args, kwargs
  except (SyntaxError, ValueError) as e:
    raise ValueError(f'cannot parse data op {spec!r}: {e}') from e
  raise ValueError(f"cannot parse data op {spec!r}: expected 'name' or "
                   "'name(literal args)'")


def get_op(spec: str) -> Op:
  """Builds the op named by `spec`, e.g. 'resize(286)'."""
  name, args, kwargs = parse(spec)
  if name not in _REGISTRY:
    raise ValueError(f'unknown data op {name!r} in {spec!r}; known ops: '
                     f'{", ".join(known_ops())}')
  return _REGISTRY[name](*args, **kwargs)


def build(specs: Sequence[str]) -> Op:
  """Chains the ops of `specs` (a sequence of op strings) into one op."""
  ops = [get_op(s) for s in specs]

  def apply(ex: Example) -> Example:
    for op in ops:
      ex = op(ex)
    return ex

  return apply


def next_seed(ex: Example) -> tuple[Example, tf.Tensor]:
  """Splits ex['_seed'] -> (example with the fresh half stored, op seed)."""
  if '_seed' not in ex:
    raise KeyError("random data ops need a per-example stateless seed "
                   "ex['_seed'] (int64 [2]); the pipeline attaches it")
  seeds = tf.random.experimental.stateless_split(ex['_seed'], num=2)
  return {**ex, '_seed': seeds[0]}, seeds[1]


def _hw(ex: Example) -> tuple[tf.Tensor, tf.Tensor]:
  """Dynamic (H, W) of the first spatial field present."""
  for k in _SPATIAL_KEYS:
    if k in ex:
      s = tf.shape(ex[k])
      return s[0], s[1]
  raise KeyError(f'example has no spatial field (one of {_SPATIAL_KEYS})')


@register('decode')
def decode() -> Op:
  """Stored features -> contract dtypes.

  label/instance [H,W(,1)] uint -> int32 [H,W]; depth uint16 PNG [H,W,1] ->
  float32 [H,W] (value / 65535, synthetic_scenes' encoding) or float [H,W(,1)]
  -> float32 [H,W]; boxes -> float32; classes, num_objects -> int32.
  """

  def op(ex):
    ex = dict(ex)
    for k in ('label', 'instance'):
      if k in ex:
        v = ex[k]
        if v.shape.rank == 3:
          v = v[..., 0]
        ex[k] = tf.cast(v, tf.int32)
    if 'depth' in ex:
      d = ex['depth']
      if d.shape.rank == 3:
        d = d[..., 0]
      if d.dtype == tf.uint16:
        d = tf.cast(d, tf.float32) / 65535.0
      ex['depth'] = tf.cast(d, tf.float32)
    if 'boxes' in ex:
      ex['boxes'] = tf.cast(ex['boxes'], tf.float32)
    for k in ('classes', 'num_objects'):
      if k in ex:
        ex[k] = tf.cast(ex[k], tf.int32)
    return ex

  return op


def _floor_index(n_out: int, n_in: tf.Tensor) -> tf.Tensor:
  """PyTorch 'nearest' source indices floor(i * in / out), int32 [n_out]."""
  i = tf.range(n_out, dtype=tf.int64)
  idx = (i * tf.cast(n_in, tf.int64)) // n_out
  return tf.cast(tf.minimum(idx, tf.cast(n_in, tf.int64) - 1), tf.int32)


def _half_pixel_index(n_out: int, n_in: tf.Tensor) -> tf.Tensor:
  """MATLAB imresize 'nearest' source indices floor((i + ½) · in / out)
  (0-based; its 1-based rule round(i/s + ½(1 − 1/s)), s = out/in)."""
  i = tf.range(n_out, dtype=tf.int64)
  idx = ((2 * i + 1) * tf.cast(n_in, tf.int64)) // (2 * n_out)
  return tf.cast(tf.minimum(idx, tf.cast(n_in, tf.int64) - 1), tf.int32)


_NEAREST_RULES = {'floor': _floor_index, 'half_pixel': _half_pixel_index}


@register('resize')
def resize(size: int, width: int | None = None, method: str = 'bilinear',
           antialias: bool = False, nearest: str = 'floor') -> Op:
  """Resizes every map to (size, size), or (size, width) if width is given.

  image: `method` ('bilinear' default, or 'bicubic' as pix2pix's PyTorch
  port), half-pixel centres, antialias off (= torch `F.interpolate`,
  align_corners=False; TF's bicubic kernel uses a=-0.5 where torch uses
  -0.75), rounded back to uint8. With `antialias=True` a downscaling kernel
  is widened by the factor: 'bicubic' is then MATLAB's imresize default
  (Keys a=-0.5, antialiased; CRN's extract*.m) except within ~2 output
  pixels of the border, where MATLAB mirrors the image and TF renormalises
  the clipped kernel. label/instance/edges/label_onehot: nearest with
  `nearest='floor'`, PyTorch's rule src = floor(i * in / out)
  (tf.image.resize 'nearest' uses half-pixel centres and picks other
  pixels), or 'half_pixel', MATLAB imresize's floor((i + ½) · in / out).
  depth: bilinear. Boxes are normalised, hence unchanged.
  """
  h, w = size, size if width is None else width
  if nearest not in _NEAREST_RULES:
    raise ValueError(f'resize: nearest={nearest!r}, use one of '
                     f'{sorted(_NEAREST_RULES)}')
  index = _NEAREST_RULES[nearest]

  def op(ex):
    ex = dict(ex)
    in_h, in_w = _hw(ex)
    rows, cols = index(h, in_h), index(w, in_w)
    for k in _NEAREST_KEYS:
      if k in ex:
        ex[k] = tf.gather(tf.gather(ex[k], rows, axis=0), cols, axis=1)
    if 'image' in ex:
      img = tf.image.resize(tf.cast(ex['image'], tf.float32), (h, w),
                            method=method, antialias=antialias)
      ex['image'] = tf.cast(tf.clip_by_value(tf.round(img), 0, 255),
                            tf.uint8)
    if 'depth' in ex:
      d = tf.image.resize(ex['depth'][..., None], (h, w), method='bilinear',
                          antialias=False)
      ex['depth'] = d[..., 0]
    return ex

  return op


def _crop(ex: Example, top, left, ch: int, cw: int) -> Example:
  """Crops all maps to [top:top+ch, left:left+cw], re-normalises boxes."""
  ex = dict(ex)
  in_h, in_w = _hw(ex)
  for k in _SPATIAL_KEYS:
    if k in ex:
      ex[k] = ex[k][top:top + ch, left:left + cw]
  if 'boxes' in ex:
    fh, fw = tf.cast(in_h, tf.float32), tf.cast(in_w, tf.float32)
    b = ex['boxes']
    x0 = (b[:, 0] * fw - tf.cast(left, tf.float32)) / cw
    x1 = (b[:, 2] * fw - tf.cast(left, tf.float32)) / cw
    y0 = (b[:, 1] * fh - tf.cast(top, tf.float32)) / ch
    y1 = (b[:, 3] * fh - tf.cast(top, tf.float32)) / ch
    nb = tf.clip_by_value(tf.stack([x0, y0, x1, y1], axis=1), 0.0, 1.0)
    alive = (nb[:, 2] > nb[:, 0]) & (nb[:, 3] > nb[:, 1])
    ex['boxes'] = tf.where(alive[:, None], nb, tf.zeros_like(nb))
  return ex


def _crop_hw(size, width):
  return size, size if width is None else width


@register('random_crop')
def random_crop(size: int, width: int | None = None) -> Op:
  """Same random (size, width or size) window of every map.

  Boxes are re-normalised to the window and clipped to [0,1]; a box left with
  no area becomes all zeros but keeps its slot (class and count unchanged).
  """
  ch, cw = _crop_hw(size, width)

  def op(ex):
    ex, seed = next_seed(ex)
    in_h, in_w = _hw(ex)
    tf.debugging.assert_greater_equal(in_h, ch, 'random_crop: image too small')
    tf.debugging.assert_greater_equal(in_w, cw, 'random_crop: image too small')
    off = tf.random.stateless_uniform([2], seed, minval=0, maxval=2**31 - 1,
                                      dtype=tf.int32)
    top = off[0] % (in_h - ch + 1)
    left = off[1] % (in_w - cw + 1)
    return _crop(ex, top, left, ch, cw)

  return op


@register('center_crop')
def center_crop(size: int, width: int | None = None) -> Op:
  """Central (size, width or size) window; boxes as in `random_crop`."""
  ch, cw = _crop_hw(size, width)

  def op(ex):
    in_h, in_w = _hw(ex)
    return _crop(ex, (in_h - ch) // 2, (in_w - cw) // 2, ch, cw)

  return op


def _flip_boxes(b: tf.Tensor) -> tf.Tensor:
  """x0' = 1 - x1, x1' = 1 - x0; all-zero (empty/padded) boxes stay zero."""
  nb = tf.stack([1.0 - b[:, 2], b[:, 1], 1.0 - b[:, 0], b[:, 3]], axis=1)
  empty = tf.reduce_all(tf.equal(b, 0.0), axis=1, keepdims=True)
  return tf.where(empty, b, nb)


@register('flip')
def flip() -> Op:
  """Deterministic horizontal flip of every map and of the boxes."""

  def op(ex):
    ex = dict(ex)
    for k in _SPATIAL_KEYS:
      if k in ex:
        ex[k] = tf.reverse(ex[k], axis=[1])
    if 'boxes' in ex:
      ex['boxes'] = _flip_boxes(ex['boxes'])
    return ex

  return op


@register('random_flip')
def random_flip(prob: float = 0.5) -> Op:
  """Horizontal flip with probability `prob` of all maps and boxes together."""
  flip_op = flip()

  def op(ex):
    ex, seed = next_seed(ex)
    do = tf.random.stateless_uniform([], seed) < prob
    return tf.cond(do, lambda: flip_op(ex), lambda: dict(ex))

  return op


@register('onehot')
def onehot(num_classes: int, key: str = 'label',
           out: str = 'label_onehot') -> Op:
  """ex[out] = uint8 one-hot [H,W,num_classes] of ex[key].

  Ids outside [0, num_classes) (e.g. an ignore id 255 or -1) give all zeros.
  For big vocabularies (COCO-Stuff: 184 channels at 256 px) the host->device
  transfer is large; such configs may prefer one-hot on the device.
  """

  def op(ex):
    if key not in ex:
      return ex
    return {**ex, out: tf.one_hot(ex[key], num_classes, dtype=tf.uint8)}

  return op


@register('instance_edges')
def instance_edges(key: str = 'instance', out: str = 'edges') -> Op:
  """SPADE's edge map: uint8 [H,W], 1 where an instance id differs from a
  4-neighbour (both pixels of a differing pair are marked)."""

  def op(ex):
    if key not in ex:
      return ex
    t = ex[key]
    dx = tf.not_equal(t[:, 1:], t[:, :-1])  # [H, W-1]
    dy = tf.not_equal(t[1:, :], t[:-1, :])  # [H-1, W]
    f = tf.zeros_like(dx[:, :1])
    e = tf.concat([dx, f], 1) | tf.concat([f, dx], 1)
    g = tf.zeros_like(dy[:1, :])
    e = e | tf.concat([dy, g], 0) | tf.concat([g, dy], 0)
    return {**ex, out: tf.cast(e, tf.uint8)}

  return op


@register('pad_objects')
def pad_objects(max_objects: int) -> Op:
  """Pads/truncates boxes [O,4] and classes [O] to `max_objects` slots.

  Padded slots get class 0 and box 0; `objects_mask` bool [max_objects] is
  True for real objects; `num_objects` is clipped to max_objects. Truncation
  keeps the first objects in the builder's order (synthetic_scenes: stuff
  regions, then things nearest first).
  """

  def op(ex):
    ex = dict(ex)
    n = tf.shape(ex['classes'])[0]
    if 'num_objects' in ex:
      n = tf.minimum(n, tf.cast(ex['num_objects'], tf.int32))
    n = tf.minimum(n, max_objects)
    pad = max_objects - n
    c = tf.pad(ex['classes'][:n], [[0, pad]])
    ex['classes'] = tf.ensure_shape(c, [max_objects])
    if 'boxes' in ex:
      b = tf.pad(ex['boxes'][:n], [[0, pad], [0, 0]])
      ex['boxes'] = tf.ensure_shape(b, [max_objects, 4])
    ex['objects_mask'] = tf.range(max_objects) < n
    ex['num_objects'] = tf.cast(n, tf.int32)
    return ex

  return op


@register('keep')
def keep(*keys: str) -> Op:
  """Drops every field but `keys` (internal '_' keys are always kept)."""

  def op(ex):
    return {k: v for k, v in ex.items() if k in keys or k.startswith('_')}

  return op
