"""Helpers shared by the label-map builders (cityscapes_maps, ade20k_maps,
coco_stuff_maps): reading official map files, stored features, and the
DatasetUnavailableError messages naming missing files.

Stored features of every label-map builder (`ops.decode` turns them into the
data contract of DESIGN.md):
  image      the image file as unzipped (JPEG or PNG bytes; see
             coco_stuff_layout.PilExactImage) -> uint8 [H,W,3].
  label      uint8 [H,W,1] PNG of class ids in SPADE's convention
             -> int32 [H,W].
  instance   uint16 [H,W,1] PNG (datasets with instance maps) -> int32 [H,W].
  depth      uint16 [H,W,1] PNG (ade20k_maps/depth) -> float32 [H,W] in [0,1].
  file_name  the image file's base name (text).
"""
import io
import os
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image as pil_image
import tensorflow_datasets as tfds

from jaxl2i.data.builders import coco_stuff_layout
from jaxl2i.data.errors import DatasetUnavailableError

# Re-exported: the same image handling as coco_stuff_layout.
PilExactImage = coco_stuff_layout.PilExactImage
manual_dir_of = coco_stuff_layout.manual_dir_of
read_image = coco_stuff_layout.read_image

MAX_LISTED = 5  # missing files named in a message beyond the required ones


def png(array: np.ndarray) -> bytes:
  """PNG bytes of a uint8 or uint16 [H,W] array (1 channel)."""
  buf = io.BytesIO()
  pil_image.fromarray(array).save(buf, format='PNG', compress_level=1)
  return buf.getvalue()


def read_map(path: str) -> np.ndarray:
  """int64 [H,W] of a 1-channel PNG (8-bit, 16-bit or 32-bit 'I' mode).

  Raises:
    ValueError: the file is not a single-channel map.
  """
  with pil_image.open(path) as im:
    if im.mode not in ('L', 'P', 'I', 'I;16', 'I;16B', 'I;16L'):
      raise ValueError(f'{path}: expected a 1-channel label/instance PNG, '
                       f'got PIL mode {im.mode}')
    arr = np.asarray(im)
  if arr.ndim != 2:
    raise ValueError(f'{path}: expected a [H,W] map, got shape {arr.shape}')
  return arr.astype(np.int64)


def check_range(arr: np.ndarray, allowed_max: int, path: str,
                extra: Sequence[int] = ()) -> None:
  """ValueError unless every value is in [0, allowed_max] or in `extra`."""
  bad = (arr < 0) | (arr > allowed_max)
  for v in extra:
    bad &= arr != v
  if bad.any():
    vals = sorted(set(np.unique(arr[bad]).tolist()))[:10]
    raise ValueError(f'{path}: values {vals} outside 0..{allowed_max}'
                     + (f' and {list(extra)}' if extra else ''))


def image_size(path: str) -> tuple[int, int]:
  """(H, W) of an image file, from its header."""
  with pil_image.open(path) as im:
    w, h = im.size
  return h, w


def check_same_size(paths: Sequence[str]) -> tuple[int, int]:
  """(H, W) shared by the files in `paths`; ValueError if they differ."""
  sizes = [image_size(p) for p in paths]
  if len(set(sizes)) != 1:
    raise ValueError('sizes differ: ' + ', '.join(
        f'{p} is {w}x{h}' for p, (h, w) in zip(paths, sizes)))
  return sizes[0]


def missing_required(manual_dir: str | None,
                     required: Mapping[str, str]) -> list[str]:
  """Entries of `required` (rel path -> source) absent from manual_dir.

  Entries ending in '/' are folders, absent when missing or empty.
  """
  return coco_stuff_layout.missing_files(manual_dir, list(required))


def where(manual_dir: str | None) -> str:
  return os.path.abspath(manual_dir) if manual_dir else '<manual_dir>'


def required_message(name: str, manual_dir: str | None,
                     missing: Iterable[str], required: Mapping[str, str],
                     how: str = '') -> str:
  """One line per missing entry with its source, then what to do."""
  lines = [f'{name}: files missing from the manual directory '
           f'{where(manual_dir)}:']
  for rel in missing:
    kind = ' (folder)' if rel.endswith('/') else ''
    lines.append(f'  - {rel}{kind}: from {required[rel]}')
  if how:
    lines.append(how.format(where=where(manual_dir)))
  return '\n'.join(lines)


def check_required(name: str, manual_dir: str | None,
                   required: Mapping[str, str], how: str) -> None:
  """Raises DatasetUnavailableError naming each missing required entry."""
  missing = missing_required(manual_dir, required)
  if missing:
    raise DatasetUnavailableError(
        required_message(name, manual_dir, missing, required, how))


def missing_list_error(name: str, what: str, paths: Sequence[str],
                       how: str) -> DatasetUnavailableError:
  """Error for per-example files: count, the first MAX_LISTED, what to do."""
  lines = [f'{name}: {len(paths)} missing {what}; the first '
           f'{min(len(paths), MAX_LISTED)}:']
  lines += [f'  - {p}' for p in paths[:MAX_LISTED]]
  lines.append(how)
  return DatasetUnavailableError('\n'.join(lines))


def features(*, instance: bool = False, depth: bool = False
             ) -> tfds.features.FeaturesDict:
  """The stored features (module docstring), sizes left free."""
  feats = {
      'image': PilExactImage(shape=(None, None, 3)),
      'label': tfds.features.Image(shape=(None, None, 1), dtype=np.uint8),
      'file_name': tfds.features.Text(),
  }
  if instance:
    feats['instance'] = tfds.features.Image(shape=(None, None, 1),
                                            dtype=np.uint16)
  if depth:
    feats['depth'] = tfds.features.Image(shape=(None, None, 1),
                                         dtype=np.uint16)
  return tfds.features.FeaturesDict(feats)


def metadata(*, class_names: Sequence[str], ignore_label: int | None,
             image_size_hw: tuple[int, int] | None, **extra
             ) -> tfds.core.MetadataDict:
  """info.metadata of a label-map dataset (no object lists: max_objects 0)."""
  return tfds.core.MetadataDict(
      num_classes=len(class_names), class_names=list(class_names),
      ignore_label=ignore_label, image_size=image_size_hw, max_objects=0,
      **extra)
