"""The training objective: one Optuna trial is one brief LoRA fine-tuning run."""

__all__: list[str] = []
