#!/usr/bin/env python3
"""Writes rules/tests/every_*.yaml: for each shipped rule not covered by the hand-written
tests, one case where it fires and, per rule file, one healthy case where none does.

Series carry seeded noise (random.Random(seed)), so the files are reproducible:
    python3 scripts/rule_tests.py && cargo run --release -- test rules rules/tests/*.yaml

Timeline of the 10 s cases (240 samples, 40 minutes): canary at 16m on web-01:80, full
rollout at 22m (for the cases whose rules judge full and watch), end at 38m. A fault
starts with the phase its rule judges: on the canary host at the canary event, or
fleet-wide at the full rollout. The seasonal cases scrape every minute for a week and an
hour (the store keeps seasonal history per minute, and the evaluation interval is the
scrape interval).
"""

import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "rules", "tests")

N = 240  # samples at 10 s
STEP = 10
CANARY = 16 * 60
FULL = 22 * 60
END = 38 * 60
HOSTS = ["web-01:80", "web-02:80", "web-03:80", "web-04:80"]


def fmt(v):
    if abs(v - round(v)) < 1e-9:
        return str(int(round(v)))
    return f"{v:.3f}".rstrip("0").rstrip(".")


def compress(values):
    """promtool's expanding notation: runs of a constant step become `a+bxn`."""
    parts, i = [], 0
    text = [fmt(v) for v in values]
    while i < len(values):
        j = i + 1
        if j < len(values):
            step = round(values[j] - values[i], 6)
            while j + 1 < len(values) and round(values[j + 1] - values[j], 6) == step:
                j += 1
            if j - i >= 2 and fmt(step) == fmt(abs(step)) and step == round(step, 3):
                parts.append(f"{text[i]}+{fmt(step)}x{j - i}")
                i = j + 1
                continue
        parts.append(text[i])
        i += 1
    return " ".join(parts)


def counter(rates, rng, noise=0.0, integral=True):
    """A counter from per-step increments `rates[i]` (with relative noise)."""
    total, out = 0.0, []
    for r in rates:
        out.append(total)
        inc = r * (1.0 + noise * (2 * rng.random() - 1)) if noise else r
        total += round(inc) if integral else round(inc, 3)
    return compress(out)


def gauge(levels, rng, noise):
    return " ".join(fmt(round(l * (1.0 + noise * (2 * rng.random() - 1)), 3)) for l in levels)


def steps(base, factor=1.0, start=None, hosts_hit=True, n=N):
    """Per-step values: `base`, times `factor` from time `start` (seconds) when hit."""
    return [base * (factor if (start is not None and hosts_hit and i * STEP >= start) else 1.0) for i in range(n)]


