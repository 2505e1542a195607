r"""Layout2Im on COCO-Stuff 2017 layouts (Zhao et al., CVPR 2019), 64×64.

  python -m jaxl2i.data.prepare --dataset=coco_stuff_layout/layout2im \
      --manual_dir=$COCO
  python -m jaxl2i.main --config=configs/coco_layout2im.py \
      --workdir=runs/coco_layout2im

Everything follows the official code (reference/layout2im.md): 184 classes,
up to 8 objects per image (3..8 kept, crowd annotations included: the
`layout2im` builder config), images resized straight to 64×64 (PIL-like
bilinear), no flips, objects shuffled every time an example is read, z and
embeddings 64-d, a 3-layer ConvLSTM (128, 64, 64), BCE GAN + AC classifier +
VAE losses with the argparse weights, Adam 1e-4 β=(0.5, 0.999) for G and both
D's, batch 8, 300,000 iterations, no EMA, checkpoints every 1,000.

Evaluation follows test.py: the validation split, one generated image per
layout (fresh z per object, G in eval mode), deprocessed and min-max
stretched per image, quantised by truncation, at 64×64: FID, SceneFID
(object crops at 224, LAMA's protocol, which reported Layout2Im's
SceneFID) and the diversity score (LPIPS between two samples per layout).

Variants: `:tiny` (tiny nets at 32 px, 4 steps on the real data).
"""

from jaxl2i import config_lib

_synthetic = config_lib.load_module(__file__, 'synthetic_layout2im.py')


def layout2im_evals(c, every: int) -> None:
  """test.py's protocol over the whole eval split (num_samples=0)."""
  l2i = dict(num_samples=0, samples_per_input=1, uint8='truncate',
             generators=('live',))
  c.evals.fid = config_lib.evaluator('fid', every=every, kid=False, **l2i)
  c.evals.scene_fid = config_lib.evaluator('scene_fid', every=every, **l2i)
  c.evals.diversity = config_lib.evaluator('diversity', every=every, **l2i)
  # Not in the reference: how local each object's z is (README, Layout2Im).
  c.evals.object_z = config_lib.evaluator('object_z', every=every, **l2i)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base_config()
  _synthetic.layout2im_model(c)
  c.data.name = 'coco_stuff_layout/layout2im'
  c.data.max_objects = 8
  c.data.pp_train = c.data.pp_eval = _synthetic.layout2im_pp(64, 8)
  c.data.shuffle_buffer = 10_000
  c.log_every = 100              # tensorboard_step
  c.image_every = 2000
  c.ckpt_every = 1000            # save_step
  c.keep_ckpts = 5               # save_num
  layout2im_evals(c, every=50_000)
  if arg.tiny:
    _synthetic.shrink(c)
  return c
