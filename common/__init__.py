"""Framework-free layer shared by every backend: numpy only, no torch, jax or flax."""
