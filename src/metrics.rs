//! The service's own metrics, and the canary verdict drawn from them (issue #20).
//!
//! * [`parse`] reads the Prometheus text exposition format (version 0.0.4, and the OpenMetrics
//!   text it is a subset of): `# HELP`/`# TYPE` and other comments, samples with labels whose
//!   values carry `\\`, `\"` and `\n` escapes, `+Inf`/`-Inf`/`NaN`, optional timestamps.
//! * [`Selector`] is a PromQL instant-vector selector without functions:
//!   `name{label="v",l2!="x",code=~"5..",l3!~"2.."}`. Regular expressions are anchored at both
//!   ends, as Prometheus anchors them (`code=~"5.."` matches `503`, not `5030`); a label a series
//!   does not have has the empty value (`code!="200"` matches a series without `code`).
//! * [`Tally`] follows one host's counters across several scrapes and sums each series'
//!   increase, so a counter that went back down (the process restarted, its counters began again
//!   at zero) adds what it counted since the restart instead of a negative difference. A series
//!   that appears between two scrapes counted from zero (a label value seen for the first time,
//!   such as the first `code="500"`). When the exposition has `process_start_time_seconds` and
//!   it changed, every series is taken as reset, even one that already grew past its old value.
//! * [`judge`] turns the canary's and the baseline's numbers into a [`Verdict`]; [`early_failure`]
//!   says whether a canary is so far past the limit that the window need not end.
//! * [`scrape`] reads the metrics URL on a host through its SSH connection (a port forward on it,
//!   the same mechanism as the health probe), so the URL is host-local and the host needs no curl.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use regex::Regex;

use crate::health::HttpTarget;
use crate::remote::session::Connection;

// ---------------------------------------------------------------------------------------------
// The exposition format

/// One series: its metric name and its labels, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesId {
    /// The metric name (`http_requests_total`).
    pub name: String,
    /// Label pairs sorted by label name; no `__name__`.
    pub labels: Vec<(String, String)>,
}

impl SeriesId {
    /// The value of `label` (`__name__` is the metric name), empty when the series lacks it.
    pub fn label(&self, label: &str) -> &str {
        if label == "__name__" {
            return &self.name;
        }
        self.labels
            .iter()
            .find(|(k, _)| k == label)
            .map_or("", |(_, v)| v.as_str())
    }
}

impl fmt::Display for SeriesId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}={v:?}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// A parsed exposition: every sample, and the declared type of each metric family.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Samples in the order they appeared.
    pub samples: Vec<(SeriesId, f64)>,
    /// `# TYPE <name> <type>` declarations.
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// The declared type of exactly this metric name (`counter`, `gauge`...), if any.
    pub fn type_of(&self, name: &str) -> Option<&str> {
        self.types.get(name).map(String::as_str)
    }

    /// `process_start_time_seconds` (the standard process collector's), when exposed.
    pub fn process_start(&self) -> Option<f64> {
        self.samples
            .iter()
            .find(|(id, _)| id.name == "process_start_time_seconds")
            .map(|(_, v)| *v)
    }
}

/// Parses the Prometheus text exposition format. An error names the line (1-based) and what is
/// wrong with it; a scrape with one malformed line is rejected as a whole, as Prometheus does.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    out.types
                        .insert(name.to_string(), kind.to_ascii_lowercase());
                }
            }
            continue;
        }
        let sample = parse_sample(line).map_err(|e| format!("line {}: {e}: `{}`", i + 1, raw))?;
        out.samples.push(sample);
    }
    Ok(out)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A cursor over one line.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }
    /// A metric or label name (`[a-zA-Z_:][a-zA-Z0-9_:]*`; labels have no `:` by the spec,
    /// which is not worth an error here).
    fn name(&mut self, what: &str) -> Result<&'a str, String> {
        let start = self.pos;
        match self.peek() {
            Some(c) if is_name_start(c) => {
                self.pos += 1;
            }
            Some(c) => return Err(format!("expected a {what}, found `{c}`")),
            None => return Err(format!("expected a {what}, found the end of the line")),
        }
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        Ok(&self.s[start..self.pos])
    }
    /// A quoted string (`"` always; `'` and `` ` `` too when `promql`), with its escapes.
    fn quoted(&mut self, promql: bool) -> Result<String, String> {
        let quote = match self.bump() {
            Some('"') => '"',
            Some(q @ ('\'' | '`')) if promql => q,
            Some(c) => return Err(format!("expected a quoted value, found `{c}`")),
            None => return Err("expected a quoted value, found the end of the line".into()),
        };
        let mut v = String::new();
        loop {
            match self.bump() {
                None => return Err("a quoted value is not closed".into()),
                Some(c) if c == quote => return Ok(v),
                Some('\\') if quote != '`' => match self.bump() {
                    Some('n') => v.push('\n'),
                    Some('t') if promql => v.push('\t'),
                    Some('\\') => v.push('\\'),
                    Some('"') => v.push('"'),
                    Some('\'') if promql => v.push('\''),
                    Some(c) if !promql => {
                        // The exposition format keeps an unknown escape as written.
                        v.push('\\');
                        v.push(c);
                    }
                    Some(c) => return Err(format!("unknown escape `\\{c}` in a quoted value")),
                    None => return Err("a quoted value is not closed".into()),
                },
                Some(c) => v.push(c),
            }
        }
    }
}

