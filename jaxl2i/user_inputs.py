"""User inputs for jaxl2i.generate: layout JSON and label-map PNG checks.

Everything a user hands to the generator is validated here, before any model
is loaded: each failure is one `InputError` line naming the layout, object
and value (the formats are documented in jaxl2i/generate.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from typing import Any

from absl import logging
from etils import epath
import numpy as np
from PIL import Image

from jaxl2i import config_lib
from jaxl2i.data import ops

LABEL_MAP_MODES = ('L', 'P', 'I;16', 'I;16B', 'I;16L', 'I')



class InputError(ValueError):
  """A user layout or label map the model cannot take (one line)."""


class LayoutError(InputError):
  """A layout JSON that is malformed or does not fit the model."""


class LabelMapError(InputError):
  """A label map PNG that is unreadable or does not fit the model."""


@dataclasses.dataclass(frozen=True)
class Spec:
  """What a model takes, read from its config and meta."""
  kind: str                  # 'layout' or 'label_map'
  size: tuple[int, int]      # (H, W) of the inputs it was evaluated at
  slots: int                 # object slots (layout models)
  image_class: int | None    # class of the appended __image__ object
  edges: bool = False        # label-map model also takes instance edges


def model_spec(config, meta) -> Spec:
  """Input kind, size and object slots of the run's model."""
  pp = [ops.parse(s) for s in config.data.pp_eval]
  names = [name for name, _, _ in pp]
  size = None
  for name, args, kw in pp:
    if name in ('resize', 'center_crop', 'random_crop'):
      h = args[0] if args else kw['size']
      w = args[1] if len(args) > 1 else kw.get('width') or h
      size = (int(h), int(w))
  if size is None and config.model.get('resolution'):
    size = (int(config.model.resolution),) * 2
  if size is None and None not in tuple(meta.image_size):
    size = tuple(int(s) for s in meta.image_size)
  slots = next((int((args or (kw['max_objects'],))[0])
                for name, args, kw in pp if name == 'pad_objects'),
               int(config.data.max_objects))
  image_class = next((int((args or (kw.get('class_id', 0),))[0])
                      for name, args, kw in pp if name == 'add_image_object'),
                     None)
  kind = 'layout' if 'pad_objects' in names else 'label_map'
  edges = 'instance_edges' in names
  if kind == 'label_map':
    keep = next((set(args) for name, args, _ in reversed(pp)
                 if name == 'keep'), set())
    # Inputs a label map (+ optional instance map) gives; the rest of `keep`
    # must be training targets (the image, or depth for a stage-1 model).
    targets = {'image'} | ({'depth'} if config.model.get('output') == 'depth'
                           else set())
    extra = sorted(keep - targets - {'label', 'label_onehot', 'edges'})
    if extra:
      raise config_lib.ConfigError(
          f'this model (recipe {config.recipe!r}) also needs {extra} from '
          'the dataset, which a label map alone does not give; generate '
          'from its dataset instead')
    if size is None:
      raise config_lib.ConfigError(
          'cannot tell the input size of this model: no resize/crop op in '
          'config.data.pp_eval and no fixed dataset image size')
  elif config.model.get('mask_source', 'generated') == 'gt':
    raise config_lib.ConfigError(
        "this model was trained on ground-truth masks (model.mask_source="
        "'gt'); it needs instance maps, not layouts")
  return Spec(kind, size, slots, image_class, edges)


# --- layouts ---------------------------------------------------------------


def read_layouts(source) -> Any:
  """A layout file (path) or an already parsed JSON value -> JSON value."""
  if not isinstance(source, (str, os.PathLike)):
    return source
  path = epath.Path(source)
  if not path.exists():
    raise LayoutError(f'layout file {source} does not exist')
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise LayoutError(f'{source} is not valid JSON: {e.msg} at line '
                      f'{e.lineno} column {e.colno}') from e


def _layout_list(value) -> list[Any]:
  if isinstance(value, list):
    layouts = value
  elif isinstance(value, dict) and set(value) == {'layouts'}:
    layouts = value['layouts']
    if not isinstance(layouts, list):
      raise LayoutError('"layouts" must be a list of {"objects": [...]}')
  elif isinstance(value, dict) and set(value) == {'objects'}:
    layouts = [value]
  else:
    got = sorted(value) if isinstance(value, dict) else type(value).__name__
    raise LayoutError('a layout file holds {"objects": [...]}, {"layouts": '
                      f'[...]}} or a list of layouts; got {got}')
  if not layouts:
    raise LayoutError('no layouts given')
  return layouts


