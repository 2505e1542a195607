r"""Converts a published PyTorch weight file into cached Flax parameters.

  python -m jaxl2i.nets.convert --name vgg19 [--src vgg19-dcbb9e9d.pth]
  python -m jaxl2i.nets.convert --name inception [--src pt_inception-....pth]
  python -m jaxl2i.nets.convert --name alexnet   (LPIPS trunk; lpips_alex_lin: heads)
  python -m jaxl2i.nets.convert --name vgg19_matconvnet \
      --src imagenet-vgg-verydeep-19.mat              (CRN's loss network)

With --src the local file is verified (sha256 prefix) and copied into the
cache (`$JAXL2I_CACHE`, default ~/.cache/jaxl2i); without it the file is taken
from the cache or downloaded (unless JAXL2I_OFFLINE=1). The converted variables
are written beside it as an .npz keyed by the file's sha256 and the converter
version; `weights.load_params` and `load_vgg19` / `load_inception` read it.

Reading the .pth needs no torch: jaxl2i.nets.pth parses both torch.save formats
with a restricted unpickler (no code from the file is executed); MatConvNet's
.mat files are read with scipy (jaxl2i.nets.matconvnet).
"""
from collections.abc import Sequence
import pathlib

from absl import app
from absl import flags
from absl import logging

from jaxl2i.nets import lpips  # pylint: disable=unused-import  (registers its files)
from jaxl2i.nets import vgg19  # pylint: disable=unused-import  (registers its .mat)
from jaxl2i.nets import weights

_NAME = flags.DEFINE_string(
    'name', None, 'Weight file: short name (vgg19, vgg19_matconvnet, '
    'inception, alexnet, lpips_alex_lin) or file name.')
_SRC = flags.DEFINE_string(
    'src', None, 'Local copy of the published .pth to verify and install.')
_DOWNLOAD = flags.DEFINE_bool(
    'download', True, 'Download the file if it is not in the cache.')


def convert(name: str, src: str | None = None, *,
            download: bool = True) -> pathlib.Path:
  """Installs (optional) and converts a registered file; returns the .npz.

  Raises:
    weights.WeightsError: the file is unavailable or has a wrong checksum.
  """
  entry = weights.get(name)
  if src is not None:
    path = weights.install(entry.name, src)
    logging.info('Installed %s as %s', src, path)
  weights.load_params(entry.name, download=download)
  npz = weights.converted_path(entry.name, weights.fetch(entry.name,
                                                         download=False))
  logging.info('Flax parameters of %s: %s', entry.name, npz)
  return npz


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    convert(_NAME.value, _SRC.value, download=_DOWNLOAD.value)
  except (weights.WeightsError, KeyError) as e:
    raise SystemExit(f'error: {e}') from e


if __name__ == '__main__':
  flags.mark_flag_as_required('name')
  app.run(main)
