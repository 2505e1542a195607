r"""LAMA on Visual Genome layouts (sg2im split and preprocessing).

  python -m jaxl2i.data.prepare --dataset=visual_genome_layout --manual_dir=$VG
  python -m jaxl2i.main --config=configs/vg_lama.py:res=128 \
      --workdir=runs/vg_lama128

As configs/coco_lama.py with the Visual Genome loader of the reference
(data/vg.py): 179 classes (`__image__` = 0), objects in relationships first
(a random 10 if more than 9, else topped up with others to 9), then the
`__image__` object with box (0, 0, 1, 1): 11 slots. VG has no object masks,
so the tainted-mask experiment (ground-truth masks) is COCO-only. An epoch
is 2 × 62,565 images.
"""

from jaxl2i import config_lib

_coco = config_lib.load_module(__file__, 'coco_lama.py')
_synthetic = config_lib.load_module(__file__, 'synthetic_lama.py')

VAL_IMAGES = 5062   # the LAMA paper's validation count


def vg_layout_pp(res: int, train: bool) -> tuple[str, ...]:
  keys = '"image", "boxes", "classes", "objects_mask"'
  return ('decode', f'resize({res})', *(('random_flip',) if train else ()),
          f'sg2im_select_objects(10, randomize={train})', 'add_image_object',
          'pad_objects(11)', f'keep({keys})')


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, res=128, tiny=False)
  c = _coco.get_config(f'res={arg.res}')
  c.data.name = 'visual_genome_layout'
  c.data.max_objects = 11
  c.data.pp_train = vg_layout_pp(arg.res, True)
  c.data.pp_eval = vg_layout_pp(arg.res, False)
  _coco.lama_evals(c, every=50_000, num_samples=VAL_IMAGES)
  if arg.tiny:
    _synthetic.shrink(c)
  return c
