"""The PyTorch backend: ``model.py`` (the GPT) and ``train.py`` (training, evaluation, sampling)."""
