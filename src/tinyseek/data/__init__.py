"""Corpus sources, tokenizers, token files and the training data module."""
