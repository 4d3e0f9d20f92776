"""Against the peer: lora-search vs transformers' Trainer.hyperparameter_search(backend="optuna").

Both run N trials of the same fixed parameters (the memory-constrained guide preset) on
the same model, the same training and evaluation rows, the same maximum length and the
same evaluation cadence, pruner none, in one process each after the other:

- the peer the documented way: the rows tokenized once with ``datasets.map``, a
  ``model_init`` that loads the model from disk and wraps it with the LoRA adapter
  (LoRA settings cannot be searched there, so they are fixed inside model_init), an
  ``hp_space`` pinning the learning rate, ``compute_objective`` = eval_loss, an
  in-memory study (its default);
- lora-search with the preset enqueued N times, through its engine (prepare,
  run_trials, summarize: what ``lora-search run`` does) on a SQLite study (its default).

Wall time counts everything from the start (reading the data, loading, tokenizing) to
the search's end. A timer on the Trainer's loop splits each trial into set-up (trial
start to the first training step), the training loop (steps and evaluations) and the
rest.

    python benchmarks/peer.py            # 5 trials each on the embedded default (~5 min on 2 cores)
    python benchmarks/peer.py --quick    # 2 trials each on a tiny model
"""

from __future__ import annotations

import sys
from typing import Any

import _common


def run_peer(work: Any, config: Any, eval_steps: int, trials: int, scratch: Any, timer: _common.LoopTimer) -> dict[str, Any]:
    import datasets
    import optuna
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from lora_search.objectives import classification_metrics, model_location, prepare_data, training_arguments

    datasets.disable_progress_bars()
    started = _common.clock()
    path, _ = model_location(work.model)
    data = prepare_data(work)  # the same rows lora-search samples
    label_ids = {name: index for index, name in enumerate(data.label_names)}
    tokenizer = AutoTokenizer.from_pretrained(path)

    def dataset(split: str, size: int) -> Any:
        frame = data.sample(split, size, work.seed)
        rows = datasets.Dataset.from_dict({
            "text": [str(text) for text in frame[data.text_column]],
            "label": data.label_ids(frame),
        })
        return rows.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=work.max_length),
                        batched=True, remove_columns=["text"])

    train_rows, eval_rows = dataset("train", work.train_sample), dataset("eval", work.eval_sample)

    def model_init(trial: Any = None) -> Any:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(label_ids), id2label=dict(enumerate(data.label_names)), label2id=label_ids, dtype=torch.float32)
        return get_peft_model(model, LoraConfig(**config.lora.to_lora_config_kwargs("SEQ_CLS")))

    kwargs = training_arguments(config, output_dir=str(scratch / "peer"), eval_strategy="steps", eval_steps=eval_steps, save_strategy="no",
                                logging_strategy="no", load_best_model_at_end=False, per_device_eval_batch_size=64,
                                use_cpu=not torch.cuda.is_available(),  # the device lora-search's trials use
                                report_to="none", disable_tqdm=True, seed=work.seed, data_seed=work.seed)
    trainer = Trainer(model_init=model_init, args=TrainingArguments(**kwargs), train_dataset=train_rows, eval_dataset=eval_rows,
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=classification_metrics)
    trainer.remove_callback(PrinterCallback)  # lora-search prints no metric lines either
    storage = optuna.storages.InMemoryStorage()
    learning_rate = config.learning_rate
    trainer.hyperparameter_search(
        hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", learning_rate, learning_rate)},
        backend="optuna", n_trials=trials, direction="minimize", compute_objective=lambda metrics: metrics["eval_loss"],
        study_name="peer", storage=storage, pruner=optuna.pruners.NopPruner(), sampler=optuna.samplers.RandomSampler(seed=work.seed),
    )
    ended = _common.clock()
    return {"study": optuna.load_study(study_name="peer", storage=storage), "started": started, "ended": ended}