fn parse_sample(line: &str) -> Result<(SeriesId, f64), String> {
    let mut c = Cursor::new(line);
    let name = c.name("metric name")?.to_string();
    let after_name = c.pos;
    c.skip_ws();
    let mut labels: Vec<(String, String)> = Vec::new();
    if !c.eat("{") {
        c.pos = after_name;
    } else {
        loop {
            c.skip_ws();
            if c.eat("}") {
                break;
            }
            let label = c.name("label name")?.to_string();
            c.skip_ws();
            if !c.eat("=") {
                return Err(format!("expected `=` after the label `{label}`"));
            }
            c.skip_ws();
            let value = c.quoted(false)?;
            if labels.iter().any(|(k, _)| *k == label) {
                return Err(format!("the label `{label}` appears twice"));
            }
            labels.push((label, value));
            c.skip_ws();
            if c.eat(",") {
                continue;
            }
            if c.eat("}") {
                break;
            }
            return Err("expected `,` or `}` after a label value".into());
        }
    }
    labels.sort();
    let rest = c.rest();
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a space and a value after the series".into());
    }
    let mut words = rest.split_whitespace();
    let value = words
        .next()
        .ok_or_else(|| "expected a value after the series".to_string())?;
    let value = parse_value(value).ok_or_else(|| format!("expected a number, found `{value}`"))?;
    if let Some(ts) = words.next() {
        if ts.parse::<f64>().is_err() {
            return Err(format!("expected a timestamp, found `{ts}`"));
        }
    }
    // OpenMetrics exemplars (`# {trace_id="..."} 1`) may follow; anything else is an error.
    if let Some(extra) = words.next() {
        if extra != "#" {
            return Err(format!("unexpected `{extra}` after the value"));
        }
    }
    Ok((SeriesId { name, labels }, value))
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

// ---------------------------------------------------------------------------------------------
// Selectors

/// One label matcher.
#[derive(Debug, Clone)]
enum Op {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

/// A series selector: `name{label="v",l2!="x",code=~"5.."}`. All matchers must hold.
#[derive(Debug, Clone)]
pub struct Selector {
    text: String,
    matchers: Vec<(String, Op)>,
}

impl Selector {
    /// Parses a selector. The error says what is wrong, for the config error around it.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let s = text.trim();
        let mut c = Cursor::new(s);
        let mut matchers = Vec::new();
        if c.peek().is_some_and(is_name_start) {
            let name = c.name("metric name")?;
            matchers.push(("__name__".to_string(), Op::Eq(name.to_string())));
        }
        c.skip_ws();
        if c.eat("{") {
            loop {
                c.skip_ws();
                if c.eat("}") {
                    break;
                }
                let label = c.name("label name")?.to_string();
                c.skip_ws();
                let op = if c.eat("=~") {
                    "=~"
                } else if c.eat("!~") {
                    "!~"
                } else if c.eat("!=") {
                    "!="
                } else if c.eat("=") {
                    "="
                } else {
                    return Err(format!(
                        "expected `=`, `!=`, `=~` or `!~` after the label `{label}`"
                    ));
                };
                c.skip_ws();
                let value = c.quoted(true)?;
                let regex = |v: &str| {
                    Regex::new(&format!("^(?:{v})$"))
                        .map_err(|e| format!("`{v}` is not a regular expression: {e}"))
                };
                let op = match op {
                    "=" => Op::Eq(value),
                    "!=" => Op::Ne(value),
                    "=~" => Op::Re(regex(&value)?),
                    _ => Op::NotRe(regex(&value)?),
                };
                matchers.push((label, op));
                c.skip_ws();
                if c.eat(",") {
                    continue;
                }
                if c.eat("}") {
                    break;
                }
                return Err("expected `,` or `}` after a label matcher".into());
            }
        } else if matchers.is_empty() {
            return Err("expected a metric name like `http_requests_total`".into());
        }
        c.skip_ws();
        if let Some(ch) = c.peek() {
            return Err(format!(
                "unexpected `{ch}` after the selector (only a name and {{label matchers}} are allowed, no functions or ranges)"
            ));
        }
        if matchers.is_empty() {
            return Err("expected a metric name or at least one label matcher".into());
        }
        Ok(Selector {
            text: s.to_string(),
            matchers,
        })
    }

