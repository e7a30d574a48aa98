"""Prepare a corpus: split, train the tokenizer, write token files (stage prepare).

python pipelines/prepare.py                               # tinyshakespeare, bpe
python pipelines/prepare.py tokenizer=char out=data/shakespeare_char
python pipelines/prepare.py data=text_files data.path=my.txt out=data/mine
python pipelines/prepare.py data=hub data.hf_path=text data.hf_data_files=my.txt out=data/mine
"""

import hydra
from omegaconf import DictConfig

from tinyseek.config import register_configs, to_object
from tinyseek.data.shards import prepare_corpus
from tinyseek.data.sources import load_corpus
from tinyseek.runtime import cache_dir, data_dir, exit_on_invalid_input, setup_process

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
@exit_on_invalid_input
def main(cfg: DictConfig) -> None:
    setup_process()
    prepare_cfg = to_object(cfg)
    corpus = load_corpus(prepare_cfg.data, data_dir(), cache_dir())
    prepare_corpus(
        corpus,
        prepare_cfg.tokenizer,
        prepare_cfg.out,
        val_fraction=prepare_cfg.data.val_fraction,
        min_tokens=prepare_cfg.data.seq_len + 1,
        corpus_name=prepare_cfg.data.name,
    )


if __name__ == "__main__":
    main()
