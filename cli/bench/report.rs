//! The bench results: medians, ranges and ratios as a table, JSON and an
//! SVG chart (bars for the default run, curves over write size for
//! `--sweep`).

use std::fmt::Write as _;

use super::{BenchOptions, MODES, Mode, Sample, Workload};
use crate::json::{Json, obj};

/// The samples of one workload, by mode (in the order of `MODES`).
pub type PerMode = [Vec<Sample>; MODES.len()];

/// All samples of one run, by workload and mode.
#[derive(Debug, Clone)]
pub struct Summary {
    pub rounds: usize,
    pub duration_ms: u128,
    /// Empty: the workers were not pinned.
    pub cpus: Vec<usize>,
    /// The workloads are a write-size sweep.
    pub sweep: bool,
    /// The rawload mode's stream policy, in words.
    pub streams: Option<String>,
    pub rows: Vec<(Workload, PerMode)>,
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

/// The spread of unpinned runs: max/min, which reads the same at every
/// rate and unit (1.00 = every round alike); p10-p90 would need more
/// rounds than a bench can afford to differ from min-max.
pub fn spread(min: f64, max: f64) -> f64 {
    if min > 0.0 { max / min } else { 0.0 }
}

impl Summary {
    pub fn new(opts: &BenchOptions, streams: Option<String>) -> Summary {
        Summary {
            rounds: opts.rounds,
            duration_ms: opts.duration.as_millis(),
            cpus: opts.cpus.clone(),
            sweep: opts.sweep,
            streams,
            rows: opts
                .workloads
                .iter()
                .map(|w| (*w, Default::default()))
                .collect(),
        }
    }

    pub fn add(&mut self, workload: Workload, mode: Mode, sample: Sample) {
        if let Some((_, modes)) = self.rows.iter_mut().find(|(w, _)| *w == workload) {
            modes[mode_index(mode)].push(sample);
        }
    }

    fn rates(modes: &PerMode, mode: Mode) -> Vec<f64> {
        modes[mode_index(mode)].iter().map(|s| s.rate).collect()
    }

    /// Median of one per-sample share of `mode`'s samples.
    fn share(modes: &PerMode, mode: Mode, f: fn(&Sample) -> Option<f64>) -> f64 {
        let shares: Vec<f64> = modes[mode_index(mode)].iter().filter_map(f).collect();
        median(&shares)
    }

    /// Median share of the rawload samples' bytes that were redirected.
    pub fn redirected_share(modes: &PerMode) -> f64 {
        Self::share(modes, Mode::Rawload, |s| s.redirected_share)
    }

    /// Median share of the seed samples' payload that crossed `lo`.
    pub fn lo_share(modes: &PerMode) -> f64 {
        Self::share(modes, Mode::Seed, |s| s.lo_share)
    }

    /// Median rate of `mode` divided by the median of tcp.
    pub fn ratio(modes: &PerMode, mode: Mode) -> f64 {
        Self::ratio_to(modes, mode, Mode::Tcp)
    }

    /// Median rate of `mode` divided by the median of `base`.
    pub fn ratio_to(modes: &PerMode, mode: Mode, base: Mode) -> f64 {
        let b = median(&Self::rates(modes, base));
        if b > 0.0 {
            median(&Self::rates(modes, mode)) / b
        } else {
            0.0
        }
    }

