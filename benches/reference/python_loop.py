"""The reference of the `scale` bench (issue 10): what operators run today instead of Warden, a persistent Python
loop with `requests` and `json` doing the two checks of Warden's pack that matter on a quiet cluster (are the
expected jobs live, does a RUNNING job have failed tasks), over the same targets, at the same interval, spread over
it the way Warden spreads its polls. It runs beside Warden in the same window, so that both see the same machine.

Usage: python_loop.py <warden.yaml> <seconds> <every seconds>. Reads the targets' `url:` lines and `expected_jobs:`
from the file the bench wrote. Asks `/jobs/overview?by=python`, so that the fakes can tell its polls from Warden's.
Prints one line: `python-loop polls=<n> cpu=<seconds>`.
"""

import json
import os
import re
import sys
import time

import requests

LIVE = {"INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "FAILING", "CANCELLING", "RECONCILING", "SUSPENDED"}


def main():
    cfg = open(sys.argv[1]).read()
    seconds, every = float(sys.argv[2]), float(sys.argv[3])
    urls = re.findall(r'url: "?([^"\n]+)"?', cfg)
    expected = set(json.loads(re.search(r"expected_jobs: (\[.*\])", cfg).group(1)))
    session = requests.Session()
    start = time.monotonic()
    cpu0 = os.times()
    polls = 0
    i = 0
    while True:
        due = start + (i // len(urls)) * every + (i % len(urls)) * every / len(urls)
        if due >= start + seconds:
            break
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            body = json.loads(session.get(urls[i % len(urls)] + "/jobs/overview?by=python", timeout=5).content)
            live = {j["name"] for j in body["jobs"] if j["state"] in LIVE}
            missing = expected - live
            failing = [j["name"] for j in body["jobs"] if j["state"] == "RUNNING" and j["tasks"].get("failed", 0) > 0]
            if missing or failing:
                print(f"not running: {sorted(missing)}, failing tasks: {failing}", file=sys.stderr)
        except Exception as e:  # a failed poll is counted like a good one, as Warden counts it
            print(f"poll failed: {e}", file=sys.stderr)
        polls += 1
        i += 1
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    print(f"python-loop polls={polls} cpu={cpu:.3f}")


if __name__ == "__main__":
    main()
