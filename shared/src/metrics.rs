//! Metrics as CloudWatch Embedded Metric Format (EMF) lines on stdout, for both programs.
//!
//! An EMF line is a JSON object whose `_aws` member tells CloudWatch Logs which of its other
//! members are metrics; CloudWatch extracts them from Lambda's and ECS's (awslogs) log streams
//! without an agent. Logs go to stderr ([`crate::logging`]), so stdout carries these lines and
//! nothing else: one object per line, each written whole under the stdout lock.
//!
//! Counting is done in-process: [`Aggregator`] (pure, driven by the caller's clock) sums the
//! counters and keeps the samples of a window, and [`Aggregator::flush`] renders the window as
//! EMF lines. [`Metrics`] is the shell around it: a lock, a [`Clock`], a [`Sink`] (stdout in
//! production), and [`Metrics::run`], a task that flushes each window [`FLUSH_INTERVAL`] after
//! its first datapoint — so metrics are written at least every 10 s while there is activity and
//! not at all while there is none. The programs also call [`Metrics::flush`] at the end of each
//! Lambda invocation and on shutdown.
//!
//! Written with serde_json rather than an EMF library: the format is a small JSON convention,
//! and the Rust EMF writers (AWS's `metrique` family) are built around one entry per unit of
//! work with their own sinks and macros, not around the in-process aggregation wanted here.
//! The `metrics` facade with `metrics_cloudwatch_embedded` (0.10, issue 22) was weighed too and
//! not taken: its histograms keep at most 100 unflushed values and drop the rest (here a busy
//! window's `DeliveryDelay` samples go on further lines, none lost); it installs one global
//! recorder per process, so the per-instance [`Metrics`] (and the in-memory sink each test
//! reads) could not stay; and it flushes on a fixed timer rather than a window after its first
//! datapoint, silent while idle.
//!
//! Dimensions are one low-cardinality pair, `Service` = `ingress` or `relay`: never a domain or
//! an address, which would create a CloudWatch metric (and a monthly charge) per value. A
//! counter may add one more dimension with a fixed, declared set of values
//! ([`Metric::counter_by`], e.g. `AuthChecked` by `Result`): each value is its own EMF line with
//! dimensions `[Service, <dimension>]`, written (every value, zeros included) in each window in
//! which it counted anything.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};

/// CloudWatch namespace when `METRICS_NAMESPACE` is unset.
pub const DEFAULT_NAMESPACE: &str = "SmtpRelay";
/// The variable both programs read the namespace from.
pub const NAMESPACE_VAR: &str = "METRICS_NAMESPACE";
/// A window's datapoints are written this long after its first one.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// EMF takes at most 100 values for one metric in one object; more go on further lines.
pub const MAX_VALUES: usize = 100;
/// The dimension every metric carries.
pub const DIMENSION: &str = "Service";

/// How a metric aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Summed over the window (EMF unit `Count`); every line of a window carries every counter,
    /// zeros included, so rates such as Bounced / (Sent + Bounced) always have both terms.
    Counter,
    /// Every value kept (EMF unit `Seconds`), for percentiles; written only when there are some.
    Seconds,
}

impl Kind {
    fn unit(self) -> &'static str {
        match self {
            Kind::Counter => "Count",
            Kind::Seconds => "Seconds",
        }
    }
}

/// One metric a program emits: its name (a contract) and how it aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// A second dimension's name and its only values (empty: none).
    pub dimension: &'static str,
    pub values: &'static [&'static str],
}

impl Metric {
    pub const fn counter(name: &'static str) -> Self {
        Self { name, kind: Kind::Counter, dimension: "", values: &[] }
    }
    /// A counter counted per value of `dimension` ([`Metrics::count_by`]).
    pub const fn counter_by(name: &'static str, dimension: &'static str, values: &'static [&'static str]) -> Self {
        Self { name, kind: Kind::Counter, dimension, values }
    }
    pub const fn seconds(name: &'static str) -> Self {
        Self { name, kind: Kind::Seconds, dimension: "", values: &[] }
    }
}

/// `METRICS_NAMESPACE`, checked ([`DEFAULT_NAMESPACE`] when unset).
pub fn namespace(r: &crate::config::Reader) -> Result<String, crate::config::ConfigError> {
    let ns = r.opt(NAMESPACE_VAR).unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    valid_namespace(&ns).map_err(|e| crate::config::err(NAMESPACE_VAR, e))?;
    Ok(ns)
}

