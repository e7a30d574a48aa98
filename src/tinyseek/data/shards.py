"""Split a corpus, train its tokenizer and write memory-mapped token files with meta.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from tinyseek.config import TokenizerConfig
from tinyseek.data.sources import Corpus, CorpusError
from tinyseek.data.tokenizer import tokenizer_hash, train_tokenizer
from tinyseek.io import atomic_path, read_json, write_json, write_text

log = logging.getLogger(__name__)

META_VERSION = 1


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """Split by characters: the last val_fraction of the text is validation."""
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut], text[cut:]


def token_dtype(vocab_size: int) -> np.dtype:
    if vocab_size <= np.iinfo(np.uint16).max + 1:
        return np.dtype(np.uint16)
    if vocab_size <= np.iinfo(np.uint32).max + 1:
        return np.dtype(np.uint32)
    raise ValueError(f"vocab_size={vocab_size} does not fit in uint32 token ids.")


def encode(tokenizer: Tokenizer, text: str, dtype: np.dtype) -> np.ndarray:
    # Line-sized pieces keep BPE's pre-tokenisation cheap; byte-level BPE and the char and
    # byte tokenizers all encode a text exactly as the concatenation of its lines.
    lines = text.splitlines(keepends=True)
    encodings = tokenizer.encode_batch(lines, add_special_tokens=False)
    ids = [token_id for encoding in encodings for token_id in encoding.ids]
    return np.asarray(ids, dtype=dtype)


def _write_tokens(path: Path, tokens: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tokens.tofile(tmp)


def prepare_corpus(
    corpus: Corpus,
    tokenizer_cfg: TokenizerConfig,
    out_dir: str | Path,
    val_fraction: float,
    min_tokens: int,
    corpus_name: str,
) -> dict[str, Any]:
    """Write splits, tokenizer.json, train.bin, val.bin and meta.json into out_dir.

    min_tokens is the shortest split that still fills one training window (seq_len + 1).
    Every file is written atomically, and meta.json last, so a crash never leaves a
    meta.json that describes missing or stale token files.
    """
    out_dir = Path(out_dir)
    train_text, val_text = split_text(corpus.text, val_fraction)

    log.info("training %s tokenizer on %d characters", tokenizer_cfg.type, len(train_text))
    tokenizer = train_tokenizer(tokenizer_cfg, train_text)
    vocab_size = tokenizer.get_vocab_size()
    dtype = token_dtype(vocab_size)

    train_ids = encode(tokenizer, train_text, dtype)
    val_ids = encode(tokenizer, val_text, dtype)
    for split, ids, fraction_fix in (
        ("train", train_ids, "a smaller data.val_fraction"),
        ("validation", val_ids, "a larger data.val_fraction"),
    ):
        if len(ids) < min_tokens:
            raise CorpusError(
                f"corpus {corpus.source} is too short: its {split} split has {len(ids)} tokens, "
                f"fewer than one training window of {min_tokens} (data.seq_len + 1). Use a "
                f"longer text, a smaller data.seq_len, or {fraction_fix}."
            )

    write_text(out_dir / "train.txt", train_text)
    write_text(out_dir / "val.txt", val_text)
    write_text(out_dir / "tokenizer.json", tokenizer.to_str(pretty=True))
    _write_tokens(out_dir / "train.bin", train_ids)
    _write_tokens(out_dir / "val.bin", val_ids)

    meta = {
        "version": META_VERSION,
        "corpus": {"name": corpus_name, "source": corpus.source, "sha256": corpus.sha256},
        "tokenizer": {
            "type": tokenizer_cfg.type,
            "vocab_size_requested": tokenizer_cfg.vocab_size
            if tokenizer_cfg.type == "bpe"
            else None,
            "sha256": tokenizer_hash(tokenizer),
        },
        "vocab_size": vocab_size,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "train": {"tokens": int(len(train_ids)), "bytes": len(train_text.encode("utf-8"))},
        "val": {"tokens": int(len(val_ids)), "bytes": len(val_text.encode("utf-8"))},
    }
    write_json(out_dir / "meta.json", meta)
    log.info(
        "prepared %s: vocab %d, %d train and %d val tokens (%.2f bytes per token)",
        out_dir,
        vocab_size,
        len(train_ids),
        len(val_ids),
        meta["val"]["bytes"] / len(val_ids),
    )
    return meta


def load_meta(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"prepared data not found: {path} is missing. Run `python pipelines/prepare.py` "
            "(or `dvc repro prepare`) first, or point data.dir at a prepared folder."
        )
    return read_json(path)


def load_tokens(data_dir: str | Path, split: str, meta: dict[str, Any]) -> np.ndarray:
    """Memory-map train.bin or val.bin as a read-only array of token ids."""
    path = Path(data_dir) / f"{split}.bin"
    tokens = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")
    if len(tokens) != meta[split]["tokens"]:
        raise ValueError(
            f"{path} has {len(tokens)} tokens but meta.json records {meta[split]['tokens']}: "
            "the folder is inconsistent, so prepare it again."
        )
    return tokens


def load_tokenizer(data_dir: str | Path) -> Tokenizer:
    return Tokenizer.from_file(str(Path(data_dir) / "tokenizer.json"))
