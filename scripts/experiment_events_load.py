#!/usr/bin/env python3
"""Load for the experiment events endpoint (BENCHMARKS.md section 4, "Durable events").

Posts N batches of 10,000 events (an exposure, then a signups_total outcome, per new uid) to
a running agent and prints the rate. Every batch is written to the agent's SQLite store
before it is answered.

    python3 scripts/experiment_events_load.py N [URL] [TOKEN] [EXPERIMENT]
"""
import json
import sys
import time
import urllib.request

n = int(sys.argv[1])
base = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:19977"
token = sys.argv[3] if len(sys.argv) > 3 else "t"
name = sys.argv[4] if len(sys.argv) > 4 else "GDCEurope2011"
url = f"{base}/api/v1/experiments/{name}/events"


def post(body):
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return json.load(urllib.request.urlopen(req))


batches = []
for b in range(n):
    ev = []
    for i in range(10000):
        k = b * 10000 + i
        if k % 2 == 0:
            ev.append({"id": f"e{k}", "uid": f"user{k // 2}", "type": "exposure"})
        else:
            ev.append({"id": f"e{k}", "uid": f"user{k // 2}", "type": "outcome",
                       "metric": "signups_total"})
    batches.append({"events": ev})
t = time.time()
counted = 0
for body in batches:
    r = post(body)
    counted += r["accepted"] + r["outside"]
dt = time.time() - t
print(f"{n} batches of 10000 events: {dt:.2f}s, {n * 10000 / dt:.0f} events/s, counted {counted}")