    /// Does the series match every matcher?
    pub fn matches(&self, id: &SeriesId) -> bool {
        self.matchers.iter().all(|(label, op)| {
            let v = id.label(label);
            match op {
                Op::Eq(x) => v == x,
                Op::Ne(x) => v != x,
                Op::Re(r) => r.is_match(v),
                Op::NotRe(r) => !r.is_match(v),
            }
        })
    }

    /// The metric name, when the selector fixes one with `=`.
    pub fn metric_name(&self) -> Option<&str> {
        self.matchers.iter().find_map(|(l, op)| match op {
            Op::Eq(n) if l == "__name__" => Some(n.as_str()),
            _ => None,
        })
    }

    /// The sum of the matching samples of one exposition, and how many series matched.
    pub fn sum(&self, exp: &Exposition) -> (f64, usize) {
        exp.samples
            .iter()
            .filter(|(id, _)| self.matches(id))
            .fold((0.0, 0), |(s, n), (_, v)| (s + v, n + 1))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

// ---------------------------------------------------------------------------------------------
// Counters across scrapes

/// One host's counters over the canary window: the increase of every series selected by
/// `requests` or `errors`, across resets.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    last: Option<BTreeMap<SeriesId, f64>>,
    last_start: Option<f64>,
    increase: BTreeMap<SeriesId, f64>,
    /// Successful scrapes.
    pub scrapes: u32,
    /// Counter resets seen (a series that went down, or a new process start time).
    pub resets: u32,
    /// Why the last failed scrape failed.
    pub last_error: Option<String>,
    /// Failed scrapes.
    pub failures: u32,
}

impl Tally {
    /// Adds one scrape. Only series matched by one of `selectors` are followed. A selected
    /// series whose family is declared as a gauge, histogram or summary is an error: the
    /// increase of a gauge means nothing.
    pub fn observe(&mut self, exp: &Exposition, selectors: &[&Selector]) -> Result<(), String> {
        let mut now = BTreeMap::new();
        for (id, v) in &exp.samples {
            if !selectors.iter().any(|s| s.matches(id)) {
                continue;
            }
            if let Some(t) = exp.type_of(&id.name) {
                if !matches!(t, "counter" | "untyped" | "unknown") {
                    let e = format!(
                        "`{}` is a {t}, not a counter: `requests` and `errors` must select counters",
                        id.name
                    );
                    self.fail(e.clone());
                    return Err(e);
                }
            }
            if v.is_finite() {
                now.insert(id.clone(), *v);
            }
        }
        let start = exp.process_start();
        let restarted = matches!((self.last_start, start), (Some(a), Some(b)) if a != b);
        if let Some(last) = &self.last {
            let mut reset = restarted;
            for (id, v) in &now {
                let inc = match last.get(id) {
                    Some(prev) if !restarted && v >= prev => v - prev,
                    Some(_) => {
                        reset = true;
                        *v
                    }
                    // A series seen for the first time since the previous scrape began at zero.
                    None => *v,
                };
                *self.increase.entry(id.clone()).or_default() += inc;
            }
            if reset {
                self.resets += 1;
            }
        }
        self.last = Some(now);
        self.last_start = start.or(self.last_start);
        self.scrapes += 1;
        Ok(())
    }

    /// Records a failed scrape.
    pub fn fail(&mut self, why: String) {
        self.failures += 1;
        self.last_error = Some(why);
    }

