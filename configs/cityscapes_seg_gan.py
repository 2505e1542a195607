r"""Segmentation-mask WGAN-GP on Cityscapes label maps (Volokitin et al.).

  python -m jaxl2i.data.prepare --dataset=cityscapes_maps/coarse \
      --manual_dir=$CITYSCAPES
  python -m jaxl2i.main --config=configs/cityscapes_seg_gan.py \
      --workdir=runs/cs_seg_coarse_onehot_tconv
  # FID of rendered images (+ consistency with your segmenter, see README)
  python -m jaxl2i.evaluate \
      --config=configs/cityscapes_seg_gan.py:renderer=runs/cs_pix2pix_r9 \
      --workdir=runs/cs_seg_coarse_onehot_tconv

Variants (paper Table 1 = TABLE1 below): `annot=coarse|fine`,
`encoding=onehot|rgb`, `upsample=transposed|nearest`; `optim=wgan_gp|dcgan`
(WGAN-GP's Adam 1e-4, β (0, 0.9), batch 64 — the reference code's — or the
DCGAN paper's 2e-4, β (0.5, 0.999), batch 128, which the paper says it
used), `crop=center|random`, `flip`, `renderer=RUN`, `segmenter=mod:fn`,
`tiny`. Facts: reference/seg_gan.md; ◇ = reconstruction (no official code).
"""

from jaxl2i import config_lib

# (annotation, encoding, upsampling) of the paper's Table 1, with its FID.
TABLE1 = (('coarse', 'onehot', 'transposed', 56.37),
          ('coarse', 'onehot', 'nearest', 58.43),
          ('coarse', 'rgb', 'transposed', 58.33),
          ('fine', 'onehot', 'transposed', 76.12),
          ('fine', 'onehot', 'nearest', 96.33),
          ('fine', 'rgb', 'transposed', 83.15))
# reference §4: Adam settings and batch of each optimiser choice.
OPTIMS = {'wgan_gp': dict(lr=1e-4, b1=0.0, b2=0.9, batch=64),
          'dcgan': dict(lr=2e-4, b1=0.5, b2=0.999, batch=128)}
ITERATIONS = 200_000      # gan_64x64.py ITERS
CROP = 1024               # paper: a 1024×1024 crop of the 1024×2048 frame
SIZE = 256                # ... downscaled to 256×256
VAL_IMAGES = 500


def data(c, annot: str, crop: str, flip: bool, keep: str, size: int) -> None:
  """cityscapes_maps/<annot>: crop (centre ◇ or random), area-shrink the
  photo (labels: nearest), optionally flip ◇."""
  if annot not in ('coarse', 'fine') or crop not in ('center', 'random'):
    raise config_lib.ConfigError(
        f'annot={annot!r} (coarse|fine), crop={crop!r} (center|random)')
  c.data.name = f'cityscapes_maps/{annot}'
  resize = f'resize({size}, method="area")'
  c.data.pp_train = ('decode', f'{crop}_crop({CROP})', resize,
                     *(('random_flip',) if flip else ()), keep)
  c.data.pp_eval = ('decode', f'center_crop({CROP})', resize,
                    'keep("image", "label")')


def optim(c, name: str, lr: float | None = None) -> None:
  if name not in OPTIMS:
    raise config_lib.ConfigError(f'optim={name!r}: use one of {list(OPTIMS)}')
  o = OPTIMS[name]
  for net in ('g', 'd'):
    c.optim[net].update(lr=lr or o['lr'], b1=o['b1'], b2=o['b2'])
  c.batch_size = o['batch']


def model(c, encoding: str, upsample: str) -> None:
  """The paper's networks (≈5.4 M / 4.4 M parameters; README)."""
  c.model.encoding = encoding
  c.model.upsample = upsample
  c.model.z_dim = 128                            # gan_64x64.py
  c.model.resolution = SIZE
  # DCGAN (DIM 64) to 32², then three 64-channel layers to 256² ◇.
  c.model.g_widths = (512, 256, 128, 64, 64, 64)
  c.model.g_kernels = (5, 5, 5, 3, 3, 3)         # 3×3 above 32² ◇
  c.model.d_widths = (64, 128, 256, 512)         # 64×64 patches
  c.model.d_kernel = 5
  c.model.d_norm = 'layer'                       # gan_64x64.py wgan-gp
  c.model.patches = 'grid'                       # 16 tiles per map ◇
  c.model.num_random_patches = 16
  c.loss.gp = 10.0                               # λ, reference §4
  c.loss.n_critic = 5
  # Paper §5.4: 64 restarts, Adam lr 0.01, 100 steps, extra softmax.
  c.inversion = dict(restarts=64, steps=100, lr=0.01, extra_softmax=True)


def shrink(c) -> None:
  """:tiny — the same code paths on 32² maps and tiny widths."""
  c.model.resolution = 32
  c.model.g_widths = (16, 8, 8)
  c.model.g_kernels = (5, 3, 3)
  c.model.d_widths = (8, 8)
  c.model.z_dim = 8
  c.batch_size = 8
  c.total_steps = 2
  c.log_every = c.image_every = c.ckpt_every = 2
  c.optim.unroll_critic = False   # one scan body: quicker to compile
  config_lib.shrink_evals(c, every=2)


def get_config(arg=None):
  arg = config_lib.parse_arg(
      arg, tiny=False, annot='coarse', encoding='onehot',
      upsample='transposed', optim='wgan_gp', crop='center', flip=False,
      renderer='', segmenter='')
  c = config_lib.base_config()
  c.recipe = 'seg_gan'
  size = 32 if arg.tiny else SIZE
  data(c, arg.annot, arg.crop, arg.flip, 'keep("label")', size)
  model(c, arg.encoding, arg.upsample)
  optim(c, arg.optim)
  c.total_steps = ITERATIONS
  c.ema.decay = 0.0            # the reference keeps no EMA
  c.log_every = 100
  c.image_every = 2000
  c.ckpt_every = 10_000
  if arg.renderer:
    c.evals.two_stage = config_lib.evaluator(
        'two_stage', renderer=arg.renderer, segmenter=arg.segmenter,
        every=20_000, num_samples=VAL_IMAGES, batch_size=50,
        generators=('live',))
  if arg.tiny:
    shrink(c)
  return c
