//! Decision logs: one JSON line per decision, to stdout or a file. Denies are always
//! logged, allows at a sample rate. A line never carries a token or a header dump: only the
//! decision id, time, API, principal, action, scope, outcome, reason, revision, latency and
//! the caller's trace id.
//!
//! Lines go through a bounded channel to a writer thread, so a slow or full disk never
//! blocks a request: when the channel is full, in lines or in bytes, the line is dropped
//! and counted.

use opentelemetry::trace::TraceId;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

/// Lines buffered between requests and the writer thread.
const QUEUE: usize = 16 * 1024;

/// Lines written per batch, at most.
const BATCH_LINES: usize = 1024;

/// The writer's pause after a batch that emptied the queue: lines reach the file at most
/// this much later, and the writer wakes at most about 500 times a second under load.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// Bytes buffered between requests and the writer thread: lines carry the request's
/// principal, action and scope whole, so a stalled sink with long lines queued must be
/// bounded in bytes too, not only in lines.
pub const QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// Where decision lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

impl LogTarget {
    /// `-` is stdout; anything else a file (appended to).
    pub fn parse(text: &str) -> Self {
        if text == "-" {
            Self::Stdout
        } else {
            Self::File(PathBuf::from(text))
        }
    }
}

/// Counters exported as `iot_authz_decision_log_*_total`.
#[derive(Debug, Clone, Default)]
pub struct LogCounters {
    pub written: Counter,
    pub dropped: Counter,
    pub write_errors: Counter,
}

/// One decision, as logged.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord<'a> {
    pub decision_id: &'a str,
    pub time: String,
    pub api: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'a str>,
    pub allowed: bool,
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_assignment: Option<&'a str>,
    /// True when a shadow-mode route or `--shadow` let a would-be denial through.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    pub revision: &'a str,
    pub latency_us: u64,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "hex_trace_id"
    )]
    pub trace_id: Option<TraceId>,
    /// Why a bearer token was refused (a fixed reason, never the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_rejection: Option<&'static str>,
}

/// The decision logger.
#[derive(Debug)]
pub struct DecisionLog {
    tx: SyncSender<String>,
    /// Bytes of the lines queued and not yet written.
    queued: Arc<AtomicUsize>,
    /// Allows logged per 10,000.
    allow_per_10k: u64,
    seen_allows: AtomicU64,
    counters: LogCounters,
}

impl DecisionLog {
    /// Opens the target and starts the writer thread. `sample` is the fraction of allows
    /// logged (0 to 1).
    pub fn start(target: &LogTarget, sample: f64, counters: LogCounters) -> std::io::Result<Self> {
        let writer: Box<dyn Write + Send> = match target {
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        Self::start_writer(writer, sample, counters)
    }

    /// [`DecisionLog::start`] onto any writer.
    fn start_writer(
        writer: Box<dyn Write + Send>,
        sample: f64,
        counters: LogCounters,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let thread_counters = counters.clone();
        let thread_queued = queued.clone();
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || write_loop(rx, writer, &thread_counters, &thread_queued))?;
        let sample = if sample.is_finite() {
            sample.clamp(0.0, 1.0)
        } else {
            1.0
        };
        Ok(Self {
            tx,
            queued,
            allow_per_10k: (sample * 10_000.0).round() as u64,
            seen_allows: AtomicU64::new(0),
            counters,
        })
    }

    /// Logs a decision: every deny, and allows at the sample rate (spread evenly).
    pub fn record(&self, record: &DecisionRecord<'_>) {
        if record.allowed && !record.shadow {
            let n = self.seen_allows.fetch_add(1, Ordering::Relaxed) % 10_000;
            // Spread the sampled allows over each block of 10,000.
            if (n * self.allow_per_10k) % 10_000 >= self.allow_per_10k {
                return;
            }
        }
        self.enqueue(record);
    }

    /// Logs one line that is never sampled: an Admin API write (SPEC §9's audit).
    pub fn audit(&self, record: &impl Serialize) {
        self.enqueue(record);
    }

    fn enqueue(&self, record: &impl Serialize) {
        // A full queue drops the line before it is written out, not after.
        if self.queued.load(Ordering::Relaxed) >= QUEUE_BYTES {
            self.counters.dropped.inc();
            return;
        }
        let Ok(line) = serde_json::to_string(record) else {
            return;
        };
        // One record, one line, in every tool: no raw line separators or bidi overrides.
        // (Copied only when something was escaped.)
        let escaped = match crate::policy::syntax::escape_json_output(&line) {
            std::borrow::Cow::Owned(escaped) => Some(escaped),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let line = escaped.unwrap_or(line);
        let len = line.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.counters.dropped.inc();
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.counters.dropped.inc();
        }
    }
}

