"""Segmentation-mask GAN of Volokitin et al.: DCGAN generator to 256² and a
DCGAN critic on 64×64 patches, scores averaged (reference/seg_gan.md).

No official code exists. The DCGAN parts follow the WGAN-GP reference
`igul222/improved_wgan_training` `gan_64x64.py` (DIM = 64; §2 of the
reference file); the layers the paper adds are reconstructions (◇), each
an attribute here and a config key in configs/cityscapes_seg_gan.py:

* generator: Linear(z → 4·4·widths[0]) + BN + ReLU, then one ×2 upsampling
  layer per further width — transposed conv (TF `conv2d_transpose`, SAME,
  stride 2) or nearest ×2 + conv — with BN + ReLU, the last one mapping to
  the output channels without BN; softmax over classes (one-hot maps) or
  tanh (colour-coded maps / images). (512, 256, 128, 64, 64, 64) gives the
  paper's 256²: the DCGAN layers to 32² plus three 64-channel layers (the
  DCGAN's own 64² layer, now 64 channels wide, and the two added layers).
* critic: the DCGAN discriminator (5×5 stride-2 convs, LReLU 0.2,
  LayerNorm over (H, W, C) with per-channel scale/offset after every conv
  but the first, as `gan_64x64.py` in 'wgan-gp' mode; Linear → 1) on the
  patches of its native size (4·2^len(widths) = 64), scores averaged.

Initialisation: tflib's `set_weights_stdev(0.02)`, i.e. weights
U(−0.02·√3, 0.02·√3), biases 0; BN scale 1, offset 0. NHWC throughout;
the Linear layers keep the reference's (C, H, W) flattening order.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxl2i.models import layers

Array = jax.Array
Dtype = Any

WEIGHT_STD = 0.02     # tflib set_weights_stdev(0.02) (gan_64x64.py)
LEAKY_SLOPE = 0.2     # DCGAN discriminator LeakyReLU
LN_EPSILON = 1e-5     # tflib/ops/layernorm.py
BASE_SIZE = 4         # the Linear layer's 4×4 map; each layer doubles it
UPSAMPLING = ('transposed', 'nearest')
OUTPUTS = ('softmax', 'tanh')
PATCH_SAMPLING = ('grid', 'random')


def uniform_std(std: float = WEIGHT_STD) -> nn.initializers.Initializer:
  """U(−std·√3, std·√3): a uniform initialiser of standard deviation std."""
  bound = std * math.sqrt(3.0)

  def init(key, shape, dtype=layers.PARAM_DTYPE):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def native_size(num_layers: int) -> int:
  """Side of the map after `num_layers` doublings of the 4×4 base."""
  return BASE_SIZE * 2**num_layers


class SegGenerator(nn.Module):
  """z [B, z_dim] -> map [B, S, S, out_channels], S = 4·2^len(widths).

  Attributes:
    out_channels: classes (softmax output) or 3 (tanh output).
    widths: Linear width, then the input width of every upsampling layer.
    kernels: kernel size of each upsampling layer (len(widths) entries).
    upsample: 'transposed' or 'nearest' (nearest ×2, then a stride-1 conv).
    output: 'softmax' (over the last axis) or 'tanh'.
    dtype: compute dtype; params and BN statistics stay float32.
  """
  out_channels: int
  widths: Sequence[int] = (512, 256, 128, 64, 64, 64)
  kernels: Sequence[int] = (5, 5, 5, 3, 3, 3)
  upsample: str = 'transposed'
  output: str = 'softmax'
  dtype: Dtype = jnp.float32

  def _up(self, h: Array, features: int, kernel: int, name: str) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=layers.PARAM_DTYPE,
              kernel_init=uniform_std(), bias_init=nn.initializers.zeros,
              name=name)
    if self.upsample == 'transposed':
      # TF conv2d_transpose(SAME, stride 2): transpose_kernel=True is the
      # gradient of the SAME stride-2 conv (reference pitfall 5).
      return nn.ConvTranspose(features, (kernel, kernel), strides=(2, 2),
                              padding='SAME', transpose_kernel=True, **kw)(h)
    h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
    return nn.Conv(features, (kernel, kernel), padding='SAME', **kw)(h)

  @nn.compact
  def __call__(self, z: Array, *, train: bool) -> Array:
    """Maps noise to a label map or image.

    Args:
      z: [B, z_dim] latents (any float dtype).
      train: BatchNorm on batch statistics (updating 'batch_stats') when
        True, on running averages when False.

    Returns:
      float32 [B, S, S, out_channels]: class probabilities ('softmax') or
      values in [-1, 1] ('tanh').
    """
    if self.upsample not in UPSAMPLING or self.output not in OUTPUTS:
      raise ValueError(f'upsample={self.upsample!r} (use {UPSAMPLING}), '
                       f'output={self.output!r} (use {OUTPUTS})')
    if len(self.kernels) != len(self.widths):
      raise ValueError(f'kernels {self.kernels} need one entry per width '
                       f'{self.widths}')
    norm = lambda name: layers.batch_norm(
        use_running_average=not train, dtype=self.dtype, name=name)
    h = nn.Dense(BASE_SIZE * BASE_SIZE * self.widths[0], dtype=self.dtype,
                 param_dtype=layers.PARAM_DTYPE, kernel_init=uniform_std(),
                 name='fc')(z)
    # gan_64x64.py reshapes to [B, C, 4, 4] (NCHW).
    h = h.reshape(-1, self.widths[0], BASE_SIZE, BASE_SIZE)
    h = nn.relu(norm('fc_norm')(h.transpose(0, 2, 3, 1)))
    n = len(self.widths)
    for i in range(n):
      last = i == n - 1
      features = self.out_channels if last else self.widths[i + 1]
      h = self._up(h, features, self.kernels[i], f'up_{i}')
      if not last:
        h = nn.relu(norm(f'up_norm_{i}')(h))
    h = h.astype(jnp.float32)
    return jax.nn.softmax(h, axis=-1) if self.output == 'softmax' else (
        jnp.tanh(h))


class DCGANCritic(nn.Module):
  """The DCGAN discriminator of gan_64x64.py: x [N, P, P, C] -> [N] scores.

  P = 4·2^len(widths) (64 for the reference's four convs).

  Attributes:
    widths: output width of each 5×5 stride-2 conv.
    kernel: conv kernel size.
    norm: 'layer' (LayerNorm over (H, W, C), per-channel scale and offset,
      after every conv but the first; the reference's WGAN-GP critic) or
      'none'. Never BatchNorm: the gradient penalty is per sample.
    dtype: compute dtype.
  """
  widths: Sequence[int] = (64, 128, 256, 512)
  kernel: int = 5
  norm: str = 'layer'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    size = native_size(len(self.widths))
    if x.shape[1:3] != (size, size):
      raise ValueError(f'the critic takes {size}×{size} inputs, got '
                       f'{x.shape}')
    if self.norm not in ('layer', 'none'):
      raise ValueError(f"norm={self.norm!r}: use 'layer' or 'none'")
    h = x.astype(self.dtype)
    for i, width in enumerate(self.widths):
      h = nn.Conv(width, (self.kernel, self.kernel), strides=(2, 2),
                  padding='SAME', dtype=self.dtype,
                  param_dtype=layers.PARAM_DTYPE, kernel_init=uniform_std(),
                  bias_init=nn.initializers.zeros, name=f'conv_{i}')(h)
      if i > 0 and self.norm == 'layer':
        h = nn.LayerNorm(epsilon=LN_EPSILON, reduction_axes=(1, 2, 3),
                         feature_axes=-1, use_fast_variance=False,
                         dtype=self.dtype, param_dtype=layers.PARAM_DTYPE,
                         name=f'norm_{i}')(h)
      h = nn.leaky_relu(h, LEAKY_SLOPE)
    h = h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)   # (C, H, W) order
    out = nn.Dense(1, dtype=self.dtype, param_dtype=layers.PARAM_DTYPE,
                   kernel_init=uniform_std(), name='out')(h)
    return out[:, 0].astype(jnp.float32)


def grid_patches(x: Array, size: int) -> Array:
  """[B, H, W, C] -> [B·(H/size)·(W/size), size, size, C] non-overlapping
  tiles, ordered by (image, tile row, tile column)."""
  b, h, w, c = x.shape
  if h % size or w % size:
    raise ValueError(f'map {h}×{w} does not tile into {size}×{size} patches')
  x = x.reshape(b, h // size, size, w // size, size, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, size, size, c)


def random_patches(x: Array, size: int, num: int, key: jax.Array) -> Array:
  """[B, H, W, C] -> [B·num, size, size, C]: `num` uniformly placed crops per
  image (independent per image), ordered by (image, crop)."""
  b, h, w, _ = x.shape
  ky, kx = jax.random.split(key)
  top = jax.random.randint(ky, (b, num), 0, h - size + 1)
  left = jax.random.randint(kx, (b, num), 0, w - size + 1)
  crop = lambda img, t, l: jax.lax.dynamic_slice(
      img, (t, l, 0), (size, size, img.shape[-1]))
  crops = jax.vmap(jax.vmap(crop, (None, 0, 0)), (0, 0, 0))(x, top, left)
  return crops.reshape(b * num, size, size, -1)


class PatchCritic(nn.Module):
  """The critic on patches of a map, averaged: x [B, H, W, C] -> [B].

  Attributes:
    critic: the per-patch DCGANCritic.
    sampling: 'grid' (every non-overlapping tile, the reference's ◇
      default: 16 per 256² map) or 'random' (`num_random` crops per map,
      from the 'patches' RNG stream).
    num_random: crops per map with 'random'.
  """
  critic: DCGANCritic
  sampling: str = 'grid'
  num_random: int = 16

  @nn.compact
  def __call__(self, x: Array) -> Array:
    size = native_size(len(self.critic.widths))
    if self.sampling == 'grid':
      patches = grid_patches(x, size)
    elif self.sampling == 'random':
      patches = random_patches(x, size, self.num_random,
                               self.make_rng('patches'))
    else:
      raise ValueError(f'sampling={self.sampling!r}: use {PATCH_SAMPLING}')
    scores = self.critic(patches)
    return jnp.mean(scores.reshape(x.shape[0], -1), axis=1)
