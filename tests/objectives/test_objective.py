"""LoraObjective on a tiny BERT classifier with a real Trainer and real Optuna studies."""

from __future__ import annotations

import math

import optuna
import pytest
import torch

from lora_search.objectives import FINITE_LOSS_CONSTRAINT, MEMORY_CONSTRAINT, LoraObjective, replay

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def run_configs(objective, configs, pruner=None):
    study = optuna.create_study(direction=objective.direction, pruner=pruner or optuna.pruners.NopPruner())
    configs = list(configs)
    study.optimize(lambda trial: objective(trial, configs[trial.number]), n_trials=len(configs), catch=(Exception,))
    return study


def injected_trial_then_a_clean_one(objective, config, injected):
    """One trial with ``injected``'s fault, then one without, in the same study."""
    study = optuna.create_study(direction="minimize")
    try:
        study.optimize(lambda trial: objective(trial, config), n_trials=1)
    finally:
        injected.handle.remove()
    study.optimize(lambda trial: objective(trial, config), n_trials=1)
    return study


def test_good_config_learns_and_records_what_happened(tiny_objective, good_config):
    trial = run_configs(tiny_objective, [good_config]).trials[0]
    attrs = trial.user_attrs
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert attrs["stop_reason"] == "completed"
    values = [e["value"] for e in attrs["evaluations"]]
    assert values[-1] < values[0] - 0.1
    # 64 examples x 4 epochs, reported every pass over the sample.
    assert attrs["proxy.report_steps"] == [64, 128, 192, 256]
    assert sorted(trial.intermediate_values) == [64, 128, 192, 256]
    assert attrs["examples_seen"] == 256
    assert attrs["optimizer_steps"] == attrs["proxy.optimizer_steps"] == 32  # 8 batches of 8 per epoch x 4
    assert attrs["trainable_parameters"] > 0
    assert attrs["train_seconds"] > 0 and attrs["examples_per_second"] > 0
    assert trial.constraints == {MEMORY_CONSTRAINT: 0.0, FINITE_LOSS_CONSTRAINT: 0.0}
    assert {"seed", "proxy.train_examples", "proxy.eval_examples", "peak_memory_mb", "memory_estimate_gb"} <= set(attrs)


def test_a_config_for_two_devices_trains_its_effective_batch_on_one(tiny_workload, good_config):
    """A config whose full run spreads each batch over 2 GPUs (8 per device x 1 accumulation x 2
    = 16 examples per optimizer step) trains in a process with one device (a --workers
    process, this CPU) as 2 accumulated passes of 8: the same examples in half the steps."""
    objective = LoraObjective(tiny_workload, config_devices=2)
    assert objective.parallel == 1
    attrs = run_configs(objective, [good_config]).trials[0].user_attrs
    assert attrs["examples_seen"] == 256
    assert attrs["optimizer_steps"] == attrs["proxy.optimizer_steps"] == 16  # 8 batches of 8 per epoch / 2 x 4 epochs


def test_bad_config_is_pruned_at_an_intermediate_example_count(tiny_objective, good_config, bad_config):
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=100)
    study = run_configs(tiny_objective, [good_config, bad_config], pruner)
    bad = study.trials[1]
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert bad.user_attrs["stop_reason"] == "pruned"
    assert max(bad.intermediate_values) == 128  # examples seen, not optimizer steps (16)
    assert bad.user_attrs["examples_seen"] == 128
    assert bad.user_attrs["examples_seen"] < 256


def test_value_is_the_best_evaluation_not_the_last(tiny_objective, overshoot_config):
    trial = run_configs(tiny_objective, [overshoot_config]).trials[0]
    values = list(trial.intermediate_values.values())
    assert values[-1] > min(values)  # the run got worse after its best evaluation
    assert trial.value == min(values)
    assert trial.user_attrs["best_step"] == min(trial.intermediate_values, key=trial.intermediate_values.get)


def test_early_stopping_follows_patience_and_threshold(tiny_objective, good_config):
    # No evaluation can beat the first by more than 10: two evaluations without improvement stop it.
    config = good_config.replace(early_stopping_patience=2, early_stopping_threshold=10.0)
    trial = run_configs(tiny_objective, [config]).trials[0]
    assert trial.user_attrs["stop_reason"] == "early-stopped"
    assert len(trial.user_attrs["evaluations"]) == 3
    assert trial.value == min(e["value"] for e in trial.user_attrs["evaluations"])


class RaiseOnTrainingForward:
    """A forward pre-hook on the base model's embeddings: raises after some training batches."""

    def __init__(self, objective, after_batches, error=None, poison=False):
        self.calls = 0
        self.after_batches = after_batches
        self.error = error
        embeddings = objective.base_model.bert.embeddings
        self.handle = embeddings.register_forward_hook(self.hook) if poison else embeddings.register_forward_pre_hook(self.pre_hook)

    def pre_hook(self, module, args):
        if module.training:
            self.calls += 1
            if self.calls > self.after_batches:
                raise self.error

    def hook(self, module, args, output):
        if module.training:
            self.calls += 1
            if self.calls > self.after_batches:
                return output * float("nan")
        return None


