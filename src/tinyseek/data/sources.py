"""Find a corpus and read it as text: explicit path, data folder, cache, URL, or the Hub."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tinyseek.config import DataConfig
from tinyseek.io import atomic_path

log = logging.getLogger(__name__)

# Bytes sniffed for NUL characters, the usual sign of a binary file.
_SNIFF_BYTES = 8192


class CorpusError(ValueError):
    """A corpus is missing, unreadable, or unfit for training."""


@dataclass
class Corpus:
    """A corpus read into memory, with where it came from."""

    text: str
    source: str
    sha256: str | None = None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_text_file(path: Path) -> str:
    """Read a UTF-8 text file, rejecting empty, binary and non-UTF-8 files by path."""
    if not path.is_file():
        raise CorpusError(f"corpus file not found: {path}. Check data.path or the data folder.")
    raw = path.read_bytes()
    if not raw.strip():
        raise CorpusError(
            f"corpus file is empty: {path}. Point data.path at a non-empty text file."
        )
    if b"\x00" in raw[:_SNIFF_BYTES]:
        raise CorpusError(
            f"corpus file looks binary (it contains NUL bytes): {path}. "
            "Use a plain UTF-8 text file."
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(
            f"corpus file is not valid UTF-8 at byte {err.start}: {path}. "
            "Convert it, for example with `iconv -f latin1 -t utf-8`."
        ) from err


def read_text_path(path: Path) -> str:
    """Read one text file, or every *.txt file of a folder in name order, joined by newlines."""
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise CorpusError(
                f"no *.txt files in corpus folder {path}. Add text files or fix data.path."
            )
        return "\n".join(read_text_file(f) for f in files)
    return read_text_file(path)


def download(url: str, dest: Path, sha256: str | None) -> None:
    """Download url to dest, verifying its sha256 before the file appears under dest."""
    log.info("downloading %s to %s", url, dest)
    with atomic_path(dest) as tmp:
        try:
            urllib.request.urlretrieve(url, tmp)
        except OSError as err:
            raise CorpusError(
                f"download of {url} failed ({err}). Without network, set TINYSEEK_DATA_DIR to a "
                f"folder holding {dest.parent.name}/{dest.name}, or pass data.path."
            ) from err
        _verify(tmp, sha256, what=f"download of {url}")


def _verify(path: Path, sha256: str | None, what: str) -> None:
    if sha256 is None:
        return
    actual = sha256_of(path)
    if actual != sha256:
        raise CorpusError(
            f"{what} has sha256 {actual}, expected {sha256}. The file is corrupt or a different "
            "version: delete it and retry, or set data.sha256=null to accept it."
        )


def locate_corpus_file(cfg: DataConfig, data_dir: str | None, cache_dir: Path) -> Path:
    """Find the corpus file: data folder, then cache, then a verified download into the cache."""
    candidates = []
    if data_dir:
        candidates.append(Path(data_dir) / cfg.name / cfg.filename)
    cached = cache_dir / cfg.name / cfg.filename
    candidates.append(cached)

    for candidate in candidates:
        if candidate.is_file():
            _verify(candidate, cfg.sha256, what=str(candidate))
            return candidate

    if cfg.url is None:
        searched = ", ".join(str(c) for c in candidates)
        raise CorpusError(
            f"corpus {cfg.name!r} not found (searched {searched}) and data.url is not set. "
            "Pass data.path, or set TINYSEEK_DATA_DIR to a folder that holds "
            f"{cfg.name}/{cfg.filename}."
        )
    download(cfg.url, cached, cfg.sha256)
    return cached


def load_hub_text(cfg: DataConfig) -> str:
    """Load a Hugging Face dataset split and join its text column with newlines."""
    import datasets

    try:
        dataset = datasets.load_dataset(
            cfg.hf_path, cfg.hf_config, data_files=cfg.hf_data_files, split=cfg.hf_split
        )
    except Exception as err:  # datasets raises many unrelated types for a bad name or path
        raise CorpusError(
            f"datasets.load_dataset({cfg.hf_path!r}, {cfg.hf_config!r}, split={cfg.hf_split!r}) "
            f"failed: {err}. Check data.hf_path, data.hf_config and data.hf_split."
        ) from err
    if cfg.text_column not in dataset.column_names:
        raise CorpusError(
            f"dataset {cfg.hf_path!r} has no column {cfg.text_column!r} (columns: "
            f"{', '.join(dataset.column_names)}). Set data.text_column."
        )
    # Blank rows are kept: for line-based builders they are the text's empty lines.
    text = "\n".join(row if row is not None else "" for row in dataset[cfg.text_column])
    if not text.strip():
        raise CorpusError(f"dataset {cfg.hf_path!r} split {cfg.hf_split!r} has no text.")
    return text


def load_corpus(cfg: DataConfig, data_dir: str | None, cache_dir: str | os.PathLike) -> Corpus:
    """Read the configured corpus into memory."""
    if cfg.path:
        path = Path(cfg.path)
        if not path.exists():
            raise CorpusError(
                f"data.path={cfg.path} does not exist. Point it at a text file or folder."
            )
        return Corpus(read_text_path(path), source=str(path))
    if cfg.source == "hub":
        return Corpus(load_hub_text(cfg), source=f"hub:{cfg.hf_path}")

    path = locate_corpus_file(cfg, data_dir, Path(cache_dir))
    return Corpus(read_text_file(path), source=str(path), sha256=cfg.sha256)