    pub fn pinned(&self) -> bool {
        !self.cpus.is_empty()
    }
}

/// A rate in the workload's unit.
pub fn rate_text(workload: Workload, rate: f64) -> String {
    if workload.is_bulk() {
        format!("{:.1} MiB/s", rate / (1 << 20) as f64)
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

fn cpu_list(cpus: &[usize]) -> String {
    let c: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
    c.join(",")
}

/// Where the workers run, in words.
pub fn placement(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        "client and server unpinned (no CPU affinity)".into()
    } else {
        format!("client and server pinned to CPU {}", cpu_list(cpus))
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
    let cells = if s.pinned() {
        "medians [min-max]"
    } else {
        "medians [min-max; spread = max/min]"
    };
    format!(
        "rawload bench{}, {}, kernel {}, {cpu}, {}; {} rounds of {} ms per mode, interleaved (tcp, rawload, seed, unix); {cells}; seed: {}{streams}",
        if s.sweep { " --sweep" } else { "" },
        today(),
        crate::doctor::kernel_version(),
        placement(&s.cpus),
        s.rounds,
        s.duration_ms,
        SEED_WORDS,
    )
}

/// What the seed mode runs, for the header and the JSON.
const SEED_WORDS: &str = "tests/fixtures/seed_legacy.o (every IPv4 socket in one SOCKHASH, every message redirected; no pairing, state or counters)";

/// One table cell: the median [min-max] of `mode`'s rates, and the spread
/// when unpinned.
fn cell(s: &Summary, w: Workload, modes: &PerMode, mode: Mode) -> String {
    let rates: Vec<f64> = Summary::rates(modes, mode)
        .iter()
        .map(|r| scaled(w, *r))
        .collect();
    let (med, min, max) = stats(&rates);
    if s.pinned() {
        format!("{med:.1} [{min:.1}-{max:.1}]")
    } else {
        format!("{med:.1} [{min:.1}-{max:.1}; {:.2}]", spread(min, max))
    }
}

/// A Markdown table: throughput and ratios, then ping-pong latencies.
pub fn render_table(s: &Summary) -> String {
    let mut o = format!("{}\n\n", header(s));
    o.push_str("| workload | unit | tcp | rawload | rawload/tcp | redirected | seed | seed/tcp | rawload/seed | unix | unix/tcp |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (w, modes) in &s.rows {
        let _ = writeln!(
            o,
            "| {w} | {} | {} | {} | {:.2}x | {:.0}% | {} | {:.2}x | {:.2}x | {} | {:.2}x |",
            unit(*w),
            cell(s, *w, modes, Mode::Tcp),
            cell(s, *w, modes, Mode::Rawload),
            Summary::ratio(modes, Mode::Rawload),
            100.0 * Summary::redirected_share(modes),
            cell(s, *w, modes, Mode::Seed),
            Summary::ratio(modes, Mode::Seed),
            Summary::ratio_to(modes, Mode::Rawload, Mode::Seed),
            cell(s, *w, modes, Mode::Unix),
            Summary::ratio(modes, Mode::Unix)
        );
    }
    latency_table(s, &mut o);
    o
}

/// The ping-pong latencies, one column per mode.
fn latency_table(s: &Summary, o: &mut String) {
    o.push_str(
        "\nping-pong latency, microseconds (median over rounds of each round's p50 / p99)\n\n",
    );
    o.push_str("| workload | tcp p50 / p99 | rawload p50 / p99 | seed p50 / p99 | unix p50 / p99 |\n|---|---|---|---|---|\n");
    for (w, modes) in s.rows.iter().filter(|(w, _)| !w.is_bulk()) {
        let _ = write!(o, "| {w} |");
        for samples in modes {
            let p50: Vec<f64> = samples.iter().filter_map(|x| x.p50_us).collect();
            let p99: Vec<f64> = samples.iter().filter_map(|x| x.p99_us).collect();
            let _ = write!(o, " {:.1} / {:.1} |", median(&p50), median(&p99));
        }
        o.push('\n');
    }
}

/// One mode's samples of one workload, for scripts.
fn mode_json(samples: &[Sample]) -> Json {
    let rates: Vec<f64> = samples.iter().map(|x| x.rate).collect();
    let (med, min, max) = stats(&rates);
    let p = |f: fn(&Sample) -> Option<f64>| -> Json {
        let v: Vec<f64> = samples.iter().filter_map(f).collect();
        if v.is_empty() {
            Json::Null
        } else {
            median(&v).into()
        }
    };
    obj([
        ("median", med.into()),
        ("min", min.into()),
        ("max", max.into()),
        ("spread", spread(min, max).into()),
        ("samples", rates.into()),
        ("p50_us", p(|x| x.p50_us)),
        ("p99_us", p(|x| x.p99_us)),
    ])
}

/// One workload: every mode, the ratios, and the checks' shares.
fn row_json(w: Workload, modes: &PerMode) -> Json {
    let per_mode = MODES
        .iter()
        .zip(modes)
        .map(|(m, samples)| (m.name().to_string(), mode_json(samples)))
        .collect();
    obj([
        ("workload", w.to_string().into()),
        (
            "kind",
            (if w.is_bulk() { "bulk" } else { "pingpong" }).into(),
        ),
        ("size", w.size().into()),
        ("conns", w.conns().into()),
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
        ("seed_vs_tcp", Summary::ratio(modes, Mode::Seed).into()),
        ("seed_lo_share", Summary::lo_share(modes).into()),
        (
            "rawload_vs_seed",
            Summary::ratio_to(modes, Mode::Rawload, Mode::Seed).into(),
        ),
        ("unix_vs_tcp", Summary::ratio(modes, Mode::Unix).into()),
    ])
}

/// Every sample, for scripts.
pub fn to_json(s: &Summary) -> Json {
    let rows = s.rows.iter().map(|(w, m)| row_json(*w, m)).collect();
    obj([
        ("date", today().into()),
        ("kernel", crate::doctor::kernel_version().into()),
        ("cpus", s.cpus.clone().into()),
        ("pinned", s.pinned().into()),
        ("sweep", s.sweep.into()),
        ("streams", s.streams.clone().into()),
        ("seed", SEED_WORDS.into()),
        ("rounds", s.rounds.into()),
        ("duration_ms", (s.duration_ms as u64).into()),
        ("results", Json::Arr(rows)),
    ])
}

/// The modes drawn against tcp, with their colours.
const SERIES: [(Mode, &str); 3] = [
    (Mode::Rawload, "#2b6cb0"),
    (Mode::Seed, "#dd6b20"),
    (Mode::Unix, "#718096"),
];

/// The chart: curves over write size for a sweep, bars otherwise.
pub fn render_svg(s: &Summary) -> String {
    if s.sweep { sweep_svg(s) } else { bars_svg(s) }
}

/// The largest ratio to tcp of any drawn mode (at least `floor`).
fn max_ratio(rows: &[&(Workload, PerMode)], floor: f64) -> f64 {
    rows.iter()
        .flat_map(|(_, m)| SERIES.map(|(mode, _)| Summary::ratio(m, mode)))
        .filter(|r| r.is_finite())
        .fold(floor, f64::max)
}

/// The first lines of both charts: the frame, the title, where it ran.
fn svg_open(s: &Summary, width: f64, height: f64, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{title} (median of {} rounds)</text>\n\
         <text x=\"10\" y=\"38\" fill=\"#555\">{} | {}</text>\n",
        s.rounds,
        crate::doctor::kernel_version(),
        placement(&s.cpus)
    )
}

/// A horizontal bar chart of the ratios to tcp (rawload, seed and unix),
/// with the 1.0 line marked.
fn bars_svg(s: &Summary) -> String {
    let (left, bar_h, gap, width) = (230.0, 14.0, 10.0, 760.0);
    let rows: Vec<_> = s.rows.iter().collect();
    let scale = (width - left - 70.0) / max_ratio(&rows, 1.5).ceil();
    let row_h = SERIES.len() as f64 * bar_h + gap;
    let height = 70.0 + s.rows.len() as f64 * row_h + 30.0;
    let title = "rawload bench: speed relative to loopback TCP";
    let mut o = svg_open(s, width, height, title);
    let top = 55.0;
    for (i, (w, modes)) in s.rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{w}</text>",
            left - 8.0,
            y + 1.5 * bar_h + 4.0
        );
        for (j, (mode, color)) in SERIES.iter().enumerate() {
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
    let bottom = top + s.rows.len() as f64 * row_h;
    let _ = writeln!(
        o,
        "<line x1=\"{one:.1}\" y1=\"{:.1}\" x2=\"{one:.1}\" y2=\"{bottom:.1}\" stroke=\"#c53030\" stroke-dasharray=\"4 3\"/>\n\
         <text x=\"{one:.1}\" y=\"{:.1}\" fill=\"#c53030\" text-anchor=\"middle\">1.0 = loopback TCP</text>\n</svg>",
        top - 6.0,
        bottom + 16.0
    );
    o
}

/// A size on the sweep's axis: 1, 256, 4K, 1M.
fn axis_size(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}K", n >> 10),
        n => n.to_string(),
    }
}

