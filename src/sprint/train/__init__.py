"""Supervised fine-tuning on SPRINT and sequential records (TRL's SFTTrainer), driven by a YAML `TrainConfig`.

`config` owns the settings, `data` turns curated records into token sequences with loss on the completion only,
`trainer` builds the model and the SFTTrainer, runs it and saves a Hugging Face model directory.
"""

from sprint.train.config import TrainConfig, load_config

__all__ = ["TrainConfig", "load_config"]
