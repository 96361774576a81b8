"""Run a command and print, as JSON, its exit status, its own peak RSS (MiB) and its wall time.

    python bench/rss_child.py LOG COMMAND [ARG...]     # COMMAND's stdout and stderr go to LOG

Why a launcher: on Linux a child's ru_maxrss starts at the high-water mark of the memory it had before
exec, and a child that Python starts with vfork had its parent's. Started straight from pytest (which
holds torch and has just generated a checkpoint), the measured command would inherit pytest's peak.
This script imports nothing heavy, so the command it starts is measured alone.
"""
import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    log, command = argv[0], argv[1:]
    start = time.perf_counter()
    with open(log, "wb") as sink:
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
        child.returncode = os.waitstatus_to_exitcode(status)
    kib = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss  # macOS reports bytes
    print(json.dumps({"returncode": child.returncode, "peak_rss_mib": round(kib / 1024, 1),
                      "wall_s": round(time.perf_counter() - start, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
