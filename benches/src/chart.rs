//! What the matrix writes for people: the targets as ratios, markdown tables, the README
//! section and an SVG chart.
//!
//! The chart is hand-written SVG rather than plotters: it is one kind of chart (horizontal
//! bars, one panel per case), about a hundred lines, needs no font files or image crates, and
//! its output is plain text that diffs well when committed.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// The median metrics of one (case, server, client) cell.
fn cell<'a>(results: &'a Value, case: &str, server: &str, client: &str) -> Option<&'a Value> {
    results["cells"].as_array()?.iter().find_map(|c| {
        (c["case"] == case && c["server"] == server && c["client"] == client)
            .then_some(&c["median"])
    })
}

fn metric(results: &Value, case: &str, server: &str, client: &str, name: &str) -> Option<f64> {
    cell(results, case, server, client)?[name].as_f64()
}

fn case_label(results: &Value, case: &str) -> String {
    results["cases"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == case))
        .and_then(|c| c["label"].as_str())
        .unwrap_or(case)
        .to_string()
}

fn is_throughput(results: &Value, case: &str) -> bool {
    results["cases"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == case))
        .and_then(|c| c["payload"].as_u64())
        .is_some_and(|p| p >= 64 * 1024)
}

fn names(results: &Value, key: &str) -> Vec<String> {
    results[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn case_names(results: &Value) -> Vec<String> {
    results["cases"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The issue's targets: (what, case, metric, higher is better, wanted ratio).
const TARGETS: [(&str, &str, &str, bool, f64); 4] = [
    (
        "unary calls/s, 64 in flight",
        "unary-64",
        "calls_per_s",
        true,
        1.3,
    ),
    (
        "unary p50 latency, 1 in flight",
        "unary-1",
        "p50_us",
        false,
        0.8,
    ),
    (
        "streaming ping-pong calls/s, 64 streams",
        "stream-64",
        "calls_per_s",
        true,
        1.5,
    ),
    (
        "streaming 1 MiB throughput (bytes/s)",
        "stream-1m",
        "bytes_per_s",
        true,
        1.0,
    ),
];

/// What a smoke run says about its figures, wherever it shows them.
pub const SMOKE_NOTE: &str = "Smoke run (debug build, one very short round per cell): it only \
    checks that every pair still runs. These figures are not meaningful and nothing is checked \
    against the targets.";

fn is_smoke(results: &Value) -> bool {
    results["settings"]["smoke"].as_bool().unwrap_or(false)
}

fn load(results: &Value) -> u64 {
    results["settings"]["load"].as_u64().unwrap_or(0)
}

/// How the run's load reads in titles: `idle machine` or `N CPU hog(s) beside each pair`.
fn load_words(results: &Value) -> String {
    match load(results) {
        0 => "idle machine".into(),
        1 => "1 CPU hog beside each pair".into(),
        n => format!("{n} CPU hogs beside each pair"),
    }
}

/// Adds `targets` (plexus→plexus against tonic→tonic), `server_ratios` (plexus server
/// against tonic server under each client) and `executor_ratios` (plexus's default executor
/// against `SmolExecutor`) to the results. A smoke run's verdicts are null: its figures are
/// not meaningful.
pub fn with_targets(mut results: Value) -> Value {
    let smoke = is_smoke(&results);
    let mut targets = Vec::new();
    for (what, case, name, higher, want) in TARGETS {
        let p = metric(&results, case, "plexus", "plexus", name);
        let t = metric(&results, case, "tonic", "tonic", name);
        let ratio = match (p, t) {
            (Some(p), Some(t)) if t > 0.0 => Some(p / t),
            _ => None,
        };
        let met = ratio
            .filter(|_| !smoke)
            .map(|r| if higher { r >= want } else { r <= want });
        targets.push(json!({
            "target": format!("plexus→plexus {what} {} {want}× tonic→tonic",
                if higher { "≥" } else { "≤" }),
            "case": case, "metric": name, "plexus": p, "tonic": t,
            "ratio": ratio, "want": want, "higher_is_better": higher, "met": met,
        }));
    }
    let mut server_ratios = Vec::new();
    for client in names(&results, "clients") {
        for case in case_names(&results) {
            let p = metric(&results, &case, "plexus", &client, "calls_per_s");
            let t = metric(&results, &case, "tonic", &client, "calls_per_s");
            if let (Some(p), Some(t)) = (p, t) {
                if t > 0.0 {
                    server_ratios.push(json!({
                        "client": client, "case": case, "plexus_server": p, "tonic_server": t,
                        "ratio": p / t, "met": (!smoke).then_some(p / t >= 1.0),
                    }));
                }
            }
        }
    }
    let executor_ratios = executor_ratios(&results);
    results["targets"] = json!(targets);
    results["server_ratios"] = json!(server_ratios);
    results["executor_ratios"] = json!(executor_ratios);
    results
}

/// The comparisons of plexus's default executor with `SmolExecutor`: (key, what, server on
/// the default executor, client on it, server on smol, client on smol, metric). `both` swaps
/// the executor on both sides; `server` and `client` swap one side against tonic.
const EXECUTOR_PAIRS: [(&str, &str, &str, &str, &str, &str, &str); 4] = [
    (
        "both_calls",
        "calls/s, both sides",
        "plexus",
        "plexus",
        "plexus-smol",
        "plexus-smol",
        "calls_per_s",
    ),
    (
        "both_p50",
        "p50, both sides",
        "plexus",
        "plexus",
        "plexus-smol",
        "plexus-smol",
        "p50_us",
    ),
    (
        "server_calls",
        "calls/s, server (tonic client)",
        "plexus",
        "tonic",
        "plexus-smol",
        "tonic",
        "calls_per_s",
    ),
    (
        "client_calls",
        "calls/s, client (tonic server)",
        "tonic",
        "plexus",
        "tonic",
        "plexus-smol",
        "calls_per_s",
    ),
];

/// Default executor ÷ `SmolExecutor` per case, for every comparison both rows were run for.
fn executor_ratios(results: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for case in case_names(results) {
        for (key, what, ds, dc, ss, sc, name) in EXECUTOR_PAIRS {
            let d = metric(results, &case, ds, dc, name);
            let m = metric(results, &case, ss, sc, name);
            if let (Some(d), Some(m)) = (d, m) {
                if m > 0.0 {
                    out.push(json!({
                        "case": case, "comparison": key, "what": what, "metric": name,
                        "default": d, "smol": m, "ratio": d / m,
                    }));
                }
            }
        }
    }
    out
}

fn fmt_num(x: f64) -> String {
    let rounded = x.round() as i64;
    let digits = rounded.abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if rounded < 0 { format!("-{out}") } else { out }
}

fn fmt_value(name: &str, v: f64) -> String {
    match name {
        "bytes_per_s" => format!("{:.1} MiB/s", v / (1024.0 * 1024.0)),
        "p50_us" => format!("{v:.1} µs"),
        _ => format!("{}/s", fmt_num(v)),
    }
}

fn verdict(met: &Value) -> &'static str {
    match met.as_bool() {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "n/a",
    }
}

/// The targets table (markdown), also printed at the end of a run. A smoke run's table has
/// no verdict column and says why.
pub fn targets_markdown(results: &Value) -> String {
    let smoke = is_smoke(results);
    let mut s = String::new();
    if smoke {
        let _ = writeln!(s, "{SMOKE_NOTE}\n");
        s.push_str("| target | plexus→plexus | tonic→tonic | ratio |\n");
        s.push_str("|---|---:|---:|---:|\n");
    } else {
        s.push_str("| target | plexus→plexus | tonic→tonic | ratio | met |\n");
        s.push_str("|---|---:|---:|---:|:---:|\n");
    }
    let verdict_cell = |met: &Value| {
        if smoke {
            String::new()
        } else {
            format!(" {} |", verdict(met))
        }
    };
    for t in results["targets"].as_array().into_iter().flatten() {
        let name = t["metric"].as_str().unwrap_or("");
        let v = |key: &str| {
            t[key]
                .as_f64()
                .map_or_else(|| "n/a".into(), |x| fmt_value(name, x))
        };
        let ratio = t["ratio"]
            .as_f64()
            .map_or_else(|| "n/a".into(), |r| format!("{r:.2}×"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {ratio} |{}",
            t["target"].as_str().unwrap_or(""),
            v("plexus"),
            v("tonic"),
            verdict_cell(&t["met"])
        );
    }
    let ratios: Vec<&Value> = results["server_ratios"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if !ratios.is_empty() {
        let (worst, best) = ratios.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| {
            let x = r["ratio"].as_f64().unwrap_or(0.0);
            (lo.min(x), hi.max(x))
        });
        let met = ratios.iter().all(|r| r["met"] == true);
        let _ = writeln!(
            s,
            "| plexus server ≥ tonic server under the same client (calls/s, every client and case) | | | {worst:.2}× … {best:.2}× |{}",
            verdict_cell(&json!(met))
        );
    }
    s
}

fn settings_line(results: &Value) -> String {
    let st = &results["settings"];
    let m = &results["machine"];
    let load = match load(results) {
        0 => "Idle machine: no CPU hogs.".to_string(),
        n => format!(
            "Under load: {n} CPU hog(s) (`plexus-bench spin`, one busy loop each) ran beside \
             each pair, started before its client and killed after."
        ),
    };
    format!(
        "Commit `{}`, {} cores ({}), Linux {}. {} round(s) per cell of {} s after {} s warm-up, \
         pairs alternating; medians. {load} The whole run took {:.0} s.",
        results["git_commit"].as_str().unwrap_or("?"),
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        st["rounds"],
        st["duration_s"],
        st["warmup_s"],
        results["elapsed_s"].as_f64().unwrap_or(0.0)
    )
}

/// What each client or server name in the tables is.
const LEGEND: &str = "`plexus`: the Rust client or server on plexus's default executor (its \
    own work-stealing pool); `plexus-smol`: the same code with the channel or server and the \
    client's call loops on `SmolExecutor` (smol's async-executor), nothing on the pool; \
    `plexus-c`: the C client through libplexus, or the C echo server on its server ABI \
    (unary calls answered in a callback on plexus's worker; `plexus-c-queue`: taken from a \
    completion queue by its own threads); \
    `plexus-py`: the Python package (`plexus.aio`); \
    `tonic`: tonic on a multi-threaded tokio runtime; `grpcio`: grpcio's Python asyncio API.";

/// The full results as markdown (`latest.md`).
pub fn markdown(results: &Value) -> String {
    let servers = names(results, "servers");
    let clients = names(results, "clients");
    let mut s = format!("# plexus benchmark results: {}\n\n", load_words(results));
    if is_smoke(results) {
        let _ = writeln!(s, "**{SMOKE_NOTE}**\n");
    }
    let _ = writeln!(s, "{}\n", settings_line(results));
    s.push_str(
        "Rows are clients, columns servers, all on TCP loopback of one machine. Each cell: \
         calls/s (MiB/s of payload both ways for the 1 MiB case), then p50 / p99 latency in µs. \
         Generated by `plexus-bench matrix`; the raw rounds are in the `.json` file of the \
         same name.\n\n",
    );
    let _ = writeln!(s, "{LEGEND}\n");
    s.push_str("## Targets\n\n");
    s.push_str(&targets_markdown(results));
    for case in case_names(results) {
        let throughput = is_throughput(results, &case);
        let _ = writeln!(s, "\n## {}\n", case_label(results, &case));
        let _ = writeln!(s, "| client \\ server | {} |", servers.join(" | "));
        let _ = writeln!(s, "|---|{}", "---:|".repeat(servers.len()));
        for client in &clients {
            let mut row = format!("| {client} |");
            for server in &servers {
                let text = match cell(results, &case, server, client) {
                    Some(m) if m.get("calls_per_s").is_some() => {
                        let rate = if throughput {
                            format!(
                                "{:.1} MiB/s",
                                m["bytes_per_s"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
                            )
                        } else {
                            fmt_num(m["calls_per_s"].as_f64().unwrap_or(0.0))
                        };
                        format!(
                            "{rate} ({:.0} / {:.0})",
                            m["p50_us"].as_f64().unwrap_or(0.0),
                            m["p99_us"].as_f64().unwrap_or(0.0)
                        )
                    }
                    Some(_) => "failed".into(),
                    None => "–".into(),
                };
                let _ = write!(row, " {text} |");
            }
            s.push_str(&row);
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "\nCPU per call, µs (client / server):\n\n| client \\ server | {} |",
            servers.join(" | ")
        );
        let _ = writeln!(s, "|---|{}", "---:|".repeat(servers.len()));
        for client in &clients {
            let mut row = format!("| {client} |");
            for server in &servers {
                let text = match cell(results, &case, server, client) {
                    Some(m) if m.get("cpu_us_per_call").is_some() => format!(
                        "{:.1} / {}",
                        m["cpu_us_per_call"].as_f64().unwrap_or(0.0),
                        m["server_cpu_us_per_call"]
                            .as_f64()
                            .map_or_else(|| "?".into(), |v| format!("{v:.1}"))
                    ),
                    _ => "–".into(),
                };
                let _ = write!(row, " {text} |");
            }
            s.push_str(&row);
            s.push('\n');
        }
    }
    if let Some(ratios) = results["server_ratios"]
        .as_array()
        .filter(|a| !a.is_empty())
    {
        s.push_str("\n## plexus server ÷ tonic server under the same client (calls/s)\n\n");
        let cases = case_names(results);
        let _ = writeln!(s, "| client | {} |", cases.join(" | "));
        let _ = writeln!(s, "|---|{}", "---:|".repeat(cases.len()));
        for client in &clients {
            let mut row = format!("| {client} |");
            for case in &cases {
                let r = ratios
                    .iter()
                    .find(|r| r["client"] == client.as_str() && r["case"] == case.as_str())
                    .and_then(|r| r["ratio"].as_f64());
                let _ = write!(row, " {} |", ratio_cell(r));
            }
            s.push_str(&row);
            s.push('\n');
        }
    }
    s.push_str(&executor_markdown(results));
    if let Some(skipped) = results["skipped"].as_array().filter(|a| !a.is_empty()) {
        s.push_str("\n## Not measured\n\n");
        for sk in skipped {
            let _ = writeln!(
                s,
                "- {} `{}`: {}",
                sk["side"].as_str().unwrap_or(""),
                sk["name"].as_str().unwrap_or(""),
                sk["reason"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(failures) = results["failures"].as_array().filter(|a| !a.is_empty()) {
        s.push_str("\n## Failed cells\n\n");
        for f in failures {
            let _ = writeln!(s, "- {}", f.as_str().unwrap_or(""));
        }
    }
    s
}

/// The default executor against `SmolExecutor` (markdown), when both were run.
fn executor_markdown(results: &Value) -> String {
    let Some(ratios) = results["executor_ratios"]
        .as_array()
        .filter(|a| !a.is_empty())
    else {
        return String::new();
    };
    let mut s = String::from(
        "\n## plexus's default executor ÷ SmolExecutor\n\n\
         Same run, same code, only the executor differs. calls/s: above 1× the default pool is \
         faster; p50: below 1× it is faster. Both sides: `plexus`→`plexus` over \
         `plexus-smol`→`plexus-smol`; server: the two plexus servers under the tonic client; \
         client: the two plexus clients against the tonic server.\n\n",
    );
    let columns: Vec<(&str, &str)> = EXECUTOR_PAIRS.iter().map(|p| (p.0, p.1)).collect();
    let _ = writeln!(
        s,
        "| case | {} |",
        columns.iter().map(|c| c.1).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "|---|{}", "---:|".repeat(columns.len()));
    for case in case_names(results) {
        let mut row = format!("| {} |", case_label(results, &case));
        for (key, _) in &columns {
            let r = ratios
                .iter()
                .find(|r| r["case"] == case.as_str() && r["comparison"] == *key)
                .and_then(|r| r["ratio"].as_f64());
            let _ = write!(row, " {} |", ratio_cell(r));
        }
        s.push_str(&row);
        s.push('\n');
    }
    s
}

/// The README markers a run's section goes between: the idle table, or the loaded one.
pub fn readme_markers(load: usize) -> (&'static str, &'static str) {
    if load == 0 {
        (BEGIN, END)
    } else {
        (LOAD_BEGIN, LOAD_END)
    }
}

/// The README's benchmark table: the targets and the same-implementation pairs (plexus on
/// both executors), and plexus against tonic in both directions.
pub fn readme_section(results: &Value) -> String {
    let stem = crate::matrix::output_stem(usize::try_from(load(results)).unwrap_or(0));
    let mut s = String::new();
    let _ = writeln!(s, "{}\n", settings_line(results));
    s.push_str(&targets_markdown(results));
    s.push_str("\n| case | plexus→plexus | plexus-smol→plexus-smol | tonic→tonic | grpcio→grpcio | plexus client → tonic | tonic client → plexus |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for case in case_names(results) {
        let name = if is_throughput(results, &case) {
            "bytes_per_s"
        } else {
            "calls_per_s"
        };
        let v = |server: &str, client: &str| {
            metric(results, &case, server, client, name)
                .map_or_else(|| "–".into(), |x| fmt_value(name, x))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            case_label(results, &case),
            v("plexus", "plexus"),
            v("plexus-smol", "plexus-smol"),
            v("tonic", "tonic"),
            v("grpcio", "grpcio"),
            v("tonic", "plexus"),
            v("plexus", "tonic"),
        );
    }
    let _ = writeln!(
        s,
        "\n![calls/s of every client and server pair per case, {}](benches/results/{stem}.svg)\n\n\
         Every pair, with latencies and CPU per call: [benches/results/{stem}.md](benches/results/{stem}.md).",
        load_words(results)
    );
    s
}

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";
const LOAD_BEGIN: &str = "<!-- bench-load:begin -->";
const LOAD_END: &str = "<!-- bench-load:end -->";

/// `readme` with the text between `markers` (begin, end) replaced, or None without them.
pub fn replace_readme_section(
    readme: &str,
    section: &str,
    markers: (&str, &str),
) -> Option<String> {
    let (begin, end) = markers;
    let start = readme.find(begin)? + begin.len();
    let end = readme[start..].find(end)? + start;
    Some(format!("{}\n{section}{}", &readme[..start], &readme[end..]))
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn color(client: &str) -> &'static str {
    match client {
        "plexus" => "#1f5fa8",
        "plexus-smol" => "#7b4fb0",
        "plexus-c" => "#4a90d9",
        "plexus-py" => "#8cbce8",
        "tonic" => "#d9731f",
        "grpcio" => "#3a9a55",
        _ => "#888888",
    }
}

/// The chart (`latest.svg`): one panel per case, a bar per client→server pair, grouped by
/// server, scaled to the panel's largest value.
pub fn svg(results: &Value) -> String {
    const WIDTH: f64 = 920.0;
    const LABEL_W: f64 = 190.0;
    const BAR_MAX: f64 = 560.0;
    const ROW: f64 = 17.0;
    const GAP: f64 = 8.0;
    let servers = names(results, "servers");
    let clients = names(results, "clients");
    let cases = case_names(results);
    let mut body = String::new();
    let mut y = 34.0;
    let title = if is_smoke(results) {
        "smoke run, figures not meaningful".to_string()
    } else {
        load_words(results)
    };
    let _ = writeln!(
        body,
        r##"<text x="10" y="22" font-size="15" font-weight="bold">plexus, tonic and grpcio, every client → server pair: {}</text>"##,
        xml(&title)
    );
    for case in &cases {
        let throughput = is_throughput(results, case);
        let name = if throughput {
            "bytes_per_s"
        } else {
            "calls_per_s"
        };
        let max = servers
            .iter()
            .flat_map(|s| {
                clients
                    .iter()
                    .filter_map(move |c| metric(results, case, s, c, name))
            })
            .fold(0.0f64, f64::max);
        y += 18.0;
        let _ = writeln!(
            body,
            r##"<text x="10" y="{y}" font-size="13" font-weight="bold">{} ({})</text>"##,
            xml(&case_label(results, case)),
            if throughput {
                "MiB/s of payload"
            } else {
                "calls/s"
            }
        );
        y += 6.0;
        for server in &servers {
            for client in &clients {
                let v = metric(results, case, server, client, name);
                let label = format!("{client} → {server}");
                let _ = writeln!(
                    body,
                    r##"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"##,
                    LABEL_W - 6.0,
                    y + ROW - 5.0,
                    xml(&label)
                );
                match v {
                    Some(v) if max > 0.0 => {
                        let w = (v / max * BAR_MAX).max(1.0);
                        let text = if throughput {
                            format!("{:.1}", v / (1024.0 * 1024.0))
                        } else {
                            fmt_num(v)
                        };
                        let _ = writeln!(
                            body,
                            r##"<rect x="{LABEL_W}" y="{}" width="{w:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{}" font-size="11">{text}</text>"##,
                            y + 2.0,
                            ROW - 4.0,
                            color(client),
                            LABEL_W + w + 4.0,
                            y + ROW - 5.0
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            body,
                            r##"<text x="{}" y="{}" font-size="11" fill="#999">not measured</text>"##,
                            LABEL_W + 4.0,
                            y + ROW - 5.0
                        );
                    }
                }
                y += ROW;
            }
            y += GAP;
        }
    }
    let _ = writeln!(
        body,
        r##"<text x="10" y="{}" font-size="11" fill="#555">{}</text>"##,
        y + 14.0,
        xml(&format!(
            "medians, longer is better; commit {}, {} cores, {} round(s) × {} s per cell, {}",
            results["git_commit"].as_str().unwrap_or("?"),
            results["machine"]["cores"],
            results["settings"]["rounds"],
            results["settings"]["duration_s"],
            load_words(results)
        ))
    );
    let height = y + 26.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

/// A ratio as a table cell: `1.23×`, or a dash when it could not be computed.
fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        sample_with(json!({"rounds": 1, "duration_s": 1.0, "warmup_s": 0.5}))
    }

    fn sample_with(settings: Value) -> Value {
        let cell = |case: &str, server: &str, client: &str, rate: f64, p50: f64| {
            json!({"case": case, "server": server, "client": client, "rounds": [],
                   "median": {"calls_per_s": rate, "p50_us": p50, "p99_us": p50 * 3.0,
                              "bytes_per_s": rate * 10.0, "cpu_us_per_call": 5.0}})
        };
        with_targets(json!({
            "cases": [{"name": "unary-64", "label": "unary, 64 in flight", "payload": 0},
                      {"name": "unary-1", "label": "unary, 1 in flight", "payload": 0}],
            "servers": ["plexus", "plexus-smol", "tonic"],
            "clients": ["plexus", "plexus-smol", "tonic"],
            "settings": settings,
            "machine": {"cores": 2, "cpu": "x", "kernel": "y"},
            "git_commit": "abc",
            "cells": [
                cell("unary-64", "plexus", "plexus", 26000.0, 50.0),
                cell("unary-64", "tonic", "tonic", 20000.0, 60.0),
                cell("unary-64", "plexus", "tonic", 21000.0, 60.0),
                cell("unary-64", "tonic", "plexus", 22000.0, 60.0),
                cell("unary-1", "plexus", "plexus", 9000.0, 70.0),
                cell("unary-1", "tonic", "tonic", 8000.0, 100.0),
                cell("unary-64", "plexus-smol", "plexus-smol", 20000.0, 100.0),
                cell("unary-64", "plexus-smol", "tonic", 14000.0, 60.0),
                cell("unary-64", "tonic", "plexus-smol", 11000.0, 60.0),
            ],
            "skipped": [{"side": "client", "name": "plexus-c", "reason": "not yet"}],
            "failures": [],
        }))
    }

    #[test]
    fn targets_are_ratios_of_the_same_run() {
        let r = sample();
        let t = &r["targets"][0];
        assert_eq!(t["case"], "unary-64");
        assert!((t["ratio"].as_f64().unwrap() - 1.3).abs() < 1e-9);
        assert_eq!(t["met"], true);
        let p50 = &r["targets"][1];
        assert!((p50["ratio"].as_f64().unwrap() - 0.7).abs() < 1e-9);
        assert_eq!(p50["met"], true);
        assert_eq!(r["targets"][2]["met"], Value::Null);
        // Under the tonic client: plexus server 21000 vs tonic server 20000.
        let sr = r["server_ratios"].as_array().unwrap();
        assert!(
            sr.iter()
                .any(|x| x["client"] == "tonic"
                    && (x["ratio"].as_f64().unwrap() - 1.05).abs() < 1e-9)
        );
    }

    #[test]
    fn outputs_name_every_pair() {
        let r = sample();
        let md = markdown(&r);
        assert!(md.contains("| plexus | 26,000 (50 / 150) |"), "{md}");
        assert!(md.contains("`plexus-c`: not yet"));
        let svg = svg(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("tonic → plexus"));
        assert!(svg.contains("plexus-smol → plexus-smol"));
        let readme = "intro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nrest\n";
        let new = replace_readme_section(readme, &readme_section(&r), readme_markers(0)).unwrap();
        assert!(new.starts_with("intro\n<!-- bench:begin -->\n"));
        assert!(new.contains("26,000/s") && !new.contains("old") && new.ends_with("rest\n"));
        assert!(new.contains("| 26,000/s | 20,000/s | 20,000/s |"), "{new}");
        assert!(new.contains("benches/results/latest.svg"));
        assert!(replace_readme_section("no markers", "x", readme_markers(0)).is_none());
        assert_eq!(fmt_num(1234567.4), "1,234,567");
    }

    #[test]
    fn the_default_executor_is_compared_with_smol() {
        let r = sample();
        let ratio = |key: &str| {
            r["executor_ratios"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["case"] == "unary-64" && x["comparison"] == key)
                .and_then(|x| x["ratio"].as_f64())
        };
        // 26000 / 20000 calls/s; p50 50 / 100 µs; 21000 / 14000 (server); 22000 / 11000.
        assert!((ratio("both_calls").unwrap() - 1.3).abs() < 1e-9);
        assert!((ratio("both_p50").unwrap() - 0.5).abs() < 1e-9);
        assert!((ratio("server_calls").unwrap() - 1.5).abs() < 1e-9);
        assert!((ratio("client_calls").unwrap() - 2.0).abs() < 1e-9);
        let md = markdown(&r);
        assert!(
            md.contains("## plexus's default executor ÷ SmolExecutor"),
            "{md}"
        );
        assert!(md.contains("| unary, 64 in flight | 1.30× | 0.50× | 1.50× | 2.00× |"));
        // unary-1 has no smol cells: no ratios, a dash in the table.
        assert!(md.contains("| unary, 1 in flight | – | – | – | – |"));
    }

    #[test]
    fn the_load_is_named_in_every_output() {
        let idle = sample();
        assert!(markdown(&idle).starts_with("# plexus benchmark results: idle machine\n"));
        assert!(markdown(&idle).contains("Idle machine: no CPU hogs."));
        assert!(svg(&idle).contains("every client → server pair: idle machine"));
        let loaded =
            sample_with(json!({"rounds": 1, "duration_s": 1.0, "warmup_s": 0.5, "load": 2}));
        let md = markdown(&loaded);
        assert!(md.starts_with("# plexus benchmark results: 2 CPU hogs beside each pair\n"));
        assert!(md.contains("Under load: 2 CPU hog(s)"), "{md}");
        assert!(svg(&loaded).contains("every client → server pair: 2 CPU hogs beside each pair"));
        let readme = "<!-- bench:begin -->\nidle\n<!-- bench:end -->\n\
                      <!-- bench-load:begin -->\nold\n<!-- bench-load:end -->\n";
        let new =
            replace_readme_section(readme, &readme_section(&loaded), readme_markers(2)).unwrap();
        assert!(new.contains("idle") && !new.contains("old"), "{new}");
        assert!(new.contains("benches/results/latest-load2.svg"));
        let no_load_markers = "<!-- bench:begin -->\nidle\n<!-- bench:end -->\n";
        assert!(replace_readme_section(no_load_markers, "x", readme_markers(2)).is_none());
    }

    #[test]
    fn a_smoke_run_gives_no_verdicts() {
        let smoke =
            sample_with(json!({"rounds": 1, "duration_s": 0.15, "warmup_s": 0.05, "smoke": true}));
        assert!(
            smoke["targets"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["met"].is_null())
        );
        let table = targets_markdown(&smoke);
        assert!(table.starts_with(SMOKE_NOTE), "{table}");
        assert!(table.contains("| target | plexus→plexus | tonic→tonic | ratio |\n"));
        assert!(!table.contains("met") && !table.contains("yes") && !table.contains("**no**"));
        assert!(markdown(&smoke).contains(SMOKE_NOTE));
        assert!(svg(&smoke).contains("smoke run, figures not meaningful"));
        // A real run keeps its verdicts.
        assert!(targets_markdown(&sample()).contains("| met |"));
    }
}
