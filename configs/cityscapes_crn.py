r"""CRN on Cityscapes, the official settings (demo_256p/512p/1024p.py).

  python -m jaxl2i.data.prepare --dataset=cityscapes_maps/fine \
      --manual_dir=$CITYSCAPES
  python -m jaxl2i.main --config=configs/cityscapes_crn.py \
      --workdir=runs/crn256                       # 256×512, k = 9
  python -m jaxl2i.main --config=configs/cityscapes_crn.py:res=512 \
      --workdir=runs/crn512 --config.init_from.workdir=runs/crn256
  python -m jaxl2i.main --config=configs/cityscapes_crn.py:res=1024 \
      --workdir=runs/crn1024 --config.init_from.workdir=runs/crn512

Variants: `:res=256|512|1024` (H; W = 2H), `:k=N` outputs per label map
(default 9 at 256p, the diversity model of demo_256p.py, and 1 at 512p and
1024p), `:remat` (per-module rematerialisation), `:train_all` (1024p:
train every module, not only the last two), `:tiny`.
reference/crn.md: labelIds → 19 train-id classes + void (the palette match
of helper.py, `cityscapes_crn_labels`), label maps resized with MATLAB's
'nearest', photos with its antialiased bicubic (extract256full.m); no
augmentation; batch 1; Adam 1e-4; 200 / 20 / 5 epochs over the 2,975
images. 512p starts from a 256p checkpoint except the new module and head
(`^g_512`), 1024p from 512p except `^g_1024` and trains only g_512 and
g_1024, as demo_1024p.py does. Not reproduced: the 'vivid' tone-mapped
targets of 512p/1024p (optional_preprocessing/*.m, MATLAB only).
"""

from jaxl2i import config_lib

_synthetic = config_lib.load_module(__file__, 'synthetic_crn.py')
EPOCHS = {256: 200, 512: 20, 1024: 5}      # reference/crn.md §6
NUM_CLASSES = 20                           # 19 train ids + void (§4)
TRAIN_IMAGES = 2975                        # a fresh permutation per epoch
VAL_IMAGES = 500


def crn_data(c, res: int) -> None:
  """Cityscapes as extract*full.m + helper.get_semantic_map prepare it."""
  c.data.name = 'cityscapes_maps/fine'
  resize = (f'resize({res}, {2 * res}, method="bicubic", antialias=True, '
            'nearest="half_pixel")')
  c.data.pp_train = c.data.pp_eval = (
      'decode', resize, 'cityscapes_crn_labels', 'keep("image", "label")')
  c.data.shuffle_buffer = TRAIN_IMAGES


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, res=256, k=0, remat=False,
                             train_all=False)
  if arg.res not in EPOCHS:
    raise config_lib.ConfigError(f'res={arg.res}: use one of {sorted(EPOCHS)}')
  res, k = arg.res, arg.k or (9 if arg.res == 256 else 1)
  c = config_lib.base_config()
  crn_data(c, res)
  _synthetic.crn_model(c, resolution=res, aspect=2, k=k)
  c.model.num_classes = NUM_CLASSES
  c.model.remat = arg.remat
  c.loss.lambda_table = f'cityscapes_{res}p'
  c.total_epochs = float(EPOCHS[res])
  if res > 256:   # progressive fine-tuning; pass --config.init_from.workdir
    c.init_from.exclude = f'^g_{res}'
  if res == 1024 and not arg.train_all:
    # demo_1024p.py: "only fine-tune the last two refinement module due to
    # memory limitation".
    c.model.trainable = '^g_(512|1024)'
  c.log_every = 100
  c.image_every = 2000
  c.ckpt_every = 5000
  c.num_grid_samples = 2 if k > 1 else 4
  c.evals.fid = config_lib.evaluator(
      'fid', every=100_000, num_samples=VAL_IMAGES, batch_size=4,
      generators=('live',), kid=False)
  if arg.tiny:
    _synthetic.shrink(c)
    c.model.aspect = 2
    crn_data(c, c.model.resolution)
  return c
