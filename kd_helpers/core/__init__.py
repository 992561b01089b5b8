"""The core: data, networks, losses, one training loop, evaluation, pruning, file locks and small
utilities. It imports nothing outside itself (tests/test_layers.py)."""
