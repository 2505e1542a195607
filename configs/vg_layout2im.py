r"""Layout2Im on Visual Genome layouts (sg2im preprocessing), 64×64.

  python -m jaxl2i.data.prepare --dataset=visual_genome_layout \
      --manual_dir=$VG
  python -m jaxl2i.main --config=configs/vg_layout2im.py \
      --workdir=runs/vg_layout2im

As configs/coco_layout2im.py with the Visual Genome loader of the reference
(data/vg_custom_mask.py): 179 classes, at most 9 objects — objects in
relationships first (a random 9 if there are more), then random others up to
9 — shuffled, no `__image__` object; box masks without the COCO loader's
≥ 1-pixel guard. The reference's validation loader reads sg2im's test.h5, so
evaluation runs on the `test` split.
"""

from jaxl2i import config_lib

_coco = config_lib.load_module(__file__, 'coco_layout2im.py')
_synthetic = config_lib.load_module(__file__, 'synthetic_layout2im.py')

MAX_OBJECTS = 9   # max_objects=10 minus one (self.max_objects = max - 1)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False)
  c = _coco.get_config()
  c.data.name = 'visual_genome_layout'
  c.data.max_objects = MAX_OBJECTS
  c.data.eval_split = 'test'
  select = (f'sg2im_select_objects(10, max_related={MAX_OBJECTS})',)
  c.data.pp_train = c.data.pp_eval = _synthetic.layout2im_pp(
      64, MAX_OBJECTS, select)
  c.model.box_mask_nonempty = False   # vg_custom_mask.py: no max(+1) guard
  if arg.tiny:
    _synthetic.shrink(c)
  return c
