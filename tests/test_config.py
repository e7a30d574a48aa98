"""Hydra composition of every group option, and early rejection of impossible configs."""

from __future__ import annotations

import shutil

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from tests.conftest import CONF, compose_config
from tinyseek.config import TrainConfig, to_object

GROUPS = [
    "model",
    "attention",
    "ffn",
    "precision",
    "data",
    "tokenizer",
    "trainer",
    "logger",
    "experiment",
]
# Options that need a value the user supplies.
REQUIRED = {"data/text_files": ["data.path=corpus.txt"], "data/hub": ["data.hf_path=text"]}


def group_options() -> list[tuple[str, str]]:
    options = []
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            options.append((group, path.stem))
    return options


def test_every_group_has_options():
    groups_with_options = {group for group, _ in group_options()}
    assert groups_with_options == set(GROUPS)


@pytest.mark.parametrize(("group", "option"), group_options())
def test_train_config_composes_option(group, option):
    overrides = [f"{group}={option}", *REQUIRED.get(f"{group}/{option}", [])]
    cfg = to_object(compose_config("train", overrides))
    assert isinstance(cfg, TrainConfig)


@pytest.mark.parametrize("root", ["prepare", "evaluate", "report"])
def test_stage_root_configs_compose(root):
    overrides = ["run_dir=runs/x"] if root == "evaluate" else []
    assert to_object(compose_config(root, overrides)) is not None


def test_variant_name_joins_axes():
    cfg = to_object(compose_config("train", ["attention=gqa", "precision=bf16", "seed=3"]))
    assert cfg.name == "gqa-dense-bf16-s3"
    assert cfg.run_dir == "runs/adhoc/gqa-dense-bf16-s3"


def test_attention_sets_kv_heads():
    heads = {}
    for attention in ("mha", "gqa", "mqa"):
        cfg = to_object(compose_config("train", [f"attention={attention}"]))
        heads[attention] = cfg.model.n_kv_heads
    assert heads == {"mha": 8, "gqa": 2, "mqa": 1}


def test_unknown_group_option_rejected():
    with pytest.raises(ConfigCompositionException, match="attention/mla_typo"):
        compose_config("train", ["attention=mla_typo"])


def test_misspelt_key_rejected():
    with pytest.raises(ConfigCompositionException, match="n_haeds"):
        compose_config("train", ["model.n_haeds=4"])


def test_misspelt_key_in_yaml_rejected(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "model" / "typo.yaml").write_text("name: typo\ndimm: 64\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="dimm"):
            compose(config_name="train", overrides=["model=typo"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.dim=100", "model.n_heads=8"],
            r"model.dim=100 is not divisible by model.n_heads=8",
        ),
        (
            ["attention=gqa", "model.n_kv_heads=3"],
            r"model.n_heads=8 is not divisible by model.n_kv_heads=3",
        ),
        (["attention=mha", "model.n_kv_heads=2"], r"contradicts attention=mha"),
        (["attention=mqa", "model.n_kv_heads=2"], r"contradicts attention=mqa"),
        (["data.seq_len=512"], r"data.seq_len=512 exceeds model.max_seq_len=256"),
        (["optim.lr=0"], r"optim.lr=0.0 is invalid"),
        (["optim.lr=-1e-3"], r"optim.lr=-0.001 is invalid"),
        (["trainer.max_steps=0"], r"trainer.max_steps=0 is invalid"),
        (["data.batch_size=0"], r"data.batch_size=0 is invalid"),
        (["tokenizer.vocab_size=100"], r"tokenizer.vocab_size=100 is too small"),
        (["seed=-1"], r"seed=-1 is invalid"),
        (["data=hub"], r"data.source=hub needs data.hf_path"),
        (["optim.warmup_steps=5000"], r"optim.warmup_steps=5000 exceeds trainer.max_steps"),
    ],
)
def test_impossible_config_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        to_object(compose_config("train", overrides))


def test_appended_unknown_key_rejected():
    with pytest.raises(ValueError, match=r"unknown config key\(s\): model.n_haeds"):
        to_object(compose_config("train", ["+model.n_haeds=4"]))


def test_odd_head_dim_rejected():
    with pytest.raises(ValueError, match=r"head_dim=25 \(model.dim=100 / model.n_heads=4\) is odd"):
        to_object(compose_config("train", ["model=tiny", "model.dim=100"]))


def test_moe_width_alignment_rejected():
    with pytest.raises(ValueError, match="model.moe_inter_dim=42 is not a multiple of 8"):
        to_object(compose_config("train", ["ffn=moe", "model.moe_inter_dim=42"]))


def test_wrong_type_rejected():
    with pytest.raises(ConfigCompositionException, match="model.dim"):
        compose_config("train", ["model.dim=wide"])