def web_series(rng, fault=None):
    """Every series the web and business rules read, on four hosts. `fault` is
    (rule name) and decides which series change and from when."""
    s = {}
    f = fault or ""
    for h in HOSTS:
        canary = h == HOSTS[0]
        lab = f'{{instance="{h}",job="web"}}'
        req = steps(500)
        s[f"http_requests_total{lab}"] = counter(req, rng)
        s[f"php_errors_total{lab}"] = counter(steps(5), rng)
        s[f"php_fatal_errors_total{lab}"] = counter(steps(1), rng)
        # Latency: mean 0.08 s; the canary's doubles for latency_mean; for latency_p99
        # the slow tail grows from 1% to 10% of requests.
        mean = steps(0.08 * 500, 2.0, CANARY, canary and f == "latency_mean")
        s[f"http_request_duration_seconds_sum{lab}"] = counter(mean, rng, 0.1, False)
        s[f"http_request_duration_seconds_count{lab}"] = counter(req, rng)
        tail = 50 if (canary and f == "latency_p99") else 5
        bucket = lambda le_count, start=CANARY: counter(
            [le_count(i * STEP >= start) for i in range(N)], rng
        )
        s[f'http_request_duration_seconds_bucket{{instance="{h}",job="web",le="0.1"}}'] = bucket(
            lambda hit: 450 - (tail - 5 if hit else 0)
        )
        s[f'http_request_duration_seconds_bucket{{instance="{h}",job="web",le="0.5"}}'] = bucket(
            lambda hit: 495 - (tail - 5 if hit else 0)
        )
        s[f'http_request_duration_seconds_bucket{{instance="{h}",job="web",le="1"}}'] = counter(req, rng)
        s[f'http_request_duration_seconds_bucket{{instance="{h}",job="web",le="+Inf"}}'] = counter(req, rng)
        s[f"node_load1{lab}"] = gauge(steps(1.0, 2.5, CANARY, canary and f == "load1"), rng, 0.15)
        s[f"process_cpu_seconds_total{lab}"] = counter(
            steps(5.0, 2.0, CANARY, canary and f == "cpu_usage"), rng, 0.1, False
        )
        # DB query time: drifts upward by 2% a minute after the full rollout.
        db = [0.01 * 200 * (1.0 + (0.02 * (i * STEP - FULL) / 60 if f == "db_query_drift" and i * STEP >= FULL else 0.0)) for i in range(N)]
        s[f"db_query_duration_seconds_sum{lab}"] = counter(db, rng, 0.05, False)
        s[f"db_query_duration_seconds_count{lab}"] = counter(steps(200), rng)
        # Business counters per host (the app's own metrics).
        sign_factor, sign_start = 1.0, None
        if f == "signup_ratio_vs_pre_deploy":
            sign_factor, sign_start = 0.5, FULL
        s[f'app_signups_total{{instance="{h}",job="web"}}'] = counter(
            steps(10, sign_factor, sign_start), rng, 0.3
        )
        rev_factor, rev_start, rev_hit = 1.0, None, True
        if f == "revenue_ratio":
            rev_factor, rev_start, rev_hit = 0.4, CANARY, canary
        if f == "revenue_ratio_vs_pre_deploy":
            rev_factor, rev_start = 0.5, FULL
        s[f'app_revenue_cents_total{{instance="{h}",job="web"}}'] = counter(
            steps(5000, rev_factor, rev_start, rev_hit), rng, 0.3, False
        )
    return s


def infra_series(rng, fault=None):
    f = fault or ""
    s = {}
    lab = '{instance="db-01:9104",job="mysql"}'
    s[f"mysql_global_status_threads_running{lab}"] = gauge(steps(5), rng, 0.2)
    s[f"mysql_global_status_queries{lab}"] = counter(steps(1000), rng, 0.05)
    s[f"mysql_global_status_slow_queries{lab}"] = counter(
        steps(2, 4.0, FULL, f == "mysql_slow_queries"), rng, 0.5
    )
    s[f"mysql_global_status_aborted_connects{lab}"] = counter(
        steps(1, 5.0, CANARY, f == "mysql_aborted_connects"), rng, 0.9
    )
    s[f"mysql_slave_status_seconds_behind_master{lab}"] = gauge(
        steps(1.0, 60.0, FULL, f == "mysql_replication_lag"), rng, 0.5
    )
    lab = '{instance="cache-01:9150",job="memcached"'
    s[f'memcached_commands_total{lab},command="get",status="hit"}}'] = counter(steps(900), rng, 0.02)
    s[f'memcached_commands_total{lab},command="get",status="miss"}}'] = counter(steps(100), rng, 0.1)
    s[f"memcached_items_evicted_total{lab}}}"] = counter(
        steps(2, 5.0, CANARY, f == "memcached_evictions"), rng, 0.5
    )
    s[f"memcached_current_connections{lab}}}"] = gauge(
        steps(100, 2.0, CANARY, f == "memcached_connections"), rng, 0.1
    )
    return s


def fmt_s(secs):
    return f"{secs // 60}m" if secs % 60 == 0 else f"{secs}s"


def case(name, series, deploys, expect, comment=None):
    out = [f"  - name: '{name}'"]
    out.append("    input_series:")
    for k in sorted(series):
        out.append(f"      '{k}': '{series[k]}'")
    out.append("    deploys:")
    out.extend(f"      - {d}" for d in deploys)
    out.append("    expect:" if expect else "    expect: []")
    if comment:
        out.append(f"      # {comment}")
    out.extend(f"      - {e}" for e in expect)
    return "\n".join(out)


CANARY_ONLY = [
    f'{{at: {fmt_s(CANARY)}, deploy: d1, event: canary, service: web, canary: {{instance: "web-01:80"}}}}',
    f"{{at: {fmt_s(END)}, deploy: d1, event: end}}",
]
WITH_FULL = [
    CANARY_ONLY[0],
    f"{{at: {fmt_s(FULL)}, deploy: d1, event: full}}",
    CANARY_ONLY[1],
]

