//! `--log-format json`: one JSON object per line, written straight into the
//! line buffer as the event's fields are visited.
//!
//! Every inference request logs a line, so this is on the hot path.
//! tracing-subscriber's own JSON formatter goes through serde maps and cost
//! about a fifth of a whole request on the demo model (bench/RESULTS.md).
//!
//! A line holds `timestamp` (RFC 3339, µs), `level`, `target`, the names of the
//! spans it is in (`spans`, outermost first, when there are any), then the
//! event's fields, `message` included, at the top level: what log shippers
//! index without a nested path. A field named like one of the four above is
//! written as `field.<name>` so that no key appears twice.

use std::fmt::{self, Write};
use std::time::SystemTime;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter; install it with `fmt().event_format(JsonLines)`.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let now = humantime::format_rfc3339_micros(SystemTime::now());
        write!(w, "{{\"timestamp\":\"{now}\",\"level\":\"{}\",\"target\":", meta.level())?;
        string(&mut w, meta.target())?;
        if let Some(scope) = ctx.event_scope() {
            w.write_str(",\"spans\":[")?;
            for (i, span) in scope.from_root().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                string(&mut w, span.name())?;
            }
            w.write_char(']')?;
        }
        let mut fields = Fields { w: &mut w, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        w.write_str("}\n")
    }
}

/// Writes each visited field as `,"name":value`.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        let name = field.name();
        let clash = matches!(name, "timestamp" | "level" | "target" | "spans");
        self.w.write_str(if clash { ",\"field." } else { ",\"" })?;
        Escaped(&mut *self.w).write_str(name)?;
        self.w.write_str("\":")
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.w));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| string(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those are written as strings.
        if value.is_finite() {
            self.put(field, |w| write!(w, "{value}"));
        } else {
            self.put(field, |w| write!(w, "\"{value}\""));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value}")?;
            w.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// `text` as a JSON string.
fn string(w: &mut Writer<'_>, text: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(&mut *w).write_str(text)?;
    w.write_char('"')
}

/// Escapes what passes through it for the inside of a JSON string.
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl Write for Escaped<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in text.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&text[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&text[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::{Arc, Mutex};

    /// Lines written by `emit` under a subscriber with this format.
    fn lines(emit: impl FnOnce()) -> Vec<Value> {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = Arc::clone(&buffer);
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || Sink(Arc::clone(&sink))).event_format(JsonLines).finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buffer.lock().unwrap_or_else(|p| p.into_inner()).clone()).expect("UTF-8");
        assert!(text.ends_with('\n'));
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_request_line_has_its_fields_at_the_top_level() {
        let got = lines(|| {
            tracing::info!(
                target: "vigil::request",
                request_id = "r-1",
                status = 200u16,
                total_us = 812u64,
                delta = -3i64,
                ok = true,
                ratio = 0.5,
                "inference"
            );
        });
        let line = &got[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "vigil::request");
        assert_eq!(line["message"], "inference");
        assert_eq!(
            (&line["request_id"], &line["status"], &line["total_us"]),
            (&"r-1".into(), &200.into(), &812.into())
        );
        assert_eq!((&line["delta"], &line["ok"], &line["ratio"]), (&(-3).into(), &true.into(), &0.5.into()));
        let time = line["timestamp"].as_str().expect("timestamp");
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
        assert!(line.get("spans").is_none());
    }

    /// Whatever a caller puts in a field (a request id, a principal), the line stays one valid JSON object.
    #[test]
    fn hostile_values_stay_inside_their_string() {
        let nasty = "a\"b\\c\nd\re\tf\u{0}g\u{1f}h\u{7f}i é 漢 🦀 }{\",\"level\":\"ERROR";
        let got = lines(|| {
            tracing::warn!(request_id = nasty, level = "spoof", error = %nasty, debug = ?nasty, nan = f64::NAN, "{nasty}");
        });
        assert_eq!(got.len(), 1, "one line");
        let line = &got[0];
        assert_eq!(line["request_id"], nasty);
        assert_eq!(line["message"], nasty);
        assert_eq!(line["error"], nasty);
        assert_eq!(line["debug"], format!("{nasty:?}"));
        assert_eq!(line["level"], "WARN", "a field cannot pass for the level");
        assert_eq!(line["field.level"], "spoof");
        assert_eq!(line["nan"], "NaN");
    }

    #[test]
    fn spans_are_named_outermost_first() {
        let got = lines(|| {
            let outer = tracing::info_span!("serve");
            let _o = outer.enter();
            let inner = tracing::info_span!("request", id = 3);
            let _i = inner.enter();
            tracing::info!("inside");
        });
        assert_eq!(got[0]["spans"], serde_json::json!(["serve", "request"]));
    }
}