def test_out_of_memory_ends_infeasible_and_the_study_goes_on(tiny_objective, good_config):
    injected = RaiseOnTrainingForward(tiny_objective, 3, error=torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    study = injected_trial_then_a_clean_one(tiny_objective, good_config, injected)
    oom, after = study.trials
    assert oom.state == optuna.trial.TrialState.COMPLETE  # complete-but-infeasible: samplers learn from it
    assert oom.user_attrs["stop_reason"] == "infeasible:oom"
    assert "out of memory" in oom.user_attrs["infeasible_reason"]
    assert oom.constraints[MEMORY_CONSTRAINT] > 0
    assert oom.value == tiny_objective.untrained_value()
    assert after.user_attrs["stop_reason"] == "completed"
    assert study.best_trial.number == 1


def test_nan_loss_ends_infeasible_and_the_next_trial_runs(tiny_objective, good_config):
    injected = RaiseOnTrainingForward(tiny_objective, 5, poison=True)
    study = injected_trial_then_a_clean_one(tiny_objective, good_config, injected)
    nan, after = study.trials
    assert nan.state == optuna.trial.TrialState.COMPLETE
    assert nan.user_attrs["stop_reason"] == "infeasible:nan"
    assert nan.constraints[FINITE_LOSS_CONSTRAINT] > 0
    assert nan.user_attrs["examples_seen"] == 48  # six batches of 8 seen; the sixth one's loss was NaN
    assert after.user_attrs["stop_reason"] == "completed" and math.isfinite(after.value)


def test_config_over_the_memory_budget_is_infeasible_before_training(tiny_workload, good_config):
    objective = LoraObjective(tiny_workload.replace(memory_budget_gb=0.01))
    trial = run_configs(objective, [good_config]).trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["stop_reason"] == "infeasible:over-budget"
    assert trial.user_attrs["examples_seen"] == 0
    assert trial.constraints[MEMORY_CONSTRAINT] == pytest.approx(trial.user_attrs["memory_estimate_gb"]["total"] / 0.01 - 1, rel=1e-3)


def test_other_errors_fail_the_trial_with_their_message(tiny_objective, good_config):
    config = good_config.replace(lr_scheduler_type="cosine")
    injected = RaiseOnTrainingForward(tiny_objective, 0, error=ValueError("broken batch"))
    try:
        study = run_configs(tiny_objective, [config])
    finally:
        injected.handle.remove()
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["stop_reason"] == "failed"
    assert trial.user_attrs["error"] == "ValueError: broken batch"
    assert run_configs(tiny_objective, [config]).trials[0].state == optuna.trial.TrialState.COMPLETE


def test_base_model_weights_are_bit_identical_after_trials(tiny_objective, good_config):
    before = {name: tensor.clone() for name, tensor in tiny_objective.base_model.state_dict().items()}
    run_configs(tiny_objective, [good_config, good_config.replace(gradient_checkpointing=True)])
    after = tiny_objective.base_model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not any(p.requires_grad for p in tiny_objective.base_model.parameters())


def test_model_parameters_counts_the_whole_base_without_the_adapter(tiny_objective, tiny_bert, good_config):
    from transformers import BertForSequenceClassification

    saved = BertForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)  # encoder and a 2-label head
    assert tiny_objective.model_parameters == sum(p.numel() for p in saved.parameters())
    trial = run_configs(tiny_objective, [good_config]).trials[0]
    assert trial.user_attrs["trainable_parameters"] > 0
    assert tiny_objective.model_parameters == tiny_objective.base_model.num_parameters()  # the adapter came off again


def test_replay_reproduces_the_trial_value(tiny_objective, tiny_workload, good_config):
    trial = run_configs(tiny_objective, [good_config]).trials[0]
    # exact on the CPU; CUDA kernels may sum in another order from run to run
    exact = not torch.cuda.is_available()
    assert replay(tiny_workload, good_config, objective=tiny_objective) == (trial.value if exact else pytest.approx(trial.value, rel=1e-3))


def test_the_baseline_is_never_pruned(tiny_objective, bad_config):
    """A pruner that stops every trial (any loss is over -1) stops the diverging config at its
    first evaluation, but the baseline, even diverging, trains to its end: it is the yardstick."""
    study = optuna.create_study(direction=tiny_objective.direction, pruner=optuna.pruners.ThresholdPruner(upper=-1.0))
    study.enqueue_trial({}, user_attrs={"baseline": True})
    study.optimize(lambda trial: tiny_objective(trial, bad_config), n_trials=2)
    baseline, other = study.trials
    assert baseline.state == optuna.trial.TrialState.COMPLETE and baseline.user_attrs["stop_reason"] == "completed"
    assert other.state == optuna.trial.TrialState.PRUNED


@pytest.mark.parametrize(
    "make_pruner",
    [
        lambda steps: optuna.pruners.MedianPruner(n_startup_trials=1),
        lambda steps: optuna.pruners.PercentilePruner(25.0, n_startup_trials=1),
        lambda steps: optuna.pruners.SuccessiveHalvingPruner(min_resource=steps[0]),
        # reduction factor 5 over 64..256 examples gives one bracket: two trials always meet in it.
        lambda steps: optuna.pruners.HyperbandPruner(min_resource=steps[0], max_resource=steps[-1], reduction_factor=5),
        lambda steps: optuna.pruners.ThresholdPruner(upper=1.0),
        lambda steps: optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(n_startup_trials=1), patience=0),
        lambda steps: optuna.pruners.WilcoxonPruner(p_threshold=0.5, n_startup_steps=1),
    ],
    ids=["median", "percentile", "successive-halving", "hyperband", "threshold", "patient", "wilcoxon"],
)
def test_every_pruner_prunes_the_diverging_config(tiny_objective, make_pruner, good_config, bad_config):
    pruner = make_pruner(tiny_objective.report_steps(good_config))
    study = run_configs(tiny_objective, [good_config, bad_config], pruner)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert study.trials[1].state == optuna.trial.TrialState.PRUNED
    assert study.trials[1].user_attrs["stop_reason"] == "pruned"