    /// Requests and errors counted over the scrapes so far; `None` before two scrapes.
    pub fn counts(&self, requests: &Selector, errors: &Selector) -> Option<Counts> {
        if self.scrapes < 2 {
            return None;
        }
        let sum = |sel: &Selector| {
            self.increase
                .iter()
                .filter(|(id, _)| sel.matches(id))
                .map(|(_, v)| *v)
                .sum::<f64>()
        };
        Some(Counts {
            requests: sum(requests).round() as u64,
            errors: sum(errors).round() as u64,
        })
    }

    /// Did any scrape find a series for `sel`?
    pub fn saw(&self, sel: &Selector) -> bool {
        self.increase.keys().any(|id| sel.matches(id))
            || self
                .last
                .as_ref()
                .is_some_and(|l| l.keys().any(|id| sel.matches(id)))
    }
}

/// Requests and errors counted on one host or a group of hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Requests in the window.
    pub requests: u64,
    /// Failed requests in the window.
    pub errors: u64,
}

impl Counts {
    /// errors / requests; 0 without requests.
    pub fn ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, o: Counts) -> Counts {
        Counts {
            requests: self.requests + o.requests,
            errors: self.errors + o.errors,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The verdict

/// What the canary phase concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Within `max_error_ratio` of the baseline with at least `min_requests`: the rest of the
    /// fleet rolls out.
    Promote,
    /// More than `max_error_ratio` above the baseline: the canary hosts are reverted (exit 12).
    Worse,
    /// Too few requests or unreadable metrics: reverted (exit 13) unless
    /// `--promote-inconclusive`.
    Inconclusive,
}

impl Verdict {
    /// The word shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Promote => "promote",
            Verdict::Worse => "worse",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The judging rule (`[package.metadata.ship.canary]`).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// How far the canary's error ratio may exceed the baseline's.
    pub max_error_ratio: f64,
    /// Fewer canary requests in the window: inconclusive.
    pub min_requests: u64,
}

impl Policy {
    /// How far past the baseline the canary's ratio must be to fail before the window ends:
    /// three times `max_error_ratio`, and at least `max_error_ratio + 0.01` (so that
    /// `max_error_ratio = 0` does not stop the window at the first error the baseline did not
    /// also have in proportion).
    pub fn far(&self) -> f64 {
        (3.0 * self.max_error_ratio).max(self.max_error_ratio + 0.01)
    }
}

/// The numbers of one side (canary or baseline), or why there are none.
#[derive(Debug, Clone, PartialEq)]
pub enum Side {
    /// Counted over the window on `hosts` hosts.
    Counted {
        /// How many hosts' counters were read.
        hosts: usize,
        /// Their sum.
        counts: Counts,
    },
    /// The metrics could not be read (the message names the host).
    Unreadable(String),
}

/// A verdict and the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// The canary's numbers, when read.
    pub canary: Option<Counts>,
    /// The baseline's numbers; `None` when there is no baseline (every host is a canary) or it
    /// could not be read.
    pub baseline: Option<Counts>,
    /// Why, in one sentence.
    pub reason: String,
    /// Judged worse before the window ended.
    pub early: bool,
}

