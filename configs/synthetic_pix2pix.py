r"""pix2pix on the embedded synthetic scenes: the CPU demo (`make demo`).

  python -m jaxl2i.main --config=configs/synthetic_pix2pix.py \
      --workdir=runs/synthetic_pix2pix

Variants: `:tiny` (32 px, small nets, a few steps: tests), `:res=128`.
Architecture and losses follow reference/spade_pix2pix.md Part B; widths, the
number of U-Net levels and the step count are scaled down so a laptop CPU
shows the image following the label map within ~10 minutes.
"""

from jaxl2i import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, res=64)
  c = config_lib.base_config()
  c.recipe = 'pix2pix'
  res = 32 if arg.tiny else arg.res
  c.data.name = 'synthetic_scenes/tiny' if arg.tiny else f'synthetic_scenes/res{res}'
  # pix2pix jitter: resize to 286/256 of the crop, random crop, random flip.
  jitter = round(res * 286 / 256)
  c.data.pp_train = ('decode', f'resize({jitter})', f'random_crop({res})',
                     'random_flip', 'keep("image", "label")')
  c.data.pp_eval = ('decode', f'resize({res})', 'keep("image", "label")')
  c.data.shuffle_buffer = 2000

  c.model.ngf = 32
  c.model.ndf = 32
  c.model.num_downs = {32: 5, 64: 6, 128: 7, 256: 8}[res]
  c.model.n_layers_d = 3
  c.model.use_dropout = True
  c.model.dropout_rate = 0.5
  c.model.input = 'onehot'      # one-hot label map (synthetic has 11 classes)
  c.model.edges = False
  c.model.sample_train_mode = False   # grids: eval mode, running BN stats

  c.loss.gan = 'vanilla'
  c.loss.l1 = 100.0             # λ_L1 (pix2pix_model.py)

  # Adam 2e-4, β=(0.5, 0.999) for G and D; linear decay over the 2nd half.
  c.batch_size = 8
  c.total_steps = 1000
  c.optim.schedule = 'linear_decay'
  c.optim.decay_start = c.total_steps // 2
  c.ema.decay = 0.999

  c.log_every = 50
  c.image_every = 200
  c.ckpt_every = 500
  # FID of the EMA generator at the end of the demo. Small (100 samples, so
  # biased upwards; the protocol in eval_<step>.json says so); without the
  # Inception weight file cached it runs on RANDOM weights and is labelled
  # fid_RANDOM_WEIGHTS: a smoke signal, not a FID.
  c.evals.fid = config_lib.evaluator(
      'fid', every=c.total_steps, num_samples=100, batch_size=40,
      generators=('ema',), allow_random_weights=True, kid=False)
  if arg.tiny:
    c.model.ngf = c.model.ndf = 8
    c.model.n_layers_d = 2
    c.optim.decay_start = 2
    config_lib.smoke_run(c, steps=4)
  return c
