#!/usr/bin/env python3
"""Reference values for the experiment judge (src/experiment/srm.rs, src/bench/experiments.rs).

Regenerate from the repository root (needs scipy and statsmodels):

    python3 scripts/experiment_stats_fixtures.py

Writes, read by tests/experiment_judge.rs:
- tests/fixtures/experiment/srm.tsv: counts, weights, concentration k, and the log Bayes
  factor of the Dirichlet(k w) mixture against the multinomial(w) (Lindon & Malek 2022),
  from scipy.special.gammaln.
- tests/fixtures/experiment/samplesize.tsv: base rate, relative lift, participants per
  branch of a two-sided fixed-horizon test at alpha 0.05 and 80% power, from statsmodels'
  samplesize_proportions_2indep_onetail (whose two-sided form uses alpha / 2).
"""
import math
import os

import numpy as np
from scipy.special import gammaln
from statsmodels.stats.proportion import samplesize_proportions_2indep_onetail

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "experiment")


def log_bf(counts, weights, k):
    w = np.array(weights, dtype=float)
    w = w / w.sum()
    x = np.array(counts, dtype=float)
    n = x.sum()
    return float(
        gammaln(k) - gammaln(k + n)
        + np.sum(gammaln(k * w + x) - gammaln(k * w) - x * np.log(w))
    )


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = [
        ([10, 12], [0.5, 0.5], 100.0),
        ([5000, 5050], [0.5, 0.5], 1e4),
        ([5000, 4000], [0.5, 0.5], 1e3),
        ([120, 300, 280], [0.2, 0.4, 0.4], 1e2),
        ([100000, 98000], [0.5, 0.5], 1e5),
        ([7, 0, 3], [0.5, 0.25, 0.25], 1e6),
        ([0, 0], [0.3, 0.7], 1e2),
    ]
    with open(os.path.join(OUT, "srm.tsv"), "w") as f:
        f.write("counts\tweights\tk\tlog_bf\n")
        for c, w, k in cases:
            f.write(
                "%s\t%s\t%r\t%.17g\n"
                % (",".join(map(str, c)), ",".join(map(repr, w)), k, log_bf(c, w, k))
            )
    with open(os.path.join(OUT, "samplesize.tsv"), "w") as f:
        f.write("rate\tlift\tper_branch\n")
        for rate, lift in [(0.02, 0.05), (0.02, 0.10), (0.1, 0.2), (0.5, 0.02)]:
            n = samplesize_proportions_2indep_onetail(
                diff=rate * lift, prop2=rate, power=0.8, ratio=1, alpha=0.05,
                alternative="two-sided",
            )
            f.write("%r\t%r\t%.6f\n" % (rate, lift, math.ceil(n)))


if __name__ == "__main__":
    main()
