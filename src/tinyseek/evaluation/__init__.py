"""Evaluation: full-split loss and bits per byte, KV-cache measurement, decoding speed."""
