"""Evaluate a trained run and write run_dir/metrics.json (stage evaluate@<variant>).

python pipelines/evaluate.py run_dir=runs/mha-dense-fp32-s0
python pipelines/evaluate.py run_dir=runs/mine eval.decode_tokens=128 logger=none
"""

import hydra
from omegaconf import DictConfig

from tinyseek.config import register_configs, to_object
from tinyseek.evaluation.loader import load_run_config
from tinyseek.evaluation.run import evaluate
from tinyseek.runtime import exit_on_invalid_input, setup_process, wandb_settings
from tinyseek.tracking import finish_wandb_run, git_commit

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@exit_on_invalid_input
def main(cfg: DictConfig) -> None:
    setup_process()
    eval_cfg = to_object(cfg)
    if eval_cfg.logger is None:
        # Track the evaluation the way the run was tracked (no W&B run for logger=csv).
        eval_cfg.logger = load_run_config(eval_cfg.run_dir).logger
    mode, _ = wandb_settings(eval_cfg.logger)
    try:
        evaluate(eval_cfg, wandb_mode=mode, commit=git_commit())
    finally:
        finish_wandb_run()


if __name__ == "__main__":
    main()
