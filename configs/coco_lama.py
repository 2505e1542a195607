r"""LAMA on COCO-Stuff 2017 layouts (Li et al., ICCV 2021): the headline run.

  python -m jaxl2i.data.prepare --dataset=coco_stuff_layout --manual_dir=$COCO
  python -m jaxl2i.main --config=configs/coco_lama.py:res=128 \
      --workdir=runs/coco_lama128

Variants: `:res=64|128|256` (default 128), `:tiny` (tiny nets, 4 steps:
a smoke run on the real data). Everything follows the official
code (reference/lama_lostgan.md): 184 classes, 8 object slots, images resized
straight to res×res, random flips (the loaders' mirrored copies: an epoch is
2 × 74,777 images), hinge loss λ_obj 1 / λ_img 0.1, Adam β=(0, 0.999), G 1e-4
(style mapping and ISLA ρ ×0.1), D 3e-4 (ReZero α ×0.2), ×0.1 at epochs 120
and 160 of 200, 31 D-only iterations at the start of every epoch, the
paper's batch sizes (32 / 20 / 24; the 256 run used 4 GPUs, the batch here is
global). No EMA (the reference evaluates netG).

Evaluation follows test.py: 5 samples per validation layout, latents
truncated at 2, uint8 by truncation; FID, SceneFID, diversity (LPIPS) and the
mask entropy of raw and adapted masks.
"""

from jaxl2i import config_lib

# configs/ is not a package: load the shared LAMA settings by path.
_synthetic = config_lib.load_module(__file__, 'synthetic_lama.py')

BATCH = {64: 32, 128: 20, 256: 24}   # paper §4.3
VAL_IMAGES = 3097


def coco_layout_data(c, res: int, extra_eval=('instance',)) -> None:
  c.data.name = 'coco_stuff_layout'
  c.data.max_objects = 8
  c.data.pp_train = _synthetic.layout_pp(res, 8, True)
  c.data.pp_eval = _synthetic.layout_pp(res, 8, False, extra_eval)
  c.data.shuffle_buffer = 10_000


def lama_evals(c, every: int, num_samples: int = VAL_IMAGES) -> None:
  """test.py's protocol: 5 truncated samples per layout, uint8 truncation."""
  lama = dict(samples_per_input=5, uint8='truncate', generators=('live',),
              num_samples=num_samples)
  c.evals.fid = config_lib.evaluator('fid', every=every, kid=False, **lama)
  c.evals.scene_fid = config_lib.evaluator('scene_fid', every=every, **lama)
  c.evals.diversity = config_lib.evaluator(
      'diversity', every=every, generators=('live',), num_samples=num_samples)
  c.evals.mask_entropy = config_lib.evaluator(
      'mask_entropy', every=every, generators=('live',),
      num_samples=num_samples)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, res=128, tiny=False)
  if arg.res not in BATCH:
    raise config_lib.ConfigError(f'coco_lama: res={arg.res}; use 64, 128 '
                                 'or 256')
  c = config_lib.base_config()
  _synthetic.lama_model(c, arg.res)
  coco_layout_data(c, arg.res)
  c.batch_size = BATCH[arg.res]
  c.total_epochs = 200
  c.optim.schedule = 'step'
  c.optim.decay_epochs = (120, 160)
  c.optim.decay_factor = 0.1
  c.log_every = 100
  c.image_every = 2000
  c.ckpt_every = 5000
  lama_evals(c, every=50_000)
  if arg.tiny:
    _synthetic.shrink(c)
  return c
