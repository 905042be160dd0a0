//! The crate's layering, checked from its source: every file under `src/`
//! is read, its references to other top-level modules (`use crate::x`,
//! `crate::x::…` in paths, `super::` chains that reach the crate root, and
//! `twopc::x` in the binaries) are collected, and the test fails on a cycle
//! among top-level modules or on a reference that does not point down the
//! order below.
//!
//! What is real and what is approximated: the files are the real ones;
//! references are found textually after comments, strings and character
//! literals are blanked, so a path written in a doc comment or a message
//! does not count, while a path in code always does, `#[cfg(test)]` code
//! included. `super::` is resolved from the file's place in the tree, not
//! from inline `mod` blocks, which can only make a reference look closer to
//! home than it is (never create a false cross-module edge). `src/lib.rs` is
//! the crate root: it declares every module and its curated `pub use` API
//! may name any of them, so it is not a module of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The allowed order, top first: a module may refer only to modules of
/// strictly lower layers (never to its own layer's neighbours, never up).
///
/// - `bin`: the binaries, with the `twopc` tool's commands and the start-up
///   they share (through the library's public paths);
/// - `runtime` (the drivers of the cores) and `client` (the library's
///   client of a coordinator): two users of what is below, unaware of each
///   other;
/// - `config`: defaults < YAML < env < flags; it validates resource
///   settings, security files and log sizes, so it sits above those;
/// - `resource`: what a participant votes with, each owning its settings; it
///   retries its database with `net`'s one backoff; `replica`: the
///   coordinator group's Raft storage, state machine and Raft port, which
///   the configuration parses members for and the runtime drives;
/// - `net` (connections) and `wal` (the log): independent of each other;
/// - `security` (pure handshakes and TLS, which `net` gates connections
///   with) and `log_writer` (escaped text logs);
/// - `protocol`: the pure cores and the message model;
/// - `crash`: crash points, a leaf the log and the network reach; `sim`:
///   the simulation seams (clock source, seeded draws, simulated disk),
///   a leaf the log, the network and the runtime reach.
const LAYERS: &[&[&str]] = &[
    &["bin"],
    &["runtime", "client"],
    &["config"],
    &["resource", "replica"],
    &["net", "wal"],
    &["security", "log_writer"],
    &["protocol"],
    &["crash", "sim"],
];

/// One reference from a module to another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    /// `path:line`, for the failure message.
    at: String,
}

#[test]
fn top_level_modules_form_no_cycle_and_only_refer_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeSet::new();
    let mut edges = Vec::new();
    for file in rust_files(&src) {
        let rel = file.strip_prefix(&src).expect("under src");
        let Some(path) = module_path(rel) else {
            continue;
        };
        modules.insert(path[0].clone());
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let shown = format!("src/{}", rel.display());
        edges.extend(references(&path, &shown, &text));
    }
    assert!(
        edges.len() > 50,
        "found only {} references: the scan is broken",
        edges.len()
    );
    let problems = check(&modules, &edges, LAYERS);
    assert!(
        problems.is_empty(),
        "layering broken:\n  {}",
        problems.join("\n  ")
    );
}

/// The checker reports what it must: a synthetic graph with a cycle
/// (net → runtime → net), an upward edge (protocol → wal), an edge within a
/// layer (net → wal) and a module missing from the order.
#[test]
fn a_cycle_an_upward_edge_and_an_unplaced_module_are_all_reported() {
    let layers: &[&[&str]] = &[&["runtime"], &["net", "wal"], &["protocol"]];
    let edge = |from: &str, to: &str| Edge {
        from: from.into(),
        to: to.into(),
        at: format!("src/{from}/mod.rs:1"),
    };
    let edges = vec![
        edge("runtime", "net"),
        edge("net", "runtime"),
        edge("protocol", "wal"),
        edge("net", "wal"),
        edge("runtime", "protocol"),
        edge("extra", "protocol"),
    ];
    let modules: BTreeSet<String> = ["runtime", "net", "wal", "protocol", "extra"]
        .into_iter()
        .map(String::from)
        .collect();
    let problems = check(&modules, &edges, layers);
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(has("cycle: net → runtime → net"), "{problems:#?}");
    assert!(
        has("upward: protocol → wal (src/protocol/mod.rs:1)"),
        "{problems:#?}"
    );
    assert!(
        has("upward: net → runtime (src/net/mod.rs:1)"),
        "{problems:#?}"
    );
    assert!(has("same layer: net → wal"), "{problems:#?}");
    assert!(has("`extra` is in no layer"), "{problems:#?}");
    assert_eq!(problems.len(), 5, "{problems:#?}");
    // Downward edges alone pass.
    let fine = vec![edge("runtime", "net"), edge("net", "protocol")];
    assert!(check(
        &modules,
        &fine,
        &[&["runtime"], &["net"], &["protocol"], &["wal", "extra"]]
    )
    .is_empty());
}

