"""Options shared by several commands: ``--storage``, and the model and data options of
``run`` and ``train`` (the fields of a Workload).

Every workload option defaults to "not given", so a resumed study keeps what it stored
and a new one takes the Workload's defaults: the embedded MiniLM model and fine-food reviews.
"""

from __future__ import annotations

import argparse
from typing import Any

# (Workload field, type, help); the option is objectives.option_name(field)
WORKLOAD_OPTIONS: tuple[tuple[str, Any, str], ...] = (
    ("model", str, "model folder or hub id already in the local cache (default: the embedded all-MiniLM-L6-v2)"),
    ("data", str, "CSV/JSON/JSONL/Parquet file, a folder of split files (train.csv, validation.csv, test.csv) "
                  "or a cached hub dataset (default: the embedded fine-food reviews)"),
    ("data_config", str, "configuration name of a multi-config dataset"),
    ("train_split", str, "split to train on (default 'train')"),
    ("eval_split", str, "validation split: trials' evaluations, train's best checkpoint and early stopping "
                        "(default: 'validation' if the dataset has it, else held out of the training split)"),
    ("test_split", str, "test split: train's final score only, never seen by the search "
                        "(default: 'test' if the dataset has it, else held out of the training split)"),
    ("task", str, "classification or causal-lm (default: inferred from the model and columns)"),
    ("text_column", str, "text column (classification; default 'text', on the embedded reviews 'review')"),
    ("label_column", str, "label column (classification; default 'label', on the embedded reviews 'score')"),
    ("prompt_column", str, "prompt column (causal-lm)"),
    ("response_column", str, "response column (causal-lm)"),
    ("train_sample", int, "training examples each trial samples from the split (default 128)"),
    ("rungs", int, "data rungs the winner is chosen by: after the trials (rung 0), the best quarter of each rung "
                   "(at least 2; the best one for a top rung above rung 1) trains again on 4x the examples, "
                   "scored on 4x the validation rows, and the baseline at the top rung (default: the scenario's, "
                   "see 'spaces show'; else 1, the proxy chooses)"),
    ("eval_sample", int, "validation examples each trial scores (rung 0; default 128)"),
    ("max_length", int, "tokens per example, in trials and in train: longer ones are cut, and run and train "
                        "say how many rows were (default 64)"),
    ("evaluations_per_trial", int, "evaluations per trial: the points where pruning can stop it (default 4)"),
    ("metric", str, "what a trial scores: eval_loss (default), accuracy, f1, perplexity"),
    ("quantization", str, "load the frozen base in 4bit (QLoRA: nf4, about a quarter of its 16-bit memory) or 8bit "
                          "(about half) with bitsandbytes (pip install 'lora-search[quantize]'); the adapter still "
                          "trains in fp32 (default: 16-bit on a GPU, fp32 on CPU, 4bit where the GPU cannot train "
                          "the 16-bit base)"),
    ("memory_budget_gb", str, "memory a trial may use, e.g. 4GB (a bare number is GB): configs estimated "
                              "above it are infeasible without training (default: no budget)"),
    ("seed", int, "seed for data sampling, initialisation and the sampler (default 42)"),
    ("torch_threads", int, "CPU threads for torch (default: torch's choice)"),
)

# What only a search's trials use: train trains on the whole training split, scores the whole
# validation split each evaluation and has no memory budget, so it does not offer them.
TRIAL_ONLY = frozenset({"train_sample", "rungs", "eval_sample", "evaluations_per_trial", "memory_budget_gb"})

_METAVARS = {"model": "PATH", "data": "PATH", "memory_budget_gb": "SIZE", "metric": "METRIC", "task": "TASK", "quantization": "4bit|8bit"}


def path_text(text: str) -> str:
    """An ``--output`` path: empty text (an unset shell variable, say) names no file or folder,
    where a path would take it as the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: name a file or folder")
    return text


def add_storage_option(parser: argparse.ArgumentParser, *, forms: bool = False) -> None:
    """``--storage URL``; ``forms`` lists the kinds of storage (for ``run``, which creates studies)."""
    what = "sqlite:///file.db, postgresql://..., FILE.journal" if forms else "where studies live"
    parser.add_argument("--storage", metavar="URL", help=f"{what} (default: $LORA_SEARCH_STORAGE or studies/lora-search.db)")


def add_workload_options(parser: argparse.ArgumentParser, *, trials: bool) -> None:
    """The Workload options; ``trials`` adds those only a search's trials use (``TRIAL_ONLY``)."""
    group = parser.add_argument_group("model and data")
    from .objectives import option_name

    for name, kind, help_text in WORKLOAD_OPTIONS:
        if name in TRIAL_ONLY and not trials:
            continue
        metavar = _METAVARS.get(name, "N" if kind is int else "NAME")
        group.add_argument(option_name(name), dest=f"workload_{name}", type=kind, default=None, metavar=metavar, help=help_text)


def workload_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Workload fields given on the command line (``--memory-budget`` parsed to GB)."""
    from .spaces import parse_memory

    given: dict[str, Any] = {}
    for name, _, _ in WORKLOAD_OPTIONS:
        value = getattr(args, f"workload_{name}", None)
        if value is None:
            continue
        given[name] = parse_memory(value) if name == "memory_budget_gb" else value
    return given
