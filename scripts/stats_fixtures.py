#!/usr/bin/env python3
"""Reference values for immune::stats, computed with SciPy / statsmodels.

Regenerate (from the repository root):

    python3 scripts/stats_fixtures.py          # every file
    python3 scripts/stats_fixtures.py tmix     # one generator by name

Writes tests/fixtures/stats/*.json, read by tests/stats_reference.rs. Needs
numpy, scipy and statsmodels (versions recorded in each file's "meta").
Alternatives are written in immune's convention: "greater" = the FIRST sample's
parameter is larger. Where a library names it differently the mapping is done
here (see ALT_* below). Inputs are generated with fixed seeds so reruns give the
same files.
"""
import json
import math
import os
import sys
import warnings

import numpy as np
import scipy
import statsmodels
from scipy import integrate, special, stats
from statsmodels.genmod import families
from statsmodels.genmod.generalized_linear_model import GLM
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportions_ztest
from statsmodels.stats.rates import test_poisson_2indep

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "stats")
ALTS = ["two_sided", "greater", "less"]
# statsmodels names
ALT_SM = {"two_sided": "two-sided", "greater": "larger", "less": "smaller"}
# scipy names where "greater" means the first sample is larger (mannwhitneyu, ttest_ind, fisher)
ALT_SP = {"two_sided": "two-sided", "greater": "greater", "less": "less"}
# scipy ks_2samp: 'greater' there means CDF of x is greater, i.e. x is SMALLER
ALT_KS = {"two_sided": "two-sided", "greater": "less", "less": "greater"}

META = {
    "generator": "scripts/stats_fixtures.py",
    "python": sys.version.split()[0],
    "numpy": np.__version__,
    "scipy": scipy.__version__,
    "statsmodels": statsmodels.__version__,
}


