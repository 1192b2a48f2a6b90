//! The report: a table for the terminal, `bench.json`, `bench.md`, and the targets met or missed.

use std::fmt::Write as _;
use std::path::Path;

use crate::{BenchError, LatencyModel, Report, WorkloadResult};

fn find<'a>(r: &'a Report, workload: &str, engine: &str) -> Option<&'a WorkloadResult> {
    r.workloads.iter().find(|w| w.workload == workload && w.engine == engine)
}

/// The plan's targets, judged on what this run measured (`None` where the run could not judge one; every
/// one for a `--quick` run, whose few iterations at 50 QPS say nothing about them).
pub fn targets(r: &Report) -> Vec<(String, Option<bool>, String)> {
    let judged = judge(r);
    if !r.quick {
        return judged;
    }
    judged
        .into_iter()
        .map(|(target, _, detail)| (target, None, format!("{detail} (a --quick run proves the harness only)")))
        .collect()
}

fn judge(r: &Report) -> Vec<(String, Option<bool>, String)> {
    let mut out = Vec::new();
    let zero = r.latency_model == LatencyModel::Zero;
    if let Some(w) = find(r, "point_lookup", "omnisql") {
        let met = zero.then_some(w.p50_ms <= 2.0 && w.p99_ms <= 5.0);
        out.push((
            "engine overhead at zero latency: p50 ≤ 2 ms, p99 ≤ 5 ms (point_lookup)".into(),
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
    // The plan's rate with real API latency; with none, the engine's own (issue 13): judged once, on the
    // best row at that rate or more that was held, else on the highest rate tried. Sustained: the p99 of
    // the queries after the first second (the first holds each tenant's first, upstream, run of each
    // statement; the whole run's p99 stays in the table).
    let (rate, p99_limit) = if zero { (3000, 20.0) } else { (1000, 100.0) };
    let judged = r
        .mix
        .iter()
        .filter(|m| m.target_qps >= rate && m.rate_held)
        .min_by(|a, b| a.p99_after_first_second_ms.total_cmp(&b.p99_after_first_second_ms))
        .or_else(|| r.mix.iter().max_by_key(|m| m.target_qps));
    if let Some(m) = judged {
        // Held: every scheduled query completed without error at ≥ 95% of the offered rate.
        let met = m.target_qps >= rate && m.rate_held && m.p99_after_first_second_ms < p99_limit;
        out.push((
            format!("sustained mix: ≥ {rate} QPS with p99 < {p99_limit} ms after the first second"),
            Some(met),
            format!(
                "target {} QPS, achieved {:.0} QPS, p99 {:.1} ms after the first second ({:.1} ms over the whole run), {} errors",
                m.target_qps, m.achieved_qps, m.p99_after_first_second_ms, m.p99_ms, m.errors
            ),
        ));
    }
    if let Some(n) = &r.neighbour {
        let ratio = n.loaded_p99_ms / n.unloaded_p99_ms.max(1e-9);
        out.push((
            "noisy neighbour: other tenants' p99 under bombs ≤ 2× unloaded, memory under the limit".into(),
            Some(ratio <= 2.0 && n.peak_rss_mib < n.memory_limit_mib + 512.0 && n.bombs_failed == n.bombs),
            format!(
                "p99 {:.1} ms loaded vs {:.1} ms unloaded ({ratio:.2}×); peak RSS {:.0} MiB, query memory limit {:.0} MiB; {} of {} bombs refused or stopped",
                n.loaded_p99_ms, n.unloaded_p99_ms, n.peak_rss_mib, n.memory_limit_mib, n.bombs_failed, n.bombs
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
    if !r.protocols.is_empty() {
        let _ = writeln!(s, "\n| protocol comparison | protocol | runs | errors | rows | p50 ms | p99 ms | rows/s | MB/s |");
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for p in &r.protocols {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.1} |",
                p.workload,
                p.protocol,
                p.runs,
                p.errors,
                p.rows,
                p.p50_ms,
                p.p99_ms,
                p.rows_per_s,
                p.bytes_per_s / 1e6
            );
        }
    }
    if !r.mix.is_empty() {
        let _ = writeln!(
            s,
            "\n| sustained mix | tenants | target QPS | achieved QPS | rate held | completed | errors | p50 ms | p95 ms | p99 ms | p99 ms after 1 s |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|");
        for m in &r.mix {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                m.engine,
                m.tenants,
                m.target_qps,
                m.achieved_qps,
                if m.rate_held { "yes" } else { "no" },
                m.completed,
                m.errors,
                m.p50_ms,
                m.p95_ms,
                m.p99_ms,
                m.p99_after_first_second_ms
            );
        }
    }
    for m in &r.mix {
        let seconds: Vec<String> = m.p99_by_second_ms.iter().map(|ms| format!("{ms:.1}")).collect();
        let _ = writeln!(s, "\np99 ms second by second at {} QPS: {}", m.target_qps, seconds.join(", "));
    }
    if r.mix.len() > 1 {
        match r.mix.iter().filter(|m| m.rate_held).max_by_key(|m| m.target_qps) {
            Some(k) => {
                let _ = writeln!(
                    s,
                    "\nknee: {} QPS is the highest rate held (p99 {:.1} ms); {}",
                    k.target_qps,
                    k.p99_ms,
                    match r.mix.iter().find(|m| !m.rate_held) {
                        Some(m) => format!("{} QPS was not ({:.0} achieved, {} errors)", m.target_qps, m.achieved_qps, m.errors),
                        None => "every rate tried was held".into(),
                    }
                );
            }
            None => {
                let _ = writeln!(s, "\nknee: below {} QPS (no rate tried was held)", r.mix[0].target_qps);
            }
        }
    }
    if let Some(n) = &r.neighbour {
        let _ = writeln!(
            s,
            "\n| noisy neighbour | tenants | target QPS | seconds | p99 ms alone | p99 ms under bombs | errors alone / under bombs | bombs refused or stopped | peak RSS MiB | query memory limit MiB |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|");
        let _ = writeln!(
            s,
            "| omnisql | {} | {} | {:.0} | {:.1} | {:.1} | {} / {} | {} of {} | {:.0} | {:.0} |",
            n.tenants,
            n.target_qps,
            n.seconds,
            n.unloaded_p99_ms,
            n.loaded_p99_ms,
            n.unloaded_errors,
            n.loaded_errors,
            n.bombs_failed,
            n.bombs,
            n.peak_rss_mib,
            n.memory_limit_mib
        );
    }
    if let Some(d) = &r.dlt {
        let omnisql = find(r, "join_3_sources", "omnisql").map_or(0.0, |w| w.p50_ms);
        let _ = writeln!(s, "\n| outside baseline: dlt → DuckDB, then SQL | seconds | upstream requests | rows |");
        let _ = writeln!(s, "|---|---:|---:|---:|");
        let _ = writeln!(
            s,
            "| fresh question (load + query) | {:.2} | {} | {} |",
            d.load_seconds + d.first_query_seconds,
            d.upstream_requests,
            d.rows
        );
        let _ = writeln!(
            s,
            "| repeated question (query only, data as old as the load) | {:.4} | 0 | {} |",
            d.repeat_query_seconds, d.rows
        );
        let _ = writeln!(s, "| OmniSQL, live (join_3_sources p50) | {:.3} | – | – |", omnisql / 1000.0);
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
        "# OmniSQL benchmark\n\n![latency distributions](bench.png)\n\nLatency model: {:?}; sandbox scale {}; {} cores. The `naive` engine is OmniSQL with \
         pushdown, prefetch, the cache and parallel requests turned off. Workloads ask for fresh data (`max_staleness = 0`; GitHub pages \
         are revalidated, which costs round trips but no quota); `warm_join_3_sources` and the sustained mix may use the cache{}. The physical \
         limit is the fewest sequential upstream round trips times the modelled latency.\n\n{}",
        r.latency_model,
        r.scale,
        r.cores,
        if r.kept_results { " and kept results" } else { " but not kept results (`--no-kept-results`)" },
        table(r)
    );
    put("bench.md", md)?;
    let png = dir.join("bench.png");
    chart(r, &png).map_err(|e| BenchError::Write { path: png.display().to_string(), source: std::io::Error::other(e) })
}

/// Latency distributions as a PNG: one panel per workload, the cumulative share of queries answered
/// within each latency, OmniSQL against the naive engine.
pub fn chart(r: &Report, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    // A font that ships inside a crate, so the chart renders the same on every machine.
    plotters::style::register_font("sans-serif", FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
        .map_err(|_| "font".to_string())?;
    let mut workloads: Vec<String> = Vec::new();
    for key in r.samples_ms.keys() {
        let name = key.split('/').next().unwrap_or_default().to_string();
        if !workloads.contains(&name) {
            workloads.push(name);
        }
    }
    let cols = 3usize;
    let rows = workloads.len().div_ceil(cols).max(1);
    let root = BitMapBackend::new(path, (1500, 420 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((rows, cols));
    for (panel, workload) in panels.iter().zip(&workloads) {
        let series: Vec<(&str, RGBColor, &Vec<f64>)> = [("omnisql", BLUE), ("naive", RED)]
            .into_iter()
            .filter_map(|(engine, color)| r.samples_ms.get(&format!("{workload}/{engine}")).map(|s| (engine, color, s)))
            .filter(|(_, _, s)| !s.is_empty())
            .collect();
        let max = series.iter().flat_map(|(_, _, s)| s.iter().copied()).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(workload, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0.0..max, 0.0..1.05)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("latency (ms)")
            .y_desc("share of queries")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for (engine, color, samples) in series {
            let mut sorted = samples.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len() as f64;
            let points: Vec<(f64, f64)> = sorted.iter().enumerate().map(|(i, v)| (*v, (i + 1) as f64 / n)).collect();
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(|e| e.to_string())?;
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(engine)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
