"""The erasure benchmark (``python -m bench.run``): the engine against bounds and naive baselines."""
