r"""LostGAN-V1 (Sun & Wu, ICCV 2019) on COCO-Stuff layouts: LAMA's baseline.

  python -m jaxl2i.main --config=configs/coco_lostgan.py:res=128 \
      --workdir=runs/coco_lostgan128

Variants: `:res=64|128` (LostGAN-V1 has no 256 model), `:no_adaption`
(instead of LostGAN-V1: the LAMA generator with its mask adaption switched
off, the paper's Table 5 ablation), `:tiny`.

LostGAN-V1 is its own architecture (models/lostgan_v1.py: 16×16 masks from
its own mask net, BN-only ISLA, ReLU, no noise or ReZero, the V1
discriminator). Training follows `WillSuen/LostGANs` train.py of that
release: hinge, λ_obj 1 / λ_img 0.1, Adam β=(0, 0.999), G and D 1e-4, no
learning-rate decay, G updated every iteration, batch 128, 200 epochs; the
data and the evaluation protocol are coco_lama's.
"""

from jaxl2i import config_lib

_coco = config_lib.load_module(__file__, 'coco_lama.py')


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, res=128, no_adaption=False, tiny=False)
  c = _coco.get_config(f'res={arg.res},tiny={arg.tiny}')
  if arg.no_adaption:
    c.model.mask_adaption = False   # LAMA's ablation: everything else LAMA
    return c
  if arg.res not in (64, 128):
    raise config_lib.ConfigError('coco_lostgan: LostGAN-V1 has 64 and 128 '
                                 f'models, not res={arg.res}')
  c.model.arch = 'lostgan_v1'
  c.model.mask_adaption = False
  c.model.embed_dim = 0          # 128 at 64², 180 at 128² (V1's widths)
  c.optim.g = dict(lr=1e-4, b1=0.0, b2=0.999, eps=1e-8, groups=())
  c.optim.d = dict(lr=1e-4, b1=0.0, b2=0.999, eps=1e-8, groups=())
  c.optim.schedule = 'constant'
  c.optim.decay_epochs = ()
  c.optim.d_only_steps = 0
  if not arg.tiny:
    c.batch_size = 128
  return c
