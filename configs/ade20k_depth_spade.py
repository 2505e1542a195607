r"""Depth-aware two-stage SPADE on ADE20K ("Depth and Semantic Aware Image
Generation"), the paper's settings, and its plain-SPADE baseline.

  python -m jaxl2i.data.prepare --dataset=ade20k_maps/depth --manual_dir=$ADE
  # stage 1 (labels → depth), depth at 64² (batch 64) or 128² (batch 12)
  python -m jaxl2i.main --config=configs/ade20k_depth_spade.py:stage=1,depth_res=128 \
      --workdir=runs/ade_depth128
  # stage 2 (labels ⊕ stage-1 depth → 64² image, batch 64)
  python -m jaxl2i.main --config=configs/ade20k_depth_spade.py:stage=2,depth_res=128 \
      --workdir=runs/ade_image64 --config.model.stage1_workdir=runs/ade_depth128
  # the baseline: plain SPADE at 64²
  python -m jaxl2i.main --config=configs/ade20k_depth_spade.py:baseline \
      --workdir=runs/ade_spade64

reference/depth_spade.md: both stages are unmodified SPADE (ngf = ndf = 64,
'normal' upsampling: a 2×2 latent at 64², 4×4 at 128²), TTUR, hinge + FM; VGG
on stage 2 and the baseline only; no VAE. The pseudo-depth comes from the
`ade20k_maps/depth` builder (monodepth2 disparity, normalised per image,
larger = nearer). ◇ Data at 64²: SPADE's 286/256 resize-and-crop jitter scaled
(resize 72, crop 64); at 128²: resize 143, crop 128. Epoch counts are not in
the paper ◇: 100 + 100 as the SPADE configs. Stage 2 runs stage 1 at its own
resolution (`model.stage1_resolution`) and resizes the depth to 64².
FID: depth maps are tiled to RGB (◇), images as usual. SPADE layers resize
the depth channel with nearest, as the unmodified SPADE the paper used
(pitfall 1); `:bilinear` resizes it bilinearly (a deliberate deviation).
Variants: `:stage=1|2`, `:depth_res=64|128`, `:baseline`, `:bilinear`,
`:tiny`.
"""

from jaxl2i import config_lib

_synthetic = config_lib.load_module(__file__, 'synthetic_spade.py')
_coco = config_lib.load_module(__file__, 'coco_spade.py')
_depth = config_lib.load_module(__file__, 'synthetic_depth_spade.py')
VAL_IMAGES = 2000
IMAGE_RES = 64


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, stage=1, depth_res=64, baseline=False,
                             bilinear=False, tiny=False)
  if arg.depth_res not in (64, 128):
    raise config_lib.ConfigError(f'depth_res={arg.depth_res}: use 64 or 128')
  res = arg.depth_res if arg.stage == 1 and not arg.baseline else IMAGE_RES
  c = config_lib.base_config()
  name = 'ade20k_maps' if arg.baseline else 'ade20k_maps/depth'
  _coco.labelmap_data(c, name, round(res * 286 / 256), res, edges=False)
  _synthetic.spade_model(c, edges=False)
  if not arg.baseline:
    _depth.depth_stage(c, arg.stage)
    if arg.stage == 2:
      c.model.stage1_resolution = arg.depth_res
    c.model.depth_bilinear = arg.bilinear
  c.batch_size = 12 if res == 128 else 64
  _coco.spade_schedule(c, 100, 100)
  c.log_every = 100
  c.image_every = 2000
  c.ckpt_every = 5000
  _coco.spade_evals(c, every=20_000, num_samples=VAL_IMAGES)
  if arg.tiny:
    _synthetic.shrink(c)
    _coco.labelmap_data(c, name, 36, 32, edges=False)
    if not arg.baseline:
      _depth.depth_stage(c, arg.stage)
  return c
