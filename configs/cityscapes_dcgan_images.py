r"""DCGAN*: the seg-GAN networks generating Cityscapes photos directly.

  python -m jaxl2i.main --config=configs/cityscapes_dcgan_images.py \
      --workdir=runs/cs_dcgan_images

The paper's baseline (§4.1, Table 1: FID 302.36): "the DCGAN architecture
with two upsampling layers", learning rate 2e-5. Everything else is
configs/cityscapes_seg_gan.py (WGAN-GP, n_critic 5, patch critic, the
1024×1024 crop shrunk to 256²) with a 3-channel tanh output trained on the
photos. Variants: `annot=coarse|fine` (which photos: 22,973 or 2,975),
`optim=wgan_gp|dcgan` (betas and batch; lr stays 2e-5), `crop`, `flip`,
`tiny`. FID of the generator against the validation photos (same crop).
"""

from jaxl2i import config_lib

_seg = config_lib.load_module(__file__, 'cityscapes_seg_gan.py')
LR = 2e-5                   # paper §4.1


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, annot='coarse',
                             optim='wgan_gp', crop='center', flip=False)
  c = config_lib.base_config()
  c.recipe = 'seg_gan'
  size = 32 if arg.tiny else _seg.SIZE
  _seg.data(c, arg.annot, arg.crop, arg.flip, 'keep("image")', size)
  _seg.model(c, 'image', 'transposed')
  _seg.optim(c, arg.optim, lr=LR)
  c.total_steps = _seg.ITERATIONS
  c.ema.decay = 0.0
  c.log_every = 100
  c.image_every = 2000
  c.ckpt_every = 10_000
  c.evals.fid = config_lib.evaluator(
      'fid', every=20_000, num_samples=_seg.VAL_IMAGES, batch_size=50,
      generators=('live',))
  if arg.tiny:
    _seg.shrink(c)
  return c
