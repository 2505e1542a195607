"""SPADE with its VAE image encoder (`--use_vae`) as one generator module.

The official code keeps `netE` beside `netG` and optimises both with G's
optimizer (`pix2pix_model.create_optimizers`); here they are the two children
of one module, so the trainer sees one generator:

  variables = {'params': {'encoder': ..., 'generator': ...},
               'batch_stats': {'generator': ...},
               'spectral': {'encoder': ..., 'generator': ...}}

Without a style image z ~ N(0, I) is drawn from the 'noise' stream (SPADE's
multimodal sampling); with one, z = μ + ε·σ of its encoding
(`pix2pix_model.encode_z` + `reparameterize`).
"""

from typing import Optional

import flax.linen as nn
import jax

from jaxl2i.models import spade
from jaxl2i.models import spade_discriminator as sd

Array = jax.Array


class VAEGenerator(nn.Module):
  """ConvEncoder (style image → z) + SPADEGenerator(use_vae=True)."""
  generator: spade.SPADEGenerator
  encoder: sd.ConvEncoder

  def __call__(self, segmap: Array, style: Optional[Array] = None, *,
               train: bool) -> tuple[Array, Optional[Array], Optional[Array]]:
    """Generates from segmap [B,H,W,S] and an optional style [B,h,w,3].

    Returns:
      (image [B,H,W,C] in [-1,1], mu, logvar); mu/logvar are None without a
      style image.
    """
    if style is None:
      return self.generator(segmap, train=train), None, None
    mu, logvar = self.encoder(style, train=train)
    z = sd.reparameterize(self.make_rng('noise'), mu, logvar)
    return self.generator(segmap, z.astype(self.generator.dtype),
                          train=train), mu, logvar
