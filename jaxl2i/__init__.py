"""jaxl2i: scene-from-structure image synthesis in JAX/Flax."""
