//! Operator list replies, paged and bounded: one reply carries at most a
//! page of entries and a byte budget (never more than a frame), and when
//! more follow it says where the next page starts with an opaque cursor.
//! Pure: the drivers pass in what to list, in the list's order, and the
//! operator's `limit` and `cursor`. The coordinator's and the participant's
//! `txn_list` and the HTTP API's lists all page through here.
//!
//! A cursor names the last entry shown (its [`ListKey`]), not a position:
//! the next page holds the entries that sort after that key. An entry
//! added or removed elsewhere in the list never makes a later page repeat
//! or skip the entries that were already there.

use serde_json::{json, Value};
use std::cmp::Ordering;

/// Room kept in a reply for its envelope (`message_type`, `timestamp`,
/// `total`, `next`).
const ENVELOPE_BYTES: usize = 512;

/// Most characters of a cursor accepted: a millisecond time and a
/// transaction id in hex, with plenty of room.
const CURSOR_CHARS_MAX: usize = 1024;

/// How much one list reply may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimits {
    /// Most entries (`query_page_max`); also the largest `limit` accepted
    /// and the page size when none is given.
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

/// Where an entry sits in a list: a time in milliseconds (a transaction's
/// start at the coordinator, its last change at a participant; 0 where the
/// list has no time) and an id. Ids compare by length first, so that
/// `t-10` comes after `t-9`: the coordinator numbers its transactions, and
/// one started in the same millisecond as another sorts as newer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListKey {
    pub ms: u64,
    pub id: String,
}

impl Ord for ListKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.ms
            .cmp(&other.ms)
            .then(self.id.len().cmp(&other.id.len()))
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for ListKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl ListKey {
    pub fn new(ms: u64, id: &str) -> ListKey {
        ListKey {
            ms,
            id: id.to_string(),
        }
    }

    /// The cursor that continues after this entry: the time in hex, a dot,
    /// the id's bytes in hex (safe in a URL and a shell without quoting).
    pub fn cursor(&self) -> String {
        let mut s = format!("{:x}.", self.ms);
        for b in self.id.as_bytes() {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// The key a cursor names; the error says what is wrong with it.
    pub fn from_cursor(cursor: &str) -> Result<ListKey, CursorError> {
        if cursor.len() > CURSOR_CHARS_MAX {
            return Err(CursorError::TooLong);
        }
        let bad = || CursorError::NotACursor(cursor.to_string());
        let (ms, id) = cursor.split_once('.').ok_or_else(bad)?;
        let ms = u64::from_str_radix(ms, 16).map_err(|_| bad())?;
        if id.len() % 2 != 0 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let bytes: Vec<u8> = (0..id.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&id[i..i + 2], 16).map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let id = String::from_utf8(bytes).map_err(|_| bad())?;
        Ok(ListKey { ms, id })
    }
}

/// Why an operator's cursor was refused. Either way the operator passes the
/// `next` value of the previous reply unchanged, or leaves the cursor out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// More than [`CURSOR_CHARS_MAX`] characters: no cursor this list hands
    /// out is that long.
    #[error("the cursor is longer than {CURSOR_CHARS_MAX} characters; {CURSOR_FIX}")]
    TooLong,
    /// Not the shape of a cursor (time in hex, a dot, an id in hex), or an
    /// id that is not UTF-8.
    #[error("`{0}` is not a cursor of this list; {CURSOR_FIX}")]
    NotACursor(String),
}

/// What to do about a refused cursor.
const CURSOR_FIX: &str = "pass the `next` value of the previous reply unchanged, or leave the cursor out to start from the beginning";

/// The order a list is shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Largest key first: newest first for transactions.
    Descending,
    /// Smallest key first: participants by id.
    Ascending,
}

impl Order {
    /// Does an entry at `key` come after the entry at `cursor`?
    fn after(self, key: &ListKey, cursor: &ListKey) -> bool {
        match self {
            Order::Descending => key < cursor,
            Order::Ascending => key > cursor,
        }
    }

    /// Sort `entries` into this order.
    pub fn sort<T>(self, entries: &mut [(ListKey, T)]) {
        match self {
            Order::Descending => entries.sort_by(|a, b| b.0.cmp(&a.0)),
            Order::Ascending => entries.sort_by(|a, b| a.0.cmp(&b.0)),
        }
    }
}

/// An operator's page request that was refused: the parameter and what to
/// do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError {
    pub param: &'static str,
    pub message: String,
}

/// One page to show: how many entries and after which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub after: Option<ListKey>,
}

