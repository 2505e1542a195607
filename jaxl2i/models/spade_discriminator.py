"""SPADE's multiscale PatchGAN discriminator (A5) and VAE encoder (A4), NHWC.

Ports of `NVlabs/SPADE` `models/networks/discriminator.py`
(`MultiscaleDiscriminator` of `NLayerDiscriminator`s, `norm_D =
spectralinstance`) and `models/networks/encoder.py` (`ConvEncoder`, `norm_E =
spectralinstance`): spectral-norm convs whose bias is removed, each followed
by a non-affine InstanceNorm (eps 1e-5, no running stats). In D the first and
last convs keep their bias and have no spectral norm; kernel 4, padding 2
(pitfall 1). Initialisation xavier_normal(0.02), biases 0 (A8).

Variables: 'params' and `spade.SN_COLLECTION` (u, v of the SN convs; mutable
and updated in train mode only). No RNG at apply time (`reparameterize`
draws z from the encoder's output).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxl2i.models import layers
from jaxl2i.models import spade

Array = jax.Array
Dtype = Any

KERNEL = 4
PADDING = 2  # ceil((4 − 1) / 2)
MAX_WIDTH = 512  # Absolute width cap `min(nf * 2, 512)`.


def downsample(x: Array) -> Array:
  """`F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)` on [B, H, W, C]."""
  return nn.avg_pool(
      x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
      count_include_pad=False)


class NLayerDiscriminator(nn.Module):
  """One PatchGAN scale; returns the outputs of all n_layers + 1 stages.

  conv0 (ndf, s2, bias) → LReLU; for n = 1 … n_layers−1: SN conv (width
  min(2·prev, 512), stride 2 except 1 for the last) → InstanceNorm → LReLU;
  final conv to 1 channel (s1, bias). With n_layers 4 a 256² input gives maps
  of 129, 65, 33, 34, 35.

  Attributes:
    ndf: width of the first conv (64).
    n_layers: `n_layers_D` (4).
    dtype: compute dtype.
  """
  ndf: int = 64
  n_layers: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> list[Array]:
    """x: [B, H, W, C] → list of n_layers + 1 maps [B, h_i, w_i, c_i]."""
    conv = lambda f, stride, name: layers.torch_conv(
        f, KERNEL, stride, PADDING, dtype=self.dtype,
        kernel_init=spade.default_init(), name=name)
    act = lambda h: nn.leaky_relu(h, spade.LEAKY_SLOPE)
    feats = [act(conv(self.ndf, 2, 'model0')(x))]
    nf = self.ndf
    for n in range(1, self.n_layers):
      nf = min(nf * 2, MAX_WIDTH)
      stride = 1 if n == self.n_layers - 1 else 2
      h = spade.SpectralConv(
          nf, KERNEL, stride, PADDING, use_bias=False, dtype=self.dtype,
          name=f'model{n}')(feats[-1], update_stats=train)
      h = nn.InstanceNorm(
          epsilon=spade.IN_EPSILON, use_scale=False, use_bias=False,
          use_fast_variance=False,
          dtype=self.dtype, name=f'norm{n}')(h)
      feats.append(act(h))
    feats.append(conv(1, 1, f'model{self.n_layers}')(feats[-1]))
    return feats


class MultiscaleDiscriminator(nn.Module):
  """`num_D` PatchGANs on successively avg-pooled inputs (A5, pitfall 6).

  Feed it concat(conditioning map, image) along channels, fake and real
  concatenated along the batch in one call as the reference does. The result
  feeds both the hinge loss (last entry of each scale) and feature matching
  (the other entries).

  Attributes:
    ndf: 64.
    n_layers: 4.
    num_d: 2 scales.
    dtype: compute dtype.
  """
  ndf: int = 64
  n_layers: int = 4
  num_d: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> list[list[Array]]:
    """Scores x at every scale.

    Args:
      x: [B, H, W, C] with C = conditioning channels + image channels.
      train: spectral-norm power iteration (needs SN_COLLECTION mutable).

    Returns:
      num_d lists (finest scale first) of n_layers + 1 maps each, in the
      compute dtype; the last map of each scale is the [B, h, w, 1] logits.
    """
    out = []
    for i in range(self.num_d):
      out.append(NLayerDiscriminator(
          self.ndf, self.n_layers, dtype=self.dtype, name=f'scale_{i}')(
              x, train=train))
      if i + 1 < self.num_d:
        x = downsample(x)
    return out


class ConvEncoder(nn.Module):
  """VAE image encoder (A4): image → (μ, logvar) of z.

  The image is bilinearly resized to input_size² (reference 256), then
  `num_layers` × [SN conv 3×3 s2 p1 without bias → InstanceNorm(affine=False)]
  with LReLU(0.2) between and after them (widths ndf·min(2^i, 8)), flattened in
  PyTorch's (C, H, W) order and mapped by fc_mu / fc_var (no SN) to z_dim.

  Attributes:
    ndf: 64 (= ngf in the reference).
    num_layers: 6 for input_size 256 (→ 4×4).
    input_size: side of the resized input.
    z_dim: 256.
    dtype: compute dtype.
  """
  ndf: int = 64
  num_layers: int = 6
  input_size: int = 256
  z_dim: int = spade.Z_DIM
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: Array, *, train: bool) -> tuple[Array, Array]:
    """image: [B, H, W, 3] in [-1, 1] → (mu, logvar), each [B, z_dim] f32."""
    x = spade.resize_bilinear(image, (self.input_size, self.input_size))
    for i in range(self.num_layers):
      if i:
        x = nn.leaky_relu(x, spade.LEAKY_SLOPE)
      x = spade.SpectralConv(
          self.ndf * min(2**i, 8), 3, 2, 1, use_bias=False, dtype=self.dtype,
          name=f'layer{i + 1}')(x, update_stats=train)
      x = nn.InstanceNorm(
          epsilon=spade.IN_EPSILON, use_scale=False, use_bias=False,
          use_fast_variance=False,
          dtype=self.dtype, name=f'norm{i + 1}')(x)
    x = nn.leaky_relu(x, spade.LEAKY_SLOPE)
    x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
    dense = lambda name: nn.Dense(
        self.z_dim, dtype=self.dtype, param_dtype=layers.PARAM_DTYPE,
        kernel_init=spade.default_init(), name=name)
    mu = dense('fc_mu')(x).astype(jnp.float32)
    logvar = dense('fc_var')(x).astype(jnp.float32)
    return mu, logvar


def reparameterize(key: Array, mu: Array, logvar: Array) -> Array:
  """z = μ + ε·exp(½·logvar), ε ~ N(0, I) (`pix2pix_model.reparameterize`)."""
  eps = jax.random.normal(key, mu.shape, mu.dtype)
  return mu + eps * jnp.exp(0.5 * logvar)
