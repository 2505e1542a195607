"""The PyTorch LostGAN-V1 generator of the tests, with the official names.

Rebuilt from `WillSuen/LostGANs` (`model/resnet_generator_v1.py`,
`model/mask_regression.py`, `model/norm_module.py`, `utils/bilinear.py`;
facts in jaxl2i/models/lostgan_v1.py and reference/lama_lostgan.md): the
class, attribute and Sequential-index names are the official ones, so
`state_dict()` has exactly the keys of an official `netG.state_dict()`
(SynchronizedBatchNorm2d is a BatchNorm2d here: same keys on one device; the
ISLA module derives from BatchNorm2d(affine=False) as there, with its unused
running_mean / running_var / num_batches_tracked). The widths the official
code fixes (label embedding 128 / 180, mask net 128) are arguments so that
tests can run tiny models. Shared by test_lostgan_v1_parity.py and
test_lostgan_v1_import.py.
"""

import contextlib

import numpy as np
import torch

tnn = torch.nn
F = torch.nn.functional
sn = tnn.utils.spectral_norm

EMBED_DIM = {64: 128, 128: 180}
TRUNK = {64: (16, 8, 4, 2, 1), 128: (16, 16, 8, 4, 2, 1)}
FIRST_BLOCK = {64: 2, 128: 1}


def conv2d(in_feat, out_feat, kernel_size=3, stride=1, pad=1):
  """resnet_generator_v1.conv2d: SN conv with bias, eps 1e-4."""
  return sn(tnn.Conv2d(in_feat, out_feat, kernel_size, stride, pad), eps=1e-4)


def masks_to_layout(boxes, masks, size):
  """utils/bilinear.py: boxes (x0, y0, w, h) [b, o, 4], masks [b, o, M, M]
  → [b, o, size, size] (grid_sample with PyTorch 1.0's align_corners)."""
  b, o = boxes.shape[:2]
  bb = boxes.reshape(b * o, 4, 1, 1)
  x = torch.linspace(0, 1, steps=size).view(1, 1, size)
  y = torch.linspace(0, 1, steps=size).view(1, size, 1)
  gx = ((x - bb[:, 0]) / bb[:, 2]).expand(b * o, size, size)
  gy = ((y - bb[:, 1]) / bb[:, 3]).expand(b * o, size, size)
  grid = torch.stack([gx, gy], dim=3) * 2 - 1
  m = masks.float().reshape(b * o, 1, *masks.shape[2:])
  out = F.grid_sample(m, grid, mode='bilinear', align_corners=True)
  return out.view(b, o, size, size)


class SpatialAdaptiveSynBatchNorm2d(tnn.BatchNorm2d):
  """ISLA-Norm v1: BN(affine=False), mask-weighted (γ + 1, β), eps 1e-6."""

  def __init__(self, num_features, num_w=512, eps=1e-5, momentum=0.1):
    super().__init__(num_features, eps, momentum, affine=False,
                     track_running_stats=True)
    self.weight_proj = sn(tnn.Linear(num_w, num_features))
    self.bias_proj = sn(tnn.Linear(num_w, num_features))
    self.batch_norm2d = tnn.BatchNorm2d(num_features, eps=eps, affine=False)

  def forward(self, x, vector, bbox):
    """x [b, c, h, w]; vector [b·o, num_w] (or [b, o, num_w]); bbox
    [b, o, H, W]."""
    output = self.batch_norm2d(x)
    b, o = bbox.shape[:2]
    bbox = F.interpolate(bbox, size=x.shape[2:], mode='bilinear',
                         align_corners=False)
    weight = self.weight_proj(vector).view(b, o, -1)
    bias = self.bias_proj(vector).view(b, o, -1)
    den = bbox.sum(1, keepdim=True) + 1e-6
    weight = torch.einsum('bohw,boc->bchw', bbox, weight) / den + 1
    bias = torch.einsum('bohw,boc->bchw', bbox, bias) / den
    return weight * output + bias


class ResBlock(tnn.Module):
  """Generator block (upsample=True, so learnable_sc): ReLU, nearest ×2."""

  def __init__(self, in_ch, out_ch, num_w=128):
    super().__init__()
    self.conv1 = conv2d(in_ch, out_ch)
    self.conv2 = conv2d(out_ch, out_ch)
    self.b1 = SpatialAdaptiveSynBatchNorm2d(in_ch, num_w=num_w)
    self.b2 = SpatialAdaptiveSynBatchNorm2d(out_ch, num_w=num_w)
    self.c_sc = conv2d(in_ch, out_ch, 1, 1, 0)
    self.activation = tnn.ReLU()

  def forward(self, in_feat, w, bbox):
    up = lambda t: F.interpolate(t, scale_factor=2, mode='nearest')
    x = self.conv1(up(self.activation(self.b1(in_feat, w, bbox))))
    x = self.conv2(self.activation(self.b2(x, w, bbox)))
    return x + self.c_sc(up(in_feat))


