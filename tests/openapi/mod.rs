//! `docs/openapi.yaml` checked as an OpenAPI 3.0 document, and JSON values
//! checked against its schemas.
//!
//! The document is read by the `openapiv3` crate (its types are the
//! OpenAPI 3.0 objects; a document it cannot read is not OpenAPI 3.0), and
//! then walked here for what that crate lets through: keys that are no
//! keyword of a Schema Object (a YAML flow map with a stray comma makes
//! one), `$ref`s that point nowhere, `nullable` enums without `null`, array
//! schemas without `items`, required properties that are not declared,
//! examples that do not match their schema, path parameters that are not
//! declared. The validator covers the keywords the document uses: `$ref`,
//! `type`, `nullable`, `enum`, `required`, `properties`,
//! `additionalProperties`, `items`, `allOf`, `oneOf`, `anyOf`, `minimum`,
//! `pattern` (anchored character-class patterns only, see [`pattern`]).

#![allow(dead_code)]

use serde_json::Value;

/// The document, as JSON.
pub fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("read docs/openapi.yaml");
    parse(&text).unwrap_or_else(|e| panic!("docs/openapi.yaml: {e}"))
}

/// A YAML text as JSON, after `openapiv3` read it as OpenAPI 3.0.
pub fn parse(text: &str) -> Result<Value, String> {
    let _: openapiv3::OpenAPI =
        serde_yaml_ng::from_str(text).map_err(|e| format!("not an OpenAPI 3.0 document: {e}"))?;
    serde_yaml_ng::from_str(text).map_err(|e| format!("not YAML: {e}"))
}

/// The keywords of an OpenAPI 3.0 Schema Object (and `$ref`).
const SCHEMA_KEYS: &[&str] = &[
    "$ref",
    "title",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "enum",
    "type",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "items",
    "properties",
    "additionalProperties",
    "description",
    "format",
    "default",
    "nullable",
    "discriminator",
    "readOnly",
    "writeOnly",
    "xml",
    "externalDocs",
    "example",
    "deprecated",
];

const TYPES: &[&str] = &["string", "number", "integer", "boolean", "array", "object"];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// What is wrong with an OpenAPI 3.0 document, one line per problem.
pub fn problems(doc: &Value) -> Vec<String> {
    let mut p = Vec::new();
    match doc["openapi"].as_str() {
        Some(v) if v.starts_with("3.0.") => {}
        other => p.push(format!("openapi: {other:?} is not 3.0.x")),
    }
    for key in ["title", "version"] {
        if !doc["info"][key].is_string() {
            p.push(format!("info.{key} is missing"));
        }
    }
    refs(doc, doc, "#", &mut p);
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, s) in schemas {
            schema(doc, s, &format!("#/components/schemas/{name}"), &mut p);
        }
    }
    if let Some(params) = doc["components"]["parameters"].as_object() {
        for (name, param) in params {
            parameter(
                doc,
                param,
                &format!("#/components/parameters/{name}"),
                &mut p,
            );
        }
    }
    if let Some(responses) = doc["components"]["responses"].as_object() {
        for (name, r) in responses {
            response(doc, r, &format!("#/components/responses/{name}"), &mut p);
        }
    }
    match doc["paths"].as_object() {
        None => p.push("paths is missing".into()),
        Some(paths) => {
            for (path, item) in paths {
                path_item(doc, path, item, &mut p);
            }
        }
    }
    p
}

/// Every `$ref` in `v` resolves.
fn refs(doc: &Value, v: &Value, at: &str, p: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(r) = o.get("$ref") {
                match r.as_str().map(|r| resolve(doc, r)) {
                    Some(Some(_)) => {}
                    _ => p.push(format!("{at}: $ref {r} resolves to nothing")),
                }
            }
            for (k, x) in o {
                refs(doc, x, &format!("{at}/{k}"), p);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                refs(doc, x, &format!("{at}/{i}"), p);
            }
        }
        _ => {}
    }
}

/// The value a local `$ref` (`#/a/b`) points at.
pub fn resolve<'a>(doc: &'a Value, r: &str) -> Option<&'a Value> {
    doc.pointer(r.strip_prefix('#')?)
}

/// Follow `$ref`s to the object itself.
fn deref<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..32 {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => match resolve(doc, r) {
                Some(x) => v = x,
                None => return &Value::Null,
            },
            None => return v,
        }
    }
    &Value::Null
}