/// The verdict at the end of the window.
///
/// * The canary unreadable, or with fewer than `min_requests` requests: inconclusive.
/// * A baseline (hosts still on the old release) that cannot be read: inconclusive; one without
///   requests, or no baseline at all (every host is a canary), counts as an error ratio of 0,
///   so the canary is held to `max_error_ratio` itself.
/// * Canary ratio − baseline ratio > `max_error_ratio`: worse; otherwise promote.
pub fn judge(policy: &Policy, canary: &Side, baseline: Option<&Side>) -> Judgement {
    let c = match canary {
        Side::Unreadable(why) => return inconclusive(None, None, why.clone()),
        Side::Counted { counts, .. } => *counts,
    };
    let b = match baseline {
        None => None,
        Some(Side::Unreadable(why)) => {
            return inconclusive(Some(c), None, format!("the baseline's {why}"))
        }
        Some(Side::Counted { counts, .. }) => Some(*counts),
    };
    if c.errors > c.requests {
        return inconclusive(
            Some(c),
            b,
            format!(
                "the canary counted more errors ({}) than requests ({}): `errors` must select a subset of what `requests` selects",
                c.errors, c.requests
            ),
        );
    }
    if c.requests < policy.min_requests {
        return inconclusive(
            Some(c),
            b,
            format!(
                "the canary served {} requests, fewer than min_requests = {}",
                c.requests, policy.min_requests
            ),
        );
    }
    let base = b.map_or(0.0, |b| b.ratio().min(1.0));
    let excess = c.ratio() - base;
    let against = match b {
        Some(b) if b.requests > 0 => format!("the baseline's {}", pct(base)),
        Some(_) => "0% (the baseline served no requests)".to_string(),
        None => "0% (no baseline: every host is a canary)".to_string(),
    };
    if excess > policy.max_error_ratio + 1e-12 {
        Judgement {
            verdict: Verdict::Worse,
            canary: Some(c),
            baseline: b,
            reason: format!(
                "the canary's error ratio {} exceeds {against} by more than max_error_ratio = {}",
                pct(c.ratio()),
                policy.max_error_ratio
            ),
            early: false,
        }
    } else {
        Judgement {
            verdict: Verdict::Promote,
            canary: Some(c),
            baseline: b,
            reason: format!(
                "the canary's error ratio {} is within max_error_ratio = {} of {against}",
                pct(c.ratio()),
                policy.max_error_ratio
            ),
            early: false,
        }
    }
}

/// Inside the window: `Some(worse)` when the canary has at least `min_requests` requests and its
/// error ratio is more than [`Policy::far`] above the baseline's (0 without a usable baseline).
/// Unreadable or thin numbers never end the window early.
pub fn early_failure(policy: &Policy, canary: &Side, baseline: Option<&Side>) -> Option<Judgement> {
    let Side::Counted { counts: c, .. } = canary else {
        return None;
    };
    let b = match baseline {
        Some(Side::Counted { counts, .. }) => Some(*counts),
        _ => None,
    };
    if c.requests < policy.min_requests || c.errors > c.requests {
        return None;
    }
    let base = b.map_or(0.0, |b| b.ratio());
    let far = policy.far();
    (c.ratio() - base > far).then(|| Judgement {
        verdict: Verdict::Worse,
        canary: Some(*c),
        baseline: b,
        reason: format!(
            "the canary's error ratio {} is more than {} above the baseline's {} after {} requests (failed before the window ended)",
            pct(c.ratio()),
            pct(far),
            pct(base),
            c.requests
        ),
        early: true,
    })
}

fn inconclusive(canary: Option<Counts>, baseline: Option<Counts>, reason: String) -> Judgement {
    Judgement {
        verdict: Verdict::Inconclusive,
        canary,
        baseline,
        reason,
        early: false,
    }
}

/// A ratio as a percentage with two decimals (`2.50%`).
pub fn pct(r: f64) -> String {
    format!("{:.2}%", r * 100.0)
}

// ---------------------------------------------------------------------------------------------
// Reading a host's metrics

/// Reads `target` on the host through a port forward on its SSH connection (as the health
/// probe does), and returns the body. The error says what went wrong, without the host name.
pub async fn scrape(conn: &Connection, target: &HttpTarget) -> Result<String, String> {
    let forward = conn
        .forward(&target.host, target.port)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!("http://{}{}", forward.local, target.path);
    let host_header = format!("{}:{}", target.host, target.port);
    let path = target.path.clone();
    let got = tokio::task::spawn_blocking(move || get(&url, &host_header))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    conn.close_forward(forward).await;
    got.map_err(|e| format!("metrics GET {path}: {e}"))
}

