"""The real embedded default: MiniLM on the Amazon fine-food reviews."""

from __future__ import annotations

import optuna
import pytest

from lora_search.objectives import LoraObjective, Workload
from lora_search.spaces import TrainingConfig


@pytest.mark.slow
def test_one_default_trial_lowers_the_eval_loss():
    objective = LoraObjective(Workload(train_sample=64, eval_sample=64, torch_threads=2))
    # 4,000 training rows less the 800 (20%) held out for validation; the 1,000 testing rows are the test split
    assert objective.dataset_size == 3200 and objective.data.label_names == ["great", "other"]
    config = TrainingConfig(num_train_epochs=2, per_device_train_batch_size=8, learning_rate=1e-3, warmup_ratio=0.0).replace(
        lora={"target_modules": "all-linear"}
    )
    study = optuna.create_study(direction="minimize")
    study.optimize(lambda trial: objective(trial, config), n_trials=1)
    trial = study.trials[0]
    assert trial.user_attrs["stop_reason"] == "completed"
    assert trial.value < objective.untrained_value()
