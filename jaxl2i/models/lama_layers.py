"""Layers shared by the LAMA / LostGAN networks (candidates for layers.py).

* `TorchSpectralNorm`: `flax.linen.SpectralNorm` with the exact semantics of
  `torch.nn.utils.spectral_norm` (normalisation `x / max(|x|, eps)`, `u` and
  `v` persisted, no power iteration in eval mode).
* `SNConv`, `SNDense`, `SNEmbed`: spectrally normalised conv / linear /
  embedding layers in PyTorch geometry.
* `resize_matrix`, `resize_bilinear`: bilinear resizing equal to
  `F.interpolate(mode='bilinear', align_corners=False)` without antialiasing
  (jax.image.resize antialiases when downsampling).
* `upsample_nearest2x`, `avg_pool2x`.

Spectral-norm state lives in the 'spectral_norm' collection: for a wrapped
layer named `conv`, entries `conv/kernel/u` [1, out], `conv/kernel/v`
[1, in·kh·kw] (flattened in Flax (kh, kw, in) order) and `conv/kernel/sigma`.
Train mode (`update_stats=True`) runs one power iteration from the stored `u`
and needs `mutable=['spectral_norm']`; eval mode reuses the stored `u`, `v`.
All tensors are NHWC.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i.models import layers

Array = jax.Array
Dtype = Any
Initializer = nn.initializers.Initializer

SN_COLLECTION = 'spectral_norm'
# eps of `conv2d` in LAMA's components.py / rcnn_discriminator.py.
SN_EPS_CONV = 1e-4
# torch.nn.utils.spectral_norm default (Linear, Embedding, plain SN convs).
SN_EPS_DEFAULT = 1e-12


def _torch_normalize(x: Array, eps: float) -> Array:
  """`torch.nn.functional.normalize(x, dim=-1, eps)`: x / max(‖x‖, eps)."""
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def _init_unit(key, shape, dtype=jnp.float32):
  return _torch_normalize(jax.random.normal(key, shape, dtype), 1e-12)


class TorchSpectralNorm(nn.SpectralNorm):
  """SpectralNorm matching `torch.nn.utils.spectral_norm` (n_power=1).

  The weight is viewed as the matrix W = kernel.reshape(-1, out) (Flax
  layout; PyTorch's W is its transpose up to a permutation of rows, which
  leaves σ unchanged). Train: v = normalize(u Wᵀ), u = normalize(v W),
  σ = v W uᵀ, u and v stored. Eval: σ from the stored u and v. The vectors are
  stop-gradient and σ is computed in float32.
  """
  collection_name: str = SN_COLLECTION

  def _spectral_normalize(self, path, vs, update_stats):
    value = jnp.asarray(vs)
    if value.ndim <= 1:
      return value
    shape = value.shape
    mat = jnp.reshape(value, (-1, shape[-1])).astype(jnp.float32)
    base = (self.layer_instance.name + '/' +
            '/'.join(k.key for k in path[1:]))
    init = self.is_initializing()
    u_var = self.variable(self.collection_name, base + '/u', _init_unit,
                          self.make_rng('params') if init else None,
                          (1, mat.shape[1]))
    v_var = self.variable(self.collection_name, base + '/v', _init_unit,
                          self.make_rng('params') if init else None,
                          (1, mat.shape[0]))
    sigma_var = self.variable(self.collection_name, base + '/sigma', jnp.ones,
                              (), jnp.float32)
    if init:
      # map_variables(mutable=True) writes the transformed variables back at
      # init: returning W/σ here would store a rescaled raw weight instead of
      # the initialiser's (e.g. orthogonal) value.
      return value
    u, v = u_var.value, v_var.value
    if update_stats:
      for _ in range(self.n_steps):
        v = _torch_normalize(u @ mat.T, self.epsilon)
        u = _torch_normalize(v @ mat, self.epsilon)
    u = jax.lax.stop_gradient(u)
    v = jax.lax.stop_gradient(v)
    sigma = (v @ mat @ u.T)[0, 0]
    if update_stats:
      u_var.value, v_var.value, sigma_var.value = u, v, sigma
    out = (mat / sigma).reshape(shape)
    return out.astype(value.dtype)


class SNConv(nn.Module):
  """Spectrally normalised `nn.Conv2d(in, features, k, 1, k // 2)`.

  Attributes:
    features: output channels.
    kernel: square kernel size (odd); padding k // 2, stride 1.
    use_bias: conv bias.
    eps: spectral-norm eps (1e-4 for LAMA's `conv2d`, 1e-12 otherwise).
    kernel_init, bias_init: initialisers of the raw weight (`weight_orig`).
    dtype: compute dtype (params float32).
  """
  features: int
  kernel: int = 3
  use_bias: bool = True
  eps: float = SN_EPS_CONV
  kernel_init: Initializer = nn.initializers.orthogonal()
  bias_init: Initializer = nn.initializers.zeros
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, update_stats: bool) -> Array:
    conv = layers.torch_conv(
        self.features, self.kernel, 1, self.kernel // 2,
        use_bias=self.use_bias, dtype=self.dtype,
        kernel_init=self.kernel_init, bias_init=self.bias_init, name='conv')
    return TorchSpectralNorm(conv, epsilon=self.eps, name='sn')(
        x, update_stats=update_stats)


class SNDense(nn.Module):
  """Spectrally normalised `nn.Linear(in, features)` (kernel [in, out])."""
  features: int
  use_bias: bool = True
  eps: float = SN_EPS_DEFAULT
  kernel_init: Initializer = nn.initializers.orthogonal()
  bias_init: Initializer = nn.initializers.zeros
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, update_stats: bool) -> Array:
    dense = nn.Dense(
        self.features, use_bias=self.use_bias, dtype=self.dtype,
        param_dtype=layers.PARAM_DTYPE, kernel_init=self.kernel_init,
        bias_init=self.bias_init, name='dense')
    return TorchSpectralNorm(dense, epsilon=self.eps, name='sn')(
        x, update_stats=update_stats)


class _TransposedEmbed(nn.Module):
  """Embedding whose table is stored [features, num_embeddings].

  Stored transposed so that the spectral-norm matrix and its `u`
  (num_embeddings long) are those of PyTorch's SN on `nn.Embedding`.
  """
  num_embeddings: int
  features: int
  embedding_init: Initializer

  @nn.compact
  def __call__(self, ids: Array) -> Array:
    table = self.param('embedding', self.embedding_init,
                       (self.features, self.num_embeddings), jnp.float32)
    return jnp.take(table.T, ids, axis=0)


class SNEmbed(nn.Module):
  """`spectral_norm(nn.Embedding(num_embeddings, features))` → [..., features]."""
  num_embeddings: int
  features: int
  eps: float = SN_EPS_DEFAULT
  embedding_init: Initializer = nn.initializers.orthogonal()

  @nn.compact
  def __call__(self, ids: Array, *, update_stats: bool) -> Array:
    emb = _TransposedEmbed(self.num_embeddings, self.features,
                           self.embedding_init, name='embed')
    return TorchSpectralNorm(emb, epsilon=self.eps, name='sn')(
        ids, update_stats=update_stats)


# ------------------------------------------------------------------ resizing


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] bilinear weights of PyTorch's align_corners=False resize.

  src = (i + 0.5)·n_in/n_out − 0.5 clamped at 0, neighbours floor(src) and
  min(floor(src) + 1, n_in − 1); no antialiasing.
  """
  scale = n_in / n_out
  src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  lam = src - lo
  m = np.zeros((n_out, n_in), np.float64)
  m[np.arange(n_out), lo] += 1.0 - lam
  m[np.arange(n_out), hi] += lam
  return m.astype(np.float32)


def resize_bilinear(x: Array, size: tuple[int, int], *,
                    channels_last: bool = True) -> Array:
  """`F.interpolate(x, size, mode='bilinear', align_corners=False)`.

  Args:
    x: [B, H, W, C] (channels_last) or [B, C, H, W].
    size: (H', W').
    channels_last: layout of `x` (and of the result).

  Returns:
    The resized array in the dtype of `x`.
  """
  h_ax, w_ax = (1, 2) if channels_last else (2, 3)
  h, w = x.shape[h_ax], x.shape[w_ax]
  if (h, w) == tuple(size):
    return x
  my = jnp.asarray(resize_matrix(h, size[0]), x.dtype)
  mx = jnp.asarray(resize_matrix(w, size[1]), x.dtype)
  if channels_last:
    return jnp.einsum('ph,bhwc,qw->bpqc', my, x, mx)
  return jnp.einsum('ph,bchw,qw->bcpq', my, x, mx)


def upsample_nearest2x(x: Array) -> Array:
  """`F.interpolate(scale_factor=2, mode='nearest')` on NHWC."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def avg_pool2x(x: Array) -> Array:
  """`F.avg_pool2d(x, 2)` on NHWC (H and W even)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def leaky_relu(x: Array, slope: Optional[float] = 0.01) -> Array:
  return nn.leaky_relu(x, slope)