def _class_id(value, meta, spec: Spec, where: str) -> int:
  names = meta.class_names
  if isinstance(value, str):
    lower = [n.lower() for n in names]
    if value.lower() not in lower:
      close = difflib.get_close_matches(value, names[1:], n=3, cutoff=0.6)
      hint = (f'; did you mean {" or ".join(map(repr, close))}?' if close
              else f'; known classes: {", ".join(names[1:21])}'
              + (' ...' if len(names) > 21 else ''))
      raise LayoutError(f'{where}: unknown class {value!r}{hint}')
    cid = lower.index(value.lower())
  elif isinstance(value, int) and not isinstance(value, bool):
    cid = value
    if not 0 <= cid < meta.num_classes:
      raise LayoutError(f'{where}: class id {cid} is out of range (the model '
                        f'knows ids 1..{meta.num_classes - 1})')
  else:
    raise LayoutError(f'{where}: "class" must be a class name or an integer '
                      f'id, got {value!r}')
  if spec.image_class is not None and cid == spec.image_class:
    raise LayoutError(f'{where}: {names[cid]!r} (id {cid}) is the image '
                      'object, which is appended to every layout '
                      'automatically: leave it out')
  if cid == 0:
    raise LayoutError(f'{where}: class 0 ({names[0]!r}) is the padding class, '
                      'not an object class')
  return cid


def _box(value, where: str) -> list[float]:
  if (not isinstance(value, list) or len(value) != 4 or
      not all(isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v) for v in value)):
    raise LayoutError(f'{where}: "box" must be 4 numbers [x0, y0, x1, y1], '
                      f'got {value!r}')
  for name, v in zip(('x0', 'y0', 'x1', 'y1'), value):
    if not 0.0 <= v <= 1.0:
      raise LayoutError(
          f'{where}: {name}={v} is outside [0, 1] (boxes are normalised: '
          'divide pixel coordinates by the image width/height)')
  x0, y0, x1, y1 = value
  if x0 >= x1 or y0 >= y1:
    raise LayoutError(f'{where}: box {value} needs x0 < x1 and y0 < y1 '
                      '([x0, y0, x1, y1], not [x, y, w, h])')
  return [float(v) for v in value]


def parse_layouts(value, meta, spec: Spec) -> dict[str, np.ndarray]:
  """Validated layouts -> batch: boxes [N,O,4] f32, classes [N,O] i32,
  objects_mask [N,O] bool, user_mask [N,O] bool (the user's objects)."""
  layouts = _layout_list(value)
  limit = spec.slots - (spec.image_class is not None)
  n, o = len(layouts), spec.slots
  batch = {'boxes': np.zeros((n, o, 4), np.float32),
           'classes': np.zeros((n, o), np.int32),
           'objects_mask': np.zeros((n, o), bool),
           'user_mask': np.zeros((n, o), bool)}
  for i, layout in enumerate(layouts):
    if not isinstance(layout, dict) or set(layout) != {'objects'}:
      got = sorted(layout) if isinstance(layout, dict) else repr(layout)
      raise LayoutError(f'layout {i}: expected {{"objects": [...]}}, got '
                        f'{got}')
    objects = layout['objects']
    if not isinstance(objects, list) or not objects:
      raise LayoutError(f'layout {i} has no objects ("objects" must be a '
                        'non-empty list)')
    if len(objects) > limit:
      why = (f'{spec.slots} slots, one for the __image__ object'
             if spec.image_class is not None else
             'config.data.max_objects')
      raise LayoutError(f'layout {i} has {len(objects)} objects; the model '
                        f'takes at most {limit} ({why})')
    for j, obj in enumerate(objects):
      where = f'layout {i}, object {j}'
      if not isinstance(obj, dict):
        raise LayoutError(f'{where}: expected {{"class": ..., "box": [...]}}, '
                          f'got {obj!r}')
      for key in ('class', 'box'):
        if key not in obj:
          raise LayoutError(f'{where}: missing key {key!r}')
      unknown = sorted(set(obj) - {'class', 'box'})
      if unknown:
        raise LayoutError(f'{where}: unknown keys {unknown} (an object has '
                          '"class" and "box")')
      batch['classes'][i, j] = _class_id(obj['class'], meta, spec, where)
      batch['boxes'][i, j] = _box(obj['box'], where)
    batch['objects_mask'][i, :len(objects)] = True
    batch['user_mask'][i, :len(objects)] = True
    if spec.image_class is not None:
      k = len(objects)
      batch['classes'][i, k] = spec.image_class
      batch['boxes'][i, k] = (0.0, 0.0, 1.0, 1.0)
      batch['objects_mask'][i, k] = True
  return batch


# --- label maps ------------------------------------------------------------


