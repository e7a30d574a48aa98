"""Shared fixtures: the real corpus, prepared tiny data, and Hydra composition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tinyseek.config import DataConfig, TokenizerConfig, register_configs, to_object
from tinyseek.data.shards import prepare_corpus
from tinyseek.data.sources import Corpus

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

register_configs()
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def corpora_dir() -> Path | None:
    """The folder holding tinyshakespeare/input.txt: $TINYSEEK_DATA_DIR or ../shared/corpora."""
    for candidate in (os.environ.get("TINYSEEK_DATA_DIR"), REPO.parent / "shared" / "corpora"):
        if candidate and (Path(candidate) / "tinyshakespeare" / "input.txt").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shakespeare_dir() -> Path:
    found = corpora_dir()
    if found is None:
        pytest.skip("tinyshakespeare not found: set TINYSEEK_DATA_DIR to a folder that holds it")
    return found


@pytest.fixture(scope="session")
def shakespeare_text(shakespeare_dir: Path) -> str:
    return (shakespeare_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")


@pytest.fixture
def small_text_file(tmp_path: Path, shakespeare_text: str) -> Path:
    """The first 60,000 characters of the real corpus, as a file."""
    path = tmp_path / "small.txt"
    path.write_text(shakespeare_text[:60_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory, shakespeare_text: str) -> Path:
    """A prepared folder: BPE with 512 tokens over the first 300,000 characters."""
    out = tmp_path_factory.mktemp("tiny_data")
    corpus = Corpus(shakespeare_text[:300_000], source="tinyshakespeare[:300000]")
    prepare_corpus(corpus, TokenizerConfig(type="bpe", vocab_size=512), out, 0.1, 65, "tiny")
    return out


def compose_config(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose a root config from conf/ exactly as the entry points do."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [])


def tiny_train_config(data_dir: Path, run_dir: Path, *overrides: str):
    """A validated TrainConfig for a seconds-long tiny run with no tracker."""
    cfg = compose_config(
        "train",
        [
            "experiment=tiny",
            "logger=none",
            "trainer.enable_progress_bar=false",
            "tokenizer.vocab_size=512",
            f"data.dir={data_dir}",
            f"run_dir={run_dir}",
            *overrides,
        ],
    )
    return to_object(cfg)


def data_config(**fields) -> DataConfig:
    return DataConfig(**fields)