# The decisions each case gives (checked by `immune test rules`; written from its output
# after checking each is the rule the case is about, in the phase it judges).
def e(rule, decision, phase, at, tolerance="1m"):
    tol = f", tolerance: {tolerance}" if tolerance else ""
    return f"{{rule: {rule}, decision: {decision}, phase: {phase}, at: {at}{tol}}}"


PROMOTE = e("all_rules", "promote", "canary", "21m")
PASS_WATCH = e("all_rules", "pass", "watch", "38m", None)
PASS_CANARY = e("all_rules", "pass", "canary", "38m", None)

EXPECT = {
    "web_healthy": [PROMOTE, PASS_WATCH],
    "revenue_ratio": [e("revenue_ratio", "block", "canary", "18m")],
    "signup_ratio_vs_pre_deploy": [PROMOTE, e("signup_ratio_vs_pre_deploy", "rollback", "full", "23m")],
    "revenue_ratio_vs_pre_deploy": [PROMOTE, e("revenue_ratio_vs_pre_deploy", "block", "full", "24m")],
    "latency_p99": [e("latency_p99", "rollback", "canary", "18m")],
    "latency_mean": [e("latency_mean", "rollback", "canary", "18m")],
    "load1": [e("load1", "warn", "canary", "18m"), PASS_CANARY],
    "cpu_usage": [e("cpu_usage", "warn", "canary", "18m"), PASS_CANARY],
    # Drift needs several minutes of trend; full lasts 5m, so it is seen in watch.
    "db_query_drift": [PROMOTE, e("db_query_drift", "rollback", "watch", "33m", "2m")],
    "infra_healthy": [PROMOTE, PASS_WATCH],
    "mysql_slow_queries": [PROMOTE, e("mysql_slow_queries", "warn", "full", "23m"), PASS_WATCH],
    "mysql_aborted_connects": [e("mysql_aborted_connects", "warn", "canary", "1030s"), PASS_CANARY],
    # min_data 5m: the lag must persist through five minutes of blocks, so it blocks in watch.
    "mysql_replication_lag": [PROMOTE, e("mysql_replication_lag", "block", "watch", "27m")],
    "memcached_evictions": [e("memcached_evictions", "warn", "canary", "1030s"), PASS_CANARY],
    "memcached_connections": [e("memcached_connections", "warn", "canary", "18m"), PASS_CANARY],
    "seasonal_healthy": [
        e("all_rules", "promote", "canary", "10115m"),
        e("all_rules", "pass", "watch", "10140m", None),
    ],
    "signups_vs_last_week": [
        e("all_rules", "promote", "canary", "10115m"),
        e("signups_vs_last_week", "warn", "full", "10117m"),
        e("all_rules", "pass", "watch", "10140m", None),
    ],
    # Amounts are judged per block, so revenue needs a few more minutes than signups.
    "revenue_vs_last_week": [
        e("all_rules", "promote", "canary", "10115m"),
        e("revenue_vs_last_week", "warn", "watch", "10123m", "3m"),
        e("all_rules", "pass", "watch", "10140m", None),
    ],
}


WEEK = 7 * 86400
S_CANARY = WEEK + 30 * 60
S_FULL = WEEK + 36 * 60
S_END = WEEK + 60 * 60
S_N = S_END // 60 + 1


def seasonal_series(rng, fault=None):
    """A week and an hour at one sample a minute. Noise only within 3 h of the deploy
    and of the same time a week earlier (what the rules read), so the file stays small."""

    def noisy(i):
        t = i * 60
        return abs(t - S_CANARY) < 3 * 3600 or abs(t - (S_CANARY - WEEK)) < 3 * 3600

    def count(base, factor, start, noise, integral=True):
        total, out = 0.0, []
        for i in range(S_N):
            out.append(total)
            r = base * (factor if start is not None and i * 60 >= start else 1.0)
            if noise and noisy(i):
                r *= 1.0 + noise * (2 * rng.random() - 1)
            total += round(r) if integral else round(r, 3)
        return compress(out)

    s = {}
    for h in HOSTS:
        lab = f'{{instance="{h}",job="web"}}'
        s[f"http_requests_total{lab}"] = count(3000, 1, None, 0)
        s[f"app_signups_total{lab}"] = count(60, 1, None, 0)
        s[f"app_revenue_cents_total{lab}"] = count(30000, 1, None, 0.3, False)
    lab = '{instance="db-01:3306",job="mysql"}'
    f = fault or ""
    s[f"business_signups_total{lab}"] = count(
        240, 0.5 if f == "signups_vs_last_week" else 1.0, S_FULL, 0
    )
    s[f"business_revenue_cents_total{lab}"] = count(
        120000, 0.5 if f == "revenue_vs_last_week" else 1.0, S_FULL, 0.3, False
    )
    return s


