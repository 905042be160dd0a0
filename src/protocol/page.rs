//! Operator list replies, bounded: one `txn_list` reply carries at most a
//! page of entries and a byte budget (never more than a frame), and says
//! when it was cut instead of being dropped for being too large. Pure: the
//! caller passes in what to list, in the order to show it, as typed views.

use super::bound::json_bytes;
use super::types::TxnId;
use serde::Serialize;

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

/// A `txn_list` reply: `{total, transactions}`, and when entries were left
/// out, `truncated: true`, `shown` and `next` (the id of the first entry
/// left out).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TxnPage<T> {
    /// Entries that matched, shown or not.
    pub total: usize,
    pub transactions: Vec<T>,
    /// Present only when the list was cut.
    #[serde(flatten)]
    pub cut: Option<PageCut>,
}

/// How a cut list says it was cut.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PageCut {
    pub shown: usize,
    /// Always true: the field is there for readers that test for it.
    pub truncated: bool,
    /// The first entry left out: where the next page would start.
    pub next: TxnId,
}

/// The page of `entries` (in the order shown, each with its id) that fits
/// within `limits`.
pub fn txn_page<'a, T: Serialize>(
    entries: impl ExactSizeIterator<Item = (&'a TxnId, T)>,
    limits: PageLimits,
) -> TxnPage<T> {
    let total = entries.len();
    let budget = limits.reply_max_bytes.saturating_sub(ENVELOPE_BYTES);
    let mut used = 0usize;
    let mut shown = Vec::new();
    for (id, entry) in entries {
        // The entry's encoded size plus a separator.
        let size = json_bytes(&entry) + 1;
        if shown.len() >= limits.page_max || used + size > budget {
            let cut = PageCut {
                shown: shown.len(),
                truncated: true,
                next: id.clone(),
            };
            return TxnPage {
                total,
                transactions: shown,
                cut: Some(cut),
            };
        }
        used += size;
        shown.push(entry);
    }
    TxnPage {
        total,
        transactions: shown,
        cut: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn entries(n: usize) -> Vec<(TxnId, Value)> {
        (0..n)
            .map(|i| {
                (
                    TxnId(format!("t-{i}")),
                    json!({ "id": format!("t-{i}"), "pad": "x".repeat(90) }),
                )
            })
            .collect()
    }

    fn page(entries: &[(TxnId, Value)], limits: PageLimits) -> Value {
        let page = txn_page(entries.iter().map(|(id, v)| (id, v.clone())), limits);
        serde_json::to_value(page).expect("a page encodes")
    }

    #[test]
    fn a_short_list_is_whole_and_unmarked() {
        let v = page(&entries(3), PageLimits::new(10, 1 << 20, 1 << 20));
        assert_eq!(v["total"], 3);
        assert_eq!(v["transactions"].as_array().map(Vec::len), Some(3));
        assert_eq!(v.get("truncated"), None);
        assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{v}");
    }

    #[test]
    fn the_page_size_cuts_the_list_and_names_the_next_entry() {
        let v = page(&entries(5), PageLimits::new(2, 1 << 20, 1 << 20));
        assert_eq!(v["total"], 5);
        assert_eq!(v["shown"], 2);
        assert_eq!(v["truncated"], true);
        assert_eq!(v["next"], "t-2");
        assert_eq!(v["transactions"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn the_byte_budget_keeps_the_encoded_reply_within_it() {
        // Each entry encodes to about 110 bytes; the frame limit is the
        // tighter of the two byte limits here.
        let limits = PageLimits::new(1000, 1 << 20, 4096);
        let v = page(&entries(1000), limits);
        let encoded = serde_json::to_vec(&v).expect("encode").len();
        assert!(encoded + ENVELOPE_BYTES / 2 <= 4096, "{encoded} bytes");
        let shown = v["shown"].as_u64().expect("shown") as usize;
        assert!(shown > 20 && shown < 1000, "{shown}");
        assert_eq!(v["next"], format!("t-{shown}"));
    }
}
