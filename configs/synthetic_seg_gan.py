r"""Segmentation-mask WGAN-GP on the synthetic scenes' label maps: CPU demo.

  python -m jaxl2i.main --config=configs/synthetic_seg_gan.py \
      --workdir=runs/synthetic_seg_gan
  # stage 2: render the generated maps with a synthetic pix2pix/SPADE run
  python -m jaxl2i.generate --workdir=runs/synthetic_seg_gan \
      --renderer=runs/synthetic_pix2pix --num=16

Variants: `:tiny` (32 px, tiny nets: tests), `encoding=onehot|rgb|image`,
`upsample=transposed|nearest`, `renderer=RUN` (adds the two-stage evaluator:
FID of the rendered images and structural consistency, with the segmenter
fitted to the synthetic renderer). The recipe and its structure are the
paper's (configs/cityscapes_seg_gan.py; its default upsampling is transposed,
this demo's nearest); widths, batch and steps are scaled
down for a 2-core CPU: the DCGAN layers to 8² and three constant-width
layers to 64² in G, the 4-conv DCGAN critic (one 64×64 patch per map).
"""

from jaxl2i import config_lib


def get_config(arg=None):
  # Nearest ×2 + conv (the paper's other variant): with transposed convs the
  # demo's maps stayed dithered — a 2-pixel checkerboard of two classes at
  # borders and in objects — after 800 steps; nearest had none at step 200.
  arg = config_lib.parse_arg(arg, tiny=False, encoding='onehot',
                             upsample='nearest', renderer='')
  c = config_lib.base_config()
  c.recipe = 'seg_gan'
  res = 32 if arg.tiny else 64
  c.data.name = ('synthetic_scenes/tiny' if arg.tiny else
                 'synthetic_scenes/res64')
  keep = 'keep("image")' if arg.encoding == 'image' else 'keep("label")'
  c.data.pp_train = ('decode', 'random_flip', keep)
  c.data.pp_eval = ('decode', f'resize({res})', 'keep("image", "label")')
  c.data.shuffle_buffer = 2000

  c.model.encoding = arg.encoding
  c.model.upsample = arg.upsample
  c.model.z_dim = 128                   # reference/seg_gan.md §2
  c.model.resolution = res
  c.model.g_widths = (128, 64, 32, 32)
  c.model.g_kernels = (5, 5, 3, 3)
  # The DCGAN critic at its native 64×64: on the demo's 64² maps one patch
  # (the paper's 256² maps have 16).
  c.model.d_widths = (16, 32, 64, 128)
  c.model.d_kernel = 5
  c.model.d_norm = 'layer'
  c.model.patches = 'grid'
  c.model.num_random_patches = 4

  c.loss.gp = 10.0                      # λ, reference §4
  c.loss.n_critic = 5
  c.inversion = dict(restarts=64, steps=100, lr=0.01, extra_softmax=True)

  # WGAN-GP's Adam β (reference §4) at 5× its 1e-4: at 1e-4 the softmax
  # maps were still soft and alike after 250 CPU-demo steps.
  c.optim.g.update(lr=5e-4, b1=0.0, b2=0.9)
  c.optim.d.update(lr=5e-4, b1=0.0, b2=0.9)
  c.batch_size = 8
  c.total_steps = 800
  c.ema.decay = 0.999

  c.log_every = 50
  c.image_every = 200
  c.ckpt_every = 400
  c.num_grid_samples = 8
  if arg.renderer:
    c.evals.two_stage = config_lib.evaluator(
        'two_stage', renderer=arg.renderer, segmenter='synthetic',
        every=c.total_steps, num_samples=200, batch_size=40,
        generators=('ema',), allow_random_weights=True)
  if arg.tiny:
    c.model.g_widths = (16, 8, 8)
    c.model.g_kernels = (5, 3, 3)
    c.model.d_widths = (8, 8)           # 16×16 patches, 4 per map
    c.model.z_dim = 8
    c.batch_size = 8
    c.optim.unroll_critic = False   # one scan body: quicker to compile
    config_lib.smoke_run(c, steps=2)
  return c
