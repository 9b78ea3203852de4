//! What one run of a case saw, and how two runs are judged.
//!
//! A case records *items*: named values. Most are compared exactly between
//! the plain-TCP run and the rawload run (`fact`); numbers whose exact value
//! is not part of the socket contract (bytes accepted before `EAGAIN`,
//! elapsed times) are only reported (`info`), and where a case needs a
//! comparison of such numbers it states its own rule (`Case::cross`). The
//! whole model travels from the case process to the orchestrator as one
//! JSON line.

use anyhow::{Context, Result};
use rawload::json::{Json, obj};

/// One named value a case observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub name: String,
    pub value: String,
    /// Compared exactly between the two runs (else only reported).
    pub compared: bool,
}

/// The observations of one case in one mode.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Obs {
    pub items: Vec<Item>,
}

/// Values are printed inside `{name:value,...}` on one line: no spaces,
/// commas or braces.
fn token(v: &str) -> String {
    v.chars()
        .map(|c| match c {
            ' ' | ',' | '{' | '}' => '_',
            c => c,
        })
        .collect()
}

impl Obs {
    /// A value that must be the same over TCP and under rawload.
    pub fn fact(&mut self, name: &str, value: impl ToString) -> &mut Obs {
        self.push(name, value, true)
    }

    /// A value that is reported but not compared.
    pub fn info(&mut self, name: &str, value: impl ToString) -> &mut Obs {
        self.push(name, value, false)
    }

    fn push(&mut self, name: &str, value: impl ToString, compared: bool) -> &mut Obs {
        self.items.push(Item {
            name: name.to_string(),
            value: token(&value.to_string()),
            compared,
        });
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.value.as_str())
    }

    /// An `info` number (`None` when absent or not a number).
    pub fn num(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(|v| v.parse().ok())
    }

    /// `{send:EAGAIN,accepted:2621440}`
    pub fn text(&self) -> String {
        let inner: Vec<String> = self
            .items
            .iter()
            .map(|i| format!("{}:{}", i.name, i.value))
            .collect();
        format!("{{{}}}", inner.join(","))
    }

    /// Names of the compared items whose values differ (or that only one
    /// side has), in the order of `self`.
    pub fn differences(&self, other: &Obs) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let compared = |o: &Obs| -> Vec<(String, String)> {
            o.items
                .iter()
                .filter(|i| i.compared)
                .map(|i| (i.name.clone(), i.value.clone()))
                .collect()
        };
        let (mine, theirs) = (compared(self), compared(other));
        for (name, value) in &mine {
            if theirs.iter().find(|(n, _)| n == name).map(|(_, v)| v) != Some(value) {
                out.push(name.clone());
            }
        }
        for (name, _) in &theirs {
            if !mine.iter().any(|(n, _)| n == name) && !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }

    pub fn to_json(&self) -> Json {
        Json::Arr(
            self.items
                .iter()
                .map(|i| {
                    obj([
                        ("name", i.name.as_str().into()),
                        ("value", i.value.as_str().into()),
                        ("compared", i.compared.into()),
                    ])
                })
                .collect(),
        )
    }

    pub fn from_json(v: &Json) -> Result<Obs> {
        let items = v.as_array().context("items is not an array")?;
        let items = items
            .iter()
            .map(|i| -> Result<Item> {
                Ok(Item {
                    name: i["name"].as_str().context("item name")?.to_string(),
                    value: i["value"].as_str().context("item value")?.to_string(),
                    compared: i["compared"].as_bool().context("item compared")?,
                })
            })
            .collect::<Result<Vec<Item>>>()?;
        Ok(Obs { items })
    }
}

/// How one run of a case ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Observed(Obs),
    /// The kernel lacks the feature (kTLS without the `tls` module).
    Unsupported(String),
    /// The case could not be carried out: an unexpected error, a crash, or
    /// a hang that the orchestrator ended.
    Failed(String),
}

impl Outcome {
    pub fn text(&self) -> String {
        match self {
            Outcome::Observed(o) => o.text(),
            Outcome::Unsupported(why) => format!("unsupported({})", token(why)),
            Outcome::Failed(why) => format!("failed({})", token(why)),
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            Outcome::Observed(o) => obj([("items", o.to_json())]),
            Outcome::Unsupported(why) => obj([("unsupported", why.as_str().into())]),
            Outcome::Failed(why) => obj([("failed", why.as_str().into())]),
        }
    }

    pub fn from_json(v: &Json) -> Result<Outcome> {
        if let Some(why) = v["unsupported"].as_str() {
            return Ok(Outcome::Unsupported(why.to_string()));
        }
        if let Some(why) = v["failed"].as_str() {
            return Ok(Outcome::Failed(why.to_string()));
        }
        Obs::from_json(&v["items"]).map(Outcome::Observed)
    }
}

/// Which path the rawload run's bytes took, from rawload's counters (bytes
/// redirected) and the case's own sockets (payload bytes received through
/// TCP, `tcpi_bytes_received`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    Redirected,
    Tcp,
    Mixed,
    /// No payload moved at all (or the counters could not be read).
    Unknown,
}