/// What the scanner counts as a reference, and what it does not.
#[test]
fn references_come_from_code_not_from_comments_or_strings() {
    let text = r#"
//! See [`crate::wal`] for the log.
use crate::{config::{A, B}, net, protocol::Body};
use super::outbox::Outbox;
use super::super::crash;
/* crate::client in a block comment */
fn f() -> &'static str {
    let _ = crate::security::auth::fresh_nonce();
    let _c = '"'; let _ = crate::resource::kv::KvStore::open;
    "crate::client in a string"
}
fn g<'a>(x: &'a str) -> &'a str { x }
"#;
    let path = vec!["runtime".to_string(), "participant".to_string()];
    let found: BTreeSet<(String, String)> = references(&path, "src/runtime/participant.rs", text)
        .into_iter()
        .map(|e| (e.to, e.at))
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("config", 3),
        ("net", 3),
        ("protocol", 3),
        ("crash", 5),
        ("security", 8),
        ("resource", 9),
    ]
    .into_iter()
    .map(|(m, l)| (m.to_string(), format!("src/runtime/participant.rs:{l}")))
    .collect();
    assert_eq!(found, want);
    // A binary names the library by its crate name.
    let bin = references(
        &["bin".to_string()],
        "src/bin/x.rs",
        "use twopc::runtime::crash;\n",
    );
    assert_eq!(bin.len(), 1);
    assert_eq!(
        (bin[0].from.as_str(), bin[0].to.as_str()),
        ("bin", "runtime")
    );
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read a source directory") {
            let p = entry.expect("a directory entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The module path of a file relative to `src/` (`runtime/mod.rs` →
/// `[runtime]`, `net/listener.rs` → `[net, listener]`, `bin/…` → `[bin]`);
/// `None` for the crate root.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [root] if root == "lib" => None,
        [first, ..] if first == "bin" => Some(vec!["bin".to_string()]),
        [.., last] if last == "mod" => Some(parts[..parts.len() - 1].to_vec()),
        _ => Some(parts),
    }
}

/// References from the file at module path `path` to other top-level
/// modules (references within its own top-level module are left out).
fn references(path: &[String], shown: &str, text: &str) -> Vec<Edge> {
    let code = blank_comments_and_strings(text);
    let from = &path[0];
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut push = |to: String, pos: usize| {
        if &to != from {
            let line = code[..pos].matches('\n').count() + 1;
            out.push(Edge {
                from: from.clone(),
                to,
                at: format!("{shown}:{line}"),
            });
        }
    };
    let roots: &[&str] = if from == "bin" {
        &["twopc::"]
    } else {
        &["crate::", "super::"]
    };
    let mut i = 0;
    while i < bytes.len() {
        let Some(root) = roots.iter().find(|r| bytes[i..].starts_with(r.as_bytes())) else {
            i += 1;
            continue;
        };
        // Part of a longer name (`my_crate::`) or of a longer path.
        if (i > 0 && is_ident(bytes[i - 1])) || (i > 1 && &bytes[i - 2..i] == b"::") {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + root.len();
        if *root == "super::" {
            // super^k from a file at depth d reaches the crate root when k = d.
            let mut k = 1;
            while code[j..].starts_with("super::") {
                k += 1;
                j += "super::".len();
            }
            if k != path.len() {
                i = j;
                continue;
            }
        }
        for name in first_segments(&code[j..]) {
            push(name, start);
        }
        i = j;
    }
    out
}

/// The first path segment(s) at the start of `rest`: one identifier, or
/// the first identifier of each item of a `{ … }` group.
fn first_segments(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    let ident = |s: &str| -> String {
        s.bytes()
            .take_while(|b| is_ident(*b))
            .map(char::from)
            .collect()
    };
    if !rest.starts_with('{') {
        let name = ident(rest);
        return if name.is_empty() { vec![] } else { vec![name] };
    }
    let mut names = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => {
                depth += 1;
                item_start = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => item_start = true,
            c if item_start && depth == 1 && !c.is_whitespace() => {
                item_start = false;
                let name = ident(&rest[i..]);
                if !name.is_empty() && name != "self" {
                    names.push(name);
                }
            }
            _ => {}
        }
    }
    names
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `text` with comments, string literals and character literals replaced by
/// spaces (newlines kept, so line numbers stay right).
fn blank_comments_and_strings(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }));
    };
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            i + rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            let mut j = i;
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if let Some(hashes) = raw_string_start(b, i) {
            // r"…", r#"…"#, br"…": ends at the quote followed by the hashes.
            let open = i + b[i..].iter().position(|&c| c == b'"').expect("a quote") + 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            b[open..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| open + p + close.len())
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(b.len())
        } else if rest[0] == b'\'' {
            // A character literal ('x', '\n', '"'), or a lifetime ('a).
            if rest.get(1) == Some(&b'\\') {
                i + 2
                    + rest[2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map_or(0, |p| p + 1)
            } else if rest.len() > 2 && rest[2] == b'\'' {
                i + 3
            } else if rest.get(1 + utf8_len(rest.get(1).copied().unwrap_or(0))) == Some(&b'\'') {
                i + 2 + utf8_len(rest[1])
            } else {
                out.push(b'\'');
                i += 1;
                continue;
            }
        } else {
            out.push(rest[0]);
            i += 1;
            continue;
        };
        blank(&mut out, &b[i..end]);
        i = end;
    }
    String::from_utf8(out).expect("only ASCII was replaced")
}