/// One GET of a metrics page (text format asked for), with short timeouts.
pub fn get(url: &str, host_header: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .header("Host", host_header)
        .header("Accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")
        .header("User-Agent", "cargo-ship canary")
        .call()
        .map_err(|e| format!("no answer: {e}"))?;
    let code = resp.status().as_u16();
    if !(200..300).contains(&code) {
        return Err(format!("answered {code}"));
    }
    resp.body_mut()
        .with_config()
        .limit(32 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| format!("reading the answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{code="200",path="/version"} 1027 1395066363000
http_requests_total{path="/version",code="503"} 3
http_requests_total{code="500", path="/a\"b\\c\nd"} 2
http_requests_total{code="404",} 7
# a free comment
   
# TYPE queue_depth gauge
queue_depth 12
untyped_thing{x="1"} +Inf
nan_thing NaN
process_start_time_seconds 1.7e9
# EOF
"#;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_samples_labels_escapes_and_comments() {
        let e = parse(PAGE).unwrap();
        assert_eq!(e.samples.len(), 8);
        assert_eq!(e.type_of("http_requests_total"), Some("counter"));
        assert_eq!(e.type_of("queue_depth"), Some("gauge"));
        let (id, v) = &e.samples[1];
        // Labels are sorted, whatever their order on the line.
        assert_eq!(
            id.labels,
            [
                ("code".to_string(), "503".to_string()),
                ("path".to_string(), "/version".to_string())
            ]
        );
        assert_eq!(*v, 3.0);
        assert_eq!(e.samples[2].0.label("path"), "/a\"b\\c\nd");
        assert_eq!(e.samples[3].0.label("code"), "404");
        assert_eq!(e.samples[3].0.label("missing"), "");
        assert_eq!(e.samples[5].1, f64::INFINITY);
        assert!(e.samples[6].1.is_nan());
        assert_eq!(e.process_start(), Some(1.7e9));
    }

    #[test]
    fn malformed_lines_name_the_line() {
        assert_eq!(
            parse("ok 1\nbad{code=\"5\" 1\n").unwrap_err(),
            "line 2: expected `,` or `}` after a label value: `bad{code=\"5\" 1`"
        );
        assert_eq!(
            parse("x{a=1} 2").unwrap_err(),
            "line 1: expected a quoted value, found `1`: `x{a=1} 2`"
        );
        assert_eq!(
            parse("x 1\ny abc").unwrap_err(),
            "line 2: expected a number, found `abc`: `y abc`"
        );
        assert_eq!(
            parse("x{a=\"1\",a=\"2\"} 1").unwrap_err(),
            "line 1: the label `a` appears twice: `x{a=\"1\",a=\"2\"} 1`"
        );
        assert_eq!(
            parse("x{a=\"1} 1").unwrap_err(),
            "line 1: a quoted value is not closed: `x{a=\"1} 1`"
        );
        assert_eq!(
            parse("x").unwrap_err(),
            "line 1: expected a space and a value after the series: `x`"
        );
        assert!(parse("").unwrap().samples.is_empty());
    }

    #[test]
    fn selectors_match_with_all_operators() {
        let e = parse(PAGE).unwrap();
        assert_eq!(sel("http_requests_total").sum(&e), (1039.0, 4));
        assert_eq!(sel(r#"http_requests_total{code=~"5.."}"#).sum(&e), (5.0, 2));
        // Anchored: `5` alone does not match `503`.
        assert_eq!(sel(r#"http_requests_total{code=~"5"}"#).sum(&e).1, 0);
        assert_eq!(
            sel(r#"http_requests_total{code!="200"}"#).sum(&e),
            (12.0, 3)
        );
        assert_eq!(
            sel(r#"http_requests_total{code=~"5..", path="/version"}"#).sum(&e),
            (3.0, 1)
        );
        assert_eq!(
            sel(r#"http_requests_total{code!~"2..|4..",path!="/version"}"#).sum(&e),
            (2.0, 1)
        );
        // The escaped label value matches its unescaped form.
        assert_eq!(
            sel(r#"http_requests_total{path="/a\"b\\c\nd"}"#).sum(&e),
            (2.0, 1)
        );
        assert_eq!(sel(r#"{__name__=~"http_.*_total"}"#).sum(&e).1, 4);
        // A missing label is the empty value.
        assert_eq!(sel(r#"untyped_thing{code=""}"#).sum(&e).1, 1);
        assert_eq!(sel(r#"http_requests_total{method=""}"#).sum(&e).1, 4);
        assert_eq!(
            sel("http_requests_total").metric_name(),
            Some("http_requests_total")
        );
        assert_eq!(
            sel(" x { a = 'single' } ").to_string(),
            "x { a = 'single' }"
        );
    }

    #[test]
    fn selector_errors() {
        let err = |s: &str| Selector::parse(s).unwrap_err();
        assert_eq!(err(""), "expected a metric name like `http_requests_total`");
        assert_eq!(
            err("{}"),
            "expected a metric name or at least one label matcher"
        );
        assert_eq!(
            err(r#"x{code~"5"}"#),
            "expected `=`, `!=`, `=~` or `!~` after the label `code`"
        );
        assert_eq!(
            err(r#"x{code=~"5(("}"#).lines().next().unwrap(),
            "`5((` is not a regular expression: regex parse error:"
        );
        assert_eq!(
            err("rate(x[5m])"),
            "unexpected `(` after the selector (only a name and {label matchers} are allowed, no functions or ranges)"
        );
        assert_eq!(
            err(r#"x{code="5""#),
            "expected `,` or `}` after a label matcher"
        );
        assert_eq!(err("x{code=5}"), "expected a quoted value, found `5`");
        assert_eq!(
            err("9x"),
            "expected a metric name like `http_requests_total`"
        );
    }

    fn page(ok: u64, err: u64) -> Exposition {
        let mut s = format!(
            "# TYPE http_requests_total counter\nhttp_requests_total{{code=\"200\"}} {ok}\n"
        );
        if err > 0 {
            s.push_str(&format!("http_requests_total{{code=\"500\"}} {err}\n"));
        }
        parse(&s).unwrap()
    }

    fn counts(t: &Tally) -> Counts {
        t.counts(
            &sel("http_requests_total"),
            &sel(r#"http_requests_total{code=~"5.."}"#),
        )
        .unwrap()
    }

    #[test]
    fn tally_sums_increases_across_resets() {
        let (r, e) = (
            sel("http_requests_total"),
            sel(r#"http_requests_total{code=~"5.."}"#),
        );
        let mut t = Tally::default();
        t.observe(&page(1000, 0), &[&r, &e]).unwrap();
        assert_eq!(t.counts(&r, &e), None, "one scrape counts nothing");
        t.observe(&page(1100, 0), &[&r, &e]).unwrap();
        assert_eq!(
            counts(&t),
            Counts {
                requests: 100,
                errors: 0
            }
        );
        // The 500 series appears: it counted from zero.
        t.observe(&page(1150, 5), &[&r, &e]).unwrap();
        assert_eq!(
            counts(&t),
            Counts {
                requests: 155,
                errors: 5
            }
        );
        // The process restarted: both counters begin again.
        t.observe(&page(30, 2), &[&r, &e]).unwrap();
        assert_eq!(
            counts(&t),
            Counts {
                requests: 187,
                errors: 7
            }
        );
        assert_eq!(t.resets, 1);
        // The 500 series vanished (restart before any error), then came back.
        t.observe(&page(50, 0), &[&r, &e]).unwrap();
        t.observe(&page(60, 1), &[&r, &e]).unwrap();
        assert_eq!(
            counts(&t),
            Counts {
                requests: 218,
                errors: 8
            }
        );
        assert_eq!(t.scrapes, 6);
    }

    #[test]
    fn a_new_process_start_time_is_a_reset_even_when_counters_grew() {
        let (r, e) = (sel("reqs"), sel("errs"));
        let mut t = Tally::default();
        let p = |start: u32, reqs: u32| {
            parse(&format!(
                "process_start_time_seconds {start}\nreqs {reqs}\nerrs 0\n"
            ))
            .unwrap()
        };
        t.observe(&p(100, 50), &[&r, &e]).unwrap();
        t.observe(&p(100, 60), &[&r, &e]).unwrap();
        // Restarted and already past 60: without the start time this would count 10.
        t.observe(&p(200, 80), &[&r, &e]).unwrap();
        assert_eq!(t.counts(&r, &e).unwrap().requests, 90);
        assert_eq!(t.resets, 1);
    }

    #[test]
    fn gauges_are_refused() {
        let r = sel("queue_depth");
        let mut t = Tally::default();
        let err = t.observe(&parse(PAGE).unwrap(), &[&r]).unwrap_err();
        assert_eq!(
            err,
            "`queue_depth` is a gauge, not a counter: `requests` and `errors` must select counters"
        );
        assert_eq!(t.failures, 1);
        assert_eq!(t.scrapes, 0);
    }

    const POLICY: Policy = Policy {
        max_error_ratio: 0.01,
        min_requests: 100,
    };

    fn side(requests: u64, errors: u64) -> Side {
        Side::Counted {
            hosts: 1,
            counts: Counts { requests, errors },
        }
    }

    #[test]
    fn verdicts() {
        let j = judge(&POLICY, &side(1000, 15), Some(&side(3000, 30)));
        assert_eq!(j.verdict, Verdict::Promote, "{}", j.reason);
        assert_eq!(
            j.reason,
            "the canary's error ratio 1.50% is within max_error_ratio = 0.01 of the baseline's 1.00%"
        );
        let j = judge(&POLICY, &side(1000, 50), Some(&side(3000, 30)));
        assert_eq!(j.verdict, Verdict::Worse);
        assert_eq!(
            j.reason,
            "the canary's error ratio 5.00% exceeds the baseline's 1.00% by more than max_error_ratio = 0.01"
        );
        assert_eq!(
            j.canary,
            Some(Counts {
                requests: 1000,
                errors: 50
            })
        );
        assert_eq!(
            j.baseline,
            Some(Counts {
                requests: 3000,
                errors: 30
            })
        );
        // Exactly at the limit is still within it.
        assert_eq!(
            judge(&POLICY, &side(1000, 20), Some(&side(1000, 10))).verdict,
            Verdict::Promote
        );
        assert_eq!(
            judge(&POLICY, &side(1000, 21), Some(&side(1000, 10))).verdict,
            Verdict::Worse
        );
        let j = judge(&POLICY, &side(99, 0), Some(&side(3000, 30)));
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert_eq!(
            j.reason,
            "the canary served 99 requests, fewer than min_requests = 100"
        );
        let j = judge(
            &POLICY,
            &Side::Unreadable("metrics on host0 could not be read: no answer".into()),
            Some(&side(10, 0)),
        );
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert_eq!(j.canary, None);
        let j = judge(
            &POLICY,
            &side(500, 0),
            Some(&Side::Unreadable("metrics could not be read".into())),
        );
        assert_eq!(
            (j.verdict, j.reason.as_str()),
            (
                Verdict::Inconclusive,
                "the baseline's metrics could not be read"
            )
        );
        // No baseline: the canary is held to max_error_ratio itself.
        let j = judge(&POLICY, &side(500, 5), None);
        assert_eq!(j.verdict, Verdict::Promote);
        assert!(
            j.reason
                .ends_with("of 0% (no baseline: every host is a canary)"),
            "{}",
            j.reason
        );
        assert_eq!(judge(&POLICY, &side(500, 6), None).verdict, Verdict::Worse);
        // A baseline without traffic counts as 0%.
        let j = judge(&POLICY, &side(500, 6), Some(&side(0, 0)));
        assert_eq!(j.verdict, Verdict::Worse);
        // Errors beyond requests: the selectors do not fit together.
        let j = judge(&POLICY, &side(100, 200), None);
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(j.reason.contains("must select a subset"), "{}", j.reason);
    }

    #[test]
    fn early_failure_needs_enough_requests_and_a_ratio_far_past_the_limit() {
        assert!((POLICY.far() - 0.03).abs() < 1e-12);
        let zero = Policy {
            max_error_ratio: 0.0,
            min_requests: 10,
        };
        assert!((zero.far() - 0.01).abs() < 1e-12);
        // 5% vs 1%: past 3 x 1% above the baseline once min_requests are in.
        let base = side(1000, 10);
        assert!(early_failure(&POLICY, &side(99, 50), Some(&base)).is_none());
        let j = early_failure(&POLICY, &side(200, 10), Some(&base)).unwrap();
        assert_eq!(j.verdict, Verdict::Worse);
        assert!(j.early);
        assert_eq!(
            j.reason,
            "the canary's error ratio 5.00% is more than 3.00% above the baseline's 1.00% after 200 requests (failed before the window ended)"
        );
        // 3% vs 1%: worse at the end, but not far enough to stop early.
        assert!(early_failure(&POLICY, &side(1000, 30), Some(&base)).is_none());
        assert_eq!(
            judge(&POLICY, &side(1000, 30), Some(&base)).verdict,
            Verdict::Worse
        );
        assert!(early_failure(&POLICY, &Side::Unreadable("x".into()), Some(&base)).is_none());
    }

    #[test]
    fn reads_a_page_over_http() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for (i, s) in l.incoming().take(2).enumerate() {
                let mut s = s.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let (status, body) = if i == 0 {
                    ("200 OK", "x_total 3\n")
                } else {
                    ("404 Not Found", "no")
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let url = format!("http://{addr}/metrics");
        assert_eq!(get(&url, "x").unwrap(), "x_total 3\n");
        assert_eq!(get(&url, "x").unwrap_err(), "answered 404");
    }
}
