//! The writer behind text-format logs: every event stays one line.
//!
//! Log lines quote keys, transaction ids and reasons that come from clients
//! and peers; a newline in one of them would start a line the reader takes
//! for another event, and an escape sequence would steer a terminal. This
//! writer escapes every control character of an event's text (one helper,
//! [`crate::protocol::bound::escape_control`]) except the newline that ends
//! it. It relies on the formatter handing over one whole event per write,
//! which `tracing-subscriber` does. JSON logs need none of this: JSON
//! strings escape control characters already.

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

    #[test]
    fn plain_lines_pass_unchanged_and_terminal_escapes_are_neutralised() {
        assert!(matches!(escape_event(b"INFO ok\n"), Cow::Borrowed(_)));
        assert_eq!(escape_event(b"x\x1b[2J\r\n"), "x\\u{1b}[2J\\r\n");
        assert_eq!(escape_event(b"no end"), "no end");
    }
}
