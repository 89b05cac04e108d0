#!/usr/bin/env python3
"""Independent reference for immune's experiment assignment (docs in src/experiment/assign.rs).

Writes tests/fixtures/experiment/assign_vectors.tsv: experiment, initial_rollout,
branches (name=weight,...), uid, expected branch (or none). Control is `control`.
"""
import os

def fnv1a32(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h

def unit(s: str) -> float:
    return fnv1a32(str(fnv1a32(s.encode())).encode()) / 2**32

def branch(name, rollout, branches, uid):
    if unit(f"{name}:{uid}") >= rollout:
        return "none"
    u = unit(f"{name}:branch:{uid}")
    ws = [("control", max(0.0, 1.0 - sum(w for _, w in branches)))] + branches
    acc = 0.0
    for n, w in ws:
        acc += w
        if u < acc:
            return n
    return ws[-1][0]

CASES = [
    ("GDCEurope2011", 0.2, [("Enhanced", 0.5)]),
    ("checkout-v2", 1.0, [("a", 0.25), ("b", 0.25)]),
    ("tiny", 0.05, [("on", 0.1)]),
]

def main():
    out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "experiment", "assign_vectors.tsv")
    with open(out, "w") as f:
        f.write("# experiment\tinitial_rollout\tbranches\tuid\tbranch (made by scripts/experiment_fixtures.py)\n")
        for name, rollout, branches in CASES:
            bs = ",".join(f"{n}={w}" for n, w in branches)
            for i in range(200):
                uid = f"u{i}" if i % 2 else str(1000003 * i)
                f.write(f"{name}\t{rollout}\t{bs}\t{uid}\t{branch(name, rollout, branches, uid)}\n")
            f.write(f"{name}\t{rollout}\t{bs}\tcafé-ü\t{branch(name, rollout, branches, 'café-ü')}\n")

if __name__ == "__main__":
    main()