def _nearest(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """PyTorch's nearest rule src = floor(i·in/out), as the `resize` op."""
  idx = [np.minimum(np.arange(out) * n // out, n - 1)
         for out, n in zip(size, label.shape)]
  return label[idx[0]][:, idx[1]]


def _open_image(source, what: str, error=LabelMapError) -> Image.Image:
  """The image file `source`, read fully, or `error` naming `what`."""
  path = epath.Path(source)
  if not path.exists():
    raise error(f'{what} {source} does not exist')
  try:
    with path.open('rb') as f:
      img = Image.open(f)
      img.load()
  except (OSError, SyntaxError) as e:
    raise error(f'cannot read {source} as an image: {e}') from e
  return img


def read_label_map(source, meta, spec: Spec) -> np.ndarray:
  """A PNG path (or int array [H,W]) -> validated int32 [H,W] at spec.size."""
  if isinstance(source, (str, os.PathLike)):
    img = _open_image(source, 'label map')
    if img.mode in ('RGB', 'RGBA'):
      label = colours_to_ids(np.asarray(img.convert('RGB')), meta, source)
    elif img.mode not in LABEL_MAP_MODES:
      raise LabelMapError(
          f'{source} is a {img.mode} image: expected class ids (8-bit L or '
          'palette, or 16-bit) or colours of the palette (RGB)')
    else:
      label = np.asarray(img)
  else:
    label = np.asarray(source)
    if label.ndim != 2 or label.dtype.kind not in 'iu':
      raise LabelMapError(f'a label map array must be integer [H, W], got '
                          f'{label.dtype} {label.shape}')
  label = label.astype(np.int64)
  ok = (label >= 0) & (label < meta.num_classes)
  if meta.ignore_label is not None:
    ok |= label == meta.ignore_label
  if not ok.all():
    bad = np.unique(label[~ok])
    ignore = ('' if meta.ignore_label is None else
              f' or {meta.ignore_label} (ignore)')
    raise LabelMapError(
        f'label map has class ids {bad[:8].tolist()}'
        f'{" ..." if len(bad) > 8 else ""} outside the model\'s 0..'
        f'{meta.num_classes - 1}{ignore} ({int((~ok).sum())} pixels)')
  check_aspect(label.shape, spec.size,
               f'label map {source}' if isinstance(source, (str, os.PathLike))
               else 'label map')
  return _nearest(label, spec.size).astype(np.int32)


def check_aspect(shape, size: tuple[int, int], what: str) -> None:
  """Maps are resized to the model's size only without distortion."""
  h, w = shape[:2]
  if abs(h * size[1] - w * size[0]) > 0.01 * h * size[1]:
    raise LabelMapError(
        f'{what} is {h}x{w} (HxW) but the model takes {size[0]}x{size[1]}: '
        'give a map of that size or aspect ratio (it is resized, nearest)')
  if (h, w) != tuple(size):
    logging.info('%s resized (nearest) from %s to %s', what, (h, w), size)


def colours_to_ids(rgb: np.ndarray, meta, source) -> np.ndarray:
  """An RGB label map drawn in jaxl2i's palette -> class ids.

  The palette is `visualize.palette(num_classes)`: the colours of the
  `labelmap_input.png` files and image grids jaxl2i writes, so such a file
  can be edited and fed back.
  """
  from jaxl2i import visualize  # pylint: disable=g-import-not-at-top
  lut = visualize.palette(meta.num_classes).astype(np.int64)
  codes = (rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64)
           << 8 | rgb[..., 2])
  keys = lut[:, 0] << 16 | lut[:, 1] << 8 | lut[:, 2]
  order = np.argsort(keys, kind='stable')
  pos = np.clip(np.searchsorted(keys[order], codes), 0, len(keys) - 1)
  found = keys[order][pos] == codes
  if not found.all():
    bad, counts = np.unique(codes[~found], return_counts=True)
    shown = ', '.join(f'#{c:06x} ({n} px)' for c, n in
                      list(zip(bad, counts))[:5])
    raise LabelMapError(
        f'{source} has {len(bad)} colour(s) that are not classes of the '
        f"model's palette: {shown}{' ...' if len(bad) > 5 else ''}")
  return order[pos]


def read_instance_map(source, spec: Spec) -> np.ndarray:
  """An instance-id PNG (any integer mode) -> int32 [H,W] at spec.size."""
  img = _open_image(source, 'instance map')
  if img.mode not in LABEL_MAP_MODES:
    raise LabelMapError(f'{source} is a {img.mode} image: expected a '
                        'single-channel PNG of instance ids')
  inst = np.asarray(img).astype(np.int64)
  check_aspect(inst.shape, spec.size, f'instance map {source}')
  return _nearest(inst, spec.size).astype(np.int32)


def instance_edges(ids: np.ndarray) -> np.ndarray:
  """float32 [H,W]: 1 where an id differs from a 4-neighbour, as the
  `instance_edges` data op (both pixels of a differing pair)."""
  e = np.zeros(ids.shape, bool)
  dx = ids[:, 1:] != ids[:, :-1]
  dy = ids[1:] != ids[:-1]
  e[:, 1:] |= dx
  e[:, :-1] |= dx
  e[1:] |= dy
  e[:-1] |= dy
  return e.astype(np.float32)


def read_style(source, spec: Spec) -> np.ndarray:
  """A style image for SPADE's VAE encoder -> float32 [H,W,3] in [-1,1]."""
  img = _open_image(source, 'style image', InputError)
  img = img.convert('RGB').resize(spec.size[::-1], Image.BICUBIC)
  return np.asarray(img, np.float32) / 127.5 - 1.0


# --- the model -------------------------------------------------------------
