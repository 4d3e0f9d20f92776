"""The guide's Step 1: which scenario fits the GPU memory and the time at hand."""

from __future__ import annotations

# The guide's time windows: time-constrained is 30 minutes, quick experiments take
# 30 minutes to 2 hours, standard training 2-8 hours, production 8 hours or more.
TIME_CONSTRAINED_HOURS = 0.5
QUICK_HOURS = 2.0
PRODUCTION_HOURS = 8.0
# Below 8 GB the guide's batch table allows only 2-4 per device: the memory-constrained row.
MEMORY_CONSTRAINED_BELOW_GB = 8.0


def suggest_scenario(gpu_memory_gb: float | None, hours: float | None) -> tuple[str, list[str]]:
    """The scenario for this GPU memory (None: CPU) and time budget, and the reasons.

    Memory decides first: a batch that does not fit fails outright, while a slow run
    only takes longer. Then time picks among the other four, at the guide's boundaries
    (exactly 30 minutes is time-constrained, exactly 2 hours standard, exactly 8 production).
    """
    reasons = []
    if gpu_memory_gb is not None and gpu_memory_gb < MEMORY_CONSTRAINED_BELOW_GB:
        reasons.append(
            f"{gpu_memory_gb:g} GB of GPU memory is under 8 GB: the guide allows only 2-4 examples per device there, "
            "with gradient accumulation and checkpointing; memory comes first, since a batch that does not fit fails"
        )
        if hours is not None:
            reasons.append(f"the {hours:g} h budget is left to --timeout (memory decides the space)")
        return "memory-constrained", reasons
    if gpu_memory_gb is None:
        reasons.append("no GPU: training runs in fp32 on the CPU, so prefer short budgets")
    else:
        reasons.append(f"{gpu_memory_gb:g} GB of GPU memory is 8 GB or more: no need for the memory-constrained space")
    if hours is None and gpu_memory_gb is None:
        reasons.append("no time budget given (--hours): on a CPU the quick-experiment space, whose searches are the "
                       "shortest but time-constrained's; --hours picks another")
        return "quick-experiment", reasons
    if hours is None:
        reasons.append("no time budget given (--hours): the balanced standard space; --hours picks another")
        return "standard", reasons
    if hours <= TIME_CONSTRAINED_HOURS:
        reasons.append(f"{hours:g} h is at most the guide's 30 minutes: one epoch, large batches, no accumulation")
        return "time-constrained", reasons
    if hours < QUICK_HOURS:
        reasons.append(f"{hours:g} h falls in the guide's quick-experiment window (30 minutes to 2 hours)")
        return "quick-experiment", reasons
    if hours < PRODUCTION_HOURS:
        reasons.append(f"{hours:g} h falls in the guide's standard window (2 to 8 hours)")
        return "standard", reasons
    reasons.append(f"{hours:g} h is the guide's production budget (8 hours or more)")
    if gpu_memory_gb is not None and gpu_memory_gb < 24:
        reasons.append(f"the guide pictures production on 24 GB or more; on {gpu_memory_gb:g} GB the batch cap keeps it safe")
    return "production", reasons
