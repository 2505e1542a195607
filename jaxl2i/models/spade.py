"""SPADE (GauGAN) generator and its building blocks.

Port of `NVlabs/SPADE` `models/networks/{normalization,architecture,
generator}.py` with the default options (`norm_G = spectralspadesyncbatch3x3`);
facts in `reference/spade_pix2pix.md` Part A and, for the depth-aware
two-stage variant (1-channel output, bilinear depth channel),
`reference/depth_spade.md`. The multiscale discriminator and the VAE image
encoder (the spectral-instance-norm networks) are in `spade_discriminator.py`.
NHWC throughout.

Initialisation (A8, `init_weights('xavier', 0.02)`): conv and linear weights
xavier_normal(gain 0.02) — for spectral-norm layers the raw weight — biases 0.

Variables:
* 'params' (float32);
* 'batch_stats': running mean/var of the parameter-free BatchNorms (SPADE);
* `SN_COLLECTION` ('spectral'): power-iteration vectors `u`, `v` of the
  spectral-norm convs, float32.
Train mode needs both state collections mutable; eval mode changes neither.
RNG streams: 'params' at init (weights and the initial `u`); 'noise' only for
a VAE generator called without `z` (z ~ N(0, I)).
"""

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxl2i.models import layers

Array = jax.Array
Dtype = Any

SN_COLLECTION = 'spectral'  # State of the spectral-norm convs (u, v).
SN_EPSILON = 1e-12  # torch.nn.utils.spectral_norm default eps.
LEAKY_SLOPE = 0.2  # SPADE's LeakyReLU slope (G, E and D).
INIT_GAIN = 0.02  # `--init_type xavier --init_variance 0.02`.
SPADE_HIDDEN = 128  # Hard-coded hidden width of the SPADE shared MLP.
IN_EPSILON = 1e-5  # PyTorch InstanceNorm2d eps (non-affine, no stats).
Z_DIM = 256  # `--z_dim` default.
# `num_upsampling_layers` → number of ×2 upsamplings of the generator.
NUM_UP = {'normal': 5, 'more': 6, 'most': 7}
HIGHEST = jax.lax.Precision.HIGHEST


def default_init() -> nn.initializers.Initializer:
  """xavier_normal(gain 0.02) of `init_weights` (conv/linear weights)."""
  return layers.xavier_normal(INIT_GAIN)


# -------------------------------------------------------------------- resizing


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
  """PyTorch 'nearest': source index floor(i·n_in/n_out) (exact integers)."""
  return (np.arange(n_out) * n_in) // n_out