fn write_loop(
    rx: Receiver<String>,
    writer: Box<dyn Write + Send>,
    counters: &LogCounters,
    queued: &AtomicUsize,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    loop {
        // Block for the first line, then drain what is queued, then flush once.
        let Ok(first) = rx.recv() else {
            let _ = out.flush();
            return;
        };
        let mut batch = vec![first];
        while let Ok(line) = rx.try_recv() {
            batch.push(line);
            if batch.len() >= BATCH_LINES {
                break;
            }
        }
        let full = batch.len() >= BATCH_LINES;
        for line in &batch {
            if writeln!(out, "{line}").is_ok() {
                counters.written.inc();
            } else {
                counters.write_errors.inc();
            }
            queued.fetch_sub(line.len(), Ordering::Relaxed);
        }
        if out.flush().is_err() {
            counters.write_errors.inc();
            // Drop what the failed flush held; a full disk must not grow memory.
            out = std::io::BufWriter::with_capacity(64 * 1024, out.into_parts().0);
            std::thread::sleep(Duration::from_millis(10));
        } else if !full {
            // Let lines gather before the next batch: a writer that went back to waiting
            // at once would be woken by nearly every request (a futex wake and a context
            // switch each, more than the line costs to write); sleeping, it is not
            // waiting, so requests only queue their lines.
            std::thread::sleep(BATCH_PAUSE);
        }
    }
}

/// The trace id of a W3C `traceparent` header, read by OpenTelemetry's own propagator (the
/// one that parents the request's span), so the log and the trace agree on what is valid.
pub fn trace_id(traceparent: &str) -> Option<TraceId> {
    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    struct Traceparent<'a>(&'a str);
    impl Extractor for Traceparent<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    let context = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract(&Traceparent(traceparent));
    let span = context.span();
    let span = span.span_context();
    span.is_valid().then(|| span.trace_id())
}

/// A trace id as its 32 lowercase hex digits.
fn hex_trace_id<S: serde::Serializer>(id: &Option<TraceId>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that never takes a byte until the test ends: a stalled disk or pipe.
    struct Stalled(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

    impl Write for Stalled {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.lock().map(|rx| rx.recv());
            Err(std::io::Error::other("closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// With the sink stalled, lines are queued up to `QUEUE_BYTES` and the rest dropped
    /// and counted: long lines cannot grow memory past the bound.
    #[test]
    fn a_stalled_sink_holds_at_most_the_byte_bound() {
        let (release, stalled) = std::sync::mpsc::channel();
        let counters = LogCounters::default();
        let log = DecisionLog::start_writer(
            Box::new(Stalled(std::sync::Mutex::new(stalled))),
            1.0,
            counters.clone(),
        )
        .unwrap();
        let principal = format!("user:{}", "a".repeat(1024 * 1024));
        let record = DecisionRecord {
            decision_id: "d",
            time: String::new(),
            api: "check",
            principal: Some(&principal),
            action: None,
            scope: None,
            allowed: false,
            reason: "noGrant",
            role: None,
            assignment_id: None,
            deny_assignment: None,
            shadow: false,
            revision: "r",
            latency_us: 0,
            trace_id: None,
            token_rejection: None,
        };
        for _ in 0..64 {
            log.record(&record);
        }
        // One line may be in the writer's hands (not counted as queued); every other
        // accepted line is within the bound.
        let accepted = 64 - counters.dropped.get();
        assert!(
            accepted <= (QUEUE_BYTES / principal.len()) as u64 + 1,
            "{accepted}"
        );
        assert!(accepted >= 15, "{accepted}");
        assert!(log.queued.load(Ordering::Relaxed) <= QUEUE_BYTES);
        drop(release);
    }

    #[test]
    fn traceparent_is_parsed_strictly() {
        let id = |t: &str| trace_id(t).map(|id| id.to_string());
        assert_eq!(
            id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff is forbidden by the W3C specification.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
            "00-4bf92f35<script>-00f067aa0ba902b7-01",
        ] {
            assert_eq!(id(bad), None, "{bad}");
        }
    }
}
