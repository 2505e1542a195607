"""Shared building blocks with PyTorch-equivalent conventions made explicit.

The ported models (pix2pix, SPADE, LAMA, CRN, ...) were written in PyTorch,
whose defaults differ from Flax's in initialisation, BatchNorm momentum and
transposed-convolution geometry (see the cross-cutting table in
`reference/README.md`). This module names those conventions once:

* initialisers by their PyTorch meaning (`normal_init`, `bn_scale_init`,
  `torch_default_conv_init`, `torch_default_bias_init`, `xavier_normal`);
* `batch_norm`: a Flax BatchNorm with PyTorch's defaults (momentum, eps);
* `torch_padding` / `torch_conv` / `torch_conv_transpose`: convolutions whose
  output geometry equals `torch.nn.Conv2d` / `ConvTranspose2d(k, s, p)`;
* weight converters from PyTorch layouts to Flax layouts, used by parity tests
  and by pretrained-weight ports.

Every factory takes `dtype` (the compute dtype) and keeps parameters float32.
All tensors are NHWC.
"""

import math
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any
Initializer = nn.initializers.Initializer
IntOrPair = Union[int, Sequence[int]]

# PyTorch BatchNorm defaults, in Flax's convention. PyTorch's momentum 0.1 is
# the weight of the new batch; Flax's momentum is the weight of the old average.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
PARAM_DTYPE = jnp.float32


def _pair(v: IntOrPair) -> tuple[int, int]:
  if isinstance(v, int):
    return (v, v)
  v = tuple(int(i) for i in v)
  if len(v) != 2:
    raise ValueError(f'expected an int or a pair, got {v}')
  return v


# ----------------------------------------------------------------- initialisers


def normal_init(std: float = 0.02, mean: float = 0.0) -> Initializer:
  """N(mean, std²) initialiser (pix2pix `init_type='normal'`: std 0.02)."""

  def init(key, shape, dtype=PARAM_DTYPE):
    return mean + std * jax.random.normal(key, shape, dtype)

  return init


def bn_scale_init(std: float = 0.02) -> Initializer:
  """N(1, std²) for BatchNorm scales (pix2pix/SPADE `init_weights`)."""
  return normal_init(std=std, mean=1.0)


def xavier_normal(gain: float = 1.0) -> Initializer:
  """`torch.nn.init.xavier_normal_(gain)` for HWIO conv / [in, out] kernels.

  std = gain·sqrt(2 / (fan_in + fan_out)), fans including the receptive field,
  exactly as PyTorch computes them (symmetric in in/out, so it also holds for
  transposed-conv kernels).
  """
  return nn.initializers.variance_scaling(gain**2, 'fan_avg', 'normal')


def torch_default_conv_init(transpose: bool = False) -> Initializer:
  """PyTorch's default Conv/Linear weight init: kaiming_uniform(a=√5).

  This is U(−b, b) with b = 1/sqrt(fan_in). For `Conv2d`/`Linear` fan_in is
  in_channels·kh·kw. For `ConvTranspose2d` PyTorch takes fan_in from dim 1 of
  its (in, out, kh, kw) weight, i.e. out_channels·kh·kw; pass `transpose=True`
  for kernels of `torch_conv_transpose` (layout [kh, kw, in, out]).
  """
  in_axis, out_axis = (-1, -2) if transpose else (-2, -1)
  return nn.initializers.variance_scaling(
      1.0 / 3.0, 'fan_in', 'uniform', in_axis=in_axis, out_axis=out_axis)


def torch_default_bias_init(fan_in: int) -> Initializer:
  """PyTorch's default bias init U(−1/sqrt(fan_in), 1/sqrt(fan_in)).

  Flax bias initialisers only see the bias shape, so `fan_in` (computed as in
  `torch_default_conv_init`) must be given.
  """
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

  def init(key, shape, dtype=PARAM_DTYPE):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# ------------------------------------------------------------------ norm / conv


