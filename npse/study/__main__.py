"""``python -m npse.study --worker SPEC``: one run of a study, in its own process
(``--probe-worker SPEC``: one process of ``npse study --probe``)."""
import json
import sys

from .runs import LOCKED, die_with_parent, hold_run_lock, run_one, stop_on_sigterm


def _worker_main(argv) -> int:
    stop_on_sigterm()          # SIGTERM, from the study or from its death, stops as Ctrl-C does
    spec = json.loads(argv[1])
    if "parent" in spec and not die_with_parent(spec["parent"]):
        print("npse study: the study that started this worker has ended; nothing done",
              file=sys.stderr)
        return 130
    if not hold_run_lock(spec):
        print(f"npse study: another process holds the lock of {spec['config']['out']}; "
              f"nothing done", file=sys.stderr)
        return LOCKED
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
