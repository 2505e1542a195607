r"""The image-space-loss baseline of the CRN paper (Sec. 4, Eq. 4).

  python -m jaxl2i.main --config=configs/cityscapes_crn_imagespace.py \
      --workdir=runs/crn256_imagespace

The CRN of configs/cityscapes_crn.py (same variants) trained with the
p0 term only: Σ λ_0 |I − g(L)| on the pixels, no VGG-19.
"""

from jaxl2i import config_lib

_crn = config_lib.load_module(__file__, 'cityscapes_crn.py')


def get_config(arg=None):
  c = _crn.get_config(arg)
  c.loss.taps = ('input',)
  c.loss.lambda_table = ''
  c.loss.lambdas = (1.0,)
  return c
