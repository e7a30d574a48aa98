"""Export a trained run as a transformers checkpoint.

python -m tinyseek.export run_dir=runs/mla-moe-fp32-s0                 # writes run_dir/hf
python -m tinyseek.export run_dir=runs/mha-dense-fp32-s0 out=exports/mha

Import goes through training: `python pipelines/train.py init_from=exports/mha ...` with
model keys that match the checkpoint (tinyseek.export.model_config_from_hf lists them).
"""

from pathlib import Path

import hydra

from tinyseek.config import register_configs, to_object
from tinyseek.export.checkpoint import export_run
from tinyseek.runtime import exit_on_invalid_input

# NOTE: conf/ sits at the repository root, so this command needs a source checkout
# (an editable install), like the pipeline entry points.
CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


def main() -> None:
    register_configs()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
    @exit_on_invalid_input
    def run(cfg) -> None:
        export_cfg = to_object(cfg)
        export_run(export_cfg.run_dir, export_cfg.out)

    run()


if __name__ == "__main__":
    main()
