//! The bench results: medians, ranges and ratios as a table, JSON and an
//! SVG chart.

use std::fmt::Write as _;

use super::{BenchOptions, MODES, Mode, Sample, Workload};
use crate::json::{Json, obj};

/// All samples of one run, by workload and mode.
#[derive(Debug, Clone)]
pub struct Summary {
    pub rounds: usize,
    pub duration_ms: u128,
    pub cpus: Vec<usize>,
    /// The rawload mode's stream policy, in words.
    pub streams: Option<String>,
    pub rows: Vec<(Workload, [Vec<Sample>; 3])>,
}

fn mode_index(mode: Mode) -> usize {
    MODES
        .iter()
        .position(|m| *m == mode)
        .expect("every mode is in MODES")
}

/// Median of a non-empty list (mean of the two middle values when even).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Median, minimum and maximum.
pub fn stats(values: &[f64]) -> (f64, f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(values), min, max)
}

impl Summary {
    pub fn new(opts: &BenchOptions, streams: Option<String>) -> Summary {
        Summary {
            rounds: opts.rounds,
            duration_ms: opts.duration.as_millis(),
            cpus: opts.cpus.clone(),
            streams,
            rows: opts
                .workloads
                .iter()
                .map(|w| (*w, [Vec::new(), Vec::new(), Vec::new()]))
                .collect(),
        }
    }

    pub fn add(&mut self, workload: Workload, mode: Mode, sample: Sample) {
        if let Some((_, modes)) = self.rows.iter_mut().find(|(w, _)| *w == workload) {
            modes[mode_index(mode)].push(sample);
        }
    }

    fn rates(samples: &[Sample]) -> Vec<f64> {
        samples.iter().map(|s| s.rate).collect()
    }

    /// Median share of the rawload samples' bytes that were redirected.
    pub fn redirected_share(modes: &[Vec<Sample>; 3]) -> f64 {
        let shares: Vec<f64> = modes[mode_index(Mode::Rawload)]
            .iter()
            .filter_map(|s| s.redirected_share)
            .collect();
        median(&shares)
    }

    /// Median rate of `mode` divided by the median of tcp.
    pub fn ratio(modes: &[Vec<Sample>; 3], mode: Mode) -> f64 {
        let tcp = median(&Self::rates(&modes[0]));
        if tcp > 0.0 {
            median(&Self::rates(&modes[mode_index(mode)])) / tcp
        } else {
            0.0
        }
    }
}

/// A rate in the workload's unit.
pub fn rate_text(workload: Workload, rate: f64) -> String {
    if workload.is_bulk() {
        format!("{:.0} MiB/s", rate / (1 << 20) as f64)
    } else {
        format!("{:.1} k txn/s", rate / 1000.0)
    }
}

fn unit(workload: Workload) -> &'static str {
    if workload.is_bulk() {
        "MiB/s"
    } else {
        "k txn/s"
    }
}

fn scaled(workload: Workload, rate: f64) -> f64 {
    if workload.is_bulk() {
        rate / (1 << 20) as f64
    } else {
        rate / 1000.0
    }
}

/// The header every report starts with.
pub fn header(s: &Summary) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let streams = s
        .streams
        .as_ref()
        .map_or(String::new(), |t| format!("; rawload: {t}"));
    format!(
        "rawload bench, {}, kernel {}, {cpu}, client and server pinned to CPU {}; {} rounds of {} ms per mode, interleaved (tcp, rawload, unix); medians [min-max]{streams}",
        today(),
        crate::doctor::kernel_version(),
        s.cpus
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(","),
        s.rounds,
        s.duration_ms
    )
}

/// A Markdown table: throughput, ratios to tcp, and ping-pong latencies.
pub fn render_table(s: &Summary) -> String {
    let mut o = format!("{}\n\n", header(s));
    o.push_str("| workload | unit | tcp | rawload | rawload/tcp | redirected | unix | unix/tcp |\n|---|---|---|---|---|---|---|---|\n");
    for (w, modes) in &s.rows {
        let cell = |m: Mode| {
            let rates: Vec<f64> = modes[mode_index(m)]
                .iter()
                .map(|x| scaled(*w, x.rate))
                .collect();
            let (med, min, max) = stats(&rates);
            format!("{med:.1} [{min:.1}-{max:.1}]")
        };
        let _ = writeln!(
            o,
            "| {w} | {} | {} | {} | {:.2}x | {:.0}% | {} | {:.2}x |",
            unit(*w),
            cell(Mode::Tcp),
            cell(Mode::Rawload),
            Summary::ratio(modes, Mode::Rawload),
            100.0 * Summary::redirected_share(modes),
            cell(Mode::Unix),
            Summary::ratio(modes, Mode::Unix)
        );
    }
    o.push_str(
        "\nping-pong latency, microseconds (median over rounds of each round's p50 / p99)\n\n",
    );
    o.push_str(
        "| workload | tcp p50 / p99 | rawload p50 / p99 | unix p50 / p99 |\n|---|---|---|---|\n",
    );
    for (w, modes) in s.rows.iter().filter(|(w, _)| !w.is_bulk()) {
        let lat = |m: Mode| {
            let samples = &modes[mode_index(m)];
            let p50: Vec<f64> = samples.iter().filter_map(|x| x.p50_us).collect();
            let p99: Vec<f64> = samples.iter().filter_map(|x| x.p99_us).collect();
            format!("{:.1} / {:.1}", median(&p50), median(&p99))
        };
        let _ = writeln!(
            o,
            "| {w} | {} | {} | {} |",
            lat(Mode::Tcp),
            lat(Mode::Rawload),
            lat(Mode::Unix)
        );
    }
    o
}