impl PageRequest {
    /// The page an operator asked for: `limit` between 1 and `page_max`
    /// (`page_max` when absent), `cursor` from an earlier reply.
    pub fn new(
        limit: Option<u64>,
        cursor: Option<&str>,
        limits: PageLimits,
    ) -> Result<PageRequest, ParamError> {
        let max = limits.page_max;
        let limit = match limit {
            None => max,
            Some(n) if n >= 1 && n <= max as u64 => n as usize,
            Some(n) => {
                return Err(ParamError {
                    param: "limit",
                    message: format!(
                        "limit {n} is out of range: ask for 1 to {max} entries (query_page_max), and follow `next` for more"
                    ),
                })
            }
        };
        let after = match cursor {
            None => None,
            Some(c) => Some(ListKey::from_cursor(c).map_err(|e| ParamError {
                param: "cursor",
                message: e.to_string(),
            })?),
        };
        Ok(PageRequest { limit, after })
    }
}

/// A list reply: `{total, <field>: [...]}` plus `next` when more entries
/// follow. `entries` are every entry of the list (after any filter), in
/// `order`, each with its key; `total` counts them all. The page holds
/// those after `req.after`, at most `req.limit` of them and as many as fit
/// the byte budget, but always at least one, so that following `next`
/// always gets somewhere. Only the entries shown are rendered.
pub fn page<T>(
    field: &str,
    entries: impl IntoIterator<Item = (ListKey, T)>,
    order: Order,
    req: &PageRequest,
    limits: PageLimits,
    render: impl Fn(T) -> Value,
) -> Value {
    let budget = limits.reply_max_bytes.saturating_sub(ENVELOPE_BYTES);
    let mut total = 0usize;
    let mut used = 0usize;
    let mut shown = Vec::new();
    let mut last: Option<ListKey> = None;
    let mut full = false;
    let mut more = false;
    for (key, entry) in entries {
        total += 1;
        if more || req.after.as_ref().is_some_and(|c| !order.after(&key, c)) {
            continue;
        }
        if full {
            more = true;
            continue;
        }
        let v = render(entry);
        // The entry's encoded size plus a separator.
        let size = crate::protocol::bound::json_bytes(&v) + 1;
        if !shown.is_empty() && used + size > budget {
            more = true;
            continue;
        }
        used += size;
        shown.push(v);
        last = Some(key);
        full = shown.len() >= req.limit;
    }
    let mut reply = json!({ "total": total, field: shown });
    if let (true, Some(last)) = (more, last) {
        reply["next"] = Value::String(last.cursor());
    }
    reply
}