def resize_nearest(x: Array, size: Sequence[int]) -> Array:
  """`F.interpolate(x, size, mode='nearest')` on [B, H, W, C] (pitfall 5).

  Integer down/up-sampling factors use strided slicing / repetition; other
  ratios a gather of floor(i·in/out). (PyTorch evaluates that product in
  float32, which could pick a neighbouring row for some non-integer ratios.)
  """
  h, w = x.shape[1:3]
  oh, ow = int(size[0]), int(size[1])
  if (h, w) == (oh, ow):
    return x
  if h % oh == 0 and w % ow == 0:
    return x[:, ::h // oh, ::w // ow]
  if oh % h == 0 and ow % w == 0:
    return jnp.repeat(jnp.repeat(x, oh // h, axis=1), ow // w, axis=2)
  x = jnp.take(x, _nearest_indices(h, oh), axis=1)
  return jnp.take(x, _nearest_indices(w, ow), axis=2)


def resize_bilinear(x: Array, size: Sequence[int]) -> Array:
  """`F.interpolate(x, size, mode='bilinear', align_corners=False)`, NHWC.

  Half-pixel centres and no antialiasing (unlike `jax.image.resize`, which
  antialiases when downsampling). Computed in float32, returned in x.dtype.
  """
  h, w = x.shape[1:3]
  oh, ow = int(size[0]), int(size[1])
  if (h, w) == (oh, ow):
    return x
  out = jax.image.scale_and_translate(
      x.astype(jnp.float32), (x.shape[0], oh, ow, x.shape[3]), (1, 2),
      jnp.array([oh / h, ow / w], jnp.float32), jnp.zeros(2, jnp.float32),
      method='linear', antialias=False, precision=HIGHEST)
  return out.astype(x.dtype)


def resize_segmap(segmap: Array, size: Sequence[int],
                  bilinear_channels: Sequence[int] = ()) -> Array:
  """Resizes a conditioning map as SPADE does (nearest) to `size` = (h, w).

  Args:
    segmap: [B, H, W, S] one-hot labels (+ dontcare, instance edges, depth).
    size: target (h, w).
    bilinear_channels: channels resized bilinearly instead (e.g. the depth
      channel of depth-SPADE stage 2). A deliberate deviation from the
      reference, which resizes everything nearest (depth_spade.md pitfall 1);
      never list one-hot channels here (pitfall 2).

  Returns:
    [B, h, w, S] in segmap.dtype.
  """
  out = resize_nearest(segmap, size)
  if bilinear_channels:
    idx = np.asarray(sorted(set(int(c) for c in bilinear_channels)))
    smooth = resize_bilinear(segmap[..., idx], size)
    out = out.at[..., idx].set(smooth)
  return out


# ---------------------------------------------------------------- spectral norm


def _normalize(x: Array, eps: float) -> Array:
  """torch.nn.functional.normalize: x / max(‖x‖₂, eps)."""
  return x / jnp.maximum(jnp.sqrt(jnp.sum(x * x)), eps)


class SpectralConv(nn.Module):
  """Conv2d (PyTorch geometry) wrapped in `torch.nn.utils.spectral_norm`.

  Reproduces torch's rule exactly, train and eval: the weight matrix is the
  kernel with its output channels as rows; train mode runs one power
  iteration from the stored `u` (v ← n(Wᵀu), u ← n(Wv)) and stores u, v; eval
  mode uses the stored u, v unchanged; σ = uᵀWv with gradients through W only.
  `flax.linen.SpectralNorm` is not used because it iterates also when
  `update_stats=False` and keeps no `v`, so its eval output differs from
  torch's. Power iteration and σ run in float32 (HIGHEST precision); the
  normalised kernel is then cast to `dtype`.

  State in `SN_COLLECTION`: 'u' [out] and 'v' [kh·kw·in] (HWI order). At init
  u = n(N(0, I)) as in torch, and v = n(Wᵀu) rather than torch's independent
  random v, so that σ > 0 even in eval mode before the first train step.

  Attributes:
    features, kernel, stride, padding, use_bias: as `torch.nn.Conv2d`.
    epsilon: eps of the normalisations (torch default 1e-12).
    dtype: compute dtype.
    kernel_init, bias_init: initialisers of the raw weight and bias.
  """
  features: int
  kernel: int
  stride: int = 1
  padding: int = 0
  use_bias: bool = True
  epsilon: float = SN_EPSILON
  dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = default_init()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: Array, *, update_stats: bool) -> Array:
    """x: [B, H, W, Cin] → [B, H', W', features] in `dtype`."""
    k, cin = self.kernel, x.shape[-1]
    kernel = self.param(
        'kernel', self.kernel_init, (k, k, cin, self.features),
        layers.PARAM_DTYPE)
    mat = kernel.reshape(-1, self.features)  # = Wᵀ, W = torch [out, in·k·k].
    eps = self.epsilon
    u_var = self.variable(
        SN_COLLECTION, 'u', lambda: _normalize(
            jax.random.normal(self.make_rng('params'), (self.features,)), eps))
    v_var = self.variable(
        SN_COLLECTION, 'v', lambda: _normalize(
            jnp.dot(mat, u_var.value, precision=HIGHEST), eps))
    u, v = u_var.value, v_var.value
    if update_stats:
      fixed = jax.lax.stop_gradient(mat)
      v = _normalize(jnp.dot(fixed, u, precision=HIGHEST), eps)
      u = _normalize(jnp.dot(v, fixed, precision=HIGHEST), eps)
      u_var.value, v_var.value = u, v
    sigma = jnp.dot(jnp.dot(v, mat, precision=HIGHEST), u, precision=HIGHEST)
    kernel = (kernel / sigma).astype(self.dtype)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel, (self.stride, self.stride),
        layers.torch_padding(self.padding),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.use_bias:
      bias = self.param(
          'bias', self.bias_init, (self.features,), layers.PARAM_DTYPE)
      y = y + bias.astype(self.dtype)
    return y


def torch_spectral_to_flax(weight_orig: Any, weight_u: Any,
                           weight_v: Any) -> tuple[np.ndarray, dict]:
  """torch spectral_norm conv tensors → (Flax kernel, {'u', 'v'} state).

  weight_orig [out, in, kh, kw], weight_u [out], weight_v [in·kh·kw] (IHW
  order) → kernel [kh, kw, in, out] and v reordered to HWI.
  """
  w = np.asarray(weight_orig, np.float32)
  _, i, kh, kw = w.shape
  v = np.asarray(weight_v, np.float32).reshape(i, kh, kw)
  return layers.torch_conv_kernel_to_flax(w), {
      'u': np.asarray(weight_u, np.float32).copy(),
      'v': np.ascontiguousarray(v.transpose(1, 2, 0).reshape(-1))}


# ----------------------------------------------------------------------- SPADE


class SPADE(nn.Module):
  """SPADE normalisation (A1): out = x̂·(1 + γ(s)) + β(s).

  x̂ is a parameter-free norm of x: 'batch' = SyncBatchNorm(affine=False)
  (momentum 0.1 ≙ Flax 0.9, eps 1e-5, statistics over the global batch under
  jit, running averages in 'batch_stats'; Flax updates the running variance
  with the biased batch variance) or 'instance' (InstanceNorm, no state).
  s is the conditioning map resized (nearest) to x's size; γ, β come from
  Conv(k, S→hidden) → ReLU → two Conv(k, hidden→C), all with bias and no
  spectral norm.

  Attributes:
    kernel_size: 3 (`spadesyncbatch3x3`).
    hidden: 128 in the reference.
    param_free_norm: 'batch' (reference default) or 'instance'.
    bilinear_channels: conditioning channels resized bilinearly (depth).
    dtype: compute dtype.
  """
  kernel_size: int = 3
  hidden: int = SPADE_HIDDEN
  param_free_norm: str = 'batch'
  bilinear_channels: tuple[int, ...] = ()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, segmap: Array, *, train: bool) -> Array:
    """x: [B, H, W, C]; segmap: [B, Hs, Ws, S] → [B, H, W, C] in `dtype`."""
    if self.param_free_norm == 'batch':
      # layers.batch_norm's settings plus the two-pass variance: E[x²]−E[x]²
      # loses digits when |mean| ≫ std (deep residual features).
      norm = nn.BatchNorm(
          use_running_average=not train, momentum=layers.BN_MOMENTUM,
          epsilon=layers.BN_EPSILON, use_scale=False, use_bias=False,
          dtype=self.dtype, param_dtype=layers.PARAM_DTYPE,
          use_fast_variance=False, name='param_free_norm')
    elif self.param_free_norm == 'instance':
      norm = nn.InstanceNorm(
          epsilon=IN_EPSILON, use_scale=False, use_bias=False,
          use_fast_variance=False,
          dtype=self.dtype, name='param_free_norm')
    else:
      raise ValueError(f'unknown param_free_norm {self.param_free_norm!r}')
    normalized = norm(x)
    seg = resize_segmap(segmap, x.shape[1:3], self.bilinear_channels)
    conv = lambda f, name: layers.torch_conv(
        f, self.kernel_size, 1, self.kernel_size // 2, dtype=self.dtype,
        kernel_init=default_init(), name=name)
    actv = nn.relu(conv(self.hidden, 'mlp_shared')(seg))
    gamma = conv(x.shape[-1], 'mlp_gamma')(actv)
    beta = conv(x.shape[-1], 'mlp_beta')(actv)
    return normalized * (1 + gamma) + beta


class SPADEResnetBlock(nn.Module):
  """SPADE residual block (A2), spectral norm on conv_0, conv_1, conv_s.

  dx = conv_1(LReLU(norm_1(conv_0(LReLU(norm_0(x, s))), s))); the shortcut is
  conv_s(norm_s(x, s)) (1×1, no bias, no activation) when fin ≠ fout, else x.

  Attributes:
    features: fout (fin is read from the input).
    spectral: wrap the residual convs in spectral norm (reference: True).
    spade_hidden, param_free_norm, bilinear_channels: of every SPADE layer
      (`SPADE.hidden`, `.param_free_norm`, `.bilinear_channels`).
    dtype: compute dtype.
  """
  features: int
  spectral: bool = True
  spade_hidden: int = SPADE_HIDDEN
  param_free_norm: str = 'batch'
  bilinear_channels: tuple[int, ...] = ()
  dtype: Dtype = jnp.float32

  def _conv(self, features, kernel, use_bias, name):
    padding = kernel // 2
    if self.spectral:
      conv = SpectralConv(
          features, kernel, 1, padding, use_bias=use_bias, dtype=self.dtype,
          name=name)
      return lambda h, train: conv(h, update_stats=train)
    conv = layers.torch_conv(
        features, kernel, 1, padding, use_bias=use_bias, dtype=self.dtype,
        kernel_init=default_init(), name=name)
    return lambda h, train: conv(h)

  @nn.compact
  def __call__(self, x: Array, segmap: Array, *, train: bool) -> Array:
    """x: [B, H, W, fin]; segmap: [B, Hs, Ws, S] → [B, H, W, fout]."""
    fin, fout = x.shape[-1], self.features
    fmid = min(fin, fout)
    spade = dict(
        hidden=self.spade_hidden, param_free_norm=self.param_free_norm,
        bilinear_channels=tuple(self.bilinear_channels), dtype=self.dtype)
    act = lambda h: nn.leaky_relu(h, LEAKY_SLOPE)
    if fin != fout:
      xs = SPADE(**spade, name='norm_s')(x, segmap, train=train)
      xs = self._conv(fout, 1, False, 'conv_s')(xs, train)
    else:
      xs = x.astype(self.dtype)
    dx = SPADE(**spade, name='norm_0')(x, segmap, train=train)
    dx = self._conv(fmid, 3, True, 'conv_0')(act(dx), train)
    dx = SPADE(**spade, name='norm_1')(dx, segmap, train=train)
    dx = self._conv(fout, 3, True, 'conv_1')(act(dx), train)
    return xs + dx


def latent_grid(height: int, width: int, num_up: int) -> tuple[int, int]:
  """(sh, sw) of the generator's first feature map for an H×W output.

  The reference computes sw = crop/2^n_up and sh = round(sw/aspect_ratio);
  here both come from the conditioning map (aspect = W/H), which must be
  divisible by 2^n_up in both dimensions (Cityscapes 256×512, 'more': 4×8).
  """
  f = 2**num_up
  if height % f or width % f:
    raise ValueError(
        f'conditioning map {height}×{width} not divisible by 2^{num_up}')
  return height // f, width // f


def _up(x: Array) -> Array:
  """nn.Upsample(scale_factor=2), nearest."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class SPADEGenerator(nn.Module):
  """SPADE generator (A3): latent grid → SPADE ResBlocks → image.

  head_0, G_middle_0/1 at 16·ngf, then up_0…up_3 halving the width (and up_4
  for 'most'), nearest ×2 upsampling between them, LReLU → conv_img (3×3,
  bias, no SN) → tanh. The input is a 3×3 conv (no SN) of the nearest-
  downsampled conditioning map, or with `use_vae` a Linear(z_dim →
  16·ngf·sh·sw) of z reshaped in PyTorch's (C, sh, sw) order.

  Attributes:
    out_channels: 3 (RGB) or 1 (depth-SPADE stage 1).
    ngf: base width (64).
    num_upsampling_layers: 'normal' | 'more' | 'most'.
    use_vae: z input instead of the downsampled map.
    z_dim: 256.
    spectral: spectral norm on the residual convs (reference: True).
    spade_hidden: hidden width of every SPADE MLP (128).
    param_free_norm: 'batch' (reference) or 'instance'.
    bilinear_channels: conditioning channels resized bilinearly, e.g. (151,)
      for the depth channel of depth-SPADE stage 2 (a deliberate deviation,
      see `resize_segmap`); also applied to the first conv's input.
    dtype: compute dtype.
  """
  out_channels: int = 3
  ngf: int = 64
  num_upsampling_layers: str = 'normal'
  use_vae: bool = False
  z_dim: int = Z_DIM
  spectral: bool = True
  spade_hidden: int = SPADE_HIDDEN
  param_free_norm: str = 'batch'
  bilinear_channels: tuple[int, ...] = ()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, segmap: Array, z: Optional[Array] = None, *,
               train: bool) -> Array:
    """Generates an image.

    Args:
      segmap: [B, H, W, S] conditioning map (float; one-hot labels etc.).
      z: [B, z_dim] latent (VAE only); drawn from the 'noise' stream if None.
      train: batch statistics and spectral-norm power iteration (needs
        'batch_stats' and SN_COLLECTION mutable) if True.

    Returns:
      [B, H, W, out_channels] in [-1, 1], compute dtype.
    """
    if self.num_upsampling_layers not in NUM_UP:
      raise ValueError(
          f'num_upsampling_layers must be one of {sorted(NUM_UP)}')
    num_up = NUM_UP[self.num_upsampling_layers]
    b, height, width = segmap.shape[:3]
    sh, sw = latent_grid(height, width, num_up)
    nf = self.ngf
    kw = dict(
        spectral=self.spectral, spade_hidden=self.spade_hidden,
        param_free_norm=self.param_free_norm,
        bilinear_channels=tuple(self.bilinear_channels), dtype=self.dtype)
    if self.use_vae:
      if z is None:
        z = jax.random.normal(self.make_rng('noise'), (b, self.z_dim))
      x = nn.Dense(
          16 * nf * sh * sw, dtype=self.dtype, param_dtype=layers.PARAM_DTYPE,
          kernel_init=default_init(), name='fc')(z)
      x = x.reshape(b, 16 * nf, sh, sw).transpose(0, 2, 3, 1)
    else:
      x = resize_segmap(segmap, (sh, sw), self.bilinear_channels)
      x = layers.torch_conv(
          16 * nf, 3, 1, 1, dtype=self.dtype, kernel_init=default_init(),
          name='fc')(x)
    x = SPADEResnetBlock(16 * nf, **kw, name='head_0')(x, segmap, train=train)
    x = _up(x)
    x = SPADEResnetBlock(16 * nf, **kw, name='G_middle_0')(
        x, segmap, train=train)
    if self.num_upsampling_layers in ('more', 'most'):
      x = _up(x)
    x = SPADEResnetBlock(16 * nf, **kw, name='G_middle_1')(
        x, segmap, train=train)
    widths = [8 * nf, 4 * nf, 2 * nf, nf]
    if self.num_upsampling_layers == 'most':
      widths.append(nf // 2)
    for i, f in enumerate(widths):
      x = _up(x)
      x = SPADEResnetBlock(f, **kw, name=f'up_{i}')(x, segmap, train=train)
    x = nn.leaky_relu(x, LEAKY_SLOPE)
    x = layers.torch_conv(
        self.out_channels, 3, 1, 1, dtype=self.dtype,
        kernel_init=default_init(), name='conv_img')(x)
    return jnp.tanh(x)


def count_params(tree: Any) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
