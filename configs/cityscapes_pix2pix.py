r"""pix2pix on Cityscapes labels → photos, the paper's setting.

  python -m jaxl2i.main --config=configs/cityscapes_pix2pix.py \
      --workdir=runs/cityscapes_pix2pix

Facts: reference/spade_pix2pix.md Part B. U-Net-256 (8 levels, ngf 64,
dropout 0.5), 70×70 PatchGAN (n_layers 3, ndf 64), BatchNorm, vanilla GAN
loss + L1 with λ=100, Adam 2e-4 β=(0.5, 0.999), batch 1, 100 epochs constant
+ 100 epochs linear decay over the 2,975 training images, jitter 286 → 256
and flips. The input A is the colour-coded label map, as in the paper's
Cityscapes data.

Data: `cityscapes_maps/fine` (labelIds + photos, 1024×2048), built once with
`python -m jaxl2i.data.prepare --dataset=cityscapes_maps/fine
--manual_dir=$CITYSCAPES` (docs_labelmap_datasets.md). The paper's pairs are
the frames squashed to 256×256 (pix2pix datasets/prepare_cityscapes_dataset.py,
PIL resize), jittered 286 → 256: the first resize uses 'area' (an
antialiased 4×/8× shrink; bilinear without antialiasing would alias), labels
always nearest.

`:seg_gan` is the renderer (stage 2) of configs/cityscapes_seg_gan.py: the
paper's 11.4 M-parameter pix2pix is the ResNet-9-block generator
(reference/seg_gan.md §3; 11,383,427 parameters with the colour input),
trained on the seg GAN's 1024×1024 crops shrunk to 256² of
`cityscapes_maps/<annot>` so that its inputs look like the generated maps.
`netG=` picks the generator otherwise (unet, resnet_9blocks, resnet_6blocks).
"""

from jaxl2i import config_lib

TRAIN_IMAGES = 2975   # Cityscapes train split
EPOCHS, DECAY_EPOCHS = 100, 100
_seg = config_lib.load_module(__file__, 'cityscapes_seg_gan.py')


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, seg_gan=False, netG='unet',
                             annot='fine')
  c = config_lib.base_config()
  c.recipe = 'pix2pix'
  c.data.name = 'cityscapes_maps/fine'
  c.data.pp_train = ('decode', 'resize(256, method="area")', 'resize(286)',
                     'random_crop(256)', 'random_flip',
                     'keep("image", "label")')
  c.data.pp_eval = ('decode', 'resize(256, method="area")',
                    'keep("image", "label")')

  c.model.netG = 'resnet_9blocks' if arg.seg_gan else arg.netG
  c.model.norm = 'batch'             # pix2pix (the repo default: instance)
  c.model.ngf = 64
  c.model.ndf = 64
  c.model.num_downs = 8
  c.model.n_layers_d = 3
  c.model.use_dropout = True
  c.model.dropout_rate = 0.5
  c.model.input = 'color'
  c.model.edges = False
  c.model.sample_train_mode = True   # paper: dropout on, batch statistics

  c.loss.gan = 'vanilla'
  c.loss.l1 = 100.0

  c.batch_size = 1
  c.total_steps = (EPOCHS + DECAY_EPOCHS) * TRAIN_IMAGES
  c.optim.schedule = 'linear_decay'
  c.optim.decay_start = EPOCHS * TRAIN_IMAGES
  c.ema.decay = 0.0           # pix2pix keeps no EMA
  c.log_every = 100
  c.image_every = 5000
  c.ckpt_every = 10000
  if arg.seg_gan:   # the seg GAN's crops; pix2pix jitter 286 → 256
    _seg.data(c, arg.annot, 'center', False, 'keep("image", "label")',
              _seg.SIZE)
    c.data.pp_train = (*c.data.pp_train[:-1], 'resize(286)',
                       'random_crop(256)', 'random_flip',
                       'keep("image", "label")')
  if arg.tiny:   # same recipe shrunk for smoke runs (still needs the data)
    c.data.pp_train = ('decode', 'resize(32, method="area")', 'resize(36)',
                       'random_crop(32)', 'random_flip',
                       'keep("image", "label")')
    c.data.pp_eval = ('decode', 'resize(32, method="area")',
                      'keep("image", "label")')
    c.model.ngf = c.model.ndf = 8
    c.model.num_downs = 5
    c.model.n_layers_d = 2
    c.batch_size = 8
    c.total_steps = 4
    c.optim.decay_start = 2
    c.log_every = c.image_every = c.ckpt_every = 2
  return c