/// Is `ns` a namespace CloudWatch accepts for custom metrics?
pub fn valid_namespace(ns: &str) -> Result<(), String> {
    if ns.is_empty() || ns.len() > 255 {
        return Err("must be 1 to 255 characters".into());
    }
    if let Some(c) = ns.chars().find(|c| !(c.is_ascii_alphanumeric() || ".-_/#:".contains(*c))) {
        return Err(format!("{c:?} is not allowed (letters, digits and . - _ / # : only)"));
    }
    if ns.starts_with("AWS/") {
        return Err("the AWS/ prefix is reserved for AWS services".into());
    }
    Ok(())
}

/// Datapoints of one window, and how they become EMF lines. Pure: time comes in as arguments
/// (milliseconds since the Unix epoch).
#[derive(Debug)]
pub struct Aggregator {
    namespace: String,
    service: &'static str,
    metrics: &'static [Metric],
    counts: Vec<u64>,
    /// Per metric, per declared value of its second dimension.
    by: Vec<Vec<u64>>,
    samples: Vec<Vec<f64>>,
    /// When the window's first datapoint arrived; `None` while the window is empty.
    opened: Option<i64>,
    /// How long a window stays open ([`FLUSH_INTERVAL`]).
    interval: Duration,
}

impl Aggregator {
    pub fn new(namespace: &str, service: &'static str, metrics: &'static [Metric]) -> Self {
        Self {
            namespace: namespace.to_string(),
            service,
            metrics,
            counts: vec![0; metrics.len()],
            by: Self::zero_by(metrics),
            samples: vec![Vec::new(); metrics.len()],
            opened: None,
            interval: FLUSH_INTERVAL,
        }
    }

    /// The same with windows of `interval` (tests of the flusher in real time).
    pub fn with_interval(self, interval: Duration) -> Self {
        Self { interval, ..self }
    }

    fn index(&self, name: &str, kind: Kind) -> Option<usize> {
        let i = self.metrics.iter().position(|m| m.name == name && m.kind == kind);
        debug_assert!(i.is_some(), "metric {name} ({kind:?}) is not declared");
        i
    }

    /// Add `n` to counter `name`.
    pub fn count(&mut self, name: &str, n: u64, now: i64) {
        if n == 0 {
            return;
        }
        if let Some(i) = self.index(name, Kind::Counter) {
            self.counts[i] += n;
            self.opened.get_or_insert(now);
        }
    }

    fn zero_by(metrics: &[Metric]) -> Vec<Vec<u64>> {
        metrics.iter().map(|m| vec![0; m.values.len()]).collect()
    }

    /// Add `n` to counter `name` for `value` of its second dimension.
    pub fn count_by(&mut self, name: &str, value: &str, n: u64, now: i64) {
        if n == 0 {
            return;
        }
        let Some(i) = self.index(name, Kind::Counter) else { return };
        let j = self.metrics[i].values.iter().position(|v| *v == value);
        debug_assert!(j.is_some(), "metric {name} has no dimension value {value}");
        if let Some(j) = j {
            self.by[i][j] += n;
            self.opened.get_or_insert(now);
        }
    }

    /// Record one value of sample metric `name`.
    pub fn observe(&mut self, name: &str, value: f64, now: i64) {
        if let Some(i) = self.index(name, Kind::Seconds) {
            self.samples[i].push(value);
            self.opened.get_or_insert(now);
        }
    }

    /// How long until the window is due: `None` when it is empty, zero when it is due now.
    pub fn due_in(&self, now: i64) -> Option<Duration> {
        let due = self.opened? + self.interval.as_millis() as i64;
        Some(Duration::from_millis(due.saturating_sub(now).max(0) as u64))
    }

