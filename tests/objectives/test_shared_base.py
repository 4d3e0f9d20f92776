"""One base per process: each trial swaps a fresh adapter in and out, and nothing of a trial stays behind."""

from __future__ import annotations

import gc
import math
import warnings

import optuna
import pytest
import torch

from lora_search.objectives._model import base_precision, fresh_adapter
from lora_search.objectives._trainer import build_trainer, training_precision

optuna.logging.set_verbosity(optuna.logging.WARNING)


def footprint(objective) -> tuple[int, int, int]:
    """(live tensors, live modules, hooks on the base model) after a full collection."""
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # isinstance probes deprecated torch attributes
        objects = gc.get_objects()
        tensors = sum(1 for item in objects if isinstance(item, torch.Tensor))
        modules = sum(1 for item in objects if isinstance(item, torch.nn.Module))
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in objective.base_model.modules())
    return tensors, modules, hooks


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def identities(model) -> dict[str, tuple[int, ...]]:
    """Every module and parameter of ``model`` by name: which object, which storage."""
    found = {name: (id(module),) for name, module in model.named_modules()}
    found.update({name: (id(parameter), parameter.data_ptr()) for name, parameter in model.named_parameters()})
    return found


class TrainedModules:
    """A forward hook on the base's embeddings: whether training forwards ran through this very module."""

    def __init__(self, embeddings):
        self.embeddings = embeddings
        self.calls = []
        self.handle = embeddings.register_forward_hook(self.hook)

    def hook(self, module, args, output):
        if module.training:
            self.calls.append(module is self.embeddings)


def test_fifty_trials_train_the_one_base_and_nothing_grows(tiny_objective, good_config):
    base = tiny_objective.base_model
    config = good_config.replace(num_train_epochs=0.25, gradient_checkpointing=True)
    study = optuna.create_study(direction="minimize")
    study.optimize(lambda trial: tiny_objective(trial, config), n_trials=5)
    after_warm_up, rss_after_warm_up, before = footprint(tiny_objective), resident_mb(), identities(base)
    trained = TrainedModules(base.bert.embeddings)
    try:
        study.optimize(lambda trial: tiny_objective(trial, config), n_trials=45)
    finally:
        trained.handle.remove()
    assert len(study.trials) == 50 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert trained.calls and all(trained.calls)  # every trial trained the loaded base, not a copy of it
    assert identities(base) == before  # the same modules and parameters, nothing replaced or left behind
    assert not any("lora_" in name or "modules_to_save" in name for name in before)
    assert not base.training and not any(p.requires_grad for p in base.parameters())
    # the modules' own flag: transformers before 5.18 has no `is_activation_checkpointing`
    assert not any(getattr(module, "gradient_checkpointing", False) for module in base.modules())
    assert getattr(base, "_require_grads_hook", None) is None and not hasattr(base, "peft_config")
    assert footprint(tiny_objective) == after_warm_up
    assert resident_mb() - rss_after_warm_up < 30  # MB; one tiny-model trial allocates about 15
    assert len({t.value for t in study.trials}) == 1  # and every trial of the same config scored the same


