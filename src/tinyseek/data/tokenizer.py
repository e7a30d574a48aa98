"""Tokenizers built with Hugging Face `tokenizers`: byte-level BPE, characters and raw bytes.

All three serialise to one tokenizer.json that `tokenizers.Tokenizer.from_file` loads.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from tinyseek.config import TokenizerConfig

UNK_TOKEN = "<unk>"


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """Map each byte to the printable character that byte-level tokenizers use for it.

    Printable Latin-1 bytes map to themselves; the others are shifted past U+0100, the
    convention GPT-2 introduced and `tokenizers`' ByteLevel pre-tokenizer follows.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shift)
            shift += 1
    return mapping


def train_tokenizer(cfg: TokenizerConfig, train_text: str) -> Tokenizer:
    """Build the configured tokenizer, fitting it on the training split where it learns."""
    if cfg.type == "bpe":
        return _train_bpe(cfg, train_text)
    if cfg.type == "char":
        return _char_tokenizer(train_text)
    return _byte_tokenizer()


def _train_bpe(cfg: TokenizerConfig, train_text: str) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(train_text.splitlines(keepends=True), trainer)
    return tokenizer


def _char_tokenizer(train_text: str) -> Tokenizer:
    # Id 0 is <unk> for characters that appear only outside the training split.
    vocab = {UNK_TOKEN: 0}
    for char in sorted(set(train_text)):
        vocab[char] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def _byte_tokenizer() -> Tokenizer:
    # Token id == byte value, so the vocabulary is exactly the 256 bytes.
    vocab = {char: byte for byte, char in byte_to_unicode().items()}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=byte_to_unicode()[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated"),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer's canonical JSON: equal hashes mean equal token ids."""
    return hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 bytes that each token id stands for (an unknown-character token counts as 1)."""
    unicode_to_byte = {char: byte for byte, char in byte_to_unicode().items()}
    byte_level = isinstance(tokenizer.decoder, decoders.ByteLevel)
    lengths = np.ones(tokenizer.get_vocab_size(), dtype=np.int64)
    for token, token_id in tokenizer.get_vocab().items():
        if token == UNK_TOKEN:
            continue
        if byte_level:
            lengths[token_id] = sum(1 for char in token if char in unicode_to_byte)
        else:
            lengths[token_id] = len(token.encode("utf-8"))
    return lengths