def batch_norm(*,
               use_running_average: bool,
               dtype: Dtype = jnp.float32,
               scale_init: Initializer = nn.initializers.ones,
               bias_init: Initializer = nn.initializers.zeros,
               use_scale: bool = True,
               use_bias: bool = True,
               momentum: float = BN_MOMENTUM,
               epsilon: float = BN_EPSILON,
               axis_name: Optional[str] = None,
               name: Optional[str] = None) -> nn.BatchNorm:
  """`nn.BatchNorm` equivalent to `torch.nn.BatchNorm2d` (on NHWC inputs).

  Defaults are PyTorch's: momentum 0.1 (Flax 0.9) and eps 1e-5. Statistics are
  reduced in float32 and stored in the 'batch_stats' collection as 'mean' and
  'var'; parameters 'scale'/'bias' are float32; the output has dtype `dtype`.
  Difference left in place: PyTorch updates the running variance with the
  unbiased batch variance (×n/(n−1)), Flax with the biased one.
  Under `jit` over a sharded global batch the statistics are global (sync BN).

  Args:
    use_running_average: True in eval mode (use 'batch_stats'), False to
      normalise with batch statistics and update the running averages (the
      caller must then pass `mutable=['batch_stats']`).
  """
  return nn.BatchNorm(
      use_running_average=use_running_average,
      momentum=momentum,
      epsilon=epsilon,
      dtype=dtype,
      param_dtype=PARAM_DTYPE,
      use_scale=use_scale,
      use_bias=use_bias,
      scale_init=scale_init,
      bias_init=bias_init,
      axis_name=axis_name,
      name=name)


def torch_padding(p: IntOrPair) -> tuple[tuple[int, int], tuple[int, int]]:
  """Explicit Flax padding equal to PyTorch's `padding=p` (symmetric, zeros).

  `p` is an int or (ph, pw); returns ((ph, ph), (pw, pw)).
  """
  ph, pw = _pair(p)
  return ((ph, ph), (pw, pw))


def torch_conv(features: int,
               kernel: IntOrPair,
               stride: IntOrPair = 1,
               padding: IntOrPair = 0,
               *,
               use_bias: bool = True,
               dtype: Dtype = jnp.float32,
               kernel_init: Initializer = nn.initializers.lecun_normal(),
               bias_init: Initializer = nn.initializers.zeros,
               name: Optional[str] = None) -> nn.Conv:
  """`nn.Conv` with the geometry of `torch.nn.Conv2d(k, s, p)` (zero padding).

  Kernel layout [kh, kw, in, out] (see `torch_conv_kernel_to_flax`). Pass the
  initialisers of the ported model explicitly; the defaults are Flax's.
  """
  return nn.Conv(
      features,
      _pair(kernel),
      strides=_pair(stride),
      padding=torch_padding(padding),
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=PARAM_DTYPE,
      kernel_init=kernel_init,
      bias_init=bias_init,
      name=name)


def torch_conv_transpose(
    features: int,
    kernel: IntOrPair,
    stride: IntOrPair,
    padding: IntOrPair = 0,
    *,
    output_padding: IntOrPair = 0,
    use_bias: bool = True,
    dtype: Dtype = jnp.float32,
    kernel_init: Initializer = nn.initializers.lecun_normal(),
    bias_init: Initializer = nn.initializers.zeros,
    name: Optional[str] = None) -> nn.ConvTranspose:
  """`nn.ConvTranspose` equal to `torch.nn.ConvTranspose2d(k, s, p, op)`.

  Output size (H − 1)·s − 2p + k + op, as in PyTorch (no dilation). Flax's
  ConvTranspose dilates the input by the stride and runs a plain correlation
  on it; padding the dilated input by k − 1 − p before and k − 1 − p + op
  after gives PyTorch's geometry (output_padding adds rows/columns at the
  bottom/right). Requires p ≤ k − 1 and op < s.

  `transpose_kernel` stays False: both settings are exactly equivalent to
  PyTorch given the matching weight conversion (False: flip spatially and
  reorder; True: reorder only), so no flag is needed for numerical parity. With
  False the kernel keeps the conv layout [kh, kw, in, out], so fan-based
  initialisers see the true input width. Convert PyTorch weights with
  `torch_conv_transpose_kernel_to_flax`.
  """
  kh, kw = _pair(kernel)
  ph, pw = _pair(padding)
  oh, ow = _pair(output_padding)
  if ph > kh - 1 or pw > kw - 1 or min(ph, pw) < 0:
    raise ValueError(f'padding {padding} must be in [0, kernel − 1]')
  if not (0 <= oh < _pair(stride)[0] and 0 <= ow < _pair(stride)[1]):
    raise ValueError(f'output_padding {output_padding} must be in '
                     '[0, stride)')
  return nn.ConvTranspose(
      features,
      (kh, kw),
      strides=_pair(stride),
      padding=((kh - 1 - ph, kh - 1 - ph + oh),
               (kw - 1 - pw, kw - 1 - pw + ow)),
      use_bias=use_bias,
      transpose_kernel=False,
      dtype=dtype,
      param_dtype=PARAM_DTYPE,
      kernel_init=kernel_init,
      bias_init=bias_init,
      name=name)