def test_a_4bit_base_is_trained_in_place_and_left_as_it_was(tiny_workload, good_config, bad_config):
    """QLoRA: the quantized base is prepared once; trials with and without checkpointing leave it as loaded."""
    pytest.importorskip("bitsandbytes")
    from lora_search.objectives import LoraObjective

    objective = LoraObjective(tiny_workload.replace(quantization="4bit"))
    base = objective.base_model
    configs = [good_config, bad_config.replace(gradient_checkpointing=True)] * 3 + [good_config]
    study = optuna.create_study(direction="minimize")
    study.optimize(lambda trial: objective(trial, configs[trial.number].replace(num_train_epochs=0.25)), n_trials=2)
    weights = {name: tensor.clone() for name, tensor in base.state_dict().items()}  # packed weights and quantization constants
    after_warm_up, before = footprint(objective), identities(base)
    trained = TrainedModules(base.bert.embeddings)
    try:
        study.optimize(lambda trial: objective(trial, configs[trial.number].replace(num_train_epochs=0.25)), n_trials=5)
    finally:
        trained.handle.remove()
    assert trained.calls and all(trained.calls)
    assert identities(base) == before and footprint(objective) == after_warm_up
    assert base.state_dict().keys() == weights.keys() and all(torch.equal(weights[name], tensor) for name, tensor in base.state_dict().items())
    assert not base.training and not any(p.requires_grad for p in base.parameters())
    assert not any(getattr(module, "gradient_checkpointing", False) for module in base.modules())
    assert getattr(base, "_require_grads_hook", None) is None and not hasattr(base, "peft_config")
    first, _, *rest = (trial.value for trial in study.trials)
    assert rest[-1] == first  # the last config is the first one again: nothing of the trials between reached it


def test_a_config_scores_the_same_whatever_ran_before_it(tiny_objective, good_config, bad_config):
    # B diverges, checkpoints activations and trains the head far from its initialisation.
    configs = [good_config, bad_config.replace(gradient_checkpointing=True), good_config]
    study = optuna.create_study(direction="minimize")
    study.optimize(lambda trial: tiny_objective(trial, configs[trial.number]), n_trials=3)
    first, between, again = (trial.value for trial in study.trials)
    assert again == first and between != first


@pytest.mark.parametrize(
    ("cuda", "bf16_supported", "precision"), [(False, False, "fp32"), (False, True, "fp32"), (True, True, "bf16"), (True, False, "fp16")]
)
def test_base_precision(cuda, bf16_supported, precision):
    assert base_precision(cuda, bf16_supported) == precision


@pytest.mark.parametrize(
    ("config", "base", "trains_in"),
    [
        ("fp32", "fp32", "fp32"), ("fp16", "fp32", "fp32"), ("bf16", "fp32", "bf16"),  # the CPU: no fp16 autocast
        ("fp32", "bf16", "bf16"), ("fp16", "bf16", "bf16"), ("bf16", "bf16", "bf16"),  # a GPU: autocast in the base's half
        ("fp32", "fp16", "fp16"), ("fp16", "fp16", "fp16"), ("bf16", "fp16", "fp16"),
    ],
)
def test_training_precision(config, base, trains_in):
    assert training_precision(config, base) == trains_in


def test_half_precision_base_trains_fp32_adapter_and_head_and_stays_untouched(tiny_objective, good_config, tmp_path):
    """What a GPU runs (a bf16 base under autocast), on the CPU's bf16 autocast."""
    import copy

    base = copy.deepcopy(tiny_objective.base_model).to(torch.bfloat16)
    before, weights = identities(base), {name: tensor.clone() for name, tensor in base.state_dict().items()}
    config = good_config.replace(num_train_epochs=0.25)
    with fresh_adapter(base, config, "classification", seed=0) as model:
        trainable = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
        trainer = build_trainer(model, config, task="classification", tokenizer=tiny_objective.tokenizer, train_rows=tiny_objective.train_rows,
                                eval_rows=tiny_objective.eval_rows, device="cpu", base_precision="bf16", seed=0, output_dir=str(tmp_path),
                                save_strategy="no", eval_strategy="no", logging_strategy="no", load_best_model_at_end=False)
        assert trainer.args.bf16
        untrained = trainer.evaluate()["eval_loss"]  # before any training, as the untrained value is read
        loss = trainer.train().training_loss
    assert any("classifier" in name for name in trainable) and set(trainable.values()) == {torch.float32}
    assert math.isfinite(untrained) and math.isfinite(loss) and identities(base) == before
    assert all(torch.equal(weights[name], tensor) for name, tensor in base.state_dict().items())
    assert base.classifier.weight.dtype == torch.bfloat16
