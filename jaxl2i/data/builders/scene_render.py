"""Procedural toy-scene renderer behind the `synthetic_scenes` dataset.

Pure numpy (no TensorFlow), deterministic: `render_scene(rng, size)` draws
everything from the `np.random.Generator` it is given, so seeding that
generator per example index makes every example reproducible.

Scene model. A background layout of 2-3 "stuff" regions (sky over grass, sky
over water with a grassy shore in front, or a wall over a wooden floor) and
1-8 "thing" objects (ball, box, tree, house, car, person) standing on the
ground plane. The ground is a plane seen by a level camera, so its disparity
grows linearly with the image row below the horizon; a thing standing at row
`y_b` has the disparity of the ground there and an apparent size proportional
to it (lower in the image = nearer = bigger). Things are painted far to near,
so nearer things occlude farther ones.

Depth convention: `depth` is a normalised disparity in [0, 1], LARGER =
NEARER (0 = sky / infinitely far, 1 = the nearest ground row), the same
convention as the monodepth2 pseudo-depth of the depth-aware SPADE
(reference/depth_spade.md).
"""
import colorsys
from typing import Any

import numpy as np

PAD = '__pad__'
STUFF_CLASSES = ('sky', 'grass', 'water', 'wall', 'floor')
THING_CLASSES = ('ball', 'box', 'tree', 'house', 'car', 'person')
CLASS_NAMES = (PAD,) + STUFF_CLASSES + THING_CLASSES
CLASS_ID = {n: i for i, n in enumerate(CLASS_NAMES)}
MAX_STUFF = 3
MAX_THINGS = 8
MAX_OBJECTS = MAX_STUFF + MAX_THINGS

# Apparent (height, width) of each thing at disparity 1, as fractions of the
# image side; the drawn size is this times the disparity at the thing's base.
_THING_SIZE = {
    'ball': (0.22, 0.22),
    'box': (0.30, 0.30),
    'tree': (0.80, 0.42),
    'house': (0.62, 0.70),
    'car': (0.28, 0.55),
    'person': (0.62, 0.20),
}
_MIN_DISPARITY = 0.3  # farthest things; smaller would vanish at 32 px.
_MAX_TRIES = 12  # placement attempts per thing before giving up on it.


def _smooth_noise(rng, h, w, cells):
  """Value noise: a random (cells+1)^2 grid, smoothly upsampled to [h,w]."""
  grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
  y = (np.arange(h, dtype=np.float32) + 0.5) / h * cells
  x = (np.arange(w, dtype=np.float32) + 0.5) / w * cells
  y0 = np.minimum(y.astype(int), cells - 1)
  x0 = np.minimum(x.astype(int), cells - 1)
  fy = y - y0
  fx = x - x0
  fy = (fy * fy * (3 - 2 * fy))[:, None]  # smoothstep
  fx = (fx * fx * (3 - 2 * fx))[None, :]
  g00 = grid[y0][:, x0]
  g01 = grid[y0][:, x0 + 1]
  g10 = grid[y0 + 1][:, x0]
  g11 = grid[y0 + 1][:, x0 + 1]
  top = g00 * (1 - fx) + g01 * fx
  bot = g10 * (1 - fx) + g11 * fx
  return top * (1 - fy) + bot * fy


