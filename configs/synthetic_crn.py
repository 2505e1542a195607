r"""CRN on the embedded synthetic scenes (CPU demo of the CRN recipe).

  python -m jaxl2i.main --config=configs/synthetic_crn.py \
      --workdir=runs/synthetic_crn

Variants: `:tiny` (32 px, 4 modules of 8 channels, 4 steps: tests), `:k=N`
(outputs per label map, default 4; demo_256p.py has 9), `:res=128`.
The recipe is CRN's (reference/crn.md): refinement modules from 4×4 (square
maps) up, layer norm eps 1e-12, LReLU 0.2, align-corners upsampling, the
perceptual loss on p0 + conv1_2 … conv5_2 of the average-pooling VGG-19 with
class masks and the diversity hindsight, Adam 1e-4 (TF defaults).
Scaled for a CPU (1,500 steps at batch 1): module widths DEMO_CHANNELS
instead of 1024/512, lr 5e-4, and the loss taps stop at conv3_2
(DEMO_TAPS): at 64 px conv4/conv5 run at 8×8 and 4×4 with 512 channels and
would make the step 4× slower. Without the
MatConvNet VGG-19 file cached, the VGG runs with RANDOM weights (logged as
g/p*_RANDOM_WEIGHTS), so the reference λ table, which balances the real
network's features, is replaced by the paper's automatic rule (λ_l =
1/#elements, rescaled after `auto_lambda_epochs`).
The hindsight's mean term weighs 1.0 instead of 0.001, and k is 4: with
the reference's 0.001 (k = 9) or with 0.1 (k = 9 and k = 3) every output
was still a single flat colour per class after 500-750 steps — each class
takes its best output, so outputs specialise to one class's colour and
learn the other classes at a small fraction of the rate. With 1.0 every
output learns the whole scene while the per-class minimum still pulls them
apart (walls, houses, floors and cars in different colours per output).
"""

from jaxl2i import config_lib

# Channels of the 5 modules 4² … 64² (reference 256p: 1024 ×5, 512 ×2).
DEMO_CHANNELS = (256, 256, 128, 64, 32)
TAPS = ('input', 'relu1_2', 'relu2_2', 'relu3_2', 'relu4_2', 'relu5_2')
DEMO_TAPS = TAPS[:4]


def crn_model(c, *, resolution: int, aspect: int, k: int) -> None:
  """The reference CRN settings (reference/crn.md §1-6)."""
  c.recipe = 'crn'
  m = c.model
  m.resolution = resolution
  m.aspect = aspect             # W / H (Cityscapes 2)
  m.channels = ()               # () = the reference ladder for `resolution`
  m.num_images = k
  m.num_classes = 0             # 0: the dataset's
  m.remat = False
  m.trainable = ''              # '' = every parameter trains
  l = c.loss
  l.taps = TAPS                 # p0, conv1_2 … conv5_2 (post-ReLU)
  l.lambda_table = 'cityscapes_256p'
  l.lambdas = ()
  l.class_masks = k > 1         # per-class hindsight (diversity loss)
  l.min_weight = 0.999          # demo_256p.py G_loss
  l.mean_weight = 0.001
  l.auto_lambda_epochs = 0.0    # > 0: the paper's automatic λ rule
  l.vgg_weights = 'matconvnet'
  l.vgg_allow_random = False
  # Adam 1e-4 with TF's defaults (β 0.9, 0.999, ε 1e-8), constant rate.
  # (TF applies ε to the un-bias-corrected √v; optax to √v̂: the same
  # update once 0.999^t is small.)
  c.optim.g.update(lr=1e-4, b1=0.9, b2=0.999, eps=1e-8)
  c.optim.schedule = 'constant'
  c.ema.decay = 0.0             # no EMA generator in the reference
  c.batch_size = 1


def shrink(c) -> None:
  """The `:tiny` variant of any CRN config: same recipe, tiny nets/run."""
  c.model.resolution = 32
  c.model.channels = (8, 8, 8, 8)
  c.model.num_images = min(c.model.num_images, 2)
  c.model.remat = True          # exercised by the one-step test
  # conv5 at 2×2 pixels: XLA's CPU conv backward is pathologically slow
  # (0.5 s per layer), so the smoke variant stops at conv4_2.
  c.loss.taps = TAPS[:5]
  c.loss.lambda_table = ''
  c.loss.lambdas = (1.0,) * len(c.loss.taps)
  c.loss.class_masks = c.model.num_images > 1
  c.loss.auto_lambda_epochs = 1.0
  c.loss.vgg_allow_random = True
  c.batch_size = 2
  config_lib.smoke_run(c, steps=4)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, k=4, res=64)
  c = config_lib.base_config()
  res = 32 if arg.tiny else arg.res
  c.data.name = ('synthetic_scenes/tiny' if arg.tiny else
                 f'synthetic_scenes/res{res}')
  keys = 'keep("image", "label")'
  # No augmentation, as the reference.
  c.data.pp_train = ('decode', f'resize({res})', keys)
  c.data.pp_eval = ('decode', f'resize({res})', keys)
  c.data.shuffle_buffer = 2000
  crn_model(c, resolution=res, aspect=1, k=arg.k)
  c.loss.mean_weight = 1.0       # reference 0.001 (see above)
  c.optim.g.lr = 5e-4            # reference 1e-4
  n = res.bit_length() - 2      # modules from 4×4 to res×res
  c.model.channels = ((DEMO_CHANNELS[0],) * (n - 5) + DEMO_CHANNELS)[-n:]
  c.loss.taps = DEMO_TAPS
  c.loss.lambda_table = ''
  c.loss.lambdas = (1.0,) * len(c.loss.taps)
  c.loss.auto_lambda_epochs = 0.06   # 300 of the 5,000 steps per epoch
  c.loss.vgg_allow_random = True
  c.total_steps = 1500
  c.log_every = 50
  c.image_every = 250
  c.ckpt_every = 500
  c.num_grid_samples = 4
  c.evals.fid = config_lib.evaluator(
      'fid', every=c.total_steps, num_samples=100, batch_size=20,
      generators=('live',), allow_random_weights=True, kid=False)
  if arg.tiny:
    shrink(c)
  return c