/// One Schema Object and the schemas inside it.
fn schema(doc: &Value, s: &Value, at: &str, p: &mut Vec<String>) {
    let Some(o) = s.as_object() else {
        p.push(format!("{at}: a schema must be an object, not {s}"));
        return;
    };
    for k in o.keys() {
        if !SCHEMA_KEYS.contains(&k.as_str()) && !k.starts_with("x-") {
            p.push(format!("{at}: `{k}` is not a keyword of a Schema Object"));
        }
    }
    if o.contains_key("$ref") && o.len() > 1 {
        p.push(format!("{at}: keywords next to $ref are ignored"));
    }
    if let Some(t) = o.get("type") {
        if !t.as_str().is_some_and(|t| TYPES.contains(&t)) {
            p.push(format!("{at}: type {t} is not one of {TYPES:?}"));
        }
    }
    if o.get("type").and_then(Value::as_str) == Some("array") && !o.contains_key("items") {
        p.push(format!("{at}: an array schema needs items"));
    }
    if let Some(e) = o.get("enum") {
        match e.as_array() {
            Some(values) if !values.is_empty() => {
                let nullable = o.get("nullable") == Some(&Value::Bool(true));
                if nullable && !values.contains(&Value::Null) {
                    p.push(format!(
                        "{at}: nullable with an enum that lacks null: null is refused"
                    ));
                }
                for v in values.iter().filter(|v| !v.is_null()) {
                    if let Some(t) = o.get("type").and_then(Value::as_str) {
                        if !has_type(v, t) {
                            p.push(format!("{at}: enum value {v} is not a {t}"));
                        }
                    }
                }
            }
            _ => p.push(format!("{at}: enum must be a non-empty list")),
        }
    }
    if let Some(n) = o.get("nullable") {
        if !n.is_boolean() {
            p.push(format!("{at}: nullable must be true or false"));
        }
    }
    let props = o.get("properties").and_then(Value::as_object);
    if let Some(props) = props {
        for (name, x) in props {
            schema(doc, x, &format!("{at}/properties/{name}"), p);
        }
    } else if o.contains_key("properties") {
        p.push(format!("{at}: properties must be a map"));
    }
    if let Some(req) = o.get("required") {
        match req.as_array() {
            Some(names) => {
                for n in names {
                    match (n.as_str(), props) {
                        (None, _) => p.push(format!("{at}: required names strings, not {n}")),
                        (Some(n), Some(props)) if !props.contains_key(n) => {
                            p.push(format!("{at}: required `{n}` is not a property"))
                        }
                        _ => {}
                    }
                }
            }
            None => p.push(format!("{at}: required must be a list")),
        }
    }
    match o.get("additionalProperties") {
        None | Some(Value::Bool(_)) => {}
        Some(x) => schema(doc, x, &format!("{at}/additionalProperties"), p),
    }
    if let Some(x) = o.get("items") {
        schema(doc, x, &format!("{at}/items"), p);
    }
    if let Some(x) = o.get("not") {
        schema(doc, x, &format!("{at}/not"), p);
    }
    for k in ["allOf", "oneOf", "anyOf"] {
        if let Some(list) = o.get(k) {
            match list.as_array() {
                Some(l) if !l.is_empty() => {
                    for (i, x) in l.iter().enumerate() {
                        schema(doc, x, &format!("{at}/{k}/{i}"), p);
                    }
                }
                _ => p.push(format!("{at}: {k} must be a non-empty list")),
            }
        }
    }
    if let Some(x) = o.get("pattern") {
        if x.as_str().is_none_or(|x| pattern(x).is_none()) {
            p.push(format!("{at}: pattern {x} is not one this checker reads"));
        }
    }
    if let Some(ex) = o.get("example") {
        for e in validate(doc, s, ex) {
            p.push(format!("{at}: its example does not match: {e}"));
        }
    }
}

fn parameter(doc: &Value, param: &Value, at: &str, p: &mut Vec<String>) {
    let param = deref(doc, param);
    if !param["name"].is_string() {
        p.push(format!("{at}: a parameter needs a name"));
    }
    match param["in"].as_str() {
        Some("query" | "header" | "cookie") => {}
        Some("path") if param["required"] == true => {}
        Some("path") => p.push(format!("{at}: a path parameter must be required")),
        other => p.push(format!("{at}: in: {other:?}")),
    }
    match param.get("schema") {
        Some(s) => schema(doc, s, &format!("{at}/schema"), p),
        None => p.push(format!("{at}: a parameter needs a schema")),
    }
}