def _jitter(rng, rgb, amount):
  """A class colour with per-instance variation, float32 [3] in [0, 1]."""
  rgb = np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3)
  return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def _colour(rng, rgb, amount, varied, hues=(0.0, 1.0), sat=(0.45, 0.9),
            val=(0.45, 0.95)):
  """An object's base colour: the class colour jittered by ±amount, or, with
  `varied`, any colour of the given HSV ranges (the per-instance appearance
  a layout does not determine, for models with an appearance code)."""
  if not varied:
    return _jitter(rng, rgb, amount)
  # Three draws, as _jitter's: the rest of the scene (the layout) is the
  # same with and without `varied`.
  h, s, v = (rng.uniform(*r) for r in (hues, sat, val))
  return np.float32(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _paint(img, mask, colour):
  """img[mask] = colour, where colour is [3] or [H,W,3]."""
  if np.ndim(colour) == 1:
    img[mask] = colour
  else:
    img[mask] = colour[mask]


# ----------------------------------------------------------------------------
# Backgrounds. Each returns the stuff layout as a list of (class, mask) plus
# the image and disparity of the background.


def _sky(rng, yy, xx, h, w):
  top = _jitter(rng, (0.25, 0.45, 0.85), 0.06)
  low = _jitter(rng, (0.70, 0.82, 0.95), 0.05)
  t = np.clip(yy / 0.6, 0, 1)[..., None]
  sky = top * (1 - t) + low * t
  clouds = _smooth_noise(rng, h, w, 4)
  cover = rng.uniform(0.45, 0.75)
  a = np.clip((clouds - cover) * 3.0, 0, 1)[..., None]
  return sky * (1 - a) + 0.97 * a


def _grass(rng, yy, xx, h, w, horizon):
  base = _jitter(rng, (0.30, 0.58, 0.20), 0.05)
  blotch = _smooth_noise(rng, h, w, 6)[..., None] - 0.5
  fine = rng.random((h, w, 1), dtype=np.float32) - 0.5
  near = np.clip((yy - horizon) / (1 - horizon), 0, 1)[..., None]
  haze = (1 - near) * 0.25  # aerial perspective: far grass paler
  g = base * (1 + 0.35 * blotch + 0.25 * fine)
  return g * (1 - haze) + np.float32([0.7, 0.8, 0.7]) * haze


def _water(rng, yy, xx, h, w, horizon):
  base = _jitter(rng, (0.12, 0.35, 0.62), 0.05)
  dist = np.maximum(yy - horizon, 1e-3)
  phase = rng.uniform(0, 2 * np.pi)
  # Wave crests bunch up towards the horizon (perspective).
  waves = np.sin(2.2 / np.sqrt(dist) * 3.0 + 6.0 * xx * dist + phase)
  glint = np.clip(waves, 0.6, 1.0) - 0.6
  shade = 1 + 0.12 * waves + 1.2 * glint
  return base * shade[..., None]


def _wall(rng, yy, xx, h, w):
  if rng.random() < 0.6:  # brick
    brick = _jitter(rng, (0.66, 0.30, 0.22), 0.06)
    rows = rng.integers(6, 10)
    row = np.floor(yy * rows)
    off = 0.5 * (row % 2) / 4
    col = np.floor((xx * 4 + off * 4))
    fy = yy * rows - row
    fx = xx * 4 + off * 4 - col
    mortar = (fy < 0.12) | (fx < 0.05)
    per_brick = ((row * 7919 + col * 104729) % 97) / 97.0 - 0.5
    img = brick * (1 + 0.25 * per_brick)[..., None]
    img = np.where(mortar[..., None], np.float32([0.78, 0.75, 0.7]), img)
  else:  # plaster
    colour = _jitter(rng, (0.85, 0.80, 0.66), 0.07)
    img = colour * (1 + 0.12 * (_smooth_noise(rng, h, w, 8) - 0.5))[..., None]
  return img * (1 + 0.06 * (rng.random((h, w, 1), dtype=np.float32) - 0.5))


def _floor(rng, yy, xx, h, w, horizon):
  wood = _jitter(rng, (0.55, 0.36, 0.18), 0.05)
  dist = np.maximum(yy - horizon, 1e-3)
  plank = np.floor(1.5 / dist)  # planks running across, in perspective
  per_plank = (plank * 7919 % 13) / 13.0 - 0.5
  grain = np.sin(xx * 40 + plank * 3.0) * 0.5
  seam = (1.5 / dist - plank) < 0.08
  img = wood * (1 + 0.25 * per_plank + 0.06 * grain)[..., None]
  return np.where(seam[..., None], wood * 0.55, img)


def _background(rng, h, w, yy, xx):
  """Background layout.

  Returns:
    regions [(class, mask)], image [h,w,3] float32, disparity [h,w],
    horizon row and the top row where things may stand (normalised).
  """
  kind = rng.choice(3, p=(0.45, 0.25, 0.30))
  if kind in (0, 1):  # sky over grass, or sky over water (+ grassy shore)
    horizon = rng.uniform(0.28, 0.5)
    disp = np.clip((yy - horizon) / (1 - horizon), 0, 1)
    sky = yy < horizon
    img = np.where(sky[..., None], _sky(rng, yy, xx, h, w), 0)
    if kind == 0:
      ground = ~sky
      img = np.where(ground[..., None], _grass(rng, yy, xx, h, w, horizon), img)
      regions = [('sky', sky), ('grass', ground)]
      ground_top = horizon
    else:
      shore = horizon + rng.uniform(0.3, 0.55) * (1 - horizon)
      wobble = 0.02 * np.sin(xx * rng.uniform(6, 12) + rng.uniform(0, 6))
      water = ~sky & (yy < shore + wobble)
      grass = ~sky & ~water
      img = np.where(water[..., None], _water(rng, yy, xx, h, w, horizon),
                     img)
      img = np.where(grass[..., None], _grass(rng, yy, xx, h, w, horizon), img)
      regions = [('sky', sky), ('water', water), ('grass', grass)]
      ground_top = shore + 0.03
  else:  # wall over floor; the floor's vanishing line is above the wall base
    horizon = rng.uniform(0.1, 0.25)
    base = rng.uniform(0.4, 0.55)
    wall = yy < base
    disp = np.clip((np.maximum(yy, base) - horizon) / (1 - horizon), 0, 1)
    img = np.where(wall[..., None], _wall(rng, yy, xx, h, w),
                   _floor(rng, yy, xx, h, w, horizon))
    regions = [('wall', wall), ('floor', ~wall)]
    ground_top = base + 0.02
  regions = [(c, m) for c, m in regions if m.any()]
  return (regions, img.astype(np.float32), disp.astype(np.float32), horizon,
          ground_top)


# ----------------------------------------------------------------------------
# Things. Each `_draw_<class>` returns a list of (mask, colour) parts drawn in
# order; the union of the masks is the thing's full (unoccluded) shape.


def _rect(yy, xx, x0, y0, x1, y1):
  return (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)


def _ellipse(yy, xx, cx, cy, rx, ry):
  return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _tri(yy, xx, cx, top, bottom, half):
  """Isosceles triangle, apex (cx, top), base [cx-half, cx+half] at bottom."""
  t = (yy - top) / max(bottom - top, 1e-6)
  return (t >= 0) & (t <= 1) & (np.abs(xx - cx) <= half * t)


def _shade(colour, yy, xx, cx, cy, sx, sy, light, strength=0.35):
  """Linear light-direction shading of a flat colour around (cx, cy)."""
  d = light[0] * (xx - cx) / sx + light[1] * (yy - cy) / sy
  return colour * np.clip(1 - strength * d, 0.3, 1.6)[..., None]


def _draw_ball(rng, yy, xx, cx, yb, s, light, varied):
  r = s[0] / 2
  col = _colour(rng, (0.88, 0.25, 0.18), 0.1, varied)
  m = _ellipse(yy, xx, cx, yb - r, r, r)
  dx, dy = (xx - cx) / r, (yy - yb + r) / r
  nz = np.sqrt(np.clip(1 - dx**2 - dy**2, 0, 1))
  lam = np.clip(-0.6 * light[0] * dx - 0.6 * light[1] * dy + 0.55 * nz, 0, 1)
  return [(m, col * (0.35 + 0.85 * lam)[..., None])]


def _draw_box(rng, yy, xx, cx, yb, s, light, varied):
  hh, ww = s
  col = _colour(rng, (0.72, 0.55, 0.30), 0.07, varied, sat=(0.3, 0.8))
  top_h = 0.25 * hh
  front = _rect(yy, xx, cx - ww / 2, yb - hh + top_h, cx + ww / 2, yb)
  t = (yy - (yb - hh)) / top_h  # 0 at the back edge, 1 at the front edge
  shift = 0.2 * ww * (1 - t)
  top = ((t >= 0) & (t < 1) & (xx >= cx - ww / 2 + shift) &
         (xx < cx + ww / 2 + shift))
  face = _shade(col, yy, xx, cx, yb, ww, hh, light, 0.3)
  plank = (np.abs(((yy - yb) / hh * 4) % 1 - 0.5) > 0.45)[..., None]
  face = np.where(plank, face * 0.7, face)
  return [(front, face), (top, col * 1.25)]


def _draw_tree(rng, yy, xx, cx, yb, s, light, varied):
  hh, ww = s
  trunk_col = _jitter(rng, (0.40, 0.26, 0.13), 0.05)
  # varied: spring green to autumn orange.
  leaf = _colour(rng, (0.12, 0.45, 0.15), 0.06, varied, hues=(0.05, 0.4),
                 val=(0.35, 0.75))
  trunk = _rect(yy, xx, cx - 0.09 * ww, yb - 0.35 * hh, cx + 0.09 * ww, yb)
  crown = (_tri(yy, xx, cx, yb - hh, yb - 0.45 * hh, 0.38 * ww) |
           _tri(yy, xx, cx, yb - 0.8 * hh, yb - 0.25 * hh, 0.5 * ww))
  crown_col = _shade(leaf, yy, xx, cx, yb - 0.6 * hh, ww, hh, light, 0.5)
  return [(trunk, trunk_col), (crown, crown_col)]


def _draw_house(rng, yy, xx, cx, yb, s, light, varied):
  hh, ww = s
  wall_col = _colour(rng, (0.90, 0.85, 0.70), 0.08, varied, sat=(0.1, 0.5),
                     val=(0.7, 0.95))
  roof_col = _colour(rng, (0.62, 0.15, 0.12), 0.06, varied, val=(0.3, 0.7))
  roof_y = yb - 0.6 * hh
  body = _rect(yy, xx, cx - 0.42 * ww, roof_y, cx + 0.42 * ww, yb)
  roof = _tri(yy, xx, cx, yb - hh, roof_y + 1e-6, 0.5 * ww) & (yy < roof_y)
  door = _rect(yy, xx, cx - 0.08 * ww, yb - 0.32 * hh, cx + 0.08 * ww, yb)
  win = (_rect(yy, xx, cx - 0.32 * ww, yb - 0.48 * hh, cx - 0.16 * ww,
               yb - 0.3 * hh) |
         _rect(yy, xx, cx + 0.16 * ww, yb - 0.48 * hh, cx + 0.32 * ww,
               yb - 0.3 * hh))
  return [(body, _shade(wall_col, yy, xx, cx, yb, ww, hh, light, 0.25)),
          (roof, _shade(roof_col, yy, xx, cx, roof_y, ww, hh, light, 0.3)),
          (door, np.float32([0.3, 0.2, 0.12])),
          (win, np.float32([0.45, 0.65, 0.85]))]


def _draw_car(rng, yy, xx, cx, yb, s, light, varied):
  hh, ww = s
  col = _colour(rng, (0.15, 0.30, 0.80), 0.12, varied)
  wheel_r = 0.2 * hh
  body = _rect(yy, xx, cx - ww / 2, yb - 0.65 * hh, cx + ww / 2,
               yb - wheel_r * 0.8)
  t = (yy - (yb - hh)) / (0.35 * hh)
  cabin = ((t >= 0) & (t <= 1) &
           (np.abs(xx - cx + 0.05 * ww) <= (0.22 + 0.1 * t) * ww))
  glass = cabin & (np.abs(xx - cx + 0.05 * ww) <= (0.17 + 0.1 * t) * ww) & (
      t > 0.2)
  wheels = (_ellipse(yy, xx, cx - 0.3 * ww, yb - wheel_r, wheel_r, wheel_r) |
            _ellipse(yy, xx, cx + 0.3 * ww, yb - wheel_r, wheel_r, wheel_r))
  paint = _shade(col, yy, xx, cx, yb - 0.5 * hh, ww, hh, light, 0.3)
  return [(body | cabin, paint), (glass, np.float32([0.7, 0.85, 0.95])),
          (wheels, np.float32([0.08, 0.08, 0.08]))]


def _draw_person(rng, yy, xx, cx, yb, s, light, varied):
  hh, ww = s
  skin = _jitter(rng, (0.85, 0.65, 0.50), 0.1)
  shirt = np.clip(rng.random(3) * 0.8 + 0.1, 0, 1).astype(np.float32)
  pants = _colour(rng, (0.15, 0.18, 0.35), 0.06, varied, val=(0.2, 0.6))
  head = _ellipse(yy, xx, cx, yb - 0.9 * hh, 0.1 * hh, 0.1 * hh)
  torso = _rect(yy, xx, cx - ww / 2, yb - 0.8 * hh, cx + ww / 2, yb - 0.45 * hh)
  legs = (_rect(yy, xx, cx - 0.42 * ww, yb - 0.45 * hh, cx - 0.06 * ww, yb) |
          _rect(yy, xx, cx + 0.06 * ww, yb - 0.45 * hh, cx + 0.42 * ww, yb))
  return [(legs, pants),
          (torso, _shade(shirt, yy, xx, cx, yb - 0.6 * hh, ww, hh, light)),
          (head, skin)]


_DRAW = {
    'ball': _draw_ball, 'box': _draw_box, 'tree': _draw_tree,
    'house': _draw_house, 'car': _draw_car, 'person': _draw_person,
}


def _window(x0, y0, x1, y1, h, w):
  """Pixel window (slices) covering normalised [x0,x1]x[y0,y1], or None."""
  r0 = max(int(np.floor(y0 * h)) - 1, 0)
  r1 = min(int(np.ceil(y1 * h)) + 1, h)
  c0 = max(int(np.floor(x0 * w)) - 1, 0)
  c1 = min(int(np.ceil(x1 * w)) + 1, w)
  if r0 >= r1 or c0 >= c1:
    return None
  return (slice(r0, r1), slice(c0, c1))


def _mask_box(mask, h, w, win=(slice(0, None), slice(0, None))):
  """Normalised (x0, y0, x1, y1) extent of a non-empty mask.

  `mask` covers the pixel window `win` of an [h,w] image.
  """
  rows = np.flatnonzero(mask.any(axis=1)) + win[0].start
  cols = np.flatnonzero(mask.any(axis=0)) + win[1].start
  return np.float32([cols[0] / w, rows[0] / h, (cols[-1] + 1) / w,
                     (rows[-1] + 1) / h])


def _iou(a, b):
  ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) -
           inter)
  return inter / max(union, 1e-9)


