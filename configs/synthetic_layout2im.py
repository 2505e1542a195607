r"""Layout2Im on the embedded synthetic scenes: a CPU demo.

  python -m jaxl2i.main --config=configs/synthetic_layout2im.py \
      --workdir=runs/synthetic_layout2im

Layouts (boxes + classes of up to 8 objects, in a random order every time an
example is read) → images. The recipe is the official one
(configs/coco_layout2im.py: BCE GAN + AC classifier + VAE terms, Adam
β=(0.5, 0.999), batch 8, D then G run again on the same z) on a CPU budget:
32×32 images and 16×16 crops (the synthetic 64 px scenes resized; a 64 px
step costs ~4.5× as much), narrower networks (encoders/decoder ch 8,
ConvLSTM (32, 32, 32) with 3×3 kernels on its 4×4 maps, z and embedding 16,
both D's ch 8, 2 residual blocks instead of 64 / (128, 64, 64), 5×5 / 64 /
64 / 6), a 10× learning rate, λ_img_rec 10 instead of 1 (with the
reference's weights the z-regression and adversarial gradients dominate the
first hundreds of steps and the image L1 does not move), λ_kl 1e-4 instead
of 0.01 (the KL is summed over the batch's ~60 objects and all z dims, and
at 0.01 it drove the crop encoder to the prior, KL ≈ 0.2, in every short
run), and two options that are not the reference's: the z regression trains
G only (`model.z_rec_fixed_encoder`: its gradient into the crop encoder
collapsed the encoder's codes) and G's adversarial and classifier terms ramp
in over 900 steps (`loss.adv_warmup`). On `synthetic_scenes/varied64` (the
same layouts, each thing's colours random, so an object's z has its colour
to carry) these settings give per-object codes: redrawing one object's z
changes its box 5.6× as much as the rest of the image at step 4,800 (the
`object_z` evaluator). The runs behind each choice: README, Layout2Im.

Variants: `:tiny` (tiny nets at 32 px, a few steps: tests).
"""

from jaxl2i import config_lib


def layout2im_model(c) -> None:
  """config.model / loss / optim of Layout2Im (reference/layout2im.md §1-4)."""
  c.recipe = 'layout2im'
  c.model.resolution = 64        # image_size
  c.model.crop_size = 32         # object_size
  c.model.ch = 64                # conv_dim of the encoders and the decoder
  c.model.z_dim = 64             # argparse (the class default is 8)
  c.model.embed_dim = 64
  c.model.clstm_hidden = (128, 64, 64)   # clstm_layers=3
  c.model.clstm_kernel = 5
  c.model.num_res = 6            # the class default (resi_num is not passed)
  c.model.d_img_ch = 64          # ImageDiscriminator(conv_dim=embedding_dim)
  c.model.d_obj_ch = 64
  c.model.box_mask_nonempty = True   # data/coco_custom_mask.py's masks
  c.model.minmax_stretch = True      # imagenet_deprocess_batch(rescale=True)
  # False: the z regression's gradients reach the crop encoder too, as in
  # train.py; True: G only, as BicycleGAN's latent regression.
  c.model.z_rec_fixed_encoder = False
  c.loss.img_adv = 1.0           # λ_img_adv
  c.loss.obj_adv = 1.0           # λ_obj_adv
  c.loss.obj_cls = 1.0           # λ_obj_cls
  c.loss.img_rec = 1.0           # λ_img_rec
  c.loss.z_rec = 10.0            # λ_z_rec
  c.loss.kl = 0.01               # λ_kl
  c.loss.adv_warmup = 0          # no ramp-in of G's adversarial terms
  adam = dict(lr=1e-4, b1=0.5, b2=0.999, eps=1e-8, groups=())
  c.optim.g = dict(adam)         # G, D_img and D_obj: the same Adam
  c.optim.d = dict(adam)
  c.optim.schedule = 'constant'
  c.ema.decay = 0.0              # the reference keeps no EMA of G
  c.batch_size = 8
  c.total_steps = 300_000        # niter


def layout2im_pp(res: int, max_objects: int, select=()) -> tuple[str, ...]:
  """The loaders' pipeline: PIL-like resize (no flip), objects shuffled."""
  keys = '"image", "boxes", "classes", "objects_mask"'
  return ('decode', f'resize({res}, antialias=True)', *select,
          f'pad_objects({max_objects})', 'shuffle_objects', f'keep({keys})')


def shrink(c) -> None:
  """The `:tiny` variant of any Layout2Im config: 32 px, tiny nets, 4 steps."""
  c.model.resolution = 32
  c.model.crop_size = 16
  c.model.ch = c.model.d_img_ch = c.model.d_obj_ch = 4
  c.model.z_dim = c.model.embed_dim = 4
  # One ConvLSTM layer: the step compiles ~15 % faster; the 3-layer stack
  # is tested against numpy in tests/test_models_layout2im.py.
  c.model.clstm_hidden = (4,)
  c.model.clstm_kernel = 3
  c.model.num_res = 1
  resize = lambda pp: tuple(p.replace('resize(64,', 'resize(32,') for p in pp)
  c.data.pp_train, c.data.pp_eval = resize(c.data.pp_train), resize(
      c.data.pp_eval)
  c.batch_size = 8
  config_lib.smoke_run(c, steps=4)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False)
  c = config_lib.base_config()
  layout2im_model(c)
  # varied64: the res64 layouts with random thing colours, which z carries.
  c.data.name = ('synthetic_scenes/tiny' if arg.tiny else
                 'synthetic_scenes/varied64')
  # 8 slots as COCO: the stuff regions and the nearest things (the builder's
  # order; pad_objects truncates before the shuffle).
  c.data.max_objects = 8
  c.data.pp_train = c.data.pp_eval = layout2im_pp(32, 8)
  c.data.shuffle_buffer = 2000

  # Smaller and narrower than the reference so that 2 CPU cores train it in
  # minutes (module docstring).
  c.model.resolution = 32
  c.model.crop_size = 16
  c.model.ch = 8
  # Wider than the first demo's (16, 8, 8), which left 4×4×8 numbers for a
  # whole scene; on 4×4 maps a 3×3 kernel already sees the whole map.
  c.model.clstm_hidden = (32, 32, 32)
  c.model.clstm_kernel = 3
  c.model.z_dim = c.model.embed_dim = 16
  c.model.d_img_ch = c.model.d_obj_ch = 8
  c.model.num_res = 2
  c.loss.img_rec = 10.0
  c.loss.kl = 1e-4               # λ_z_rec stays 10 (5: less local codes)
  c.model.z_rec_fixed_encoder = True
  c.loss.adv_warmup = 900
  c.optim.g.lr = c.optim.d.lr = 1e-3
  c.total_steps = 4800
  c.log_every = 50
  c.image_every = 600
  c.ckpt_every = 600
  c.evals.fid = config_lib.evaluator(
      'fid', every=c.total_steps, num_samples=100, batch_size=50,
      generators=('live',), allow_random_weights=True, kid=False,
      uint8='truncate')
  # Does redrawing one object's z change that object or the whole image?
  c.evals.object_z = config_lib.evaluator(
      'object_z', every=1200, num_samples=64, batch_size=32,
      generators=('live',))
  if arg.tiny:
    shrink(c)
  return c
