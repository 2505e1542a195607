r"""SPADE on COCO-Stuff label maps at 256², the paper's setting.

  python -m jaxl2i.data.prepare --dataset=coco_stuff_maps --manual_dir=$COCO
  python -m jaxl2i.main --config=configs/coco_spade.py --workdir=runs/coco_spade

reference/spade_pix2pix.md Part A: 182 classes + dontcare (255 → 182) one-hot
and the instance-edge channel = 184 input channels; ngf = ndf = 64, 'normal'
upsampling (8×8 latent), SPADE hidden 128, 2-scale PatchGAN with 4 layers;
hinge + feature matching 10 + VGG-19 10; TTUR G 1e-4 / D 4e-4, β=(0, 0.9);
batch 32 (the paper's 8 GPUs; BN statistics over the global batch). Train
transform: resize 286, random 256 crop, flip; eval: resize 256.
Epochs: 100 constant + 100 linear decay (SPADE records no per-dataset count;
this is the usual split, unverified). SPADE decays once per epoch; here the
decay is linear per step over the same span.
Variants: `:vae` (image encoder + KLD 0.05), `:tiny` (tests).
"""

from jaxl2i import config_lib

_synthetic = config_lib.load_module(__file__, 'synthetic_spade.py')
EPOCHS, DECAY_EPOCHS = 100, 100
VAL_IMAGES = 5000      # COCO-Stuff 2017 validation


def labelmap_data(c, name: str, size, crop, *, edges: bool,
                  extra: tuple[str, ...] = (), method: str = '') -> None:
  """SPADE's train/eval transforms; size/crop: int or (h, w); method: of
  the image resize ('' = bilinear, 'area' for large shrinks)."""
  hw = lambda s: f'{s}' if isinstance(s, int) else f'{s[0]}, {s[1]}'
  keys = ('image', 'label') + (('edges',) if edges else ()) + tuple(extra)
  keep = 'keep(' + ', '.join(f'"{k}"' for k in keys) + ')'
  post = ('instance_edges',) if edges else ()
  c.data.name = name
  how = f', method="{method}"' if method else ''
  train = ['decode', f'resize({hw(size)}{how})']
  if crop:
    train.append(f'random_crop({hw(crop)})')
  c.data.pp_train = tuple(train) + ('random_flip',) + post + (keep,)
  c.data.pp_eval = ('decode', f'resize({hw(crop or size)}{how})') + post + (
      keep,)
  c.data.shuffle_buffer = 5000


def spade_schedule(c, epochs: int, decay_epochs: int) -> None:
  c.total_epochs = float(epochs + decay_epochs)
  c.optim.schedule = 'linear_decay'
  c.optim.decay_start_epoch = float(epochs)


def spade_evals(c, every: int, num_samples: int) -> None:
  c.evals.fid = config_lib.evaluator('fid', every=every,
                                     num_samples=num_samples,
                                     generators=('live',), kid=False)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, vae=False, tiny=False)
  c = config_lib.base_config()
  labelmap_data(c, 'coco_stuff_maps', 286, 256, edges=True)
  _synthetic.spade_model(c, edges=True)
  c.model.use_vae = arg.vae
  c.batch_size = 32
  spade_schedule(c, EPOCHS, DECAY_EPOCHS)
  c.log_every = 100
  c.image_every = 2000
  c.ckpt_every = 5000
  spade_evals(c, every=50_000, num_samples=VAL_IMAGES)
  if arg.tiny:
    _synthetic.shrink(c)
    labelmap_data(c, 'coco_stuff_maps', 36, 32, edges=True)
  return c
