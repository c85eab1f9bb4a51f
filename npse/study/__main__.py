"""``python -m npse.study --worker SPEC``: one run of a study, in its own process
(``--probe-worker SPEC``: one process of ``npse study --probe``)."""
import json
import sys

from .runs import run_one, stop_on_sigterm


def _worker_main(argv) -> int:
    stop_on_sigterm()
    spec = json.loads(argv[1])
    return run_one(spec)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[1:]))
    if len(sys.argv) == 3 and sys.argv[1] == "--probe-worker":
        from .probe import probe_worker
        sys.exit(probe_worker(json.loads(sys.argv[2])))
    print("usage: npse study NAME ... (this module is run as a worker by npse study)",
          file=sys.stderr)
    sys.exit(2)
