r"""Depth-aware two-stage SPADE on the synthetic scenes (CPU demo).

  # stage 1: label map -> depth (synthetic_scenes has true depth)
  python -m jaxl2i.main --config=configs/synthetic_depth_spade.py:stage=1 \
      --workdir=runs/synthetic_depth_spade_stage1
  # stage 2: label map + stage-1 depth -> image
  python -m jaxl2i.main --config=configs/synthetic_depth_spade.py:stage=2 \
      --workdir=runs/synthetic_depth_spade_stage2 \
      --config.model.stage1_workdir=runs/synthetic_depth_spade_stage1
  # sampling labels -> depth -> image (stage 2 carries its stage-1 copy)
  python -m jaxl2i.generate --workdir=runs/synthetic_depth_spade_stage2 \
      --label_map=map.png

reference/depth_spade.md: both stages are SPADE (configs/synthetic_spade.py
widths); stage 1 outputs one channel, without the VGG loss; stage 2 is
conditioned on concat(one-hot labels, depth) in every SPADE layer and its D
sees labels ⊕ depth ⊕ image; it trains on the depth of the frozen stage-1
generator. `:stage=2,depth=data` trains stage 2 on the dataset's depth
instead (the train/test-gap ablation). SPADE layers resize the whole
conditioning map, depth included, with nearest as the reference does;
`:bilinear` resizes the depth channel bilinearly instead (a deliberate
deviation: nearest aliases a continuous map, depth_spade.md pitfall 1).
Variants: `:tiny` as everywhere.
"""

from jaxl2i import config_lib

STAGE1_WORKDIR = 'runs/synthetic_depth_spade_stage1'


def depth_stage(c, stage: int, depth: str = 'stage1',
                stage1_workdir: str = '') -> None:
  """Turns a SPADE config into stage 1 (labels → depth) or 2 (→ image)."""
  if stage == 1:
    c.model.output = 'depth'
    c.loss.vgg = 0.0          # VGG needs 3 channels (depth_spade.md §3)
    keys = [k for k in ('image', 'label', 'edges', 'depth')]
  elif stage == 2:
    c.model.depth_input = depth
    c.model.stage1_workdir = stage1_workdir if depth == 'stage1' else ''
    keys = ['image', 'label', 'edges'] + (['depth'] if depth == 'data'
                                          else [])
  else:
    raise ValueError(f'stage={stage}: use 1 or 2')
  keep = 'keep(' + ', '.join(f'"{k}"' for k in keys) + ')'
  if not c.model.edges:
    keep = keep.replace(', "edges"', '')
  c.data.pp_train = c.data.pp_train[:-1] + (keep,)
  c.data.pp_eval = c.data.pp_eval[:-1] + (keep,)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, stage=1, depth='stage1', bilinear=False,
                             tiny=False)
  c = config_lib.load_module(__file__, 'synthetic_spade.py').get_config(
      f'tiny={arg.tiny}')
  depth_stage(c, arg.stage, arg.depth, STAGE1_WORKDIR)
  c.model.depth_bilinear = arg.bilinear
  if arg.stage == 1:
    c.evals.fid.generators = ('live',)   # FID of depth maps (tiled to RGB)
  return c
