"""Layout2Im pieces against PyTorch: crops, the ConvLSTM, conditional BN.

The PyTorch side is written from the facts of zhaobozb/layout2im (sg2im's
`crop_bbox_batch`, `ConvLSTMCell`/`LayoutConvLSTM`, `ConditionalBatchNorm2d`),
run on the reference's flat, unpadded object lists; the JAX side on padded
slots with masks. Random inputs and weights, float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import layers
from jaxl2i.models import layout2im as l2i

torch = pytest.importorskip('torch')
F = torch.nn.functional
TOL = 1e-5


def _torch_crops(images, boxes, size):
  """sg2im: box (x0, y0, x1, y1) → [-1, 1], linspace grid, grid_sample with
  align_corners=True (PyTorch 1.0's behaviour). images [N,C,H,W]."""
  b = 2 * boxes - 1
  t = torch.linspace(0, 1, size)
  xs = b[:, 0:1] + (b[:, 2:3] - b[:, 0:1]) * t            # [N, S]
  ys = b[:, 1:2] + (b[:, 3:4] - b[:, 1:2]) * t
  grid = torch.stack([xs[:, None, :].expand(-1, size, -1),
                      ys[:, :, None].expand(-1, -1, size)], dim=3)
  return F.grid_sample(images, grid, align_corners=True)


def test_crops_match_grid_sample_and_its_gradient():
  rng = np.random.default_rng(0)
  images = rng.standard_normal((2, 12, 10, 3)).astype(np.float32)
  boxes = np.float32([[[0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 1.0, 1.0],
                       [-0.3, 0.4, 0.5, 1.2]],
                      [[0.33, 0.1, 0.37, 0.15], [0.5, 0.5, 0.5, 0.5],
                       [0.2, 0.6, 0.9, 0.8]]])
  weights = rng.standard_normal((2, 3, 8, 8, 3)).astype(np.float32)
  crop = lambda im: l2i.crop_boxes(im, jnp.asarray(boxes), 8)
  got, grad = jax.jit(lambda im: (crop(im), jax.grad(
      lambda im: jnp.sum(crop(im) * weights))(im)))(jnp.asarray(images))
  got, grad = np.asarray(got), np.asarray(grad)
  x = torch.tensor(images.transpose(0, 3, 1, 2), requires_grad=True)
  flat = torch.tensor(boxes.reshape(-1, 4))
  want = _torch_crops(x.repeat_interleave(3, dim=0), flat, 8)
  (want * torch.tensor(weights.reshape(6, 8, 8, 3).transpose(0, 3, 1, 2))
   ).sum().backward()
  want = want.detach().numpy().transpose(0, 2, 3, 1).reshape(got.shape)
  assert np.abs(got - want).max() < TOL
  assert np.abs(grad - x.grad.numpy().transpose(0, 2, 3, 1)).max() < 1e-4


class _TorchCell(torch.nn.Module):
  """`ConvLSTMCell`: one conv over [input, h] → (i, f, o, g)."""

  def __init__(self, cin, hidden, k):
    super().__init__()
    self.hidden = hidden
    self.conv = torch.nn.Conv2d(cin + hidden, 4 * hidden, k, padding=k // 2)

  def forward(self, x, h, c):
    i, f, o, g = torch.split(self.conv(torch.cat([x, h], 1)), self.hidden, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def test_conv_lstm_matches_the_reference_layout_conv_lstm():
  """Per image, layer after layer over its objects (LayoutConvLSTM)."""
  torch.manual_seed(0)
  hidden, k, cin = (6, 4, 4), 5, 3
  cells = [_TorchCell(cin if l == 0 else hidden[l - 1], hid, k)
           for l, hid in enumerate(hidden)]
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 4, 6, 6, cin)).astype(np.float32)
  counts = (4, 2)
  valid = np.arange(4)[None] < np.array(counts)[:, None]
  params = {f'cell{l}': {
      'kernel': jnp.asarray(layers.torch_conv_kernel_to_flax(
          cell.conv.weight.detach().numpy())),
      'bias': jnp.asarray(cell.conv.bias.detach().numpy())}
            for l, cell in enumerate(cells)}
  got = np.asarray(jax.jit(layers.ConvLSTM(hidden, k).apply)(
      {'params': params}, x, valid))
  for b, n in enumerate(counts):
    seq = [torch.tensor(x[b, t].transpose(2, 0, 1))[None] for t in range(n)]
    for cell in cells:
      h = c = torch.zeros(1, cell.hidden, 6, 6)
      outs = []
      for inp in seq:
        h, c = cell(inp, h, c)
        outs.append(h)
      seq = outs
    want = h[0].detach().numpy().transpose(1, 2, 0)
    assert np.abs(got[b] - want).max() < TOL


def test_conditional_batch_norm_matches_torch_on_the_valid_objects():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((5, 4, 4, 3)).astype(np.float32)
  y = np.array([2, 0, 1, 2, 1])
  mask = np.array([True, True, True, False, True])
  cbn = layers.ConditionalBatchNorm(num_classes=3)
  v = jax.jit(lambda k: cbn.init(k, x, y, train=False))(jax.random.key(0))
  got, st = jax.jit(lambda v: cbn.apply(v, x, y, train=True, mask=mask,
                                        mutable=['batch_stats']))(v)
  table = torch.tensor(np.asarray(v['params']['embed']))
  bn = torch.nn.BatchNorm2d(3, affine=False)
  xt = torch.tensor(x[mask].transpose(0, 3, 1, 2))
  gamma, beta = table[y[mask]].chunk(2, 1)
  want = gamma[:, :, None, None] * bn(xt) + beta[:, :, None, None]
  want = want.detach().numpy().transpose(0, 2, 3, 1)
  assert np.abs(np.asarray(got)[mask] - want).max() < TOL
  np.testing.assert_allclose(st['batch_stats']['bn']['mean'],
                             bn.running_mean.numpy(), atol=1e-6)
