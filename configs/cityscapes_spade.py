r"""SPADE on Cityscapes at 512×256, the paper's setting.

  python -m jaxl2i.data.prepare --dataset=cityscapes_maps/fine \
      --manual_dir=$CITYSCAPES
  python -m jaxl2i.main --config=configs/cityscapes_spade.py \
      --workdir=runs/cityscapes_spade

reference/spade_pix2pix.md Part A: 35 labelIds + the instance-edge channel
= 36 input channels, no dontcare; 'more' upsampling (4×8 latent); fixed
resize to 256×512 and flips, no crop; batch 16 (the reference's default);
TTUR, hinge + FM + VGG; 100 + 100 epochs over the 2,975 images (unverified).
Variants: `:tiny`.
"""

from jaxl2i import config_lib

_synthetic = config_lib.load_module(__file__, 'synthetic_spade.py')
_coco = config_lib.load_module(__file__, 'coco_spade.py')
VAL_IMAGES = 500


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base_config()
  # 1024×2048 → 256×512: an antialiased (area) shrink, as SPADE's PIL resize.
  _coco.labelmap_data(c, 'cityscapes_maps/fine', (256, 512), None,
                      edges=True, method='area')
  _synthetic.spade_model(c, edges=True, mode='more')
  c.batch_size = 16
  _coco.spade_schedule(c, 100, 100)
  c.log_every = 100
  c.image_every = 1000
  c.ckpt_every = 5000
  _coco.spade_evals(c, every=20_000, num_samples=VAL_IMAGES)
  if arg.tiny:
    _synthetic.shrink(c)
    _coco.labelmap_data(c, 'cityscapes_maps/fine', (64, 128), None,
                        edges=True, method='area')
  return c
