"""The MRR `evaluate` module (`mrr.py`); `reciprocal_ranks` is its rank rule."""