fn response(doc: &Value, r: &Value, at: &str, p: &mut Vec<String>) {
    let r = deref(doc, r);
    if !r["description"].is_string() {
        p.push(format!("{at}: a response needs a description"));
    }
    if let Some(content) = r["content"].as_object() {
        for (media, m) in content {
            let at = format!("{at}/content/{media}");
            match m.get("schema") {
                Some(s) => {
                    schema(doc, s, &format!("{at}/schema"), p);
                    if let Some(ex) = m.get("example") {
                        if media == "application/json" {
                            for e in validate(doc, s, ex) {
                                p.push(format!("{at}: its example does not match: {e}"));
                            }
                        }
                    }
                }
                None => p.push(format!("{at}: no schema")),
            }
        }
    }
    if let Some(headers) = r["headers"].as_object() {
        for (name, h) in headers {
            if let Some(s) = h.get("schema") {
                schema(doc, s, &format!("{at}/headers/{name}/schema"), p);
            }
        }
    }
}

fn path_item(doc: &Value, path: &str, item: &Value, p: &mut Vec<String>) {
    let at = format!("#/paths/{path}");
    if !path.starts_with('/') {
        p.push(format!("{at}: a path starts with /"));
    }
    let Some(item) = item.as_object() else {
        p.push(format!("{at}: not an object"));
        return;
    };
    let templated: Vec<&str> = path
        .split('{')
        .skip(1)
        .filter_map(|x| x.split('}').next())
        .collect();
    for (method, op) in item {
        let at = format!("{at}/{method}");
        if !METHODS.contains(&method.as_str()) {
            p.push(format!("{at}: `{method}` is not an HTTP method"));
            continue;
        }
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .map(|a| a.iter().map(|x| deref(doc, x)).collect())
            .unwrap_or_default();
        for (i, param) in params.iter().enumerate() {
            parameter(doc, param, &format!("{at}/parameters/{i}"), p);
        }
        for name in &templated {
            let declared = params
                .iter()
                .any(|x| x["in"] == "path" && x["name"] == *name);
            if !declared {
                p.push(format!("{at}: path parameter {{{name}}} is not declared"));
            }
        }
        if let Some(body) = op.get("requestBody") {
            if let Some(content) = body["content"].as_object() {
                for (media, m) in content {
                    let at = format!("{at}/requestBody/content/{media}");
                    if let Some(s) = m.get("schema") {
                        schema(doc, s, &format!("{at}/schema"), p);
                        if let Some(ex) = m.get("example") {
                            for e in validate(doc, s, ex) {
                                p.push(format!("{at}: its example does not match: {e}"));
                            }
                        }
                    }
                }
            }
        }
        match op["responses"].as_object() {
            Some(rs) if !rs.is_empty() => {
                for (status, r) in rs {
                    let ok = status == "default"
                        || (status.len() == 3
                            && (status.bytes().all(|b| b.is_ascii_digit())
                                || status.ends_with("XX")));
                    if !ok {
                        p.push(format!("{at}: `{status}` is not a response status"));
                    }
                    response(doc, r, &format!("{at}/responses/{status}"), p);
                }
            }
            _ => p.push(format!("{at}: an operation needs responses")),
        }
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

/// What in `v` does not match schema `s` (empty: it matches).
pub fn validate(doc: &Value, s: &Value, v: &Value) -> Vec<String> {
    let mut p = Vec::new();
    check(doc, s, v, "$", &mut p);
    p
}

fn check(doc: &Value, s: &Value, v: &Value, at: &str, p: &mut Vec<String>) {
    let s = deref(doc, s);
    let Some(o) = s.as_object() else {
        p.push(format!("{at}: the schema is not an object"));
        return;
    };
    if v.is_null() && o.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    if let Some(t) = o.get("type").and_then(Value::as_str) {
        if !has_type(v, t) {
            p.push(format!("{at}: {v} is not a {t}"));
            return;
        }
    }
    if let Some(values) = o.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            p.push(format!("{at}: {v} is not one of {values:?}"));
        }
    }
    if let (Some(min), Some(n)) = (o.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            p.push(format!("{at}: {n} is below the minimum {min}"));
        }
    }
    if let (Some(pat), Some(text)) = (o.get("pattern").and_then(Value::as_str), v.as_str()) {
        if !pattern(pat).is_some_and(|m| m(text)) {
            p.push(format!("{at}: {text:?} does not match {pat}"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = o.get("properties").and_then(Value::as_object);
        for name in o
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(name) {
                p.push(format!("{at}: `{name}` is required"));
            }
        }
        for (k, x) in obj {
            match props.and_then(|ps| ps.get(k)) {
                Some(ps) => check(doc, ps, x, &format!("{at}.{k}"), p),
                None => match o.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        p.push(format!("{at}: `{k}` is not a property of this schema"))
                    }
                    Some(Value::Bool(true)) | None => {}
                    Some(extra) => check(doc, extra, x, &format!("{at}.{k}"), p),
                },
            }
        }
    }
    if let (Some(items), Some(a)) = (o.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            check(doc, items, x, &format!("{at}[{i}]"), p);
        }
    }
    if let Some(all) = o.get("allOf").and_then(Value::as_array) {
        for x in all {
            check(doc, x, v, at, p);
        }
    }
    if let Some(any) = o.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(|x| validate(doc, x, v).is_empty()) {
            p.push(format!("{at}: {v} matches none of anyOf"));
        }
    }
    if let Some(one) = o.get("oneOf").and_then(Value::as_array) {
        let n = one
            .iter()
            .filter(|x| validate(doc, x, v).is_empty())
            .count();
        if n != 1 {
            p.push(format!("{at}: {v} matches {n} of oneOf, not exactly one"));
        }
    }
}