/// A `txn_list` reply in one call: `entries` (each with its time in
/// milliseconds and its id) newest first, the page that `limit` and
/// `cursor` ask for; the parameter at fault otherwise.
pub fn txn_list_page<'a, T>(
    entries: impl Iterator<Item = (u64, &'a str, T)>,
    limit: Option<u64>,
    cursor: Option<&str>,
    limits: PageLimits,
    render: impl Fn(T) -> Value,
) -> Result<Value, ParamError> {
    let req = PageRequest::new(limit, cursor, limits)?;
    let mut keyed: Vec<(ListKey, T)> = entries
        .map(|(ms, id, t)| (ListKey::new(ms, id), t))
        .collect();
    Order::Descending.sort(&mut keyed);
    Ok(page(
        "transactions",
        keyed,
        Order::Descending,
        &req,
        limits,
        render,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` entries keyed `t-0` (oldest) .. `t-{n-1}`, one per millisecond,
    /// newest first, each padded to about 110 bytes.
    fn entries(n: u64) -> Vec<(ListKey, Value)> {
        let mut v: Vec<(ListKey, Value)> = (0..n)
            .map(|i| {
                let id = format!("t-{i}");
                (
                    ListKey::new(i, &id),
                    json!({ "id": id, "pad": "x".repeat(90) }),
                )
            })
            .collect();
        Order::Descending.sort(&mut v);
        v
    }

    fn limits() -> PageLimits {
        PageLimits::new(1000, 1 << 20, 1 << 20)
    }

    fn ids(v: &Value) -> Vec<String> {
        v["transactions"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|t| t["id"].as_str().expect("id").to_string())
            .collect()
    }

    fn req(limit: Option<u64>, cursor: Option<&str>) -> PageRequest {
        PageRequest::new(limit, cursor, limits()).expect("a valid request")
    }

    fn list(entries: Vec<(ListKey, Value)>, r: &PageRequest, l: PageLimits) -> Value {
        page("transactions", entries, Order::Descending, r, l, |v| v)
    }

    #[test]
    fn a_short_list_is_whole_and_has_no_next() {
        let v = list(entries(3), &req(None, None), limits());
        assert_eq!(v["total"], 3);
        assert_eq!(ids(&v), ["t-2", "t-1", "t-0"]);
        assert_eq!(v.get("next"), None);
    }

    #[test]
    fn following_next_walks_the_list_once_in_order() {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let v = list(entries(10), &req(Some(3), cursor.as_deref()), limits());
            assert_eq!(v["total"], 10);
            seen.extend(ids(&v));
            pages += 1;
            match v.get("next") {
                Some(n) => cursor = Some(n.as_str().expect("a string").to_string()),
                None => break,
            }
        }
        assert_eq!(pages, 4);
        let want: Vec<String> = (0..10).rev().map(|i| format!("t-{i}")).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_list_exactly_one_page_long_has_no_next() {
        let v = list(entries(3), &req(Some(3), None), limits());
        assert_eq!(ids(&v).len(), 3);
        assert_eq!(v.get("next"), None);
    }

    #[test]
    fn new_entries_do_not_shift_the_pages_after_a_cursor() {
        let first = list(entries(10), &req(Some(4), None), limits());
        let next = first["next"].as_str().expect("next").to_string();
        // Five newer transactions arrive, and the oldest is forgotten.
        let mut grown: Vec<(ListKey, Value)> = entries(15)
            .into_iter()
            .filter(|(k, _)| k.id != "t-0")
            .collect();
        Order::Descending.sort(&mut grown);
        let second = list(grown, &req(Some(4), Some(&next)), limits());
        assert_eq!(ids(&second), ["t-5", "t-4", "t-3", "t-2"]);
        assert_eq!(second["total"], 14);
    }

    #[test]
    fn ids_of_one_millisecond_sort_by_length_then_text() {
        let a = ListKey::new(5, "t-99");
        let b = ListKey::new(5, "t-100");
        assert!(a < b, "t-100 is the newer of the two");
        assert!(ListKey::new(4, "t-100") < ListKey::new(5, "t-1"));
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused_by_name() {
        let k = ListKey::new(123_456, "1a2b-7 ü");
        assert_eq!(ListKey::from_cursor(&k.cursor()), Ok(k));
        for bad in ["", "zz", "1e240", "1e240.abc", "1e240.zz", "x.00"] {
            let e = PageRequest::new(None, Some(bad), limits()).unwrap_err();
            assert_eq!(e.param, "cursor", "{bad}");
            assert!(e.message.contains("`next`"), "{}", e.message);
        }
        let long = "a".repeat(CURSOR_CHARS_MAX + 1);
        assert_eq!(
            PageRequest::new(None, Some(&long), limits())
                .unwrap_err()
                .param,
            "cursor"
        );
    }

    #[test]
    fn limits_outside_one_to_the_page_max_are_refused_by_name() {
        for bad in [0, 1001, u64::MAX] {
            let e = PageRequest::new(Some(bad), None, limits()).unwrap_err();
            assert_eq!(e.param, "limit");
            assert!(e.message.contains("1 to 1000"), "{}", e.message);
        }
        assert_eq!(req(Some(1000), None).limit, 1000);
        assert_eq!(req(None, None).limit, 1000);
    }

    #[test]
    fn the_byte_budget_keeps_the_encoded_reply_within_it() {
        // Each entry encodes to about 110 bytes; the frame limit is the
        // tighter of the two byte limits here.
        let l = PageLimits::new(1000, 1 << 20, 4096);
        let v = list(entries(1000), &req(None, None), l);
        let encoded = serde_json::to_vec(&v).expect("encode").len();
        assert!(encoded + ENVELOPE_BYTES / 2 <= 4096, "{encoded} bytes");
        let shown = ids(&v);
        assert!(shown.len() > 20 && shown.len() < 1000, "{}", shown.len());
        let last = shown.last().expect("one shown");
        let next = ListKey::from_cursor(v["next"].as_str().expect("next")).expect("a cursor");
        assert_eq!(&next.id, last);
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_still_shown_alone() {
        let l = PageLimits::new(1000, 600, 1 << 20);
        let v = list(entries(3), &req(None, None), l);
        assert_eq!(ids(&v), ["t-2"]);
        assert!(v.get("next").is_some());
    }

    #[test]
    fn ascending_lists_continue_after_the_cursor_too() {
        let mut v: Vec<(ListKey, Value)> = ["p10", "p2", "p1"]
            .iter()
            .map(|id| (ListKey::new(0, id), json!({ "id": id })))
            .collect();
        Order::Ascending.sort(&mut v);
        let r = req(Some(2), None);
        let first = page(
            "participants",
            v.clone(),
            Order::Ascending,
            &r,
            limits(),
            |v| v,
        );
        assert_eq!(first["participants"], json!([{"id": "p1"}, {"id": "p2"}]));
        let next = first["next"].as_str().expect("next");
        let r = req(Some(2), Some(next));
        let second = page("participants", v, Order::Ascending, &r, limits(), |v| v);
        assert_eq!(second["participants"], json!([{"id": "p10"}]));
        assert_eq!(second.get("next"), None);
    }
}
