"""Options shared by several commands: ``--storage``, and the model and data options of
``run`` and ``train`` (the fields of a Workload).

Every workload option defaults to "not given", so a resumed study keeps what it stored
and a new one takes the Workload's defaults: the embedded MiniLM model and fine-food reviews.
"""

from __future__ import annotations

import argparse
from typing import Any

# (option, Workload field, type, help)
WORKLOAD_OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("--model", "model", str, "model folder or hub id already in the local cache (default: the embedded all-MiniLM-L6-v2)"),
    ("--data", "data", str, "CSV/JSON/Parquet file, a folder of split files (train.csv, validation.csv, test.csv) "
                                "or a cached hub dataset (default: the embedded fine-food reviews)"),
    ("--data-config", "data_config", str, "configuration name of a multi-config dataset"),
    ("--train-split", "train_split", str, "split to train on"),
    ("--eval-split", "eval_split", str, "validation split: trials' evaluations, train's best checkpoint and early stopping "
                                        "(default: 'validation' if the dataset has it, else held out of the training split)"),
    ("--test-split", "test_split", str, "test split: train's final score only, never seen by the search "
                                        "(default: 'test' if the dataset has it, else held out of the training split)"),
    ("--task", "task", str, "classification or causal-lm (default: inferred from the model and columns)"),
    ("--text-column", "text_column", str, "text column (classification)"),
    ("--label-column", "label_column", str, "label column (classification)"),
    ("--prompt-column", "prompt_column", str, "prompt column (causal-lm)"),
    ("--response-column", "response_column", str, "response column (causal-lm)"),
    ("--train-sample", "train_sample", int, "training examples each trial samples from the split"),
    ("--rungs", "rungs", int, "data rungs the winner is chosen by: after the trials (rung 0), the best quarter of each rung "
                              "(at least 2; the best one for a top rung above rung 1) trains again on 4x the examples, "
                              "scored on 4x the validation rows, and the baseline at the top rung (default: the scenario's, "
                              "see 'spaces show'; else 1, the proxy chooses)"),
    ("--eval-sample", "eval_sample", int, "validation examples each trial scores (rung 0)"),
    ("--max-length", "max_length", int, "tokens per example (longer ones are cut)"),
    ("--evaluations", "evaluations_per_trial", int, "evaluations per trial: the points where pruning can stop it"),
    ("--metric", "metric", str, "what a trial scores: eval_loss (default), accuracy, f1, perplexity"),
    ("--quantize", "quantization", str, "load the frozen base in 4bit (QLoRA: nf4, about a quarter of its 16-bit memory) or 8bit "
                                        "(about half) with bitsandbytes (pip install 'lora-search[quantize]'); the adapter still "
                                        "trains in fp32 (default: 16-bit on a GPU, fp32 on CPU, 4bit where the GPU cannot train "
                                        "the 16-bit base)"),
    ("--memory-budget", "memory_budget_gb", str, "memory a trial may use, e.g. 4GB: bigger configs are infeasible"),
    ("--seed", "seed", int, "seed for data sampling, initialisation and the sampler"),
    ("--threads", "torch_threads", int, "CPU threads for torch (default: torch's choice)"),
)

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


def add_workload_options(parser: argparse.ArgumentParser, *, title: str = "model and data") -> None:
    group = parser.add_argument_group(title)
    for option, name, kind, help_text in WORKLOAD_OPTIONS:
        metavar = _METAVARS.get(name, "N" if kind is int else "NAME")
        group.add_argument(option, dest=f"workload_{name}", type=kind, default=None, metavar=metavar, help=help_text)


def workload_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Workload fields given on the command line (``--memory-budget`` parsed to GB)."""
    from .spaces import parse_memory

    given: dict[str, Any] = {}
    for _, name, _, _ in WORKLOAD_OPTIONS:
        value = getattr(args, f"workload_{name}")
        if value is None:
            continue
        given[name] = parse_memory(value) if name == "memory_budget_gb" else value
    return given
