r"""FID Inception feature-extraction throughput (img/s), jaxl2i vs pytorch-fid.

  python benchmarks/fid_throughput.py --batch=200 --size=256 --iters=20
  python benchmarks/fid_throughput.py --torch   # also time pytorch-fid

Inputs are random 256×256 uint8 images (the weights do not change the speed,
so random weights are used when the weight file is not cached). jaxl2i runs in
float32 with precision=HIGHEST, resize to 299 included, as in evaluation;
pytorch-fid's InceptionV3([3]) runs in float32 on the same device (CUDA if
available) with its own resize. Prints one JSON line per implementation.
"""

import json
import time

from absl import app
from absl import flags
import jax
import numpy as np

_BATCH = flags.DEFINE_integer('batch', 200, 'Images per call.')
_SIZE = flags.DEFINE_integer('size', 256, 'Input height and width.')
_ITERS = flags.DEFINE_integer('iters', 20, 'Timed calls after 2 warm-ups.')
_TORCH = flags.DEFINE_bool('torch', False, 'Also time pytorch-fid.')


def _time(fn, iters: int) -> float:
  for _ in range(2):
    fn()
  start = time.perf_counter()
  for _ in range(iters):
    fn()
  return time.perf_counter() - start


def bench_jax(images: np.ndarray, iters: int) -> dict:
  from jaxl2i.nets import inception_fid  # pylint: disable=g-import-not-at-top
  variables, is_random = inception_fid.load_inception(allow_random=True,
                                                      download=False)
  features = inception_fid.inception_fn(variables)
  x = jax.device_put(images)
  seconds = _time(lambda: features(x).block_until_ready(), iters)
  return dict(impl='jaxl2i', device=str(jax.devices()[0]),
              img_per_s=round(iters * len(images) / seconds, 1),
              random_weights=is_random)


def bench_torch(images: np.ndarray, iters: int) -> dict:
  # pylint: disable=g-import-not-at-top
  import torch
  from pytorch_fid import inception as pi
  # pylint: enable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  # The real FID architecture with its weight download replaced by the
  # freshly built model's own (random) state_dict: speed does not depend on
  # the values.
  built, make = [], pi._inception_v3  # pylint: disable=protected-access
  pi._inception_v3 = lambda *a, **k: built.append(make(*a, **k)) or built[-1]  # pylint: disable=protected-access
  pi.load_state_dict_from_url = lambda *a, **k: built[-1].state_dict()
  model = pi.InceptionV3([3]).to(device).eval()
  x = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)

  def run():
    with torch.no_grad():
      model(x.float() / 255.0)[0]
    if device == 'cuda':
      torch.cuda.synchronize()

  seconds = _time(run, iters)
  return dict(impl='pytorch-fid', device=device,
              img_per_s=round(iters * len(images) / seconds, 1))


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (_BATCH.value, _SIZE.value, _SIZE.value, 3),
                        dtype=np.uint8)
  print(json.dumps(bench_jax(images, _ITERS.value)))
  if _TORCH.value:
    print(json.dumps(bench_torch(images, _ITERS.value)))


if __name__ == '__main__':
  app.run(main)