class MaskRegressNet(tnn.Module):
  """16×16 masks ([SNconv → BN → ReLU] ×3 with bilinear ups, SN 1×1, σ),
  placed on a map_size² canvas. `hidden` is 128 in the official code."""

  def __init__(self, obj_feat=128, mask_size=16, map_size=64, hidden=128):
    super().__init__()
    self.mask_size, self.map_size, self.hidden = mask_size, map_size, hidden
    self.fc = sn(tnn.Linear(obj_feat, hidden * 4 * 4))
    block = lambda: [sn(tnn.Conv2d(hidden, hidden, 3, 1, 1)),
                     tnn.BatchNorm2d(hidden), tnn.ReLU()]
    self.conv1 = tnn.Sequential(*block())
    self.conv2 = tnn.Sequential(*block())
    self.conv3 = tnn.Sequential(*block(), sn(tnn.Conv2d(hidden, 1, 1, 1)),
                                tnn.Sigmoid())

  def forward(self, obj_feat, bbox):
    b, num_o = bbox.shape[:2]
    x = self.fc(obj_feat.reshape(b * num_o, -1))
    x = self.conv1(x.view(b * num_o, self.hidden, 4, 4))
    x = F.interpolate(x, size=8, mode='bilinear', align_corners=False)
    x = self.conv2(x)
    x = F.interpolate(x, size=16, mode='bilinear', align_corners=False)
    x = self.conv3(x).view(b, num_o, 16, 16)
    return masks_to_layout(bbox, x, self.map_size)


class ResnetGenerator(tnn.Module):
  """ResnetGenerator64 (res=64) / ResnetGenerator128 (res=128) of V1."""

  def __init__(self, res, ch=64, z_dim=128, num_classes=10, embed_dim=None,
               mask_hidden=128):
    super().__init__()
    self.num_classes = num_classes
    embed_dim = embed_dim or EMBED_DIM[res]
    self.label_embedding = tnn.Embedding(num_classes, embed_dim)
    num_w = z_dim + embed_dim
    self.fc = sn(tnn.Linear(z_dim, 4 * 4 * 16 * ch))
    mult = TRUNK[res]
    self.block_names = [f'res{i + FIRST_BLOCK[res]}'
                        for i in range(len(mult) - 1)]
    for name, a, b in zip(self.block_names, mult[:-1], mult[1:]):
      setattr(self, name, ResBlock(a * ch, b * ch, num_w=num_w))
    self.final = tnn.Sequential(tnn.BatchNorm2d(ch), tnn.ReLU(),
                                conv2d(ch, 3, 3, 1, 1), tnn.Tanh())
    self.mapping = tnn.Sequential()   # empty in the official code
    self.mask_regress = MaskRegressNet(num_w, hidden=mask_hidden)

  def forward(self, z, bbox, z_im, y, return_mask=False):
    """z [b, o, z_dim], bbox [b, o, 4] (x0, y0, w, h), z_im [b, z_dim],
    y [b, o] → image [b, 3, S, S] (and the 64² canvas with return_mask)."""
    b, o = z.shape[:2]
    emb = self.label_embedding(y).view(b * o, -1)
    latent = torch.cat((z.reshape(b * o, -1), emb), dim=1).view(b, o, -1)
    w = self.mapping(latent.view(b * o, -1))
    bbmap = self.mask_regress(w, bbox)
    x = self.fc(z_im).view(b, -1, 4, 4)
    for name in self.block_names:
      x = getattr(self, name)(x, w, bbmap)
    x = self.final(x)
    return (x, bbmap) if return_mask else x


# ------------------------------------------------------------------ helpers


def randomise(net, seed, std=0.3):
  """Non-trivial weights: BN scales U(0.6, 1.4), everything else N(0, std)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in net.named_parameters():
      if name.endswith('weight') and p.ndim == 1:   # BatchNorm affine scale
        p.uniform_(0.6, 1.4, generator=g)
      else:
        p.copy_(torch.randn(p.shape, generator=g) * std)


def numpy_state_dict(net, prefix=''):
  """{prefix + key: numpy copy} of `net.state_dict()`."""
  return {prefix + k: v.detach().cpu().numpy().copy()
          for k, v in net.state_dict().items()}


def random_layout(b, o, seed):
  """Boxes (x0, y0, w, h) with the last slot the official padding object
  (class 0, box (−0.6, −0.6, 0.5, 0.5)); classes in 1..4."""
  rng = np.random.default_rng(seed)
  xy = rng.uniform(0.0, 0.55, size=(b, o, 2))
  wh = rng.uniform(0.15, 0.45, size=(b, o, 2))
  xywh = np.concatenate([xy, wh], -1).astype(np.float32)
  classes = rng.integers(1, 5, size=(b, o))
  classes[:, -1] = 0
  xywh[:, -1] = [-0.6, -0.6, 0.5, 0.5]
  return xywh, classes


@contextlib.contextmanager
def one_thread():
  """torch on one thread: these tiny nets run faster than with several
  threads competing for a shared CPU."""
  n = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    yield
  finally:
    torch.set_num_threads(n)
