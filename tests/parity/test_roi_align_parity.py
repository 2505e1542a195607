"""ROIAlign parity with torchvision.ops.roi_align(aligned=False).

LAMA's discriminator uses the legacy maskrcnn-benchmark ROIAlign
(`ROIAlign((8, 8), scale, 0)`), numerically torchvision's aligned=False.
Forward values and the gradient with respect to the features are compared.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxl2i.models import roi_align

torch = pytest.importorskip('torch')
tv_ops = pytest.importorskip('torchvision.ops')

TOL = 1e-4

# Boxes in image pixels (image 32×32): inside, tiny (< 1 feature px), on the
# border, partly off-canvas, full image, and degenerate (zero size).
BOXES = np.array([
    [[2.0, 3.0, 20.0, 30.0], [5.5, 7.25, 6.0, 7.5], [0.0, 0.0, 32.0, 32.0],
     [-6.0, 20.0, 10.0, 40.0]],
    [[10.0, 10.0, 10.0, 10.0], [16.3, 1.7, 31.9, 12.2], [30.0, 30.0, 32.0,
                                                          32.0],
     [-20.0, -20.0, -4.0, -3.0]],
], np.float32)


def _torch_roi(feat_nhwc, boxes, scale, sampling_ratio=0):
  b, o = boxes.shape[:2]
  idx = np.repeat(np.arange(b, dtype=np.float32), o)[:, None]
  rois = torch.tensor(np.concatenate([idx, boxes.reshape(-1, 4)], 1))
  x = torch.tensor(np.transpose(feat_nhwc, (0, 3, 1, 2)), requires_grad=True)
  out = tv_ops.roi_align(x, rois, output_size=(8, 8), spatial_scale=scale,
                         sampling_ratio=sampling_ratio, aligned=False)
  return x, out  # out [b·o, C, 8, 8]


@pytest.mark.parametrize('scale,size,max_samples', [(0.5, 16, None),
                                                    (0.25, 8, None),
                                                    (1.0, 32, 8)])
def test_forward_and_feature_gradient(scale, size, max_samples):
  rng = np.random.default_rng(0)
  feat = rng.normal(size=(2, size, size, 5)).astype(np.float32)
  x, out_t = _torch_roi(feat, BOXES, scale)
  cot = rng.normal(size=out_t.shape).astype(np.float32)
  (out_t * torch.tensor(cot)).sum().backward()

  fn = lambda f: roi_align.roi_align(
      f, jnp.asarray(BOXES), (8, 8), scale, 0, max_samples=max_samples)
  out_j, vjp = jax.vjp(jax.jit(fn), jnp.asarray(feat))
  # [B, O, 8, 8, C] vs [B·O, C, 8, 8]
  ref = out_t.detach().numpy().reshape(2, 4, 5, 8, 8).transpose(0, 1, 3, 4, 2)
  assert np.max(np.abs(np.asarray(out_j) - ref)) <= TOL
  cot_j = cot.reshape(2, 4, 5, 8, 8).transpose(0, 1, 3, 4, 2)
  (grad_j,) = vjp(jnp.asarray(cot_j))
  grad_t = np.transpose(x.grad.numpy(), (0, 2, 3, 1))
  assert np.max(np.abs(np.asarray(grad_j) - grad_t)) <= TOL
  assert np.max(np.abs(grad_t)) > 0.1  # the comparison is not vacuous


def test_fixed_sampling_ratio_and_validity_mask():
  rng = np.random.default_rng(1)
  feat = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  _, out_t = _torch_roi(feat, BOXES, 0.5, sampling_ratio=2)
  valid = np.array([[True, True, False, True], [True, False, True, True]])
  out_j = roi_align.roi_align(jnp.asarray(feat), jnp.asarray(BOXES), (8, 8),
                              0.5, 2, valid=jnp.asarray(valid))
  ref = out_t.detach().numpy().reshape(2, 4, 3, 8, 8).transpose(0, 1, 3, 4, 2)
  ref = ref * valid[:, :, None, None, None]
  assert np.max(np.abs(np.asarray(out_j) - ref)) <= TOL
  assert np.all(np.asarray(out_j)[~valid] == 0.0)
