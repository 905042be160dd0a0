//! Bounds on text that comes from data or from peers and is kept, shown or
//! logged: abort reasons, descriptions of stored values, and lists for
//! operators.
//!
//! A reason is written by a resource (a kv store, a database) and travels to
//! the coordinator, which keeps it in several places per transaction and
//! logs it; a reason that repeated a stored value would multiply that value
//! by the number of transactions that fail against it. So reasons name keys
//! and kinds of mismatch, never values ([`describe_value`]), are cut to
//! [`REASON_MAX_BYTES`] where they are made, and are cut again by
//! [`reason`] wherever one is stored or logged, since a peer may not follow
//! the first rule.
//!
//! Pure: no IO, no allocation beyond the returned values.

use serde_json::Value;

/// Longest abort reason kept, sent or logged, in bytes (UTF-8). Long enough
/// for a key of a few dozen characters and the kind of failure.
pub const REASON_MAX_BYTES: usize = 256;

/// Marker appended to text that was cut.
pub const CUT_MARK: &str = "…";

/// `s` cut to at most `max_bytes` bytes on a character boundary, with
/// [`CUT_MARK`] at the end when something was cut (the mark fits within
/// `max_bytes` as long as `max_bytes` is at least its length).
pub fn truncate(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_string();
    }
    let room = max_bytes.saturating_sub(CUT_MARK.len());
    let mut cut = String::with_capacity(max_bytes);
    cut.push_str(&s[..floor_char_boundary(s, room)]);
    if cut.len() + CUT_MARK.len() <= max_bytes {
        cut.push_str(CUT_MARK);
    }
    cut
}

/// The largest index `<= i` that is a character boundary of `s`.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    let mut i = i;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A reason as it may be kept, sent or logged: cut to [`REASON_MAX_BYTES`].
pub fn reason(s: &str) -> String {
    truncate(s, REASON_MAX_BYTES)
}

/// [`reason`] for an owned string, without a copy when it already fits.
pub fn reason_owned(s: String) -> String {
    if s.len() <= REASON_MAX_BYTES {
        s
    } else {
        reason(&s)
    }
}

/// A short description of a stored value for reasons: its type and size,
/// never its content (`a string of 900000 bytes`, `an object of 3 keys`).
/// Numbers, booleans and null are short and carry no data worth hiding in a
/// reason about arithmetic, so they are shown.
pub fn describe_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => truncate(&n.to_string(), 32),
        Value::String(s) => format!("a string of {} bytes", s.len()),
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(o) => format!("an object of {} keys", o.len()),
    }
}

/// `s` with every control character (newline, carriage return, escape, the
/// C1 range, ...) written as a Rust-style escape, so that text from data or
/// from a peer cannot start a new line or steer a terminal.
pub fn escape_control(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Size of `v` encoded as compact JSON, in bytes.
pub fn json_bytes<T: serde::Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_text_is_unchanged() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("", 0), "");
        assert_eq!(reason("conflict: key `a`"), "conflict: key `a`");
    }

    #[test]
    fn long_ascii_is_cut_with_a_mark_within_the_limit() {
        let s = "x".repeat(1000);
        let t = truncate(&s, 10);
        assert_eq!(t, format!("{}{CUT_MARK}", "x".repeat(10 - CUT_MARK.len())));
        assert_eq!(t.len(), 10);
        assert_eq!(reason(&s).len(), REASON_MAX_BYTES);
    }

    #[test]
    fn multi_byte_characters_are_never_split() {
        // "é" is 2 bytes, "€" 3, "😀" 4: every cut point inside one of them
        // must fall back to the previous boundary.
        let s = "é€😀".repeat(50);
        for max in 0..40 {
            let t = truncate(&s, max);
            assert!(t.len() <= max, "{max}: {t:?}");
            let body = t.strip_suffix(CUT_MARK).unwrap_or(&t);
            assert!(s.starts_with(body), "{max}: {t:?} is a prefix");
        }
        assert_eq!(truncate("😀😀", 6), CUT_MARK);
        assert_eq!(truncate("😀😀", 7), format!("😀{CUT_MARK}"));
        assert_eq!(truncate("a😀😀", 7), format!("a{CUT_MARK}"));
        assert_eq!(truncate("a😀😀", 8), format!("a😀{CUT_MARK}"));
        assert_eq!(truncate("ab😀", 6), "ab😀");
    }

    #[test]
    fn a_limit_below_the_mark_gives_an_empty_string() {
        assert_eq!(truncate("abcdef", 2), "");
    }

    #[test]
    fn reason_owned_keeps_short_strings_and_cuts_long_ones() {
        assert_eq!(reason_owned("ok".into()), "ok");
        let long = "€".repeat(200);
        let r = reason_owned(long);
        assert!(r.len() <= REASON_MAX_BYTES && r.ends_with(CUT_MARK));
    }

    #[test]
    fn values_are_described_never_shown() {
        let big = "s".repeat(900_000);
        assert_eq!(describe_value(&json!(big)), "a string of 900000 bytes");
        assert_eq!(describe_value(&json!([1, 2])), "an array of 2 items");
        assert_eq!(
            describe_value(&json!({"a": "secret"})),
            "an object of 1 keys"
        );
        assert_eq!(describe_value(&json!(7)), "7");
        assert_eq!(describe_value(&json!(null)), "null");
        assert_eq!(describe_value(&json!(true)), "true");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("plain é"), "plain é");
        assert_eq!(
            escape_control("a\nb\r\x1b[31m\u{85}"),
            "a\\nb\\r\\u{1b}[31m\\u{85}"
        );
    }

    #[test]
    fn json_sizes_are_those_of_the_compact_encoding() {
        assert_eq!(json_bytes(&json!({"n": 0})), 7);
        let v = json!({"k": "é\n", "l": [1, 2.5, null]});
        assert_eq!(json_bytes(&v), serde_json::to_vec(&v).unwrap().len());
    }
}