/// One panel of the sweep chart: where it is, and its scales (x: log2 of
/// the write size, y: ratio to tcp from 0 to `ymax`).
struct Panel {
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    lo: f64,
    hi: f64,
    ymax: f64,
}

impl Panel {
    fn x(&self, size: usize) -> f64 {
        let l = (size.max(1) as f64).log2();
        if self.hi > self.lo {
            self.x0 + (l - self.lo) / (self.hi - self.lo) * self.w
        } else {
            self.x0 + self.w / 2.0
        }
    }

    fn y(&self, ratio: f64) -> f64 {
        self.y0 + self.h - ratio.clamp(0.0, self.ymax) / self.ymax * self.h
    }

    /// The frame, the y grid every 0.5x with the 1.00x line, and a tick
    /// per measured size.
    fn axes(&self, o: &mut String, title: &str, sizes: &[usize]) {
        let (x0, y0, w, h) = (self.x0, self.y0, self.w, self.h);
        let _ = writeln!(
            o,
            "<text x=\"{x0}\" y=\"{:.1}\" font-weight=\"bold\">{title}</text>\n<rect x=\"{x0}\" y=\"{y0}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>",
            y0 - 8.0
        );
        for k in 0..=(self.ymax / 0.5).round() as usize {
            let (r, y) = (k as f64 * 0.5, self.y(k as f64 * 0.5));
            let _ = writeln!(
                o,
                "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\">{r:.2}x</text>",
                x0 + w,
                x0 - 4.0,
                y + 3.0
            );
        }
        let one = self.y(1.0);
        let _ = writeln!(
            o,
            "<line x1=\"{x0}\" y1=\"{one:.1}\" x2=\"{:.1}\" y2=\"{one:.1}\" stroke=\"#c53030\" stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c53030\" font-size=\"10\">1.00x = TCP</text>",
            x0 + w,
            x0 + 4.0,
            one - 4.0
        );
        for &n in sizes {
            let _ = writeln!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{}</text>",
                self.x(n),
                y0 + h + 14.0,
                axis_size(n)
            );
        }
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">write size, bytes (log scale)</text>",
            x0 + w / 2.0,
            y0 + h + 32.0
        );
    }

    /// One line per mode, a point per size; each in a `<g>` that names its
    /// panel and mode, so that scripts (and the tests) can find it.
    fn series(&self, o: &mut String, kind: &str, rows: &[&(Workload, PerMode)]) {
        for (mode, color) in SERIES {
            let pts: Vec<(f64, f64, String)> = rows
                .iter()
                .map(|(w, m)| {
                    let r = Summary::ratio(m, mode);
                    let tip = format!("{} {w}: {r:.2}x", mode.name());
                    (self.x(w.size()), self.y(r), tip)
                })
                .collect();
            let line: Vec<String> = pts
                .iter()
                .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                o,
                "<g class=\"series\" data-panel=\"{kind}\" data-mode=\"{}\">\n<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
                mode.name(),
                line.join(" ")
            );
            for (x, y, tip) in pts {
                let _ = writeln!(
                    o,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{color}\"><title>{tip}</title></circle>"
                );
            }
            o.push_str("</g>\n");
        }
    }
}

