"""kit: LoRA fine-tuning with torchtune, evaluation with Inspect AI, sweeps with Hydra, W&B logging."""

from kit.core.log import quiet_known_noise

# Before any kit module imports torchtune/torchao: their known-harmless import-time log lines.
quiet_known_noise()
