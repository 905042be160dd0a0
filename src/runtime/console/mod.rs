//! The operator console: one page, its script and its style sheet, served
//! from the admin HTTP port at `GET /`. The assets are plain HTML, CSS and
//! JavaScript compiled into the binary (no CDN, no build step), and hold no
//! data: the script reads everything through the same authenticated API as
//! `twopc http` (its own SHA-256 and HMAC, since `crypto.subtle` is missing
//! on plain-http pages that are not on localhost), so without the secret a
//! visitor sees the login view and nothing else.
//!
//! It also owns the sequence-diagram model of one transaction
//! ([`diagram`]), shared by the console and `twopc txn show --diagram`.

pub mod diagram;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// Everything the page may load comes from this origin; it connects only
/// to this origin, and no other site may frame it (a framing page could
/// trick an operator into clicking "remove").
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A new binary may bring a new script: never run a stale one.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /`: the console's page.
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /console.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /console.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        for needle in ["http://", "https://", "//cdn", "<script>"] {
            assert!(!PAGE.contains(needle), "index.html contains {needle}");
        }
        assert!(PAGE.contains(r#"<script src="/console.js"></script>"#));
        assert!(PAGE.contains(r#"href="/console.css""#));
        assert!(!SCRIPT.contains("https://") && !STYLE.contains("url(http"));
    }
}