def per_trial(study: Any, timer: _common.LoopTimer, started: float, ended: float) -> dict[str, Any]:
    windows = _common.trial_windows(study)
    setups, loops, evals, rest, values = [], [], [], [], []
    previous_end = None
    for trial, start, end in windows:
        timed = timer.within(start, end)
        if len(timed) != 1:
            raise RuntimeError(f"trial {trial.number}: expected one training loop, timed {len(timed)}")
        loop = timed[0]
        setups.append(loop["begin"] - start)
        loops.append(loop["end"] - loop["begin"])
        evals.append(loop["eval_s"])
        rest.append(end - loop["end"] + (start - previous_end if previous_end is not None else 0.0))
        values.append(trial.value)
        previous_end = end
    count = len(windows)
    return {
        "trials": count,
        "wall_s": ended - started,
        "startup_s": windows[0][1] - started,  # start to the first trial: data, model, tokenization, study
        "setup_s": sum(setups) / count,
        "loop_s": sum(loops) / count,
        "eval_in_loop_s": sum(evals) / count,
        "after_and_between_s": sum(rest) / count,
        "after_last_s": ended - windows[-1][2],
        "value_first": values[0],
        "value_last": values[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--trials", type=int, default=None, help="trials per side (default 5; 2 with --quick)")
    parser.add_argument("--space", default="memory-constrained", help="scenario whose guide preset both sides run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 2; 1 with --quick)")
    args = parser.parse_args(argv)
    trials = args.trials or (2 if args.quick else 5)
    _common.quiet_libraries()
    import torch

    from lora_search.objectives import ProxySchedule, prepare_data
    from lora_search.spaces import RunProfile, load_space

    threads = args.threads or (1 if args.quick else 2)
    torch.set_num_threads(threads)
    with _common.scratch_folder() as scratch_name:
        scratch = _common.Path(scratch_name)
        work = _common.workload(args.quick, scratch, torch_threads=threads)
        run = _common.Run("peer", args.quick, {"space": args.space, "trials": trials, "workload": work.to_dict()})
        resolved = load_space(args.space).resolve(RunProfile(dataset_size=len(prepare_data(work).train)))
        config = resolved.baseline()
        schedule = ProxySchedule.plan(work.train_sample, config.num_train_epochs, config.per_device_train_batch_size,
                                      config.gradient_accumulation_steps, work.evaluations_per_trial)
        eval_steps = max(1, round(schedule.interval / config.effective_batch_size))

        timer = _common.LoopTimer().install()
        peer = run_peer(work, config, eval_steps, trials, scratch, timer)
        peer_figures = per_trial(peer["study"], timer, peer["started"], peer["ended"])
        timer.clear()
        ours = _common.fixed_parameter_run(args.space, work, f"sqlite:///{scratch}/peer.db", trials)
        ours_started = ours["loop_started"] - ours["prepare_s"]
        our_figures = per_trial(ours["study"], timer, ours_started, ours_started + ours["total_s"])
        timer.uninstall()

    rows = []
    for label, key, note in (
        ("wall time, whole run", "wall_s", "data, model, tokenization, all trials"),
        ("start-up before the first trial", "startup_s", "peer: tokenize + Trainer (calls model_init once); ours: load model and data, tokenize, study"),
        ("per trial: set-up before training", "setup_s", "peer: model_init reloads the model + LoRA; ours: a fresh LoRA adapter on the loaded model"),
        ("per trial: training loop (steps + evaluations)", "loop_s", "the same work on both sides"),
        ("  of which evaluations", "eval_in_loop_s", ""),
        ("per trial: after training and between trials", "after_and_between_s", "clean-up, storage, sampler"),
        ("after the last trial", "after_last_s", "ours: summary with parameter importances"),
    ):
        rows.append({"measure": label, "peer": peer_figures[key], "ours": our_figures[key],
                     "ratio": our_figures[key] / peer_figures[key] if peer_figures[key] else None, "note": note})
    rows.append({"measure": "trial value (eval_loss), first / last trial",
                 "peer": f"{peer_figures['value_first']:.4f} / {peer_figures['value_last']:.4f}",
                 "ours": f"{our_figures['value_first']:.4f} / {our_figures['value_last']:.4f}",
                 "ratio": None, "note": "peer: last evaluation; ours: best evaluation"})
    wall_ratio = our_figures["wall_s"] / peer_figures["wall_s"]
    summary = {"wall_ratio_ours_over_peer": wall_ratio, "setup_ratio_ours_over_peer": our_figures["setup_s"] / peer_figures["setup_s"],
               "setup_saved_s_per_trial": peer_figures["setup_s"] - our_figures["setup_s"],
               "eval_steps": eval_steps, "peer": peer_figures, "ours": our_figures,
               "no_slower": wall_ratio <= 1.0}
    body = (
        f"{trials} trials per side of the `{args.space}` guide preset (batch {config.per_device_train_batch_size} x "
        f"{config.gradient_accumulation_steps} accumulation, {config.num_train_epochs} epochs on {work.train_sample} examples, "
        f"evaluation every {eval_steps} optimizer steps on {work.eval_sample} examples, max length {work.max_length}, "
        f"{threads} torch threads, pruner none). Times in seconds; ratio = lora-search / peer.\n\n"
        + _common.markdown_table([("measure", "measure"), ("transformers hyperparameter_search", "peer"), ("lora-search", "ours"),
                                  ("ratio", "ratio"), ("what it covers", "note")], rows)
        + f"\n**Wall time ratio lora-search / peer: {wall_ratio:.3f}** ({'no slower' if wall_ratio <= 1 else 'slower'}); "
        f"per-trial set-up {our_figures['setup_s']:.2f} s vs {peer_figures['setup_s']:.2f} s "
        f"(lora-search: {abs(summary['setup_saved_s_per_trial']):.2f} s "
        f"{'less' if summary['setup_saved_s_per_trial'] >= 0 else 'more'} per trial).\n"
    )
    _common.write(run.record(rows, summary), body, _common.results_folder(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