def render_scene(rng: np.random.Generator, size: int,
                 varied: bool = False) -> dict[str, Any]:
  """Renders one scene.

  Args:
    rng: the example's own generator (nothing else is random).
    size: image side in pixels (H = W = size).
    varied: draw each thing's colours from wide ranges (any hue for balls,
      boxes, cars, roofs, shirts...) instead of jittering its class colour;
      the layouts (boxes, classes, depth) are the same either way.

  Returns:
    dict with `image` uint8 [H,W,3]; `label` uint8 [H,W] class ids in
    1..len(CLASS_NAMES)-1 (never 0); `instance` uint16 [H,W], ids 1..O, one
    per object (stuff regions first, then things; equal to the object's slot
    index + 1 where the object is visible); `depth` float32 [H,W] disparity in
    [0,1], larger = nearer; `boxes` float32 [O,4] normalised (x0,y0,x1,y1);
    `classes` int64 [O]; O <= MAX_OBJECTS (3 stuff + 8 things = 11). Stuff
    boxes are the region's extent; thing boxes the full shape's extent clipped
    to the image, even where occluded. Things are listed nearest first.
  """
  h = w = size
  yy = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None] + np.zeros(
      (1, w), np.float32)
  xx = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :] + np.zeros(
      (h, 1), np.float32)
  regions, img, disp, horizon, ground_top = _background(rng, h, w, yy, xx)
  label = np.zeros((h, w), np.uint8)
  for c, m in regions:
    label[m] = CLASS_ID[c]

  light = np.float32([rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0),
                      -rng.uniform(0.3, 1.0)])
  things = []  # (disparity, class, parts, box, window)
  for _ in range(rng.integers(1, MAX_THINGS + 1)):
    for _ in range(_MAX_TRIES):
      cls = THING_CLASSES[rng.integers(len(THING_CLASSES))]
      d_lo = max(_MIN_DISPARITY, (ground_top - horizon) / (1 - horizon))
      d = rng.uniform(d_lo, 1.08)
      yb = horizon + d * (1 - horizon)  # base row of a thing at disparity d
      sh, sw = _THING_SIZE[cls]
      scale = d * rng.uniform(0.85, 1.15)
      s = (sh * scale, sw * scale)
      cx = rng.uniform(-0.1 * s[1], 1 + 0.1 * s[1])
      # Every part lies within [cx -+ 0.75 w] x [yb - h, yb]: draw in that
      # window only (rendering cost scales with the thing, not the image).
      win = _window(cx - 0.75 * s[1], yb - s[0], cx + 0.75 * s[1], yb, h, w)
      if win is None:
        continue
      parts = _DRAW[cls](rng, yy[win], xx[win], cx, yb, s, light, varied)
      full = np.logical_or.reduce([m for m, _ in parts])
      if full.sum() < 4:
        continue
      box = _mask_box(full, h, w, win)
      if any(_iou(box, t[3]) > 0.35 for t in things):
        continue
      things.append((min(d, 1.0), cls, parts, box, win))
      break

  things.sort(key=lambda t: -t[0])  # nearest first in the object list
  n_stuff = len(regions)
  instance = np.zeros((h, w), np.uint16)
  for i, (_, m) in enumerate(regions):
    instance[m] = i + 1
  for k in range(len(things) - 1, -1, -1):  # paint far to near
    d, cls, parts, _, win = things[k]
    sub = img[win]
    full = np.zeros(sub.shape[:2], bool)
    for m, colour in parts:
      _paint(sub, m, colour)
      full |= m
    label[win][full] = CLASS_ID[cls]
    instance[win][full] = n_stuff + k + 1
    disp[win][full] = d

  noise = rng.random((h, w, 1), dtype=np.float32) - 0.5
  img = img * (1 + 0.04 * noise)  # sensor noise
  boxes = [_mask_box(m, h, w) for _, m in regions] + [t[3] for t in things]
  classes = [CLASS_ID[c] for c, _ in regions] + [CLASS_ID[t[1]]
                                                 for t in things]
  return {
      'image': np.clip(np.round(img * 255), 0, 255).astype(np.uint8),
      'label': label,
      'instance': instance,
      'depth': np.clip(disp, 0, 1).astype(np.float32),
      'boxes': np.stack(boxes).astype(np.float32),
      'classes': np.asarray(classes, np.int64),
  }