impl DataPath {
    pub fn classify(bytes_redirected: Option<u64>, tcp_payload: u64) -> DataPath {
        match (bytes_redirected, tcp_payload) {
            (Some(r), 0) if r > 0 => DataPath::Redirected,
            (Some(r), _) if r > 0 => DataPath::Mixed,
            (Some(0), t) if t > 0 => DataPath::Tcp,
            _ => DataPath::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DataPath::Redirected => "redirected",
            DataPath::Tcp => "tcp",
            DataPath::Mixed => "mixed",
            DataPath::Unknown => "unknown",
        }
    }
}

/// The judgement of one case.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Equal results, and rawload redirected (some of) the bytes.
    Same,
    /// Equal results because the connection stayed on plain TCP.
    Off,
    /// The results differ in these items (or rules).
    Differs(Vec<String>),
    /// The kernel cannot do what the case needs, even over plain TCP.
    Unsupported,
    /// The plain-TCP run itself failed: the tool could not judge.
    Error,
}

impl Verdict {
    /// `cross` is the case's own rule on reported numbers: `Some(what)`
    /// when it is broken.
    pub fn judge(tcp: &Outcome, rawload: &Outcome, path: DataPath, cross: Option<String>) -> Self {
        match (tcp, rawload) {
            (Outcome::Unsupported(_), _) => Verdict::Unsupported,
            (Outcome::Failed(_), _) => Verdict::Error,
            (Outcome::Observed(_), Outcome::Unsupported(_)) => {
                Verdict::Differs(vec!["unsupported".into()])
            }
            (Outcome::Observed(_), Outcome::Failed(_)) => Verdict::Differs(vec!["failed".into()]),
            (Outcome::Observed(t), Outcome::Observed(r)) => {
                let mut what = t.differences(r);
                what.extend(cross);
                match (what.is_empty(), path) {
                    (false, _) => Verdict::Differs(what),
                    (true, DataPath::Tcp) => Verdict::Off,
                    (true, _) => Verdict::Same,
                }
            }
        }
    }

    /// The first word of the verdict: same, off, differs, unsupported, error.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Same => "same",
            Verdict::Off => "off",
            Verdict::Differs(_) => "differs",
            Verdict::Unsupported => "unsupported",
            Verdict::Error => "error",
        }
    }

    /// `differs: eagain,drained` or the word alone.
    pub fn text(&self) -> String {
        match self {
            Verdict::Differs(what) => format!("differs: {}", what.join(",")),
            v => v.word().to_string(),
        }
    }

    pub fn what(&self) -> &[String] {
        match self {
            Verdict::Differs(what) => what,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(items: &[(&str, &str, bool)]) -> Obs {
        let mut o = Obs::default();
        for (n, v, c) in items {
            if *c {
                o.fact(n, v);
            } else {
                o.info(n, v);
            }
        }
        o
    }

    #[test]
    fn only_compared_items_decide() {
        let t = obs(&[("send", "EAGAIN", true), ("accepted", "100", false)]);
        let r = obs(&[("send", "EAGAIN", true), ("accepted", "999", false)]);
        assert!(t.differences(&r).is_empty());
        let r2 = obs(&[("send", "none", true), ("extra", "x", true)]);
        assert_eq!(t.differences(&r2), vec!["send", "extra"]);
    }

    #[test]
    fn verdicts() {
        let a = Outcome::Observed(obs(&[("x", "1", true)]));
        let b = Outcome::Observed(obs(&[("x", "2", true)]));
        let j = |t: &Outcome, r: &Outcome, p| Verdict::judge(t, r, p, None);
        assert_eq!(j(&a, &a, DataPath::Redirected), Verdict::Same);
        assert_eq!(j(&a, &a, DataPath::Mixed), Verdict::Same);
        assert_eq!(j(&a, &a, DataPath::Tcp), Verdict::Off);
        assert_eq!(j(&a, &b, DataPath::Tcp), Verdict::Differs(vec!["x".into()]));
        let unsup = Outcome::Unsupported("no tls".into());
        assert_eq!(j(&unsup, &unsup, DataPath::Unknown), Verdict::Unsupported);
        assert_eq!(
            j(&a, &unsup, DataPath::Unknown).text(),
            "differs: unsupported"
        );
        assert_eq!(
            j(&Outcome::Failed("x".into()), &a, DataPath::Tcp),
            Verdict::Error
        );
        let cross = Verdict::judge(&a, &a, DataPath::Redirected, Some("ratio".into()));
        assert_eq!(cross.text(), "differs: ratio");
    }

    #[test]
    fn paths() {
        assert_eq!(DataPath::classify(Some(10), 0), DataPath::Redirected);
        assert_eq!(DataPath::classify(Some(10), 5), DataPath::Mixed);
        assert_eq!(DataPath::classify(Some(0), 5), DataPath::Tcp);
        assert_eq!(DataPath::classify(Some(0), 0), DataPath::Unknown);
        assert_eq!(DataPath::classify(None, 5), DataPath::Unknown);
    }

    #[test]
    fn round_trip_and_text() {
        let mut o = Obs::default();
        o.fact("recv", "a b").info("n", 3);
        assert_eq!(o.text(), "{recv:a_b,n:3}");
        for out in [
            Outcome::Observed(o),
            Outcome::Unsupported("no module".into()),
            Outcome::Failed("hung".into()),
        ] {
            let text = out.to_json().to_string();
            assert_eq!(
                Outcome::from_json(&Json::parse(&text).unwrap()).unwrap(),
                out
            );
        }
    }
}
