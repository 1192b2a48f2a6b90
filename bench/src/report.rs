//! The report: a table for the terminal, `bench.json`, `bench.md`, and the targets met or missed.

use std::fmt::Write as _;
use std::path::Path;

use crate::{BenchError, LatencyModel, Report, WorkloadResult};

fn find<'a>(r: &'a Report, workload: &str, engine: &str) -> Option<&'a WorkloadResult> {
    r.workloads.iter().find(|w| w.workload == workload && w.engine == engine)
}

/// The plan's targets, judged on what this run measured (`None` where the run could not judge one).
pub fn targets(r: &Report) -> Vec<(String, Option<bool>, String)> {
    let mut out = Vec::new();
    let zero = r.latency_model == LatencyModel::Zero;
    if let Some(w) = find(r, "point_lookup", "omnisql") {
        let met = zero.then_some(w.p50_ms <= 2.0 && w.p99_ms <= 10.0);
        out.push((
            "engine overhead at zero latency: p50 ≤ 2 ms, p99 ≤ 10 ms (point_lookup)".into(),
            met,
            format!("p50 {:.1} ms, p99 {:.1} ms{}", w.p50_ms, w.p99_ms, if zero { "" } else { " (not a zero-latency run)" }),
        ));
    }
    if let Some(w) = find(r, "join_3_sources", "omnisql") {
        let met = (!zero).then_some(w.p95_ms <= 500.0);
        out.push((
            "3-source join with the default latency model: p95 ≤ 500 ms".into(),
            met,
            format!("p95 {:.0} ms{}", w.p95_ms, if zero { " (zero-latency run)" } else { "" }),
        ));
    }
    for m in &r.mix {
        let met = m.achieved_qps >= 1000.0 && m.p99_ms < 100.0 && m.rate_held;
        out.push((
            "sustained mix: ≥ 1,000 QPS with p99 < 100 ms".into(),
            Some(met),
            format!(
                "target {} QPS, achieved {:.0} QPS, p99 {:.1} ms, {} errors",
                m.target_qps, m.achieved_qps, m.p99_ms, m.errors
            ),
        ));
    }
    for w in r.workloads.iter().filter(|w| w.engine == "omnisql" && w.selective) {
        if let Some(naive) = find(r, &w.workload, "naive") {
            let met = w.upstream_per_query * 10.0 <= naive.upstream_per_query;
            out.push((
                format!("{}: upstream requests ≤ 1/10 of the naive engine's", w.workload),
                Some(met),
                format!("{:.1} vs {:.1}", w.upstream_per_query, naive.upstream_per_query),
            ));
        }
    }
    out
}

pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| workload | engine | runs | errors | p50 ms | p95 ms | p99 ms | QPS | upstream req/query | cache hits | physical limit ms | p50 / limit |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for w in &r.workloads {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0}% | {:.0} | {} |",
            w.workload,
            w.engine,
            w.runs,
            w.errors,
            w.p50_ms,
            w.p95_ms,
            w.p99_ms,
            w.qps,
            w.upstream_per_query,
            w.cache_hit_rate * 100.0,
            w.physical_limit_ms,
            w.p50_vs_limit.map_or("–".to_string(), |x| format!("{x:.1}×")),
        );
    }
    if !r.mix.is_empty() {
        let _ = writeln!(
            s,
            "\n| sustained mix | tenants | target QPS | achieved QPS | rate held | completed | errors | p50 ms | p95 ms | p99 ms |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|");
        for m in &r.mix {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
                m.engine,
                m.tenants,
                m.target_qps,
                m.achieved_qps,
                if m.rate_held { "yes" } else { "no" },
                m.completed,
                m.errors,
                m.p50_ms,
                m.p95_ms,
                m.p99_ms
            );
        }
    }
    let _ = writeln!(s);
    for (engine, mib) in &r.peak_rss_mib {
        let _ = writeln!(s, "peak data-plane memory ({engine}): {mib:.0} MiB");
    }
    let _ = writeln!(s, "\ntargets:");
    for (target, met, detail) in targets(r) {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not judged",
        };
        let _ = writeln!(s, "- {verdict}: {target} — {detail}");
    }
    s
}

pub fn write(r: &Report, dir: &Path) -> Result<(), BenchError> {
    let put = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| BenchError::Write { path: path.display().to_string(), source })
    };
    put("bench.json", serde_json::to_string_pretty(r).unwrap_or_default())?;
    let md = format!(
        "# OmniSQL benchmark\n\nLatency model: {:?}; sandbox scale {}; {} cores. The `naive` engine is OmniSQL with pushdown, prefetch and \
         parallel requests turned off. The physical limit is the fewest sequential upstream round trips times the modelled latency.\n\n{}",
        r.latency_model,
        r.scale,
        r.cores,
        table(r)
    );
    put("bench.md", md)
}