def write(fname, header, rule_files, cases, interval="10s"):
    text = [header, f"rule_files: [{', '.join(rule_files)}]", f"scrape_interval: {interval}", "tests:"]
    text.extend(cases)
    with open(os.path.join(OUT, fname), "w") as f:
        f.write("\n".join(text) + "\n")


def expected(key):
    return EXPECT.get(key, [])


def main():
    web_faults = [
        ("revenue_ratio", CANARY_ONLY),
        ("signup_ratio_vs_pre_deploy", WITH_FULL),
        ("revenue_ratio_vs_pre_deploy", WITH_FULL),
        ("latency_p99", CANARY_ONLY),
        ("latency_mean", CANARY_ONLY),
        ("load1", CANARY_ONLY),
        ("cpu_usage", CANARY_ONLY),
        ("db_query_drift", WITH_FULL),
    ]
    cases = [
        case(
            "healthy: no web or business rule fires",
            web_series(random.Random(1)),
            WITH_FULL,
            expected("web_healthy"),
        )
    ]
    for i, (rule, deploys) in enumerate(web_faults):
        cases.append(
            case(f"{rule} fires", web_series(random.Random(100 + i), rule), deploys, expected(rule))
        )
    write(
        "every_web.yaml",
        "# Generated by scripts/rule_tests.py: one firing case per web and business rule the\n"
        "# hand-written tests do not cover, and a healthy case where no rule fires.",
        ["../web.yaml", "../business.yaml"],
        cases,
    )
    infra_faults = [
        ("mysql_slow_queries", WITH_FULL),
        ("mysql_aborted_connects", CANARY_ONLY),
        ("mysql_replication_lag", WITH_FULL),
        ("memcached_evictions", CANARY_ONLY),
        ("memcached_connections", CANARY_ONLY),
    ]
    cases = []
    healthy = web_series(random.Random(2))
    healthy.update(infra_series(random.Random(3)))
    cases.append(case("healthy: no mysql or memcached rule fires", healthy, WITH_FULL, expected("infra_healthy")))
    for i, (rule, deploys) in enumerate(infra_faults):
        s = web_series(random.Random(200 + i))
        s.update(infra_series(random.Random(300 + i), rule))
        cases.append(case(f"{rule} fires", s, deploys, expected(rule)))
    write(
        "every_infra.yaml",
        "# Generated by scripts/rule_tests.py: one firing case per mysql and memcached rule\n"
        "# the hand-written tests do not cover, and a healthy case where no rule fires.",
        ["../web.yaml", "../business.yaml", "../mysql.yaml", "../memcached.yaml"],
        cases,
    )
    deploys = [
        f'{{at: {S_CANARY}s, deploy: d1, event: canary, service: web, canary: {{instance: "web-01:80"}}}}',
        f"{{at: {S_FULL}s, deploy: d1, event: full}}",
        f"{{at: {S_END}s, deploy: d1, event: end}}",
    ]
    cases = [case("healthy: the same as last week", seasonal_series(random.Random(4)), deploys, expected("seasonal_healthy"))]
    for i, rule in enumerate(["signups_vs_last_week", "revenue_vs_last_week"]):
        cases.append(case(f"{rule} fires", seasonal_series(random.Random(500 + i), rule), deploys, expected(rule)))
    write(
        "every_seasonal.yaml",
        "# Generated by scripts/rule_tests.py: the seasonal business rules, on a week and an\n"
        "# hour of history scraped every minute (also the evaluation interval).",
        ["../business.yaml"],
        cases,
        "60s",
    )


if __name__ == "__main__":
    main()
