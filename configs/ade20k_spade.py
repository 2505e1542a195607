r"""SPADE on ADE20K (SceneParsing150) at 256², the paper's setting.

  python -m jaxl2i.data.prepare --dataset=ade20k_maps --manual_dir=$ADE
  python -m jaxl2i.main --config=configs/ade20k_spade.py \
      --workdir=runs/ade20k_spade

reference/spade_pix2pix.md Part A: 150 classes + dontcare (ADE's 0 →
150) = 151 input channels, no instance maps; otherwise as
configs/coco_spade.py (batch 32, TTUR, hinge + FM + VGG, 286 → 256 crops,
100 + 100 epochs, unverified). Variants: `:vae`, `:tiny`.
"""

from jaxl2i import config_lib

_synthetic = config_lib.load_module(__file__, 'synthetic_spade.py')
_coco = config_lib.load_module(__file__, 'coco_spade.py')
VAL_IMAGES = 2000


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, vae=False, tiny=False)
  c = config_lib.base_config()
  _coco.labelmap_data(c, 'ade20k_maps', 286, 256, edges=False)
  _synthetic.spade_model(c, edges=False)
  c.model.use_vae = arg.vae
  c.batch_size = 32
  _coco.spade_schedule(c, 100, 100)
  c.log_every = 100
  c.image_every = 2000
  c.ckpt_every = 5000
  _coco.spade_evals(c, every=50_000, num_samples=VAL_IMAGES)
  if arg.tiny:
    _synthetic.shrink(c)
    _coco.labelmap_data(c, 'ade20k_maps', 36, 32, edges=False)
  return c
