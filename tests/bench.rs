//! `rawload bench --quick` runs and produces well-formed output: a table on
//! stdout, JSON and an SVG chart. (Speed itself is measured by the bench,
//! never asserted by a test.)

mod common;

use common::*;

#[test]
fn quick_bench_produces_table_json_and_svg() {
    let _serial = serial();
    require_root();
    let dir = std::env::temp_dir().join(format!("rawload-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("bench.json"), dir.join("bench.svg"));
    let out = rawload(&[
        "bench",
        "--quick",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let table = ok(out);

    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| bulk") || l.starts_with("| ping-pong"))
        .collect();
    assert_eq!(
        rows.len(),
        7 + 4,
        "7 throughput rows and 4 latency rows:\n{table}"
    );
    assert!(
        table.contains("rawload/tcp")
            && table.contains("| redirected |")
            && table.contains("pinned to CPU 0"),
        "{table}"
    );

    let report = common::json(&std::fs::read_to_string(&json).unwrap(), "bench --json");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 7);
    for r in results {
        for mode in ["tcp", "rawload", "unix"] {
            let m = &r["modes"][mode];
            assert_eq!(m["samples"].as_array().map(Vec::len), Some(2), "{r}");
            assert!(m["median"].as_f64().is_some_and(|v| v > 0.0), "{r}");
        }
        assert!(r["rawload_vs_tcp"].as_f64().is_some_and(|v| v > 0.0));
        let share = r["rawload_redirected_share"]
            .as_f64()
            .expect("a redirected share");
        assert!((0.0..=1.0).contains(&share), "{r}");
        // Conversations are never moved to TCP, whatever the stream policy.
        if r["workload"]
            .as_str()
            .is_some_and(|w| w.starts_with("ping-pong"))
        {
            assert!(share > 0.99, "{r}");
        }
    }

    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    assert_eq!(
        chart.matches("<rect x=").count(),
        14,
        "two bars per workload"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