/// Every sample, for scripts.
pub fn to_json(s: &Summary) -> Json {
    let rows = s
        .rows
        .iter()
        .map(|(w, modes)| {
            let per_mode = MODES
                .iter()
                .map(|m| {
                    let samples = &modes[mode_index(*m)];
                    let rates: Vec<f64> = samples.iter().map(|x| x.rate).collect();
                    let (median, min, max) = stats(&rates);
                    let p = |f: fn(&Sample) -> Option<f64>| -> Json {
                        let v: Vec<f64> = samples.iter().filter_map(f).collect();
                        if v.is_empty() {
                            Json::Null
                        } else {
                            self::median(&v).into()
                        }
                    };
                    (
                        m.name().to_string(),
                        obj([
                            ("median", median.into()),
                            ("min", min.into()),
                            ("max", max.into()),
                            ("samples", rates.into()),
                            ("p50_us", p(|x| x.p50_us)),
                            ("p99_us", p(|x| x.p99_us)),
                        ]),
                    )
                })
                .collect();
            obj([
                ("workload", w.to_string().into()),
                (
                    "unit",
                    (if w.is_bulk() { "bytes/s" } else { "txn/s" }).into(),
                ),
                ("modes", Json::Obj(per_mode)),
                (
                    "rawload_vs_tcp",
                    Summary::ratio(modes, Mode::Rawload).into(),
                ),
                (
                    "rawload_redirected_share",
                    Summary::redirected_share(modes).into(),
                ),
                ("unix_vs_tcp", Summary::ratio(modes, Mode::Unix).into()),
            ])
        })
        .collect();
    obj([
        ("date", today().into()),
        ("kernel", crate::doctor::kernel_version().into()),
        ("cpus", s.cpus.clone().into()),
        ("streams", s.streams.clone().into()),
        ("rounds", s.rounds.into()),
        ("duration_ms", (s.duration_ms as u64).into()),
        ("results", Json::Arr(rows)),
    ])
}

/// A horizontal bar chart of the ratios to tcp (rawload and unix), with the
/// 1.0 line marked.
pub fn render_svg(s: &Summary) -> String {
    let (left, bar_h, gap, width) = (230.0, 14.0, 10.0, 760.0);
    let max_ratio = s
        .rows
        .iter()
        .flat_map(|(_, m)| {
            [
                Summary::ratio(m, Mode::Rawload),
                Summary::ratio(m, Mode::Unix),
            ]
        })
        .fold(1.5f64, f64::max)
        .ceil();
    let scale = (width - left - 60.0) / max_ratio;
    let height = 70.0 + s.rows.len() as f64 * (2.0 * bar_h + gap) + 30.0;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">rawload bench: speed relative to loopback TCP (median of {} rounds)</text>\n\
         <text x=\"10\" y=\"38\" fill=\"#555\">{} | CPU {}</text>\n",
        s.rounds,
        crate::doctor::kernel_version(),
        s.cpus
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let top = 55.0;
    for (i, (w, modes)) in s.rows.iter().enumerate() {
        let y = top + i as f64 * (2.0 * bar_h + gap);
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{w}</text>",
            left - 8.0,
            y + bar_h + 4.0
        );
        for (j, (mode, color)) in [(Mode::Rawload, "#2b6cb0"), (Mode::Unix, "#a0aec0")]
            .iter()
            .enumerate()
        {
            let r = Summary::ratio(modes, *mode);
            let by = y + j as f64 * bar_h;
            let _ = writeln!(
                o,
                "<rect x=\"{left}\" y=\"{by:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{r:.2}x {}</text>",
                r * scale,
                bar_h - 2.0,
                left + r * scale + 4.0,
                by + bar_h - 4.0,
                mode.name()
            );
        }
    }
    let one = left + scale;
    let bottom = top + s.rows.len() as f64 * (2.0 * bar_h + gap);
    let _ = writeln!(
        o,
        "<line x1=\"{one:.1}\" y1=\"{:.1}\" x2=\"{one:.1}\" y2=\"{bottom:.1}\" stroke=\"#c53030\" stroke-dasharray=\"4 3\"/>\n\
         <text x=\"{one:.1}\" y=\"{:.1}\" fill=\"#c53030\" text-anchor=\"middle\">1.0 = loopback TCP</text>\n</svg>",
        top - 6.0,
        bottom + 16.0
    );
    o
}

/// Today's date (UTC) as YYYY-MM-DD, from the days since 1970 (Howard
/// Hinnant's civil-from-days).
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(stats(&[2.0, 5.0, 1.0]), (2.0, 1.0, 5.0));
    }

    #[test]
    fn date_is_well_formed() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20") && &d[4..5] == "-" && &d[7..8] == "-");
    }
}
