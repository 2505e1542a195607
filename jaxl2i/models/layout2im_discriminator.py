"""Layout2Im discriminators: image D and object D with an AC classifier.

Port of `models/discriminator.py` of zhaobozb/layout2im (facts:
reference/layout2im.md §3). `add_sn` wraps every conv and linear in
`torch.nn.utils.spectral_norm` (eps 1e-12, one power iteration per
train-mode call); there is no normalisation layer. Layers keep PyTorch's
default initialisation (the reference's `weights_init` is commented out).

* `OptimizedBlock`: conv3(ReLU(conv3(x))) (+ avgpool2) + conv1×1(avgpool2(x)).
* `ResidualBlock`: conv3 in→out(ReLU(conv3 in→in(ReLU(x)))) (+ avgpool2) —
  the first conv keeps the input width — plus conv1×1 then avgpool2 when the
  width changes or it downsamples.
* Image D: 3 → ch↓ → 2ch↓ → 4ch↓ → 8ch↓ → 16ch↓, ReLU, sum over H×W,
  linear → 1 without bias.
* Object D (crops): the first block does not downsample; heads `src`
  (linear → 1) and `cls` (linear → num_classes), both with bias.

`Layout2ImDiscriminator` holds both (their parameters are 'img' and 'obj');
call it through the methods `image` and `objects`. Variables: 'params',
'spectral_norm' (train: `mutable=['spectral_norm']`). NHWC.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxl2i.models import lama_layers as ll
from jaxl2i.models import layers

Array = jax.Array
Dtype = Any

WIDTHS = (1, 2, 4, 8, 16)   # block widths in units of ch


def _sn_conv(x: Array, features: int, kernel: int, train: bool, dtype: Dtype,
             name: str) -> Array:
  """`spectral_norm(nn.Conv2d(in, features, kernel, 1, kernel // 2))`."""
  return ll.SNConv(
      features, kernel, use_bias=True, eps=ll.SN_EPS_DEFAULT,
      kernel_init=layers.torch_default_conv_init(),
      bias_init=layers.torch_default_bias_init(x.shape[-1] * kernel ** 2),
      dtype=dtype, name=name)(x, update_stats=train)


def _sn_dense(x: Array, features: int, use_bias: bool, train: bool,
              dtype: Dtype, name: str) -> Array:
  """`spectral_norm(nn.Linear(in, features, bias=use_bias))`."""
  return ll.SNDense(
      features, use_bias=use_bias, eps=ll.SN_EPS_DEFAULT,
      kernel_init=layers.torch_default_conv_init(),
      bias_init=layers.torch_default_bias_init(x.shape[-1]), dtype=dtype,
      name=name)(x, update_stats=train)


class OptimizedBlock(nn.Module):
  """First block (module doc)."""
  out_ch: int
  downsample: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    h = _sn_conv(x, self.out_ch, 3, train, self.dtype, 'conv1')
    h = _sn_conv(nn.relu(h), self.out_ch, 3, train, self.dtype, 'conv2')
    sc = x
    if self.downsample:
      h, sc = ll.avg_pool2x(h), ll.avg_pool2x(sc)
    return h + _sn_conv(sc, self.out_ch, 1, train, self.dtype, 'sc')


class ResidualBlock(nn.Module):
  """Later blocks (module doc)."""
  out_ch: int
  downsample: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    c = x.shape[-1]
    h = _sn_conv(nn.relu(x), c, 3, train, self.dtype, 'conv1')
    h = _sn_conv(nn.relu(h), self.out_ch, 3, train, self.dtype, 'conv2')
    if self.downsample:
      h = ll.avg_pool2x(h)
    sc = x
    if c != self.out_ch or self.downsample:
      sc = _sn_conv(x, self.out_ch, 1, train, self.dtype, 'sc')
      if self.downsample:
        sc = ll.avg_pool2x(sc)
    return h + sc


def _trunk(x: Array, ch: int, first_down: bool, train: bool,
           dtype: Dtype) -> Array:
  """The five blocks, ReLU, sum over H×W → [N, 16·ch] float32."""
  x = OptimizedBlock(ch, first_down, dtype, name='block0')(x, train=train)
  for i, mult in enumerate(WIDTHS[1:]):
    x = ResidualBlock(ch * mult, True, dtype, name=f'block{i + 1}')(
        x, train=train)
  return jnp.sum(nn.relu(x).astype(jnp.float32), axis=(1, 2))


class ImageDiscriminator(nn.Module):
  """[B, S, S, 3] → logits [B] (`ImageDiscriminator(conv_dim=ch)`)."""
  ch: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    h = _trunk(x.astype(self.dtype), self.ch, True, train, self.dtype)
    out = _sn_dense(h.astype(self.dtype), 1, False, train, self.dtype,
                    'classifier')
    return out[:, 0].astype(jnp.float32)


class ObjectDiscriminator(nn.Module):
  """Crops [N, c, c, 3] → (src logits [N], class logits [N, num_classes])."""
  num_classes: int
  ch: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, Array]:
    h = _trunk(x.astype(self.dtype), self.ch, False, train, self.dtype)
    h = h.astype(self.dtype)
    src = _sn_dense(h, 1, True, train, self.dtype, 'classifier_src')
    cls = _sn_dense(h, self.num_classes, True, train, self.dtype,
                    'classifier_cls')
    return src[:, 0].astype(jnp.float32), cls.astype(jnp.float32)


class Layout2ImDiscriminator(nn.Module):
  """The image D ('img') and the object D ('obj') of one run.

  Attributes:
    num_classes: rows of the AC classifier (184 COCO-Stuff, 179 VG).
    img_ch: image-D width (train.py passes `embedding_dim`, 64).
    obj_ch: object-D width (64).
  """
  num_classes: int
  img_ch: int = 64
  obj_ch: int = 64
  dtype: Dtype = jnp.float32

  def setup(self):
    self.img = ImageDiscriminator(self.img_ch, self.dtype)
    self.obj = ObjectDiscriminator(self.num_classes, self.obj_ch, self.dtype)

  def image(self, images: Array, *, train: bool) -> Array:
    return self.img(images, train=train)

  def objects(self, crops: Array, *, train: bool) -> tuple[Array, Array]:
    """crops [..., c, c, 3] → src [...], cls [..., num_classes]."""
    lead = crops.shape[:-3]
    src, cls = self.obj(crops.reshape(-1, *crops.shape[-3:]), train=train)
    return src.reshape(lead), cls.reshape(*lead, -1)

  def __call__(self, images: Array, crops: Array, *, train: bool):
    """Both nets (used to initialise the variables)."""
    return self.image(images, train=train), self.objects(crops, train=train)
