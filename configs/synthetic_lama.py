r"""LAMA on the embedded synthetic scenes: the CPU demo (`make demo`).

  python -m jaxl2i.main --config=configs/synthetic_lama.py \
      --workdir=runs/synthetic_lama

Layouts (boxes + classes of up to 11 objects: ≤3 stuff regions, then things
nearest first) → object masks → 64×64 images. The recipe is LAMA's
(configs/coco_lama.py: hinge, λ_obj 1 / λ_img 0.1, Adam β=(0, 0.999), G 1e-4
/ D 3e-4 with the mapping/ρ ×0.1 and D-α ×0.2 groups, D-only iterations at
the start of every epoch) with two demo changes: narrower networks (G ch 16,
D ch 8, mask net 32 instead of 64/64/128) and G's ReZero gates at lr ×10,
so that 2 CPU cores show masks in their boxes and images following them
within a 1,200-step run.

Variants: `:tiny` (small nets, a few steps: tests), `:gt_masks` (the
mask-to-image part trained on ground-truth masks, LAMA Sec. 3).
"""

from jaxl2i import config_lib


def lama_model(c, res: int) -> None:
  """config.model / loss / optim of LAMA (reference §3–6) at `res`."""
  c.recipe = 'lama'
  c.model.arch = 'lama'
  c.model.resolution = res
  c.model.ch = 64
  c.model.d_ch = 64
  c.model.z_dim = 128
  c.model.embed_dim = 0          # 0: 128 / 160 / 192 at 64 / 128 / 256
  c.model.mask_hidden = 128
  c.model.mask_adaption = True
  c.model.mask_source = 'generated'
  c.model.truncation = 2.0       # test.py: |z| > 2 redrawn once
  c.loss.img = 0.1               # λ_img
  c.loss.obj = 1.0               # λ_obj
  c.optim.g = dict(lr=1e-4, b1=0.0, b2=0.999, eps=1e-8,
                   groups=(('mapping|rho', 0.1),))   # style MLP and ISLA ρ
  c.optim.d = dict(lr=3e-4, b1=0.0, b2=0.999, eps=1e-8,
                   groups=(('alpha', 0.2),))          # D's ReZero gates
  c.optim.d_only_steps = 31      # train.py: G stepped when idx > 30
  c.ema.decay = 0.0              # LAMA keeps no EMA of G
  c.data.epoch_multiplier = 2    # the loaders' mirrored copies


def shrink(c) -> None:
  """The `:tiny` variant of any LAMA config: same recipe, tiny nets/run."""
  c.model.ch = c.model.d_ch = 4
  c.model.z_dim = c.model.embed_dim = 8
  c.model.mask_hidden = 8
  c.batch_size = 8
  c.optim.d_only_steps = min(c.optim.d_only_steps, 1)
  config_lib.smoke_run(c, steps=4)


def layout_pp(res: int, max_objects: int, train: bool,
              extra=()) -> tuple[str, ...]:
  """decode → resize → (flip) → pad_objects → keep (LAMA's loaders)."""
  keys = ', '.join(f'"{k}"' for k in ('image', 'boxes', 'classes',
                                      'objects_mask', *extra))
  return ('decode', f'resize({res})', *(('random_flip',) if train else ()),
          f'pad_objects({max_objects})', f'keep({keys})')


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, gt_masks=False)
  c = config_lib.base_config()
  res = 64
  lama_model(c, res)
  c.data.name = 'synthetic_scenes/tiny' if arg.tiny else 'synthetic_scenes/res64'
  c.data.max_objects = 11
  extra = ('instance',) if arg.gt_masks else ()
  c.data.pp_train = layout_pp(res, 11, True, extra)
  c.data.pp_eval = layout_pp(res, 11, False, ('instance',))
  c.data.shuffle_buffer = 2000
  if arg.gt_masks:
    c.model.mask_source = 'gt'

  # Narrower than the paper's 64/64/128 so 2 CPU cores train it in minutes
  # (the D's first blocks run at full resolution, the mask net per object).
  c.model.ch = 16
  c.model.d_ch = 8
  c.model.z_dim = 64
  c.model.embed_dim = 64
  c.model.mask_hidden = 32

  # The ReZero gates α (G blocks, ISLA, mask adaption) start at 0 and move
  # ~lr per Adam step: at 1e-4 the residual branches, which carry the masks'
  # modulation, stay nearly shut for a demo-length run (blocky images), so
  # the demo trains them at ×10. coco_lama.py keeps the reference's rates.
  c.optim.g.groups = (('mapping|rho', 0.1), ('alpha', 10.0))
  c.batch_size = 8
  c.total_steps = 1200
  c.optim.schedule = 'constant'
  c.log_every = 50
  c.image_every = 200
  c.ckpt_every = 400
  c.evals.fid = config_lib.evaluator(
      'fid', every=c.total_steps, num_samples=100, batch_size=50,
      generators=('live',), allow_random_weights=True, kid=False)
  if arg.tiny:
    shrink(c)
  return c