    /// The window as EMF lines (none when it is empty), and a new empty window.
    pub fn flush(&mut self, now: i64) -> Vec<String> {
        if self.opened.take().is_none() {
            return Vec::new();
        }
        let counts = std::mem::replace(&mut self.counts, vec![0; self.metrics.len()]);
        let by = std::mem::replace(&mut self.by, Self::zero_by(self.metrics));
        let samples = std::mem::replace(&mut self.samples, vec![Vec::new(); self.metrics.len()]);
        let mut lines = Vec::new();
        // Line k carries the k-th hundred values of each sample metric; the first line also
        // carries the counters.
        let rounds = samples.iter().map(|s| s.len().div_ceil(MAX_VALUES)).max().unwrap_or(0).max(1);
        for round in 0..rounds {
            let mut values = Map::new();
            let mut defs = Vec::new();
            for (i, m) in self.metrics.iter().enumerate() {
                let value = match m.kind {
                    _ if !m.values.is_empty() => continue,
                    Kind::Counter if round == 0 => json!(counts[i]),
                    Kind::Counter => continue,
                    Kind::Seconds => {
                        let chunk: Vec<f64> =
                            samples[i].iter().skip(round * MAX_VALUES).take(MAX_VALUES).copied().collect();
                        if chunk.is_empty() {
                            continue;
                        }
                        json!(chunk)
                    }
                };
                defs.push(json!({"Name": m.name, "Unit": m.kind.unit()}));
                values.insert(m.name.to_string(), value);
            }
            if defs.is_empty() {
                continue;
            }
            let mut line = Map::new();
            line.insert(
                "_aws".into(),
                json!({
                    "Timestamp": now,
                    "CloudWatchMetrics": [{"Namespace": self.namespace, "Dimensions": [[DIMENSION]], "Metrics": defs}],
                }),
            );
            line.insert(DIMENSION.into(), Value::from(self.service));
            line.extend(values);
            lines.push(Value::Object(line).to_string());
        }
        // A counter by dimension: in the windows where it counted anything, every value.
        for (i, m) in self.metrics.iter().enumerate().filter(|(i, _)| by[*i].iter().any(|n| *n > 0)) {
            for (j, value) in m.values.iter().enumerate() {
                let line = json!({
                    "_aws": {
                        "Timestamp": now,
                        "CloudWatchMetrics": [{
                            "Namespace": self.namespace,
                            "Dimensions": [[DIMENSION, m.dimension]],
                            "Metrics": [{"Name": m.name, "Unit": m.kind.unit()}],
                        }],
                    },
                    DIMENSION: self.service,
                    m.dimension: value,
                    m.name: by[i][j],
                });
                lines.push(line.to_string());
            }
        }
        lines
    }
}

/// Milliseconds since the Unix epoch, injectable for tests.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// Where EMF lines go.
pub trait Sink: Send + Sync {
    fn write(&self, lines: &[String]);
}

/// Standard output: all lines of a flush in one write under the stdout lock, so no other
/// writer in the process can come between them.
pub struct Stdout;

impl Sink for Stdout {
    fn write(&self, lines: &[String]) {
        use std::io::Write;
        let mut buf = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        let mut out = std::io::stdout().lock();
        // Nowhere to report a closed stdout but the log; metrics must never stop the program.
        if let Err(e) = out.write_all(buf.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "cannot write metrics to stdout");
        }
    }
}

/// Lines kept in memory: tests, and benchmarks that want no output.
#[derive(Clone, Default)]
pub struct Memory(pub Arc<Mutex<Vec<String>>>);

impl Sink for Memory {
    fn write(&self, lines: &[String]) {
        self.0.lock().expect("metrics memory lock").extend_from_slice(lines);
    }
}

/// A program's metrics: the [`Aggregator`] behind a lock, its clock and its sink.
pub struct Metrics {
    window: Mutex<Aggregator>,
    clock: Box<dyn Clock>,
    sink: Box<dyn Sink>,
    /// Wakes [`Metrics::run`] when an empty window gets its first datapoint.
    activity: tokio::sync::Notify,
}

impl Metrics {
    pub fn new(aggregator: Aggregator, clock: Box<dyn Clock>, sink: Box<dyn Sink>) -> Arc<Self> {
        Arc::new(Self { window: Mutex::new(aggregator), clock, sink, activity: tokio::sync::Notify::new() })
    }

    /// Production metrics: the system clock, stdout.
    pub fn stdout(namespace: &str, service: &'static str, metrics: &'static [Metric]) -> Arc<Self> {
        Self::new(Aggregator::new(namespace, service, metrics), Box::new(SystemClock), Box::new(Stdout))
    }

    /// Metrics kept in memory (tests, benchmarks), with the system clock.
    pub fn memory(service: &'static str, metrics: &'static [Metric]) -> (Arc<Self>, Memory) {
        let sink = Memory::default();
        let m = Self::new(
            Aggregator::new(DEFAULT_NAMESPACE, service, metrics),
            Box::new(SystemClock),
            Box::new(sink.clone()),
        );
        (m, sink)
    }

    fn with_window(&self, f: impl FnOnce(&mut Aggregator, i64)) {
        let now = self.clock.now_ms();
        let mut w = self.window.lock().expect("metrics lock");
        let was_empty = w.due_in(now).is_none();
        f(&mut w, now);
        if was_empty && w.due_in(now).is_some() {
            self.activity.notify_one();
        }
    }

    /// Add `n` to counter `name`.
    pub fn count(&self, name: &str, n: u64) {
        self.with_window(|w, now| w.count(name, n, now));
    }