/// Whether a string matches a pattern.
pub type Matcher = Box<dyn Fn(&str) -> bool>;

/// One element of a pattern: the characters it allows (inclusive ranges),
/// and how many of them, at least and at most.
type Part = (Vec<(char, char)>, usize, usize);

/// A matcher for the patterns this document uses: `^`, then character
/// classes of `0-9`, `a-f` ranges and escaped literals, each with `+`, `*`,
/// `{n}` or `{n,m}`, then `$`. Anything else is `None` (reported as unreadable, so
/// that a pattern is never silently ignored).
pub fn pattern(pat: &str) -> Option<Matcher> {
    let body = pat.strip_prefix('^')?.strip_suffix('$')?;
    let mut parts: Vec<Part> = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        let class: Vec<(char, char)> = match c {
            '[' => {
                let mut ranges = Vec::new();
                loop {
                    let a = chars.next()?;
                    if a == ']' {
                        break;
                    }
                    if chars.peek() == Some(&'-') {
                        chars.next();
                        let b = chars.next()?;
                        ranges.push((a, b));
                    } else {
                        ranges.push((a, a));
                    }
                }
                ranges
            }
            '\\' => {
                let lit = chars.next()?;
                vec![(lit, lit)]
            }
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => vec![(c, c)],
            _ => return None,
        };
        let (least, most) = match chars.peek() {
            Some('+') => {
                chars.next();
                (1, usize::MAX)
            }
            Some('*') => {
                chars.next();
                (0, usize::MAX)
            }
            Some('{') => {
                chars.next();
                let n: String = chars.by_ref().take_while(|c| *c != '}').collect();
                match n.split_once(',') {
                    Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                    None => {
                        let n: usize = n.parse().ok()?;
                        (n, n)
                    }
                }
            }
            _ => (1, 1),
        };
        parts.push((class, least, most));
    }
    Some(Box::new(move |text: &str| {
        // Greedy is exact here: neighbouring classes in these patterns
        // never share a character.
        let mut rest: Vec<char> = text.chars().collect();
        for (class, least, most) in &parts {
            let n = rest
                .iter()
                .take(*most)
                .take_while(|c| class.iter().any(|(a, b)| (*a..=*b).contains(c)))
                .count();
            if n < *least {
                return false;
            }
            rest.drain(..n);
        }
        rest.is_empty()
    }))
}

/// The schema of the JSON body the document gives for `method path
/// status` (`path` as in the document, `/transactions/{id}`): the status's
/// own response, else `default`.
pub fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let op = &doc["paths"][path][method.to_ascii_lowercase()];
    assert!(op.is_object(), "the document has no {method} {path}");
    let r = op["responses"]
        .get(status.to_string())
        .or_else(|| op["responses"].get("default"))
        .unwrap_or_else(|| panic!("{method} {path}: no response {status} nor default"));
    let r = deref(doc, r);
    let s = &r["content"]["application/json"]["schema"];
    assert!(
        s.is_object(),
        "{method} {path} {status}: the document gives no JSON schema"
    );
    s
}

/// The media types the document gives for `method path status`.
pub fn response_media(doc: &Value, method: &str, path: &str, status: u16) -> Vec<String> {
    let op = &doc["paths"][path][method.to_ascii_lowercase()];
    let r = op["responses"]
        .get(status.to_string())
        .or_else(|| op["responses"].get("default"))
        .map(|r| deref(doc, r))
        .unwrap_or(&Value::Null);
    r["content"]
        .as_object()
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default()
}
