#!/usr/bin/env python3
"""Runs every test binary of the workspace, several at once.

`cargo test` runs one test binary after another. Ours are mostly cross-process tests that wait
on real servers, agents, brokers and browsers: the machine sat ~90 % idle through the longest
of them while the rest queued behind it. This builds the test binaries with cargo, then runs
them as cargo would (in their package's directory, with cargo's environment for a test), a few
at a time, slowest first, each one's output printed whole when it ends.

    python3 scripts/run-tests.py [--jobs N] [--timeout-min M]

Environment: EDGEFLEET_TEST_JOBS (default 3) and EDGEFLEET_TEST_TIMEOUT_MIN (default 20) set
the same. Extra arguments after `--` go to every test binary (e.g. `-- --nocapture`).
The doc tests run last, through cargo.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Known to take minutes (the sum of a cold CI run's report); started first so that the short
# ones fill the gaps beside them instead of leaving one long binary running alone at the end.
SLOW_FIRST = ["telemetry", "rollouts", "server", "replicas", "hostile_device", "agent", "mlflow"]


def build(extra_cargo_args):
    """Builds every test binary; returns them as dicts (name, kind, package, dir, executable)."""
    cmd = ["cargo", "test", "--workspace", "--locked", "--no-run",
           "--message-format=json-render-diagnostics", *extra_cargo_args]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"run-tests: building the tests failed ({' '.join(cmd)})")
    binaries = []
    for line in proc.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg["profile"]["test"]:
            continue
        package_dir = Path(msg["manifest_path"]).parent
        binaries.append({
            "name": msg["target"]["name"],
            "kind": msg["target"]["kind"][0],
            "package": msg["package_id"],
            "dir": package_dir,
            "executable": msg["executable"],
        })
    return binaries


def cargo_env(binary, sysroot):
    """What cargo sets for a test binary that our tests read at run time."""
    env = dict(os.environ)
    env["CARGO_MANIFEST_DIR"] = str(binary["dir"])
    env["CARGO_CRATE_NAME"] = binary["name"].replace("-", "_")
    deps = Path(binary["executable"]).parent
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in [str(deps), str(deps.parent), f"{sysroot}/lib", env.get("LD_LIBRARY_PATH", "")] if p)
    return env


def order(binaries):
    def rank(b):
        name = b["name"]
        if b["kind"] == "test" and name in SLOW_FIRST:
            return SLOW_FIRST.index(name)
        return len(SLOW_FIRST)
    return sorted(binaries, key=rank)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("EDGEFLEET_TEST_JOBS", "3")))
    parser.add_argument("--timeout-min", type=float,
                        default=float(os.environ.get("EDGEFLEET_TEST_TIMEOUT_MIN", "20")))
    parser.add_argument("test_args", nargs="*", help="passed to every test binary (after --)")
    args = parser.parse_args()
    if args.jobs < 1:
        sys.exit("run-tests: --jobs must be at least 1")

    binaries = order(build([]))
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
    print(f"run-tests: {len(binaries)} test binaries, {args.jobs} at a time", flush=True)
    print_lock = threading.Lock()
    failed = []
    started = time.monotonic()

    def run(binary):
        label = f"{binary['kind']} {binary['name']} ({Path(binary['executable']).name})"
        with tempfile.TemporaryFile(mode="w+") as out:
            t0 = time.monotonic()
            proc = subprocess.Popen([binary["executable"], *args.test_args], cwd=binary["dir"],
                                    env=cargo_env(binary, sysroot), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                code = proc.wait(timeout=args.timeout_min * 60)
                verdict = "ok" if code == 0 else f"FAILED (exit {code})"
            except subprocess.TimeoutExpired:
                # The whole process group: agents, servers and brokers the tests started.
                os.killpg(proc.pid, 9)
                proc.wait()
                code = -1
                verdict = f"FAILED (still running after {args.timeout_min:g} min, killed)"
            seconds = time.monotonic() - t0
            out.seek(0)
            text = out.read()
        with print_lock:
            print(f"\n==== {label}: {verdict} in {seconds:.1f} s", flush=True)
            sys.stdout.write(text)
            sys.stdout.flush()
            if code != 0:
                failed.append(label)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(run, binaries))

    wall = time.monotonic() - started
    print(f"\nrun-tests: {len(binaries)} test binaries in {wall:.0f} s", flush=True)
    if failed:
        print("run-tests: FAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
        sys.exit(1)
    doc = subprocess.run(["cargo", "test", "--workspace", "--locked", "--doc"], cwd=ROOT)
    if doc.returncode != 0:
        sys.exit("run-tests: the doc tests failed")


if __name__ == "__main__":
    main()
