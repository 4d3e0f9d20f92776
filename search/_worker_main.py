"""One worker process of ``lora-search run --workers N``.

The parent writes the SearchPlan as one line of JSON to stdin and sets
CUDA_VISIBLE_DEVICES, LORA_SEARCH_WORKER_ID and LORA_SEARCH_DEVICE in the environment
(before torch is imported here). ``python -m lora_search._worker_main`` runs trials, and
its exit code tells the parent how it ended (see _workers); with the argument ``rungs`` it
trains the rung configs the parent sends next (see _rung_workers).
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    from ._errors import SearchError
    from ._loop import SearchPlan, run_plan
    from ._workers import EXIT_DONE, EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_USER_ERROR, sigterm_as_interrupt
    from .spaces import LoraSearchError, first_line

    handed = sys.stdin.readline()
    if not handed:
        # the parent was interrupted while starting this process, before it could track it and
        # hand it the plan: nobody waits for it, so it leaves quietly
        return EXIT_INTERRUPTED
    plan = SearchPlan(**json.loads(handed))
    try:
        with sigterm_as_interrupt():
            if argv == ["rungs"]:
                from ._rung_workers import serve_rungs

                # the answers keep the stdout the parent reads; anything a library prints goes to stderr
                answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
                os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
                serve_rungs(plan, answers)
                return EXIT_DONE
            reason = run_plan(plan)  # the plan's workload carries this worker's torch_threads
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except LoraSearchError as error:
        print(f"lora-search run (worker): error: {error}", file=sys.stderr)
        return EXIT_FAILURES if isinstance(error, SearchError) else EXIT_USER_ERROR
    except Exception as error:  # a bug, not bad input: one line unless asked for the traceback, as the CLI does
        if os.environ.get("LORA_SEARCH_DEBUG"):
            raise
        print(f"lora-search run (worker): internal error: {type(error).__name__}: {first_line(error)} "
              "(set LORA_SEARCH_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_INTERRUPTED if reason == "interrupted" else EXIT_DONE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