/// Bytes of the UTF-8 character whose first byte is `lead`.
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

/// At `i`, a raw string literal starts (`r"`, `r#"`, `br"`…, not inside an
/// identifier): the number of `#`.
fn raw_string_start(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && is_ident(b[i - 1]) {
        return None;
    }
    let mut j = i;
    if b.get(j) == Some(&b'b') {
        j += 1;
    }
    if b.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
    (b.get(j + hashes) == Some(&b'"')).then_some(hashes)
}

/// Everything wrong with `edges` under `layers`: modules in no layer,
/// references that do not point to a strictly lower layer, and cycles.
fn check(modules: &BTreeSet<String>, edges: &[Edge], layers: &[&[&str]]) -> Vec<String> {
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(r, layer)| layer.iter().map(move |m| (*m, r)))
        .collect();
    let mut problems = Vec::new();
    for m in modules {
        if !rank.contains_key(m.as_str()) {
            problems.push(format!("`{m}` is in no layer: place it in LAYERS"));
        }
    }
    // One line per (from, to), naming the first place it occurs.
    let mut first: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for e in edges {
        first.entry((&e.from, &e.to)).or_insert(&e.at);
    }
    for (&(from, to), at) in &first {
        let (Some(&rf), Some(&rt)) = (rank.get(from), rank.get(to)) else {
            continue;
        };
        if rt < rf {
            problems.push(format!("upward: {from} → {to} ({at})"));
        } else if rt == rf {
            problems.push(format!("same layer: {from} → {to} ({at})"));
        }
    }
    problems.extend(cycles(first.keys().copied()));
    problems
}

/// One cycle per strongly connected group of modules, as `cycle: a → b → a`
/// (starting from the smallest name).
fn cycles<'a>(edges: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges {
        graph.entry(from).or_default().insert(to);
        graph.entry(to).or_default();
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for &start in graph.keys() {
        if seen.contains(start) {
            continue;
        }
        if let Some(path) = shortest_path(&graph, start, start) {
            seen.extend(path.iter().copied());
            out.push(format!("cycle: {}", path.join(" → ")));
        }
    }
    out
}

/// The shortest path from `from` to `to` (breadth-first), both included.
fn shortest_path<'a>(
    graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    from: &'a str,
    to: &'a str,
) -> Option<Vec<&'a str>> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    while let Some(n) = queue.pop_front() {
        for &m in &graph[n] {
            if m == to {
                let mut path = vec![to, n];
                let mut at = n;
                while at != from {
                    at = prev[at];
                    path.push(at);
                }
                path.reverse();
                return Some(path);
            }
            if m != from && !prev.contains_key(m) {
                prev.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    None
}