# ------------------------------------------------------------ weight conversion


def torch_conv_kernel_to_flax(w: Any) -> np.ndarray:
  """PyTorch Conv2d weight [out, in, kh, kw] → Flax kernel [kh, kw, in, out]."""
  w = np.asarray(w, dtype=np.float32)
  if w.ndim != 4:
    raise ValueError(f'expected a 4-D OIHW weight, got shape {w.shape}')
  return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def torch_conv_transpose_kernel_to_flax(w: Any) -> np.ndarray:
  """PyTorch ConvTranspose2d weight [in, out, kh, kw] → `torch_conv_transpose`.

  The Flax kernel is [kh, kw, in, out], spatially flipped: a transposed
  convolution is a correlation of the stride-dilated input with the flipped
  kernel.
  """
  w = np.asarray(w, dtype=np.float32)
  if w.ndim != 4:
    raise ValueError(f'expected a 4-D [in, out, kh, kw] weight, got {w.shape}')
  return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))


def torch_linear_kernel_to_flax(w: Any) -> np.ndarray:
  """PyTorch Linear weight [out, in] → Flax Dense kernel [in, out]."""
  w = np.asarray(w, dtype=np.float32)
  if w.ndim != 2:
    raise ValueError(f'expected a 2-D [out, in] weight, got {w.shape}')
  return np.ascontiguousarray(w.T)


def torch_batch_norm_to_flax(
    weight: Any, bias: Any, running_mean: Any,
    running_var: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """PyTorch BatchNorm tensors → ({'scale', 'bias'}, {'mean', 'var'}).

  The second dict belongs in the 'batch_stats' collection under the same
  module path as the first in 'params'.
  """
  f = lambda a: np.asarray(a, dtype=np.float32).copy()
  return ({'scale': f(weight), 'bias': f(bias)},
          {'mean': f(running_mean), 'var': f(running_var)})


# ---------------------------------------------- conditional norm / recurrence


class ConditionalBatchNorm(nn.Module):
  """Class-conditional BatchNorm (Layout2Im's `ConditionalBatchNorm2d`).

  BatchNorm without affine parameters (PyTorch momentum/eps), then a per-
  example scale and shift read from `embed` [num_classes, 2·C] (the layout
  of PyTorch's `nn.Embedding(num_classes, 2C)`): columns :C are γ, initialised
  N(1, 0.02²), columns C: are β, initialised 0.

  Attributes:
    num_classes: rows of the embedding.
    dtype: compute dtype of the output (statistics in float32).
  """
  num_classes: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, y: Array, *, train: bool,
               mask: Optional[Array] = None) -> Array:
    """Normalises x [N, H, W, C] and modulates it by the classes y [N].

    Args:
      mask: optional bool [N]: only these examples enter the batch
        statistics and the running averages (padded object slots are left
        out); the others are normalised with the same statistics.
    """
    c = x.shape[-1]

    def init(key, shape, dtype=PARAM_DTYPE):
      gamma = 1.0 + 0.02 * jax.random.normal(key, (shape[0], c), dtype)
      return jnp.concatenate([gamma, jnp.zeros((shape[0], c), dtype)], -1)

    bn_mask = None if mask is None else mask[:, None, None, None]
    h = batch_norm(use_running_average=not train, dtype=self.dtype,
                   use_scale=False, use_bias=False, name='bn')(x, mask=bn_mask)
    table = self.param('embed', init, (self.num_classes, 2 * c))
    gamma, beta = jnp.split(jnp.take(table, y, axis=0), 2, axis=-1)
    gamma = gamma[:, None, None, :].astype(self.dtype)
    beta = beta[:, None, None, :].astype(self.dtype)
    return gamma * h + beta


