"""Build the ablation report from run folders (stage report).

python pipelines/report.py runs=[runs/mha-dense-fp32-s0,runs/gqa-dense-fp32-s0] out=reports
python pipelines/report.py runs=[runs] baseline=mha-dense-fp32-s0 out=reports/mine
"""

import hydra
from omegaconf import DictConfig

from tinyseek.config import register_configs, to_object
from tinyseek.reporting.build import build_report
from tinyseek.reporting.wandb_log import log_report
from tinyseek.runtime import exit_on_invalid_input, setup_process, wandb_settings
from tinyseek.tracking import finish_wandb_run, git_commit

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
@exit_on_invalid_input
def main(cfg: DictConfig) -> None:
    setup_process()
    report_cfg = to_object(cfg)
    mode, _ = wandb_settings(report_cfg.logger)
    try:
        summary = build_report(report_cfg, commit=git_commit())
        if report_cfg.logger.type == "wandb":
            log_report(report_cfg, summary, mode)
    finally:
        finish_wandb_run()


if __name__ == "__main__":
    main()
