//! Operator query replies, bounded: one `txn_list` reply carries at most a
//! page of entries and a byte budget (never more than a frame), and says
//! when it was cut instead of being dropped for being too large. Pure: the
//! drivers pass in what to list.

use serde_json::{json, Value};

/// Room kept in a reply for its envelope (`message_type`, `timestamp`,
/// `total`, the truncation note).
const ENVELOPE_BYTES: usize = 512;

/// How much one list reply may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimits {
    /// Most entries (`query_page_max`).
    pub page_max: usize,
    /// Most bytes (`query_reply_max_bytes`, and never more than the frame
    /// limit).
    pub reply_max_bytes: usize,
}

impl PageLimits {
    pub fn new(page_max: usize, reply_max_bytes: usize, max_frame_bytes: usize) -> PageLimits {
        PageLimits {
            page_max,
            reply_max_bytes: reply_max_bytes.min(max_frame_bytes),
        }
    }
}

/// A `txn_list` reply: `{total, transactions}` from `entries` (in the
/// order shown, each with its id), within `limits`. When entries are left
/// out, `truncated: true`, `shown` and `next` (the id of the first entry
/// left out) say so.
pub fn txn_page(
    entries: impl ExactSizeIterator<Item = (String, Value)>,
    limits: PageLimits,
) -> Value {
    let total = entries.len();
    let budget = limits.reply_max_bytes.saturating_sub(ENVELOPE_BYTES);
    let mut used = 0usize;
    let mut shown = Vec::new();
    let mut next = None;
    for (id, summary) in entries {
        // The summary's encoded size plus a separator.
        let size = crate::protocol::bound::json_bytes(&summary) + 1;
        if shown.len() >= limits.page_max || used + size > budget {
            next = Some(id);
            break;
        }
        used += size;
        shown.push(summary);
    }
    match next {
        None => json!({ "total": total, "transactions": shown }),
        Some(next) => json!({
            "total": total,
            "transactions": shown,
            "shown": shown.len(),
            "truncated": true,
            "next": next,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<(String, Value)> {
        (0..n)
            .map(|i| {
                (
                    format!("t-{i}"),
                    json!({ "id": format!("t-{i}"), "pad": "x".repeat(90) }),
                )
            })
            .collect()
    }

    #[test]
    fn a_short_list_is_whole_and_unmarked() {
        let v = txn_page(
            entries(3).into_iter(),
            PageLimits::new(10, 1 << 20, 1 << 20),
        );
        assert_eq!(v["total"], 3);
        assert_eq!(v["transactions"].as_array().map(Vec::len), Some(3));
        assert_eq!(v.get("truncated"), None);
    }

    #[test]
    fn the_page_size_cuts_the_list_and_names_the_next_entry() {
        let v = txn_page(entries(5).into_iter(), PageLimits::new(2, 1 << 20, 1 << 20));
        assert_eq!(v["total"], 5);
        assert_eq!(v["shown"], 2);
        assert_eq!(v["truncated"], true);
        assert_eq!(v["next"], "t-2");
    }

    #[test]
    fn the_byte_budget_keeps_the_encoded_reply_within_it() {
        // Each entry encodes to about 110 bytes; the frame limit is the
        // tighter of the two byte limits here.
        let limits = PageLimits::new(1000, 1 << 20, 4096);
        let v = txn_page(entries(1000).into_iter(), limits);
        let encoded = serde_json::to_vec(&v).expect("encode").len();
        assert!(encoded + ENVELOPE_BYTES / 2 <= 4096, "{encoded} bytes");
        let shown = v["shown"].as_u64().expect("shown") as usize;
        assert!(shown > 20 && shown < 1000, "{shown}");
        assert_eq!(v["next"], format!("t-{shown}"));
    }
}