    /// Add `n` to counter `name` for `value` of its second dimension.
    pub fn count_by(&self, name: &str, value: &str, n: u64) {
        self.with_window(|w, now| w.count_by(name, value, n, now));
    }

    /// Record one value of sample metric `name`.
    pub fn observe(&self, name: &str, value: f64) {
        self.with_window(|w, now| w.observe(name, value, now));
    }

    /// Write whatever the window holds, now (end of a Lambda invocation, shutdown).
    pub fn flush(&self) {
        let lines = self.window.lock().expect("metrics lock").flush(self.clock.now_ms());
        if !lines.is_empty() {
            self.sink.write(&lines);
        }
    }

    /// Write the window if it is due; the time until it is due otherwise (`None`: empty).
    pub fn flush_if_due(&self) -> Option<Duration> {
        let now = self.clock.now_ms();
        let mut w = self.window.lock().expect("metrics lock");
        match w.due_in(now) {
            Some(d) if d.is_zero() => {
                let lines = w.flush(now);
                drop(w);
                self.sink.write(&lines);
                None
            }
            other => other,
        }
    }

    /// Flush each window when it is due, forever (spawn it; it holds no lock while waiting).
    pub async fn run(self: Arc<Self>) {
        loop {
            match self.flush_if_due() {
                Some(wait) => tokio::time::sleep(wait).await,
                None => self.activity.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    const T0: i64 = 1_800_000_000_000;
    static DEFS: &[Metric] = &[Metric::counter("Sent"), Metric::counter("Bounced"), Metric::seconds("DeliveryDelay")];

    fn parse(line: &str) -> Value {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn a_window_becomes_one_emf_object_with_every_counter() {
        let mut a = Aggregator::new("SmtpRelay", "relay", DEFS);
        a.count("Sent", 2, T0);
        a.count("Sent", 1, T0 + 5);
        a.observe("DeliveryDelay", 4.0, T0 + 6);
        let lines = a.flush(T0 + 10_000);
        assert_eq!(lines.len(), 1);
        let v = parse(&lines[0]);
        assert_eq!(v["_aws"]["Timestamp"], T0 + 10_000);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "SmtpRelay");
        assert_eq!(directive["Dimensions"], json!([["Service"]]));
        assert_eq!(
            directive["Metrics"],
            json!([
                {"Name": "Sent", "Unit": "Count"},
                {"Name": "Bounced", "Unit": "Count"},
                {"Name": "DeliveryDelay", "Unit": "Seconds"}
            ])
        );
        assert_eq!(
            (v["Service"].as_str(), v["Sent"].as_u64(), v["Bounced"].as_u64()),
            (Some("relay"), Some(3), Some(0))
        );
        assert_eq!(v["DeliveryDelay"], json!([4.0]));
        assert!(a.flush(T0 + 20_000).is_empty(), "the window starts empty again");
    }

    #[test]
    fn a_counter_by_dimension_writes_a_line_per_value() {
        static M: &[Metric] =
            &[Metric::counter("Accepted"), Metric::counter_by("AuthChecked", "Result", &["pass", "fail"])];
        let mut a = Aggregator::new("NS", "ingress", M);
        a.count_by("AuthChecked", "fail", 2, 1000);
        a.count_by("AuthChecked", "fail", 1, 1000);
        let lines: Vec<Value> = a.flush(2000).iter().map(|l| parse(l)).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["Accepted"], 0);
        assert!(lines[0].get("AuthChecked").is_none());
        for (line, (value, n)) in lines[1..].iter().zip([("pass", 0), ("fail", 3)]) {
            assert_eq!(line["Result"], value);
            assert_eq!(line["AuthChecked"], n);
            assert_eq!(line["Service"], "ingress");
            assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Service", "Result"]]));
        }
        assert!(a.flush(3000).is_empty());
        a.count("Accepted", 1, 4000);
        let lines = a.flush(5000);
        assert_eq!(lines.len(), 1, "no AuthChecked lines in a window that counted none: {lines:?}");
    }

    #[test]
    fn empty_windows_write_nothing_and_zero_counts_open_none() {
        let mut a = Aggregator::new("SmtpRelay", "relay", DEFS);
        a.count("Sent", 0, T0);
        assert_eq!(a.due_in(T0), None);
        assert!(a.flush(T0).is_empty());
    }

    #[test]
    fn samples_past_one_hundred_go_on_further_lines() {
        let mut a = Aggregator::new("SmtpRelay", "relay", DEFS);
        for i in 0..250 {
            a.observe("DeliveryDelay", f64::from(i), T0);
        }
        let lines: Vec<Value> = a.flush(T0).iter().map(|l| parse(l)).collect();
        let sizes: Vec<usize> = lines.iter().map(|l| l["DeliveryDelay"].as_array().unwrap().len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(lines[0]["Sent"], 0, "counters ride on the first line");
        assert!(lines[1].get("Sent").is_none() && lines[2].get("Sent").is_none(), "and only there");
        assert_eq!(
            lines[2]["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{"Name": "DeliveryDelay", "Unit": "Seconds"}])
        );
        assert_eq!(lines[2]["DeliveryDelay"][49], 249.0);
    }

    #[test]
    fn a_window_is_due_ten_seconds_after_its_first_datapoint() {
        let mut a = Aggregator::new("SmtpRelay", "relay", DEFS);
        a.count("Bounced", 1, T0);
        a.count("Sent", 1, T0 + 9_000);
        assert_eq!(a.due_in(T0 + 1), Some(Duration::from_millis(9_999)));
        assert_eq!(a.due_in(T0 + 9_999), Some(Duration::from_millis(1)));
        assert_eq!(a.due_in(T0 + 10_000), Some(Duration::ZERO));
        assert_eq!(a.due_in(T0 + 60_000), Some(Duration::ZERO));
    }

    #[test]
    fn namespace_variable() {
        let read = |v: &[(&str, &str)]| namespace(&crate::config::Reader(&crate::config::vars_with_spool(v)));
        assert_eq!(read(&[]).unwrap(), "SmtpRelay");
        assert_eq!(read(&[("METRICS_NAMESPACE", "Mail/Prod")]).unwrap(), "Mail/Prod");
        assert_eq!(read(&[("METRICS_NAMESPACE", "AWS/SES")]).unwrap_err().var, "METRICS_NAMESPACE");
    }

    #[test]
    fn namespaces() {
        assert!(valid_namespace("SmtpRelay").is_ok());
        assert!(valid_namespace("Mail/Relay-prod_1:x#y.z").is_ok());
        assert!(valid_namespace("").is_err());
        assert!(valid_namespace("AWS/SES").unwrap_err().contains("reserved"));
        assert!(valid_namespace("smtp relay").unwrap_err().contains("' '"));
        assert!(valid_namespace(&"a".repeat(256)).is_err());
    }

    struct FakeClock(Arc<AtomicI64>);
    impl Clock for FakeClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn the_shell_flushes_when_due_and_on_demand() {
        let now = Arc::new(AtomicI64::new(T0));
        let sink = Memory::default();
        let m = Metrics::new(
            Aggregator::new("Test", "ingress", DEFS),
            Box::new(FakeClock(now.clone())),
            Box::new(sink.clone()),
        );
        let written = || sink.0.lock().unwrap().clone();
        assert_eq!(m.flush_if_due(), None, "idle: nothing to wait for");
        m.count("Sent", 1);
        now.store(T0 + 4_000, Ordering::SeqCst);
        m.count("Sent", 1);
        assert_eq!(m.flush_if_due(), Some(Duration::from_secs(6)));
        assert!(written().is_empty());
        now.store(T0 + 10_000, Ordering::SeqCst);
        assert_eq!(m.flush_if_due(), None);
        let lines = written();
        assert_eq!(lines.len(), 1);
        assert_eq!(parse(&lines[0])["Sent"], 2);
        assert_eq!(parse(&lines[0])["_aws"]["Timestamp"], T0 + 10_000);

        m.count("Bounced", 1);
        m.flush();
        assert_eq!(parse(&written()[1])["Bounced"], 1, "flush writes at once");
        m.flush();
        assert_eq!(written().len(), 2, "and nothing when empty");
    }

    #[tokio::test]
    async fn the_flusher_writes_each_window_when_it_is_due_and_idles_between() {
        let interval = Duration::from_millis(200);
        let sink = Memory::default();
        let m = Metrics::new(
            Aggregator::new("Test", "relay", DEFS).with_interval(interval),
            Box::new(SystemClock),
            Box::new(sink.clone()),
        );
        let written = || sink.0.lock().unwrap().clone();
        tokio::spawn(m.clone().run());
        tokio::time::sleep(interval * 2).await;
        assert!(written().is_empty(), "idle: nothing written");
        for round in 1..=2u64 {
            let opened = std::time::Instant::now();
            m.count("Sent", round);
            while written().len() < round as usize && opened.elapsed() < interval * 10 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let waited = opened.elapsed();
            assert!(
                waited >= interval - Duration::from_millis(5) && waited < interval * 5,
                "round {round}: written after {waited:?}"
            );
            assert_eq!(parse(&written()[round as usize - 1])["Sent"], round);
        }
    }
}
