"""One worker process of ``lora-search run --workers N``.

The parent writes the SearchPlan as JSON to stdin and sets CUDA_VISIBLE_DEVICES,
LORA_SEARCH_WORKER_ID and LORA_SEARCH_DEVICE in the environment (before torch is
imported here). The exit code tells the parent how the worker ended (see _workers).
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from ._errors import SearchError
    from ._loop import SearchPlan, run_plan
    from ._workers import EXIT_DONE, EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_USER_ERROR, sigterm_as_interrupt
    from .spaces import LoraSearchError

    plan = SearchPlan(**json.loads(sys.stdin.read()))
    try:
        with sigterm_as_interrupt():
            reason = run_plan(plan)  # the plan's workload carries this worker's torch_threads
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except LoraSearchError as error:
        print(f"lora-search run (worker): error: {error}", file=sys.stderr)
        return EXIT_FAILURES if isinstance(error, SearchError) else EXIT_USER_ERROR
    return EXIT_INTERRUPTED if reason == "interrupted" else EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