def f(x):
    """JSON-safe float (inf/nan as strings)."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def fl(xs):
    return [f(v) for v in xs]


def write(name, cases):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name + ".json")
    with open(path, "w") as fh:
        json.dump({"meta": META, "cases": cases}, fh, indent=1)
        fh.write("\n")
    print(f"{path}: {len(cases)} cases")


rng = np.random.default_rng(20240601)


def poisson_exact():
    cases = []
    inputs = [
        (10, 100.0, 5, 100.0, 1.0),
        (0, 50.0, 7, 120.0, 1.0),
        (7, 120.0, 0, 50.0, 1.0),
        (3, 1.0, 3, 1.0, 1.0),
        (1, 1.0, 0, 1.0, 1.0),
        (30, 20.0, 100, 400.0, 1.0),
        (30, 20.0, 100, 400.0, 2.0),
        (12, 0.5, 40, 9.5, 1.5),
        (5000, 1e6, 4800, 1e6, 1.0),
        (260, 1e4, 21000, 1e6, 1.0),
        (2, 3.0, 9, 7.0, 0.5),
        (50, 10.0, 50, 10.0, 1.0),
    ]
    for c1, e1, c0, e0, r in inputs:
        for alt in ALTS:
            res = test_poisson_2indep(c1, e1, c0, e0, value=r, method="exact-cond",
                                      compare="ratio", alternative=ALT_SM[alt])
            n = c1 + c0
            p = r * e1 / (r * e1 + e0)
            bt = stats.binomtest(c1, n, p, alternative=ALT_SP[alt]).pvalue
            assert abs(bt - res.pvalue) < 1e-12, (bt, res.pvalue)
            cases.append(dict(count1=c1, exposure1=e1, count0=c0, exposure0=e0,
                              ratio_null=r, alt=alt, p_value=f(res.pvalue)))
    write("poisson_exact", cases)


def poisson_overdispersed():
    cases = []

    def add(name, c1, e1, c0, e0):
        y = np.concatenate([c1, c0]).astype(float)
        e = np.concatenate([e1, e0]).astype(float)
        g = np.concatenate([np.ones(len(c1)), np.zeros(len(c0))])
        X = np.column_stack([np.ones_like(g), g])
        fit = GLM(y, X, family=families.Poisson(), offset=np.log(e)).fit(scale="X2", tol=1e-14, maxiter=200)
        coef, bse, scale = fit.params[1], fit.bse[1], fit.scale
        # Unscaled (pure Poisson) standard error from a scale=1 fit, then the
        # floored dispersion: se = bse_1 * sqrt(max(1, X2 / (N - 2))).
        unscaled = GLM(y, X, family=families.Poisson(), offset=np.log(e)).fit(scale=1.0, tol=1e-14, maxiter=200)
        phi = max(1.0, scale)
        se = unscaled.bse[1] * math.sqrt(phi)
        z = coef / se
        ps = {"two_sided": 2 * stats.norm.sf(abs(z)), "greater": stats.norm.sf(z),
              "less": stats.norm.cdf(z)}
        for alt in ALTS:
            cases.append(dict(name=name, counts1=[int(v) for v in c1], exposures1=fl(e1),
                              counts0=[int(v) for v in c0], exposures0=fl(e0), alt=alt,
                              log_ratio=f(coef), se=f(se), dispersion=f(phi),
                              dispersion_raw=f(scale), p_value=f(ps[alt]),
                              statsmodels_bse=f(bse), statsmodels_p_two_sided=f(fit.pvalues[1])))

    # Overdispersed hosts (gamma-mixed Poisson), canary rate 1.6x.
    e0 = rng.uniform(500, 1500, 20)
    lam0 = 0.01 * rng.gamma(4.0, 0.25, 20)
    c0 = rng.poisson(lam0 * e0)
    e1 = rng.uniform(500, 1500, 3)
    c1 = rng.poisson(0.016 * rng.gamma(4.0, 0.25, 3) * e1)
    add("overdispersed_3_vs_20", c1, e1, c0, e0)
    # Pure Poisson, no effect, many hosts.
    e0 = rng.uniform(100, 300, 40)
    c0 = rng.poisson(0.05 * e0)
    e1 = rng.uniform(100, 300, 5)
    c1 = rng.poisson(0.05 * e1)
    add("poisson_5_vs_40", c1, e1, c0, e0)
    # Under-dispersed (counts exactly proportional): the floor at 1 applies.
    add("underdispersed_floor", np.array([10, 20]), np.array([100.0, 200.0]),
        np.array([30, 60, 90]), np.array([600.0, 1200.0, 1800.0]))
    # Smallest N with a dispersion estimate (N = 3).
    add("three_units", np.array([9]), np.array([10.0]), np.array([3, 12]), np.array([10.0, 15.0]))
    # Strong overdispersion.
    add("strong", np.array([40, 2, 35]), np.array([100.0, 100.0, 100.0]),
        np.array([5, 30, 1, 22, 9, 14]), np.array([100.0] * 6))
    write("poisson_overdispersed", cases)


def proportions():
    cases = []
    for x1, n1, x0, n0 in [(15, 100, 10, 100), (0, 50, 3, 400), (30, 1000, 25, 5000),
                           (1, 1, 0, 1), (5, 20, 5, 20), (999, 1000, 980, 1000),
                           (120, 10000, 80, 10000)]:
        for alt in ALTS:
            z, p = proportions_ztest([x1, x0], [n1, n0], value=0, alternative=ALT_SM[alt])
            odds, pf = stats.fisher_exact([[x1, n1 - x1], [x0, n0 - x0]], alternative=ALT_SP[alt])
            cases.append(dict(x1=x1, n1=n1, x0=x0, n0=n0, alt=alt, z=f(z), p_value=f(p),
                              fisher_odds=f(odds), fisher_p=f(pf)))
    write("proportions", cases)


def mann_whitney():
    cases = []
    r = np.random.default_rng(7)
    samples = [
        ("exact_3_5", r.normal(0, 1, 3), r.normal(0.5, 1, 5)),
        ("exact_8_8", r.normal(1, 1, 8), r.normal(0, 1, 8)),
        ("exact_1_1", np.array([2.0]), np.array([1.0])),
        ("exact_2_20", r.normal(2, 1, 2), r.normal(0, 1, 20)),
        ("exact_8_60", r.normal(0.7, 1, 8), r.normal(0, 1, 60)),
        ("exact_separated_5_7", np.arange(10.0, 15.0), np.arange(7.0)),
        ("asymp_9_12", r.normal(0, 1, 9), r.normal(0.8, 1, 12)),
        ("ties_small", np.array([1.0, 2, 2, 3]), np.array([2.0, 3, 3, 4, 5])),
        ("ties_large", np.round(r.normal(0, 2, 60)), np.round(r.normal(0.5, 2, 80))),
        ("all_ties", np.full(5, 2.0), np.full(7, 2.0)),
        ("identical", np.array([1.0, 2, 3, 4]), np.array([1.0, 2, 3, 4])),
        ("large", r.lognormal(0, 1, 500), r.lognormal(0.1, 1, 700)),
        ("one_vs_many_ties", np.array([3.0]), np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10])),
    ]
    for name, x, y in samples:
        for alt in ALTS:
            res = stats.mannwhitneyu(x, y, alternative=ALT_SP[alt], method="auto")
            cases.append(dict(name=name, x=fl(x), y=fl(y), alt=alt, statistic=f(res.statistic),
                              p_value=f(res.pvalue)))
    write("mann_whitney", cases)


def welch():
    cases = []
    r = np.random.default_rng(11)
    samples = [
        ("basic", r.normal(10, 2, 12), r.normal(9, 3, 30)),
        ("small", np.array([1.0, 2.0]), np.array([2.0, 4.0, 5.0])),
        ("one_constant", np.array([5.0, 5.0, 5.0]), r.normal(4, 1, 10)),
        ("large", r.normal(100, 15, 2000), r.normal(101, 15, 3000)),
        ("identical", np.array([1.0, 2, 3]), np.array([1.0, 2, 3])),
    ]
    for name, x, y in samples:
        for alt in ALTS:
            res = stats.ttest_ind(x, y, equal_var=False, alternative=ALT_SP[alt])
            cases.append(dict(kind="welch", name=name, x=fl(x), y=fl(y), alt=alt,
                              statistic=f(res.statistic), p_value=f(res.pvalue)))
    pred = [
        ("n1", np.array([14.0]), r.normal(10, 2, 20)),
        ("n2", np.array([11.0, 12.5]), r.normal(10, 2, 8)),
        ("nc2", np.array([3.0]), np.array([1.0, 2.0])),
        ("n5_large_control", r.normal(10.5, 2, 5), r.normal(10, 2, 500)),
    ]
    for name, t, c in pred:
        nt, nc = len(t), len(c)
        sc = np.std(c, ddof=1)
        tt = (t.mean() - c.mean()) / (sc * math.sqrt(1 / nt + 1 / nc))
        df = nc - 1
        ps = {"two_sided": 2 * stats.t.sf(abs(tt), df), "greater": stats.t.sf(tt, df),
              "less": stats.t.cdf(tt, df)}
        for alt in ALTS:
            cases.append(dict(kind="prediction", name=name, x=fl(t), y=fl(c), alt=alt,
                              statistic=f(tt), p_value=f(ps[alt])))
    write("welch", cases)


def shape():
    cases = []
    r = np.random.default_rng(13)
    samples = [
        ("equal_n_10", r.normal(0, 1, 10), r.normal(0.8, 1, 10)),
        ("unequal_7_13", r.normal(0, 1, 7), r.normal(0, 2, 13)),
        ("one_vs_five", np.array([0.5]), r.normal(0, 1, 5)),
        ("ties", np.array([1.0, 1, 2, 2, 3, 3, 3]), np.array([2.0, 3, 3, 4, 4, 5])),
        ("identical", np.array([1.0, 2, 3]), np.array([1.0, 2, 3])),
        ("moderate_200_300", r.normal(0, 1, 200), r.normal(0.2, 1.2, 300)),
        ("separated_30_40", r.uniform(0, 1, 30), r.uniform(2, 3, 40)),
        ("exact_1000_2000", r.normal(0, 1, 1000), r.normal(0.05, 1, 2000)),
        ("asymp_10500_12000", r.normal(0, 1, 10500), r.normal(0.03, 1, 12000)),
        ("asymp_small_p_10001", r.normal(0, 1, 10001), r.normal(0.1, 1, 10001)),
    ]
    for name, x, y in samples:
        if len(x) > 1000:
            # Three decimals keep the file small (ties are handled by both sides).
            x, y = np.round(x, 3), np.round(y, 3)
        case = dict(name=name, x=fl(x), y=fl(y), results={})
        for alt in ALTS:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = stats.ks_2samp(x, y, alternative=ALT_KS[alt], method="auto")
            fell_back = any("Exact calculation unsuccessful" in str(w.message) for w in caught)
            scipy_method = "exact" if max(len(x), len(y)) <= 10000 and not fell_back else "asymp"
            case["results"][alt] = dict(statistic=f(res.statistic), p_value=f(res.pvalue),
                                        scipy_method=scipy_method)
        cases.append(case)
    write("ks_2samp", cases)

    q = []
    for name, v in [("small", np.array([3.0, 1.0, 2.0])), ("one", np.array([5.0])),
                    ("ties", np.array([1.0, 1, 1, 2, 2, 9])),
                    ("random", r.normal(0, 10, 101)), ("even", r.exponential(1, 50))]:
        for qq in [0.0, 0.1, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0]:
            q.append(dict(name=name, values=fl(v), q=qq, expected=f(np.quantile(v, qq))))
    write("quantile", q)


def sequential():
    cases = []
    for x, n, p0, a, b in [(0, 0, 0.5, 1, 1), (5, 10, 0.5, 1, 1), (9, 10, 0.5, 1, 1),
                           (30, 100, 0.1, 1, 1), (30, 100, 0.1, 0.5, 4.5), (3, 1000, 0.01, 1, 99),
                           (500, 1000, 0.2, 2, 8), (20000, 100000, 0.2, 1, 1), (0, 50, 0.05, 1, 19)]:
        log_bf = special.betaln(a + x, b + n - x) - special.betaln(a, b) - x * math.log(p0) \
            - (n - x) * math.log1p(-p0)
        cases.append(dict(kind="beta_binomial", x=x, n=n, p0=p0, a=a, b=b, log_bf=f(log_bf)))

    # mSPRT: two-sided closed form; one-sided checked by numerical integration of
    # the half-normal mixture of likelihood ratios (independent of the closed form).
    for n, mean, mu0, s2, t2 in [(1, 0.3, 0.0, 1.0, 1.0), (10, 0.5, 0.0, 1.0, 0.25),
                                 (100, 0.1, 0.0, 4.0, 0.1), (50, -0.4, 0.0, 1.0, 0.5),
                                 (1000, 10.2, 10.0, 2.0, 0.05), (20, 0.0, 0.0, 1.0, 1.0)]:
        two = 0.5 * math.log(s2 / (s2 + n * t2)) + n * n * t2 * (mean - mu0) ** 2 / (
            2 * s2 * (s2 + n * t2))
        d = mean - mu0

        def log_lr(delta):
            return n * delta * d / s2 - n * delta * delta / (2 * s2)

        out = {}
        for alt, sign in [("greater", 1.0), ("less", -1.0)]:
            # integrate 2*phi(delta; 0, tau2) * LR(delta) over the alternative side,
            # scaled by exp(-m) for stability around the integrand's peak.
            peak = max(0.0, sign * n * d / s2 / (1 / t2 + n / s2))
            m = log_lr(sign * peak)

            def integrand(u, sign=sign, m=m):
                delta = sign * u
                return 2 * stats.norm.pdf(delta, 0, math.sqrt(t2)) * math.exp(log_lr(delta) - m)

            val, _ = integrate.quad(integrand, 0, np.inf, epsabs=0, epsrel=1e-12, limit=200,
                                    points=None)
            out[alt] = math.log(val) + m
        cases.append(dict(kind="msprt", n=n, mean=mean, mu0=mu0, sigma2=s2, tau2=t2,
                          log_two_sided=f(two), log_greater=f(out["greater"]),
                          log_less=f(out["less"])))
    write("sequential", cases)


def drift():
    cases = []
    r = np.random.default_rng(17)
    series = [
        ("increasing", np.arange(20.0) * 0.3 + r.normal(0, 1, 20)),
        ("flat_noise", r.normal(0, 1, 30)),
        ("decreasing_short", np.array([5.0, 4.0, 4.5, 3.0, 2.0])),
        ("ties", np.array([1.0, 2, 2, 3, 3, 3, 2, 4, 5, 5])),
        ("two", np.array([1.0, 2.0])),
        ("all_equal", np.full(6, 3.0)),
        ("long", np.cumsum(r.normal(0.05, 1, 200))),
    ]
    for name, x in series:
        n = len(x)
        s = 0
        for k in range(n - 1):
            s += np.sum(x[k + 1:] > x[k]) - np.sum(x[k + 1:] < x[k])
        _, tp = np.unique(x, return_counts=True)
        var_s = (n * (n - 1) * (2 * n + 5) - np.sum(tp * (tp - 1) * (2 * tp + 5))) / 18
        if s > 0:
            z = (s - 1) / math.sqrt(var_s)
        elif s < 0:
            z = (s + 1) / math.sqrt(var_s)
        else:
            z = 0.0
        tau = s / (0.5 * n * (n - 1))
        case = dict(kind="mann_kendall", name=name, values=fl(x), s=f(s), var_s=f(var_s), z=f(z),
                    p_two_sided=f(2 * stats.norm.sf(abs(z))), p_increasing=f(stats.norm.sf(z)),
                    p_decreasing=f(stats.norm.cdf(z)), tau=f(tau))
        if len(np.unique(x)) == n:
            kt = stats.kendalltau(np.arange(n), x)
            assert abs(kt.statistic - tau) < 1e-12
            case["scipy_kendalltau"] = f(kt.statistic)
        cases.append(case)

    ts = [
        ("line", np.arange(10.0), 2.0 * np.arange(10.0) + 1 + r.normal(0, 0.5, 10)),
        ("outliers", np.arange(15.0), 0.5 * np.arange(15.0) + np.where(np.arange(15) % 5 == 0, 20, 0)),
        ("x_ties", np.array([1.0, 1, 2, 2, 3, 3, 4, 4, 5, 5]), r.normal(0, 1, 10) + np.repeat(np.arange(5.0), 2)),
        ("three", np.array([0.0, 1, 2]), np.array([0.0, 1, 5])),
        ("random_40", np.sort(r.uniform(0, 100, 40)), r.normal(0, 5, 40)),
    ]
    for name, x, y in ts:
        res = stats.theilslopes(y, x, alpha=0.95, method="separate")
        cases.append(dict(kind="theil_sen", name=name, x=fl(x), y=fl(y), slope=f(res.slope),
                          intercept=f(res.intercept), low_slope=f(res.low_slope),
                          high_slope=f(res.high_slope)))
    write("drift", cases)


def multiple():
    cases = []
    r = np.random.default_rng(19)
    for p in [[0.01, 0.04, 0.03, 0.005], [0.5], [0.001, 0.001, 0.2, 0.04, 0.9],
              list(r.uniform(0, 0.1, 12)), [0.0, 1.0, 0.05, 0.05], [0.02, 0.02, 0.02]]:
        holm = multipletests(p, alpha=0.05, method="holm")
        bh = multipletests(p, alpha=0.05, method="fdr_bh")
        cases.append(dict(p=fl(p), holm_reject_05=[bool(v) for v in holm[0]],
                          holm_adjusted=fl(holm[1]), bh_adjusted=fl(bh[1])))
    write("multiple", cases)


def tmix():
    """Bayes factor of the t-test mixture (immune::stats::tmix), computed independently
    by integrating the noncentral t density over the prior on the standardised shift:
    BF(g) = E_{delta ~ N(0, g)}[ nct.pdf(t; nu, delta * sqrt(n_delta)) ] / t.pdf(t; nu)."""
    cases = []
    r = np.random.default_rng(23)
    for n1, n2 in [(10, 2), (10, 3), (10, 6), (30, 4), (0, 3), (0, 8), (5, 5), (2, 1)]:
        for _ in range(3):
            pre = r.normal(0.0, 1.0, n1)
            post = r.normal(r.uniform(-1.5, 3.0), 1.0, n2)
            if n1 > 0:
                nu = n1 + n2 - 2
                nd = 1.0 / (1.0 / n1 + 1.0 / n2)
                ss = ((pre - pre.mean()) ** 2).sum() + ((post - post.mean()) ** 2).sum()
                shift = post.mean() - pre.mean()
            else:
                nu = n2 - 1
                nd = float(n2)
                ss = ((post - post.mean()) ** 2).sum()
                shift = post.mean()
            sd = math.sqrt(ss / nu)
            t = shift * math.sqrt(nd) / sd
            logs = []
            for g in [1.0, 10.0, 100.0]:
                num, _ = integrate.quad(
                    lambda d: stats.nct.pdf(t, nu, d * math.sqrt(nd)) * stats.norm.pdf(d, 0.0, math.sqrt(g)),
                    -np.inf, np.inf, limit=200, epsabs=0, epsrel=1e-11)
                logs.append(math.log(num / stats.t.pdf(t, nu)))
            mix = math.log(sum(math.exp(l) for l in logs) / len(logs))
            cases.append(dict(pre=fl(pre), post=fl(post), t=f(t), nu=f(nu), n_delta=f(nd),
                              log_bf=fl(logs), log_bf_mixture=f(mix)))
    write("tmix", cases)


if __name__ == "__main__" and len(sys.argv) > 1:
    for name in sys.argv[1:]:
        globals()[name]()
elif __name__ == "__main__":
    poisson_exact()
    poisson_overdispersed()
    proportions()
    mann_whitney()
    welch()
    shape()
    sequential()
    drift()
    multiple()
    tmix()
