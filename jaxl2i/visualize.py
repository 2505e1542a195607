"""Pictures for humans: colourised label maps, drawn layouts, image grids."""

from __future__ import annotations

import io
from typing import Sequence

from etils import epath
import numpy as np
from PIL import Image


def palette(num_classes: int) -> np.ndarray:
  """A fixed colour per class id: uint8 [num_classes, 3]; class 0 is black.

  Colours come from the bit-interleaving scheme of the PASCAL VOC palette, so
  neighbouring ids get clearly different colours.
  """
  colours = np.zeros((num_classes, 3), np.uint8)
  for i in range(num_classes):
    c, r, g, b = i, 0, 0, 0
    for shift in range(7, -1, -1):
      r |= ((c >> 0) & 1) << shift
      g |= ((c >> 1) & 1) << shift
      b |= ((c >> 2) & 1) << shift
      c >>= 3
    colours[i] = (r, g, b)
  return colours


def colorize_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """int [..., H, W] label ids -> uint8 [..., H, W, 3]; ids out of range grey."""
  labels = np.asarray(labels)
  lut = np.concatenate([palette(num_classes), [[128, 128, 128]]]).astype(
      np.uint8)
  idx = np.where((labels >= 0) & (labels < num_classes), labels, num_classes)
  return lut[idx]


def draw_boxes(boxes: np.ndarray, classes: np.ndarray, mask: np.ndarray,
               size: tuple[int, int], num_classes: int) -> np.ndarray:
  """Layouts as pictures: filled class-coloured boxes, later boxes on top.

  Args:
    boxes: float [B, O, 4] normalised (x0, y0, x1, y1).
    classes: int [B, O].
    mask: bool [B, O] valid objects.
    size: (H, W) of the picture.
    num_classes: for the palette.

  Returns:
    uint8 [B, H, W, 3].
  """
  h, w = size
  colours = palette(num_classes)
  out = np.zeros((len(boxes), h, w, 3), np.uint8)
  for b in range(len(boxes)):
    for o in np.flatnonzero(mask[b]):
      x0, y0, x1, y1 = boxes[b, o]
      r0, r1 = int(round(y0 * h)), max(int(round(y1 * h)), int(round(y0 * h)) + 1)
      c0, c1 = int(round(x0 * w)), max(int(round(x1 * w)), int(round(x0 * w)) + 1)
      colour = colours[int(classes[b, o]) % num_classes]
      out[b, r0:r1, c0:c1] = colour // 2 + 64
      out[b, r0:r1, [c0, c1 - 1]] = colour
      out[b, [r0, r1 - 1], c0:c1] = colour
  return out


def to_uint8(images: np.ndarray) -> np.ndarray:
  """float [-1,1] -> uint8 [0,255] (uint8 passes through)."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  return np.clip(np.round((images.astype(np.float32) + 1.0) * 127.5), 0,
                 255).astype(np.uint8)


def grid(columns: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
  """Columns of uint8 [N,H,W,3] -> one uint8 [rows·H, cols·W, 3] picture.

  Row i shows sample i across the columns (input | generated | real ...).
  """
  columns = [to_uint8(c) for c in columns]
  n, h, w, _ = columns[0].shape
  out = np.full((n * (h + pad) + pad, len(columns) * (w + pad) + pad, 3), 255,
                np.uint8)
  for j, col in enumerate(columns):
    for i in range(n):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      out[y:y + h, x:x + w] = col[i]
  return out


def _write(path: str, data: bytes) -> None:
  """Writes bytes atomically (local or gs:// paths)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / (path.name + '.tmp')
  tmp.write_bytes(data)
  tmp.replace(path)


def save_png(path: str, picture: np.ndarray) -> None:
  """Writes uint8 [H,W,3] as PNG, atomically (local or gs:// paths)."""
  buf = io.BytesIO()
  Image.fromarray(picture).save(buf, format='PNG')
  _write(path, buf.getvalue())


def save_gif(path: str, frames: Sequence[np.ndarray],
             duration_ms: int = 250) -> None:
  """Writes uint8 [H,W,3] frames as an endlessly looping GIF, atomically."""
  images = [Image.fromarray(f) for f in frames]
  buf = io.BytesIO()
  images[0].save(buf, format='GIF', save_all=True, append_images=images[1:],
                 duration=duration_ms, loop=0)
  _write(path, buf.getvalue())


def depth_to_uint8(depth: np.ndarray) -> np.ndarray:
  """Depth/disparity [B,H,W] in [0,1] (larger = nearer) -> grey uint8
  [B,H,W,3] (white = near)."""
  d = np.clip(np.asarray(depth, np.float32), 0.0, 1.0)
  return np.repeat(np.round(d * 255.0).astype(np.uint8)[..., None], 3, -1)
