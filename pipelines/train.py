"""Train one variant (stage train@<variant>).

python pipelines/train.py attention=gqa precision=bf16 run_dir=runs/mine
python pipelines/train.py model=tiny trainer.max_steps=200 logger=csv
python pipelines/train.py -m attention=mha,gqa,mqa seed=0,1,2
python pipelines/train.py --cfg job        # print the resolved config
"""

import warnings

import hydra
from omegaconf import DictConfig

from tinyseek.config import register_configs, to_object
from tinyseek.runtime import exit_on_invalid_input, setup_process, wandb_settings
from tinyseek.tracking import finish_wandb_run, git_commit
from tinyseek.training.run import train

register_configs()
# conf/hydra/launcher presets are checked against the plugins' schemas of the same name, on
# purpose; Hydra 1.3 still does that but warns that it is deprecated.
warnings.filterwarnings("ignore", message="(?s).*validated against ConfigStore schema")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@exit_on_invalid_input
def main(cfg: DictConfig) -> None:
    setup_process()
    train_cfg = to_object(cfg)
    mode, wandb_dir = wandb_settings(train_cfg.logger)
    try:
        train(train_cfg, wandb_mode=mode, wandb_dir=wandb_dir, commit=git_commit())
    finally:
        finish_wandb_run()


if __name__ == "__main__":
    main()