/// The sweep: ratio to tcp over write size, one-way bulk and
/// request/response side by side, one line each for rawload, seed, unix.
fn sweep_svg(s: &Summary) -> String {
    let (pw, ph, left, gap, top) = (400.0, 260.0, 55.0, 40.0, 90.0);
    let width = 2.0 * (left + pw) + gap + 20.0;
    let height = top + ph + 50.0;
    let all: Vec<_> = s.rows.iter().collect();
    let ymax = (max_ratio(&all, 1.5) * 1.1 / 0.5).ceil() * 0.5;
    let title = "rawload bench --sweep: speed relative to loopback TCP by write size";
    let mut o = svg_open(s, width, height, title);
    for (j, (mode, color)) in SERIES.iter().enumerate() {
        let x = 10.0 + j as f64 * 90.0;
        let _ = writeln!(
            o,
            "<rect x=\"{x}\" y=\"48\" width=\"14\" height=\"4\" fill=\"{color}\"/><text x=\"{}\" y=\"54\">{}</text>",
            x + 18.0,
            mode.name()
        );
    }
    let panels = [
        ("bulk", "one-way bulk (bytes/s, ratio to TCP)"),
        (
            "pingpong",
            "request/response, 1 connection (txn/s, ratio to TCP)",
        ),
    ];
    for (i, (kind, name)) in panels.iter().enumerate() {
        let mut rows: Vec<_> = all
            .iter()
            .copied()
            .filter(|(w, _)| w.is_bulk() == (*kind == "bulk"))
            .collect();
        rows.sort_by_key(|(w, _)| w.size());
        let sizes: Vec<usize> = rows.iter().map(|(w, _)| w.size()).collect();
        let log = |n: Option<&usize>| n.map_or(0.0, |&n| (n.max(1) as f64).log2());
        let panel = Panel {
            x0: left + i as f64 * (left + pw + gap),
            y0: top,
            w: pw,
            h: ph,
            lo: log(sizes.first()),
            hi: log(sizes.last()),
            ymax,
        };
        panel.axes(&mut o, name, &sizes);
        panel.series(&mut o, kind, &rows);
    }
    o.push_str("</svg>\n");
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
        assert_eq!(spread(2.0, 5.0), 2.5);
    }

    #[test]
    fn sweep_sizes_are_named_and_placed() {
        let w = super::super::sweep_workloads(&super::super::SWEEP_SIZES);
        assert_eq!(w.len(), 20);
        assert_eq!(w[9].to_string(), "bulk, 1 MiB writes");
        assert_eq!(w[10].to_string(), "ping-pong 1 B, 1 conn");
        assert_eq!(axis_size(256 << 10), "256K");
    }

    #[test]
    fn date_is_well_formed() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20") && &d[4..5] == "-" && &d[7..8] == "-");
    }
}
