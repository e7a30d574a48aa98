"""Study presets: expansion into named runs, params.yaml selection, Hydra sweeps."""

from __future__ import annotations

import functools

import pytest
import yaml

from tests.conftest import compose_config
from tinyseek.config import to_object
from tinyseek.studies import expand_study, list_studies, main, replace_block


@functools.cache
def expanded(study: str, seeds: int | None = None) -> dict:
    """Each study composed once per module: every job is a full Hydra composition."""
    return expand_study(study, seeds=seeds)


def test_every_study_is_listed():
    assert set(list_studies()) >= {"attention", "moe", "fp8", "deepseek"}


def test_attention_study_crosses_seeds():
    study = expanded("attention", 2)
    assert list(study["runs"]) == [
        f"{attention}-dense-fp32-s{seed}"
        for attention in ("mha", "gqa", "mqa", "mla")
        for seed in (0, 1)
    ]
    assert study["runs"]["mla-dense-fp32-s1"] == {
        "attention": "mla",
        "ffn": "dense",
        "precision": "fp32",
        "seed": 1,
    }
    assert study["baseline"] == "mha-dense-fp32"


def test_deepseek_study_is_cumulative_path():
    study = expanded("deepseek")
    variants = list(dict.fromkeys(name.rsplit("-s", 1)[0] for name in study["runs"]))
    assert variants == ["mha-dense-bf16", "mla-dense-bf16", "mla-moe-bf16", "mla-moe-fp8_blockwise"]
    assert len(study["runs"]) == 12
    assert study["runs"]["mla-moe-fp8_blockwise-s2"]["precision"] == "fp8_blockwise"


def test_moe_study_names_each_balancing():
    runs = expanded("moe", 1)["runs"]
    assert list(runs) == [
        f"mha-{ffn}-fp32-s0"
        for ffn in ("dense", "moe", "moe_aux_free", "moe_seq_aux", "moe_aux_loss", "moe_no_balance")
    ]
    cfg = to_object(compose_config("train", ["ffn=moe_aux_loss", "model=tiny"]))
    assert cfg.model.ffn == "moe"
    assert cfg.model.balance == ["aux_loss"]
    assert cfg.name == "mha-moe_aux_loss-fp32-s0"


def test_fp8_study_compares_recipes_with_bf16():
    runs = expanded("fp8", 1)["runs"]
    assert [run["precision"] for run in runs.values()] == [
        "bf16",
        "fp8_tensorwise",
        "fp8_rowwise",
        "fp8_blockwise",
    ]


def test_unknown_study_rejected():
    with pytest.raises(ValueError, match="study 'sparse' not found: choose one of"):
        expand_study("sparse")
    with pytest.raises(ValueError, match="--seeds 0 is invalid"):
        expand_study("attention", seeds=0)


def test_selection_rewrites_only_ablation(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "# old study\nablation:\n  name: old\n  runs: {}\n\n# budget\ntrain:\n  max_steps: 7\n"
    )
    main(["moe", "--seeds", "2", "--params", str(params)])
    text = params.read_text()
    loaded = yaml.safe_load(text)
    assert loaded["train"] == {"max_steps": 7}
    assert "# budget" in text
    assert "# old study" not in text
    assert loaded["ablation"]["study"] == "moe"
    assert len(loaded["ablation"]["runs"]) == 12
    assert loaded["ablation"]["baseline"] == "mha-dense-fp32"


def test_block_added_when_missing():
    assert replace_block("train: {}\n", "ablation: {}\n") == "ablation: {}\n\ntrain: {}\n"


def test_repository_params_select_deepseek():
    from tests.conftest import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["ablation"]["study"] == "deepseek"
    assert params["ablation"]["runs"] == expanded("deepseek")["runs"]


def test_flow_value_sets_params_through_dvc(tmp_path, capsys):
    from dvc.utils.hydra import apply_overrides

    params = tmp_path / "params.yaml"
    params.write_text(
        "ablation:\n  study: old\n  runs: {old-s0: {seed: 0}}\ntrain: {max_steps: 7}\n"
    )
    main(["attention", "--seeds", "1", "--flow"])
    value = capsys.readouterr().out.strip()
    apply_overrides(params, ["~ablation", f"+ablation={value}"])
    loaded = yaml.safe_load(params.read_text())
    assert loaded["train"] == {"max_steps": 7}
    assert list(loaded["ablation"]["runs"]) == [
        f"{attention}-dense-fp32-s0" for attention in ("mha", "gqa", "mqa", "mla")
    ]
