//! The writer behind text-format logs: every event stays one line.
//!
//! Log lines quote keys, transaction ids and reasons that come from clients
//! and peers; a newline in one of them would start a line the reader takes
//! for another event, and an escape sequence would steer a terminal. Two
//! ways to the same end, both through one helper
//! ([`crate::protocol::bound::escape_control`]):
//!
//! - without colours, this writer escapes every control character of an
//!   event's text except the newline that ends it. It relies on the
//!   formatter handing over one whole event per write, which
//!   `tracing-subscriber` does;
//! - with colours (stderr is a terminal and `NO_COLOR` is not set), the
//!   formatter's own colour codes are escape sequences that must pass, so
//!   [`EscapingFields`] escapes each field's value instead, before the
//!   formatter adds them. Everything else on the line (time, level, target)
//!   is the program's own text.
//!
//! JSON logs need none of this: JSON strings escape control characters
//! already.

use crate::protocol::bound::escape_control;
use std::borrow::Cow;
use std::io::{self, Write};

/// Makes [`EscapingStderr`] writers for `tracing-subscriber`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MakeEscapingStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MakeEscapingStderr {
    type Writer = EscapingStderr;
    fn make_writer(&'a self) -> EscapingStderr {
        EscapingStderr
    }
}

/// Writes one formatted event to stderr with its control characters escaped.
#[derive(Debug)]
pub struct EscapingStderr;

impl Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr()
            .lock()
            .write_all(escape_event(buf).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Field formatting for coloured text logs: `message` first as it is, then
/// `name=value`, separated by spaces, each value with its control
/// characters escaped. Fields that carry the metadata of `log` records are
/// left out, as the default formatter does.
#[derive(Clone, Copy, Debug, Default)]
pub struct EscapingFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for EscapingFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut v = FieldVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct FieldVisitor<'w> {
    writer: tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            // A message is shown as written, without quotes.
            "message" => self.record_debug(field, &format_args!("{value}")),
            _ => self.record_debug(field, &value),
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let text = format!("{value:?}");
        let text = escape_control(&text);
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = match name {
            "message" => write!(self.writer, "{sep}{text}"),
            _ => write!(self.writer, "{sep}{name}={text}"),
        };
    }
}

/// One formatted event as it is written: control characters escaped, one
/// final newline kept.
pub fn escape_event(buf: &[u8]) -> Cow<'_, str> {
    let text = String::from_utf8_lossy(buf);
    let (body, end) = match text.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (&text[..], ""),
    };
    match escape_control(body) {
        Cow::Borrowed(_) => text,
        Cow::Owned(mut escaped) => {
            escaped.push_str(end);
            Cow::Owned(escaped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stays_one_line() {
        let line = b"INFO voting abort: conflict: key `a\nERROR forged` is locked\n";
        let out = escape_event(line);
        assert_eq!(
            out,
            "INFO voting abort: conflict: key `a\\nERROR forged` is locked\n"
        );
        assert_eq!(out.matches('\n').count(), 1);
    }

    /// The fields of one event as [`EscapingFields`] writes them.
    fn fields_of(emit: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(true)
            .without_time()
            .with_level(false)
            .with_target(false)
            .fmt_fields(EscapingFields)
            .with_writer(move || buf.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn coloured_lines_escape_the_values_but_keep_their_own_colours() {
        let key = "a\nERROR forged\x1b[2J";
        let text = fields_of(|| tracing::warn!(key, n = 3, "locked: {key}"));
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert!(text.ends_with('\n'), "{text:?}");
        // Each value escaped once: as the message and as the field.
        assert_eq!(text.matches("\\u{1b}[2J").count(), 2, "{text:?}");
        assert!(
            text.contains("locked: a\\nERROR forged"),
            "the message: {text:?}"
        );
        assert!(text.contains("n=3"), "{text:?}");
    }

    #[test]
    fn plain_lines_pass_unchanged_and_terminal_escapes_are_neutralised() {
        assert!(matches!(escape_event(b"INFO ok\n"), Cow::Borrowed(_)));
        assert_eq!(escape_event(b"x\x1b[2J\r\n"), "x\\u{1b}[2J\\r\n");
        assert_eq!(escape_event(b"no end"), "no end");
    }
}
