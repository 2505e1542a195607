"""pix2pix networks: the U-Net and ResNet generators, the PatchGAN.

Ports of `UnetGenerator`, `ResnetGenerator` and `NLayerDiscriminator` from
`junyanz/pytorch-CycleGAN-and-pix2pix` `models/networks.py` (facts in
`reference/spade_pix2pix.md`, Part B; pix2pix uses BatchNorm). Inputs and
outputs are NHWC.

Initialisation follows `init_weights(init_type='normal', gain=0.02)`: conv and
transposed-conv weights N(0, 0.02²), biases 0, BatchNorm scale N(1, 0.02²),
BatchNorm bias 0.

Variables: 'params' (float32) and 'batch_stats' (BatchNorm running averages).
Train mode needs `mutable=['batch_stats']` and, for the generator with dropout,
a 'dropout' RNG stream.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxl2i.models import layers

Array = jax.Array
Dtype = Any

LEAKY_SLOPE = 0.2  # LeakyReLU slope of both networks.
KERNEL = 4  # Every conv / transposed conv is 4×4.
INIT_STD = 0.02  # `init_gain` of init_weights('normal').
# Width multiplier cap: widths grow ×2 per level up to ngf·8 (ndf·8).
MAX_WIDTH_MULT = 8
# The U-Net's 4 outer levels widen ×2 each (ngf, 2ngf, 4ngf, 8ngf) plus the
# innermost block; every further level is a "middle" 8ngf block with dropout.
MIN_NUM_DOWNS = 5


def _width(base: int, level: int) -> int:
  return base * min(2**level, MAX_WIDTH_MULT)


class UNetGenerator(nn.Module):
  """U-Net generator of pix2pix (U-Net-256 for `num_downs=8`).

  Level l = 0 … num_downs−1 (0 outermost) halves the resolution with a 4×4
  stride-2 conv to width ngf·min(2^l, 8) and doubles it back with a 4×4
  stride-2 transposed conv:

  * down: LeakyReLU(0.2) before every conv except the outermost; BatchNorm
    after every conv except the outermost and innermost; no conv bias.
  * up: ReLU → transposed conv → BatchNorm (no bias) → dropout on the middle
    levels 4 … num_downs−2 (the `num_downs − 5` blocks the official
    UnetGenerator builds with `use_dropout`), then concatenation
    [skip, up] along channels with the input of that level (skip first, as in
    `torch.cat([x, model(x)], 1)`). The outermost level instead has a biased
    transposed conv to `out_channels` followed by tanh.

  At 256² the PyTorch port thus drops out the 16², 8² and 4² decoder maps,
  not the innermost decoder; the Torch original (`phillipi/pix2pix`
  `defineG_unet`) drops out d1–d3 (2², 4², 8²), which is what the table in
  reference B1 shows. We follow the PyTorch code, as briefed. The port's in-place LeakyReLU also rewrites the skip tensors to
  LeakyReLU(e); that is invisible here because their only consumer is the next
  ReLU and ReLU∘LeakyReLU = ReLU.

  Sampling as in the paper (pitfall 11): pix2pix keeps dropout on and
  BatchNorm on the test batch's statistics at test time. That is the caller's
  choice: `apply(..., train=True, mutable=['batch_stats'],
  rngs={'dropout': key})` and discard the updated statistics;
  `train=False` gives the deterministic eval-mode network.

  Attributes:
    out_channels: channels of the generated image.
    ngf: width of the outermost level.
    num_downs: number of stride-2 levels (≥ 5); 8 for 256×256 inputs.
    use_dropout: dropout on the middle levels (pix2pix: True).
    dropout_rate: 0.5 in pix2pix.
    dtype: compute dtype; params stay float32, BN statistics are float32.
  """
  out_channels: int = 3
  ngf: int = 64
  num_downs: int = 8
  use_dropout: bool = True
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    """Generates an image from a conditioning map.

    Args:
      x: [B, H, W, C] conditioning map (any C, any float dtype), H and W
        divisible by 2**num_downs.
      train: BatchNorm on batch statistics (updating 'batch_stats') and dropout
        active (needs the 'dropout' RNG) when True; running averages and no
        dropout when False.

    Returns:
      [B, H, W, out_channels] image in [-1, 1], in the compute dtype `dtype`
      (cast to float32 before losses).
    """
    n = self.num_downs
    if n < MIN_NUM_DOWNS:
      raise ValueError(f'num_downs must be >= {MIN_NUM_DOWNS}, got {n}')
    if x.ndim != 4:
      raise ValueError(f'expected [B, H, W, C], got shape {x.shape}')
    f = 2**n
    if x.shape[1] % f or x.shape[2] % f:
      raise ValueError(
          f'H and W must be divisible by 2**num_downs = {f}, got {x.shape}')

    conv_kw = dict(
        dtype=self.dtype, kernel_init=layers.normal_init(INIT_STD),
        bias_init=nn.initializers.zeros)
    down_conv = functools.partial(
        layers.torch_conv, kernel=KERNEL, stride=2, padding=1, use_bias=False,
        **conv_kw)
    up_conv = functools.partial(
        layers.torch_conv_transpose, kernel=KERNEL, stride=2, padding=1,
        **conv_kw)
    norm = functools.partial(
        layers.batch_norm, use_running_average=not train, dtype=self.dtype,
        scale_init=layers.bn_scale_init(INIT_STD))

    # Encoder; skips[l] is the (pre-activation) output of level l's conv/BN.
    skips = []
    h = x
    for l in range(n):
      if l > 0:
        h = nn.leaky_relu(h, LEAKY_SLOPE)
      h = down_conv(_width(self.ngf, l), name=f'down_{l}')(h)
      if 0 < l < n - 1:  # No BN on the outermost and innermost down convs.
        h = norm(name=f'down_norm_{l}')(h)
      skips.append(h)

    # Decoder; h enters level l as the innermost conv output (l = n−1) or as
    # concat(skips[l], up output of level l+1). Level 0 is the outermost.
    for l in reversed(range(1, n)):
      h = nn.relu(h)
      h = up_conv(_width(self.ngf, l - 1), use_bias=False, name=f'up_{l}')(h)
      h = norm(name=f'up_norm_{l}')(h)
      if self.use_dropout and MIN_NUM_DOWNS - 1 <= l <= n - 2:
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
      h = jnp.concatenate([skips[l - 1], h], axis=-1)
    h = nn.relu(h)
    h = up_conv(self.out_channels, use_bias=True, name='up_0')(h)
    return jnp.tanh(h)


class PatchDiscriminator(nn.Module):
  """PatchGAN discriminator of pix2pix (70×70 receptive field for n_layers=3).

  4×4 convs with padding 1: conv(ndf, s2, bias) → LReLU(0.2); n_layers−1
  × [conv(ndf·min(2^i, 8), s2, no bias) → BN → LReLU]; conv(ndf·min(2^n, 8),
  s1, no bias) → BN → LReLU; conv(1, s1, bias). A 256×256 input gives 30×30
  logits.

  Attributes:
    ndf: width of the first conv.
    n_layers: number of stride-2 convs (3 for the 70×70 PatchGAN).
    dtype: compute dtype; params stay float32, BN statistics are float32.
  """
  ndf: int = 64
  n_layers: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    """Scores overlapping patches.

    Args:
      x: [B, H, W, C] = concat(condition, image) along channels, any float
        dtype.
      train: BatchNorm on batch statistics (updating 'batch_stats') if True,
        on running averages if False.

    Returns:
      [B, h, w, 1] logits (no sigmoid), in the compute dtype `dtype` (cast to
      float32 before the loss); h = H/2^n_layers − 2 for H divisible by
      2^n_layers.
    """
    if x.ndim != 4:
      raise ValueError(f'expected [B, H, W, C], got shape {x.shape}')
    conv = functools.partial(
        layers.torch_conv, kernel=KERNEL, padding=1, dtype=self.dtype,
        kernel_init=layers.normal_init(INIT_STD),
        bias_init=nn.initializers.zeros)
    norm = functools.partial(
        layers.batch_norm, use_running_average=not train, dtype=self.dtype,
        scale_init=layers.bn_scale_init(INIT_STD))

    h = conv(self.ndf, stride=2, use_bias=True, name='conv_0')(x)
    h = nn.leaky_relu(h, LEAKY_SLOPE)
    for i in range(1, self.n_layers + 1):
      stride = 2 if i < self.n_layers else 1
      h = conv(
          _width(self.ndf, i), stride=stride, use_bias=False,
          name=f'conv_{i}')(h)
      h = norm(name=f'norm_{i}')(h)
      h = nn.leaky_relu(h, LEAKY_SLOPE)
    return conv(1, stride=1, use_bias=True, name=f'conv_{self.n_layers + 1}')(h)


RESNET_KERNEL_IO = 7      # ReflectionPad2d(3) + 7×7 convs at both ends
RESNET_DOWNSAMPLING = 2   # n_downsampling of ResnetGenerator
RESNET_NORMS = ('batch', 'instance')


def _reflect(x: Array, p: int) -> Array:
  """ReflectionPad2d(p) on NHWC (mirror without repeating the edge)."""
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')


class ResnetGenerator(nn.Module):
  """pix2pix/CycleGAN ResNet generator (`resnet_9blocks` for n_blocks=9).

  c7s1-ngf (reflection pad 3) → 2 × [3×3 stride-2 conv, ×2 width] →
  n_blocks × ResnetBlock(4·ngf) → 2 × [3×3 stride-2 transposed conv
  (padding 1, output_padding 1), ÷2 width] → reflection pad 3, 7×7 conv (with
  bias) → tanh. Each conv but the last is followed by the norm and ReLU.
  ResnetBlock: x + [reflect 1, 3×3 conv, norm, ReLU, (dropout 0.5), reflect
  1, 3×3 conv, norm]. Convs have a bias only with instance norm
  (`use_bias = norm_layer == InstanceNorm2d`). At 256² with 3 input and
  output channels and BatchNorm: 11,383,427 parameters (tested).

  Attributes:
    out_channels: channels of the generated image.
    ngf: width of the first conv.
    n_blocks: residual blocks (9 or 6 in the official code).
    norm: 'batch' (pix2pix) or 'instance' (CycleGAN: non-affine, no running
      statistics, eps 1e-5).
    use_dropout: dropout 0.5 inside every block (pix2pix: on).
    dtype: compute dtype; params and BN statistics stay float32.
  """
  out_channels: int = 3
  ngf: int = 64
  n_blocks: int = 9
  norm: str = 'batch'
  use_dropout: bool = True
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    """x: [B, H, W, C], H and W divisible by 4 -> [B, H, W, out] in [-1, 1]
    (compute dtype); train as UNetGenerator's (batch statistics, dropout)."""
    if self.norm not in RESNET_NORMS:
      raise ValueError(f'norm={self.norm!r}: use one of {RESNET_NORMS}')
    if x.shape[1] % 4 or x.shape[2] % 4:
      raise ValueError(f'H and W must be divisible by 4, got {x.shape}')
    bias = self.norm == 'instance'
    kw = dict(dtype=self.dtype, kernel_init=layers.normal_init(INIT_STD),
              bias_init=nn.initializers.zeros)
    conv = functools.partial(layers.torch_conv, use_bias=bias, **kw)

    def norm(name):
      if self.norm == 'instance':
        return nn.InstanceNorm(epsilon=layers.BN_EPSILON, use_scale=False,
                               use_bias=False, dtype=self.dtype, name=name)
      return layers.batch_norm(use_running_average=not train,
                               dtype=self.dtype,
                               scale_init=layers.bn_scale_init(INIT_STD),
                               name=name)

    k = RESNET_KERNEL_IO
    h = conv(self.ngf, k, name='conv_in')(_reflect(x, k // 2))
    h = nn.relu(norm('norm_in')(h))
    for i in range(RESNET_DOWNSAMPLING):
      h = conv(self.ngf * 2**(i + 1), 3, stride=2, padding=1,
               name=f'down_{i}')(h)
      h = nn.relu(norm(f'down_norm_{i}')(h))
    width = self.ngf * 2**RESNET_DOWNSAMPLING
    for b in range(self.n_blocks):
      r = conv(width, 3, name=f'block_{b}_conv_0')(_reflect(h, 1))
      r = nn.relu(norm(f'block_{b}_norm_0')(r))
      if self.use_dropout:
        r = nn.Dropout(self.dropout_rate, deterministic=not train)(r)
      r = conv(width, 3, name=f'block_{b}_conv_1')(_reflect(r, 1))
      h = h + norm(f'block_{b}_norm_1')(r)
    for i in reversed(range(RESNET_DOWNSAMPLING)):
      h = layers.torch_conv_transpose(
          self.ngf * 2**i, 3, 2, 1, output_padding=1, use_bias=bias,
          name=f'up_{i}', **kw)(h)
      h = nn.relu(norm(f'up_norm_{i}')(h))
    h = layers.torch_conv(self.out_channels, k, use_bias=True, name='conv_out',
                          **kw)(_reflect(h, k // 2))
    return jnp.tanh(h)
