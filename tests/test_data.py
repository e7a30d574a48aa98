"""Corpus sources, rejection messages, tokenizers and token files, on real text."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINYSHAKESPEARE_SHA256
from tinyseek.config import DataConfig, TokenizerConfig
from tinyseek.data.shards import load_meta, load_tokenizer, load_tokens, prepare_corpus, split_text
from tinyseek.data.sources import CorpusError, load_corpus
from tinyseek.data.tokenizer import token_byte_lengths, train_tokenizer


def prepare_file(path: Path, out: Path, tokenizer: str = "bpe", seq_len: int = 64) -> dict:
    corpus = load_corpus(DataConfig(source="path", path=str(path)), None, out / "cache")
    return prepare_corpus(
        corpus, TokenizerConfig(type=tokenizer, vocab_size=300), out, 0.1, seq_len + 1, "small"
    )


@pytest.mark.parametrize("tokenizer", ["bpe", "char", "byte"])
def test_prepare_writes_token_files(tmp_path, small_text_file, tokenizer):
    meta = prepare_file(small_text_file, tmp_path / "out", tokenizer)
    out = tmp_path / "out"
    for name in ("train.bin", "val.bin", "meta.json", "tokenizer.json", "train.txt", "val.txt"):
        assert (out / name).is_file(), name
    assert load_meta(out) == meta
    text = small_text_file.read_text()
    assert meta["train"]["bytes"] + meta["val"]["bytes"] == len(text.encode("utf-8"))
    train = load_tokens(out, "train", meta)
    assert train.dtype == np.uint16
    assert len(train) == meta["train"]["tokens"]
    assert int(train.max()) < meta["vocab_size"]


def test_prepare_meta_fields(tmp_path, small_text_file):
    meta = prepare_file(small_text_file, tmp_path / "out")
    assert meta["vocab_size"] == 300
    assert meta["dtype"] == "uint16"
    tokenizer_json = (tmp_path / "out" / "tokenizer.json").read_text()
    tokenizer = load_tokenizer(tmp_path / "out")
    assert meta["tokenizer"]["sha256"] == hashlib.sha256(tokenizer.to_str().encode()).hexdigest()
    assert json.loads(tokenizer_json)["model"]["type"] == "BPE"


def test_prepare_is_deterministic(tmp_path, small_text_file):
    prepare_file(small_text_file, tmp_path / "a")
    prepare_file(small_text_file, tmp_path / "b")
    for name in ("train.bin", "val.bin", "tokenizer.json", "meta.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_split_keeps_last_tenth_for_validation():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, val = split_text(text, 0.1)
    assert train + val == text
    assert len(val) == 100


def test_val_tokens_decode_to_val_split(tmp_path, small_text_file):
    prepare_file(small_text_file, tmp_path / "out", "bpe")
    meta = load_meta(tmp_path / "out")
    tokenizer = load_tokenizer(tmp_path / "out")
    val = load_tokens(tmp_path / "out", "val", meta)
    assert tokenizer.decode(val.tolist()) == (tmp_path / "out" / "val.txt").read_text()


@pytest.mark.parametrize("kind", ["bpe", "char", "byte"])
def test_tokenizer_round_trip(shakespeare_text, kind):
    train_text = shakespeare_text[:100_000]
    tokenizer = train_tokenizer(TokenizerConfig(type=kind, vocab_size=400), train_text)
    sample = shakespeare_text[100_000:102_000]
    ids = tokenizer.encode(sample).ids
    assert tokenizer.decode(ids) == sample


@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_byte_level_round_trip_unicode(kind):
    tokenizer = train_tokenizer(
        TokenizerConfig(type=kind, vocab_size=300), "plain ascii text\n" * 20
    )
    text = "naïve café — 東京 🙂\n\ttabs"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_byte_tokenizer_ids_are_bytes():
    tokenizer = train_tokenizer(TokenizerConfig(type="byte"), "")
    text = "Aé\n"
    assert tokenizer.encode(text).ids == list(text.encode("utf-8"))
    assert tokenizer.get_vocab_size() == 256


def test_char_tokenizer_maps_unseen_to_unk():
    tokenizer = train_tokenizer(TokenizerConfig(type="char"), "abc\n")
    assert tokenizer.encode("abz").ids == [1 + 1, 1 + 2, 0]


@pytest.mark.parametrize("kind", ["bpe", "char", "byte"])
def test_token_byte_lengths_sum_to_text_bytes(shakespeare_text, kind):
    text = shakespeare_text[:50_000] + "é€"
    tokenizer = train_tokenizer(TokenizerConfig(type=kind, vocab_size=400), text)
    ids = tokenizer.encode(text).ids
    assert int(token_byte_lengths(tokenizer)[ids].sum()) == len(text.encode("utf-8"))


# Rejections: each names the path and what to do


def test_missing_corpus_rejected(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(CorpusError, match=f"data.path={missing} does not exist"):
        load_corpus(DataConfig(source="path", path=str(missing)), None, tmp_path)


def test_empty_corpus_rejected(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("  \n\n")
    with pytest.raises(CorpusError, match=f"corpus file is empty: {path}"):
        load_corpus(DataConfig(source="path", path=str(path)), None, tmp_path)


def test_binary_corpus_rejected(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(CorpusError, match=f"looks binary.*{path}"):
        load_corpus(DataConfig(source="path", path=str(path)), None, tmp_path)


def test_non_utf8_corpus_rejected(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Wherefore art thou, Roméo?\n".encode("latin-1") * 50)
    with pytest.raises(CorpusError, match=f"not valid UTF-8 at byte 23: {path}.*iconv"):
        load_corpus(DataConfig(source="path", path=str(path)), None, tmp_path)


def test_outputs_follow_umask(tmp_path, small_text_file):
    prepare_file(small_text_file, tmp_path / "out")
    mode = (tmp_path / "out" / "meta.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_short_train_split_advice(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("hello world\n")
    with pytest.raises(CorpusError, match="train split has .*a smaller data.val_fraction"):
        prepare_file(path, tmp_path / "out", "char", seq_len=64)


def test_short_corpus_rejected(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("To be, or not to be, that is the question.\n" * 5)
    with pytest.raises(CorpusError, match=f"corpus {path} is too short.*data.seq_len"):
        prepare_file(path, tmp_path / "out", "char", seq_len=64)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_empty_folder_rejected(tmp_path):
    with pytest.raises(CorpusError, match=f"no \\*.txt files in corpus folder {tmp_path}"):
        load_corpus(DataConfig(source="path", path=str(tmp_path)), None, tmp_path)


def test_folder_of_text_files_joined(tmp_path):
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "a.txt").write_text("first\n")
    corpus = load_corpus(DataConfig(source="path", path=str(tmp_path)), None, tmp_path / "cache")
    assert corpus.text == "first\n\nsecond\n"


# Sources: data folder, cache, download with checksum, Hugging Face datasets


def shakespeare_config(**fields) -> DataConfig:
    return DataConfig(name="tinyshakespeare", sha256=TINYSHAKESPEARE_SHA256, **fields)


def test_data_dir_source_found(tmp_path, shakespeare_dir):
    corpus = load_corpus(shakespeare_config(url=None), str(shakespeare_dir), tmp_path / "cache")
    assert corpus.source == str(shakespeare_dir / "tinyshakespeare" / "input.txt")
    assert len(corpus.text) == 1_115_394


def test_download_verified_and_cached(tmp_path, shakespeare_dir):
    url = (shakespeare_dir / "tinyshakespeare" / "input.txt").as_uri()
    cache = tmp_path / "cache"
    corpus = load_corpus(shakespeare_config(url=url), None, cache)
    cached = cache / "tinyshakespeare" / "input.txt"
    assert cached.is_file()
    assert corpus.source == str(cached)
    # The second load reads the cache, so a broken URL does not matter any more.
    again = load_corpus(shakespeare_config(url="file:///nonexistent/input.txt"), None, cache)
    assert again.text == corpus.text


def test_download_checksum_mismatch_rejected(tmp_path, small_text_file):
    cfg = shakespeare_config(url=small_text_file.as_uri())
    with pytest.raises(CorpusError, match="has sha256 .*expected 86c4e6aa"):
        load_corpus(cfg, None, tmp_path / "cache")
    assert not (tmp_path / "cache" / "tinyshakespeare" / "input.txt").exists()


def test_download_failure_explains_offline_use(tmp_path):
    cfg = shakespeare_config(url="file:///nonexistent/input.txt")
    with pytest.raises(CorpusError, match="TINYSEEK_DATA_DIR"):
        load_corpus(cfg, None, tmp_path / "cache")


def test_corpus_not_found_without_url(tmp_path):
    with pytest.raises(CorpusError, match="corpus 'tinyshakespeare' not found"):
        load_corpus(shakespeare_config(url=None), str(tmp_path), tmp_path / "cache")


def test_hub_text_builder_with_local_files(tmp_path, small_text_file):
    cfg = DataConfig(name="hub", source="hub", hf_path="text", hf_data_files=str(small_text_file))
    corpus = load_corpus(cfg, None, tmp_path / "cache")
    # The text builder yields one row per line, blank lines included.
    assert corpus.text == "\n".join(small_text_file.read_text().splitlines())
    assert corpus.source == "hub:text"


def test_hub_missing_column_rejected(tmp_path, small_text_file):
    cfg = DataConfig(
        source="hub", hf_path="text", hf_data_files=str(small_text_file), text_column="content"
    )
    with pytest.raises(CorpusError, match="no column 'content'"):
        load_corpus(cfg, None, tmp_path / "cache")
