"""The JAX backend (Flax NNX + optax): ``model.py`` (the GPT) and ``train.py`` (training, evaluation, sampling)."""
