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

/// Adds `targets` (plexus→plexus against tonic→tonic) and `server_ratios` (plexus server
/// against tonic server under each client) to the results.
pub fn with_targets(mut results: Value) -> Value {
    let mut targets = Vec::new();
    for (what, case, name, higher, want) in TARGETS {
        let p = metric(&results, case, "plexus", "plexus", name);
        let t = metric(&results, case, "tonic", "tonic", name);
        let ratio = match (p, t) {
            (Some(p), Some(t)) if t > 0.0 => Some(p / t),
            _ => None,
        };
        let met = ratio.map(|r| if higher { r >= want } else { r <= want });
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
                        "ratio": p / t, "met": p / t >= 1.0,
                    }));
                }
            }
        }
    }
    results["targets"] = json!(targets);
    results["server_ratios"] = json!(server_ratios);
    results
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

/// The targets table (markdown), also printed at the end of a run.
pub fn targets_markdown(results: &Value) -> String {
    let mut s = String::new();
    s.push_str("| target | plexus→plexus | tonic→tonic | ratio | met |\n");
    s.push_str("|---|---:|---:|---:|:---:|\n");
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
            "| {} | {} | {} | {ratio} | {} |",
            t["target"].as_str().unwrap_or(""),
            v("plexus"),
            v("tonic"),
            verdict(&t["met"])
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
            "| plexus server ≥ tonic server under the same client (calls/s, every client and case) | | | {worst:.2}× … {best:.2}× | {} |",
            verdict(&json!(met))
        );
    }
    s
}

fn settings_line(results: &Value) -> String {
    let st = &results["settings"];
    let m = &results["machine"];
    format!(
        "Commit `{}`, {} cores ({}), Linux {}. {} round(s) per cell of {} s after {} s warm-up, \
         pairs alternating; medians. The whole run took {:.0} s.",
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

/// The full results as markdown (`latest.md`).
pub fn markdown(results: &Value) -> String {
    let servers = names(results, "servers");
    let clients = names(results, "clients");
    let mut s = String::from("# plexus benchmark results\n\n");
    let _ = writeln!(s, "{}\n", settings_line(results));
    s.push_str(
        "Rows are clients, columns servers, all on TCP loopback of one machine. Each cell: \
         calls/s (MiB/s of payload both ways for the 1 MiB case), then p50 / p99 latency in µs. \
         Generated by `plexus-bench matrix`; the raw rounds are in `latest.json`.\n\n",
    );
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
                let _ = write!(
                    row,
                    " {} |",
                    r.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
                );
            }
            s.push_str(&row);
            s.push('\n');
        }
    }
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

/// The README's benchmark table: the targets and the three same-implementation pairs.
pub fn readme_section(results: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}\n", settings_line(results));
    s.push_str(&targets_markdown(results));
    s.push_str("\n| case | plexus→plexus | tonic→tonic | grpcio→grpcio | plexus client → tonic | tonic client → plexus |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|\n");
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
            "| {} | {} | {} | {} | {} | {} |",
            case_label(results, &case),
            v("plexus", "plexus"),
            v("tonic", "tonic"),
            v("grpcio", "grpcio"),
            v("tonic", "plexus"),
            v("plexus", "tonic"),
        );
    }
    s.push_str(
        "\n![calls/s of every client and server pair per case](benches/results/latest.svg)\n\n\
         Every pair, with latencies and CPU per call: [benches/results/latest.md](benches/results/latest.md).\n",
    );
    s
}

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";

/// `readme` with the text between the bench markers replaced, or None without markers.
pub fn replace_readme_section(readme: &str, section: &str) -> Option<String> {
    let start = readme.find(BEGIN)? + BEGIN.len();
    let end = readme[start..].find(END)? + start;
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
    let _ = writeln!(
        body,
        r##"<text x="10" y="22" font-size="15" font-weight="bold">plexus, tonic and grpcio: every client → server pair (medians; longer is better)</text>"##
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
            "commit {}, {} cores, {} round(s) × {} s per cell",
            results["git_commit"].as_str().unwrap_or("?"),
            results["machine"]["cores"],
            results["settings"]["rounds"],
            results["settings"]["duration_s"]
        ))
    );
    let height = y + 26.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        let cell = |case: &str, server: &str, client: &str, rate: f64, p50: f64| {
            json!({"case": case, "server": server, "client": client, "rounds": [],
                   "median": {"calls_per_s": rate, "p50_us": p50, "p99_us": p50 * 3.0,
                              "bytes_per_s": rate * 10.0, "cpu_us_per_call": 5.0}})
        };
        with_targets(json!({
            "cases": [{"name": "unary-64", "label": "unary, 64 in flight", "payload": 0},
                      {"name": "unary-1", "label": "unary, 1 in flight", "payload": 0}],
            "servers": ["plexus", "tonic"],
            "clients": ["plexus", "tonic"],
            "settings": {"rounds": 1, "duration_s": 1.0, "warmup_s": 0.5},
            "machine": {"cores": 2, "cpu": "x", "kernel": "y"},
            "git_commit": "abc",
            "cells": [
                cell("unary-64", "plexus", "plexus", 26000.0, 50.0),
                cell("unary-64", "tonic", "tonic", 20000.0, 60.0),
                cell("unary-64", "plexus", "tonic", 21000.0, 60.0),
                cell("unary-64", "tonic", "plexus", 22000.0, 60.0),
                cell("unary-1", "plexus", "plexus", 9000.0, 70.0),
                cell("unary-1", "tonic", "tonic", 8000.0, 100.0),
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
        let readme = "intro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nrest\n";
        let new = replace_readme_section(readme, &readme_section(&r)).unwrap();
        assert!(new.starts_with("intro\n<!-- bench:begin -->\n"));
        assert!(new.contains("26,000/s") && !new.contains("old") && new.ends_with("rest\n"));
        assert!(replace_readme_section("no markers", "x").is_none());
        assert_eq!(fmt_num(1234567.4), "1,234,567");
    }
}
