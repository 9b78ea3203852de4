//! `rawload bench --quick` runs and produces well-formed output: a table on
//! stdout, JSON and an SVG chart, for the default workloads and for the
//! write-size sweep. (Speed itself is measured by the bench, never asserted
//! by a test.)

mod common;

use common::*;
use serde_json::Value;

const MODES: [&str; 4] = ["tcp", "rawload", "seed", "unix"];

/// A scratch directory for one test's output files.
fn out_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rawload-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every mode of a result row has `rounds` numeric samples and a positive
/// median, min, max and spread.
fn assert_modes(r: &Value, rounds: usize) {
    for mode in MODES {
        let m = &r["modes"][mode];
        let samples = m["samples"].as_array().expect("samples");
        assert_eq!(samples.len(), rounds, "{r}");
        assert!(samples.iter().all(|s| s.as_f64().is_some_and(|v| v > 0.0)));
        for field in ["median", "min", "max", "spread"] {
            assert!(m[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {r}");
        }
    }
    for ratio in [
        "rawload_vs_tcp",
        "seed_vs_tcp",
        "rawload_vs_seed",
        "unix_vs_tcp",
    ] {
        assert!(r[ratio].as_f64().is_some_and(|v| v > 0.0), "{ratio}: {r}");
    }
    for share in ["rawload_redirected_share", "seed_lo_share"] {
        let v = r[share].as_f64().expect(share);
        assert!((0.0..=1.0).contains(&v), "{share}: {r}");
    }
}

#[test]
fn quick_bench_produces_table_json_and_svg() {
    let _serial = serial();
    require_root();
    let dir = out_dir("bench-test");
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
            && table.contains("| seed | seed/tcp | rawload/seed |")
            && table.contains("pinned to CPU 0"),
        "{table}"
    );

    let report = common::json(&std::fs::read_to_string(&json).unwrap(), "bench --json");
    assert_eq!(report["sweep"], false);
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 7);
    for r in results {
        assert_modes(r, 2);
        // Conversations are never moved to TCP, whatever the stream policy.
        if r["kind"] == "pingpong" {
            assert!(
                r["rawload_redirected_share"].as_f64().unwrap() > 0.99,
                "{r}"
            );
        }
    }

    let chart = std::fs::read_to_string(&svg).unwrap();
    let root = xml::parse(&chart);
    assert_eq!(root.name, "svg");
    assert_eq!(
        root.find_all("rect").len(),
        1 + 3 * 7,
        "the background and three bars (rawload, seed, unix) per workload"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The sweep over three sizes (the smallest, a middle one, the largest),
/// unpinned: a table row, a JSON result and a chart point per size.
#[test]
fn quick_sweep_has_a_row_a_result_and_a_point_per_size() {
    let _serial = serial();
    require_root();
    let dir = out_dir("sweep-test");
    let (json, svg) = (dir.join("sweep.json"), dir.join("sweep.svg"));
    let table = ok(rawload(&[
        "bench",
        "--quick",
        "--sweep",
        "--sizes",
        "1,64K,1M",
        "--unpinned",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]));
    assert!(
        table.contains("--sweep") && table.contains("unpinned") && table.contains("max/min"),
        "{table}"
    );
    for size in ["1 B", "64 KiB", "1 MiB"] {
        let bulk = format!("| bulk, {size} writes |");
        let pp = format!("| ping-pong {size}, 1 conn |");
        let count = |row: &str| table.lines().filter(|l| l.starts_with(row)).count();
        assert_eq!(count(&bulk), 1, "{bulk}:\n{table}");
        assert_eq!(count(&pp), 2, "{pp} (throughput and latency):\n{table}");
    }

    let report = common::json(&std::fs::read_to_string(&json).unwrap(), "bench --json");
    assert_eq!(report["sweep"], true);
    assert_eq!(report["pinned"], false);
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 6, "bulk and ping-pong at 3 sizes");
    for r in results {
        assert_modes(r, 2);
        assert!(
            matches!(r["size"].as_u64(), Some(1 | 65536 | 1048576)),
            "{r}"
        );
        assert!(r["kind"] == "bulk" || r["kind"] == "pingpong", "{r}");
    }

    assert_sweep_chart(&std::fs::read_to_string(&svg).unwrap(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The sweep's chart: two panels of three series, a point per size each.
fn assert_sweep_chart(svg: &str, sizes: usize) {
    let root = xml::parse(svg);
    let series = root.find_all("g");
    assert_eq!(series.len(), 2 * 3, "2 panels x (rawload, seed, unix)");
    let mut names: Vec<_> = series
        .iter()
        .map(|g| (g.attr("data-panel"), g.attr("data-mode")))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 6, "each panel and mode once: {names:?}");
    for g in series {
        assert!(matches!(g.attr("data-panel"), Some("bulk" | "pingpong")));
        assert!(matches!(
            g.attr("data-mode"),
            Some("rawload" | "seed" | "unix")
        ));
        assert_eq!(g.find_all("circle").len(), sizes, "a point per size");
        let line = g.find_all("polyline");
        let points = line[0].attr("points").unwrap().split_whitespace();
        assert_eq!(points.clone().count(), sizes, "a vertex per size");
        for p in points {
            let (x, y) = p.split_once(',').expect("x,y");
            assert!(x.parse::<f64>().is_ok() && y.parse::<f64>().is_ok(), "{p}");
        }
    }
}

/// The arguments that contradict each other are refused before anything
/// is attached (no root needed).
#[test]
fn contradicting_bench_arguments_are_refused() {
    for args in [
        &["bench", "--unpinned", "--cpus", "1"][..],
        &["bench", "--sizes", "1K"],
        &["bench", "--sweep", "--workloads", "bulk:1024"],
        &["bench", "--sweep", "--sizes", "0"],
    ] {
        let out = rawload(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

/// Just enough XML to prove an SVG well formed: elements, attributes in
/// double quotes, text and entities; anything else fails the test. (No
/// dependency: the tests read rawload's output with code it does not share.)
mod xml {
    pub struct Element {
        pub name: String,
        attrs: Vec<(String, String)>,
        children: Vec<Element>,
    }

    impl Element {
        fn new(name: &str, attrs: Vec<(String, String)>) -> Element {
            let children = Vec::new();
            Element {
                name: name.into(),
                attrs,
                children,
            }
        }

        pub fn attr(&self, name: &str) -> Option<&str> {
            let found = self.attrs.iter().find(|(k, _)| k == name);
            found.map(|(_, v)| v.as_str())
        }

        /// Every descendant named `name`, in document order.
        pub fn find_all(&self, name: &str) -> Vec<&Element> {
            let mut found = Vec::new();
            for c in &self.children {
                if c.name == name {
                    found.push(c);
                }
                found.extend(c.find_all(name));
            }
            found
        }
    }

    /// The root element of `doc`; panics where it is not well formed.
    pub fn parse(doc: &str) -> Element {
        let mut stack = vec![Element::new("#document", Vec::new())];
        let mut rest = doc;
        while let Some(lt) = rest.find('<') {
            check_text(&rest[..lt]);
            let gt = rest[lt..].find('>').expect("an unclosed tag") + lt;
            let tag = &rest[lt + 1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let el = stack.pop().expect("an element");
                assert_eq!(el.name, name, "end tag </{name}> closes <{}>", el.name);
                let parent = stack.last_mut().expect("an end tag without a start");
                parent.children.push(el);
            } else if let Some(body) = tag.strip_suffix('/') {
                let el = start_tag(body);
                stack.last_mut().unwrap().children.push(el);
            } else {
                stack.push(start_tag(tag));
            }
        }
        check_text(rest);
        assert_eq!(stack.len(), 1, "unclosed <{}>", stack.last().unwrap().name);
        let mut document = stack.pop().unwrap();
        assert_eq!(document.children.len(), 1, "one root element");
        document.children.pop().unwrap()
    }

    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
    }

    /// `name attr="value" ...`: names valid, values quoted, no duplicates.
    fn start_tag(tag: &str) -> Element {
        let (name, mut rest) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        assert!(is_name(name), "element name {name:?}");
        let mut attrs: Vec<(String, String)> = Vec::new();
        loop {
            rest = rest.trim_start();
            if rest.is_empty() {
                return Element::new(name, attrs);
            }
            let (key, after) = rest.split_once("=\"").expect("attr=\"value\"");
            let (value, after) = after.split_once('"').expect("a closing quote");
            assert!(is_name(key), "attribute name {key:?} in <{name}>");
            assert!(!value.contains('<'), "'<' in {key}={value:?}");
            check_text(value);
            assert!(
                attrs.iter().all(|(k, _)| k != key),
                "{key} twice in <{name}>"
            );
            attrs.push((key.into(), value.into()));
            rest = after;
        }
    }

    /// Text (or an attribute value): every '&' starts a known entity.
    fn check_text(text: &str) {
        assert!(!text.contains("]]>"), "{text:?}");
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            let known = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity)
                || entity.starts_with("&#");
            assert!(known, "a bare '&' in {text:?}");
        }
    }
}
