r"""SPADE on the embedded synthetic scenes (CPU demo of the SPADE recipe).

  python -m jaxl2i.main --config=configs/synthetic_spade.py \
      --workdir=runs/synthetic_spade

Variants: `:tiny` (32 px, tiny nets, 4 steps: tests), `:vae` (with the image
encoder and KLD), `:res=128`.
The recipe is SPADE's (reference/spade_pix2pix.md Part A): hinge loss,
feature matching λ 10, TTUR (G 1e-4, D 4e-4, β=(0, 0.9)), linear decay over
the second half, 2-scale PatchGAN with 4 layers. Scaled down for a CPU:
ngf/ndf 16, SPADE hidden width 32 (reference 128), and no VGG loss (a VGG-19
pass over 64² images would triple the step time on a laptop; the real
configs keep λ_vgg = 10).
"""

from jaxl2i import config_lib


def spade_model(c, *, edges: bool, mode: str = 'normal') -> None:
  """The reference SPADE settings (A3-A7); configs override widths."""
  c.recipe = 'spade'
  m = c.model
  m.ngf = m.ndf = 64
  m.num_upsampling_layers = mode
  m.n_layers_d = 4
  m.num_d = 2
  m.spade_hidden = 128
  m.use_vae = False
  m.z_dim = 256
  m.encoder_layers = 6          # ConvEncoder on 256² → 4×4
  m.encoder_size = 256
  m.edges = edges
  m.output = 'image'
  m.depth_input = ''
  m.stage1_workdir = ''
  m.stage1_resolution = 0
  m.stage1_generator = ''
  # SPADE resizes the whole conditioning map with nearest in every layer;
  # the depth-aware paper used SPADE unmodified (depth_spade.md pitfall 1).
  m.depth_bilinear = False
  c.loss.gan = 'hinge'
  c.loss.feat = 10.0
  c.loss.vgg = 10.0
  c.loss.kld = 0.05
  c.loss.vgg_allow_random = False
  # TTUR: G lr/2, D 2·lr with lr 2e-4, β=(0, 0.9) (code, issue #50).
  c.optim.g.update(lr=1e-4, b1=0.0, b2=0.9)
  c.optim.d.update(lr=4e-4, b1=0.0, b2=0.9)
  c.optim.schedule = 'linear_decay'
  c.ema.decay = 0.0             # SPADE keeps no EMA generator


def shrink(c) -> None:
  """The `:tiny` variant of any SPADE config: same recipe, tiny nets/run."""
  m = c.model
  m.ngf = m.ndf = 4
  m.spade_hidden = 8
  m.z_dim = 8
  m.encoder_layers, m.encoder_size = 3, 32
  m.n_layers_d = 3
  c.loss.vgg_allow_random = True
  c.batch_size = 8
  c.optim.decay_start = 2
  config_lib.smoke_run(c, steps=4)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, vae=False, res=64)
  c = config_lib.base_config()
  res = 32 if arg.tiny else arg.res
  c.data.name = ('synthetic_scenes/tiny' if arg.tiny else
                 f'synthetic_scenes/res{res}')
  keys = 'keep("image", "label", "edges")'
  c.data.pp_train = ('decode', f'resize({res})', 'random_flip',
                     'instance_edges', keys)
  c.data.pp_eval = ('decode', f'resize({res})', 'instance_edges', keys)
  c.data.shuffle_buffer = 2000
  spade_model(c, edges=True)
  m = c.model
  m.ngf = m.ndf = 16
  m.spade_hidden = 32
  m.use_vae = arg.vae
  m.encoder_layers, m.encoder_size = 4, res   # → 4×4 at 64², as 256² → 4×4
  c.loss.vgg = 0.0
  c.loss.vgg_allow_random = True
  c.batch_size = 8
  c.total_steps = 1500
  c.optim.decay_start = c.total_steps // 2
  c.log_every = 50
  c.image_every = 250
  c.ckpt_every = 500
  c.evals.fid = config_lib.evaluator(
      'fid', every=c.total_steps, num_samples=100, batch_size=50,
      generators=('live',), allow_random_weights=True, kid=False)
  if arg.tiny:
    shrink(c)
    m.encoder_size = 32
  return c