class _CellWeights(nn.Module):
  """The one conv of a ConvLSTM cell, `Conv2d(in + hidden, 4·hidden, k)`,
  with PyTorch's default initialisation; returns (kernel, bias)."""
  in_features: int
  hidden: int
  kernel: int

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:
    k, cin = self.kernel, self.in_features + self.hidden
    kernel = self.param('kernel', torch_default_conv_init(),
                        (k, k, cin, 4 * self.hidden), PARAM_DTYPE)
    bias = self.param('bias', torch_default_bias_init(cin * k * k),
                      (4 * self.hidden,), PARAM_DTYPE)
    return kernel, bias


def _conv_same(x: Array, kernel: Array) -> Array:
  """Stride-1 NHWC convolution with zero padding k // 2 (odd k)."""
  p = kernel.shape[0] // 2
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), (1, 1), ((p, p), (p, p)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


class ConvLSTM(nn.Module):
  """Stacked ConvLSTM over a padded, masked sequence (Layout2Im's fuser).

  Each layer is one cell `ConvLSTMCell`: a conv (kernel k, padding k // 2,
  bias) over [input, h] gives 4·hidden channels split as (i, f, o, g);
  c' = σ(f)·c + σ(i)·tanh(g), h' = σ(o)·tanh(c') (no forget-gate offset).
  States start at zero. As in the reference, layer l runs over the whole
  sequence before layer l + 1 reads its hidden states; since a cell's conv
  is linear in [input, h], the input half is applied to all steps at once
  and only the hidden half runs inside `lax.scan`.

  Steps whose `valid` is False leave every layer's (h, c) unchanged, so
  padded slots — wherever they are and whatever they hold — do not change
  the result.

  Attributes:
    hidden: hidden channels per layer, e.g. (128, 64, 64).
    kernel: square, odd kernel size (5).
    dtype: compute dtype of the convolutions; states are float32.
  """
  hidden: Sequence[int]
  kernel: int = 5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, valid: Array) -> Array:
    """x [B, T, H, W, C], valid bool [B, T] -> top-layer h [B, H, W, hidden[-1]]
    after the last valid step (zeros for a sequence without one)."""
    b, t, hh, ww, _ = x.shape
    steps = jnp.swapaxes(valid, 0, 1)[:, :, None, None, None]    # [T,B,1,1,1]
    seq = jnp.swapaxes(x, 0, 1)                                  # [T,B,H,W,C]
    h = None
    for l, hid in enumerate(self.hidden):
      cin = seq.shape[-1]
      kernel, bias = _CellWeights(cin, hid, self.kernel, name=f'cell{l}')()
      flat = seq.reshape(t * b, hh, ww, cin).astype(self.dtype)
      x_gates = (_conv_same(flat, kernel[:, :, :cin]) +
                 bias.astype(self.dtype)).reshape(t, b, hh, ww, 4 * hid)
      w_h = kernel[:, :, cin:]

      def cell(carry, inputs, w_h=w_h):
        h, c = carry
        xg, ok = inputs
        gates = (xg + _conv_same(h.astype(self.dtype), w_h)).astype(
            jnp.float32)
        i, f, o, g = jnp.split(gates, 4, axis=-1)
        c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
        h, c = jnp.where(ok, h_new, h), jnp.where(ok, c_new, c)
        return (h, c), h

      zeros = jnp.zeros((b, hh, ww, hid), jnp.float32)
      # Unrolled: T ≤ 9 object slots, and XLA:CPU runs a rolled scan's
      # while loop (forward and backward) many times slower.
      (h, _), seq = jax.lax.scan(cell, (zeros, zeros), (x_gates, steps),
                                 unroll=True)
    return h.astype(self.dtype)
