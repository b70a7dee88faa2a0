//! Merging the answers of a fanned-out statement as InfluxDB would answer it,
//! and rendering results as InfluxDB's CSV.
//!
//! Each backend answers one statement with `{"statement_id":0,"series":[...]}`
//! or `{"statement_id":0,"error":"..."}`. Merged:
//! - an error from any backend is the statement's error;
//! - series with the same name and tags are combined: rows of `SHOW` answers
//!   are unioned without duplicates and sorted; rows of `SELECT` answers are
//!   concatenated, sorted by time (the first column), identical rows once;
//! - series are ordered by name, then tags.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// Merges one statement's results from several backends into one result
/// object with `statement_id`.
pub fn merge_results(statement_id: usize, results: Vec<Value>, is_show: bool) -> Value {
    let mut series: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for mut result in results {
        if let Some(error) = result.get("error") {
            return error_result(statement_id, error.as_str().unwrap_or("backend error"));
        }
        if let Some(Value::Array(list)) = result.get_mut("messages").map(Value::take) {
            messages.extend(list);
        }
        let Some(Value::Array(list)) = result.get_mut("series").map(Value::take) else {
            continue;
        };
        // A series that is not an object is not InfluxDB's answer: dropped,
        // never trusted to have the shape the merge indexes into.
        for incoming in list.into_iter().filter(Value::is_object) {
            match series.iter_mut().find(|s| same_series(s, &incoming)) {
                Some(existing) => combine(existing, incoming),
                None => series.push(incoming),
            }
        }
    }
    for s in &mut series {
        if let Some(Value::Array(rows)) = s.get_mut("values") {
            if is_show {
                rows.sort_by(compare_rows);
            } else {
                rows.sort_by(|a, b| compare_values(&a[0], &b[0]).then_with(|| compare_rows(a, b)));
            }
            rows.dedup();
        }
    }
    series.sort_by_cached_key(series_key);
    let mut merged = Map::new();
    merged.insert("statement_id".into(), statement_id.into());
    if !series.is_empty() {
        merged.insert("series".into(), Value::Array(series));
    }
    if !messages.is_empty() {
        merged.insert("messages".into(), Value::Array(messages));
    }
    Value::Object(merged)
}

/// `{"statement_id":N,"error":"..."}`.
pub fn error_result(statement_id: usize, message: &str) -> Value {
    serde_json::json!({ "statement_id": statement_id, "error": message })
}

fn same_series(a: &Value, b: &Value) -> bool {
    a.get("name") == b.get("name")
        && a.get("tags") == b.get("tags")
        && a.get("columns") == b.get("columns")
}

fn combine(existing: &mut Value, incoming: Value) {
    let Some(Value::Array(more)) = incoming.get("values").cloned() else {
        return;
    };
    let Some(existing) = existing.as_object_mut() else {
        return;
    };
    match existing.get_mut("values") {
        Some(Value::Array(rows)) => rows.extend(more),
        _ => {
            existing.insert("values".into(), Value::Array(more));
        }
    }
}

/// Name, then tags as sorted `key=value` pairs.
fn series_key(series: &Value) -> (String, Vec<(String, String)>) {
    let name = series
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut tags: Vec<(String, String)> = series
        .get("tags")
        .and_then(Value::as_object)
        .map(|tags| {
            tags.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    (name, tags)
}

/// A total order over rows (sorting needs one): arrays element by element,
/// anything else after the arrays, by its JSON text.
fn compare_rows(a: &Value, b: &Value) -> Ordering {
    match (a.as_array(), b.as_array()) {
        (Some(a), Some(b)) => a
            .iter()
            .zip(b)
            .map(|(x, y)| compare_values(x, y))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| a.len().cmp(&b.len())),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.to_string().cmp(&b.to_string()),
    }
}

/// Numbers numerically, strings (RFC3339 times sort as text) lexically, null first.
fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        // Mixed kinds: numbers before strings before the rest, then by text.
        _ => kind_rank(a)
            .cmp(&kind_rank(b))
            .then_with(|| a.to_string().cmp(&b.to_string())),
    }
}

fn kind_rank(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::Number(_) => 1,
        Value::String(_) => 2,
        _ => 3,
    }
}

/// Renders result objects as InfluxDB 1.x's CSV: a `name,tags,<columns>`
/// header whenever the columns change, then one line per row.
pub fn render_csv(results: &[Value]) -> String {
    let mut out = String::new();
    let mut header: Option<Vec<Value>> = None;
    for result in results {
        let Some(series) = result.get("series").and_then(Value::as_array) else {
            continue;
        };
        for s in series {
            let columns = s
                .get("columns")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if header.as_ref() != Some(&columns) {
                if header.is_some() {
                    out.push('\n');
                }
                out.push_str("name,tags");
                for column in &columns {
                    out.push(',');
                    push_csv_field(&mut out, column.as_str().unwrap_or(""));
                }
                out.push('\n');
                header = Some(columns);
            }
            let name = s.get("name").and_then(Value::as_str).unwrap_or("");
            let (_, tags) = series_key(s);
            let tags = tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            for row in s
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                push_csv_field(&mut out, name);
                out.push(',');
                push_csv_field(&mut out, &tags);
                for value in row.as_array().into_iter().flatten() {
                    out.push(',');
                    match value {
                        Value::Null => {}
                        Value::String(text) => push_csv_field(&mut out, text),
                        other => push_csv_field(&mut out, &other.to_string()),
                    }
                }
                out.push('\n');
            }
        }
    }
    out
}

/// A CSV field, quoted when it holds a comma, quote or line break (RFC 4180).
fn push_csv_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn show_answers_are_unioned_and_deduplicated() {
        let a = json!({"statement_id": 0, "series": [{"name": "measurements", "columns": ["name"], "values": [["cpu"], ["disk"]]}]});
        let b = json!({"statement_id": 0, "series": [{"name": "measurements", "columns": ["name"], "values": [["disk"], ["mem"]]}]});
        assert_eq!(
            merge_results(3, vec![a, b], true),
            json!({"statement_id": 3, "series": [{"name": "measurements", "columns": ["name"], "values": [["cpu"], ["disk"], ["mem"]]}]})
        );
    }

    #[test]
    fn select_series_are_concatenated_and_sorted_by_name_tags_and_time() {
        let a = json!({"statement_id": 0, "series": [
            {"name": "mem", "tags": {"host": "b"}, "columns": ["time", "v"], "values": [[3, 1.0]]},
            {"name": "cpu", "tags": {"host": "a"}, "columns": ["time", "v"], "values": [[2, 2.0], [1, 1.0]]}]});
        let b = json!({"statement_id": 0, "series": [
            {"name": "cpu", "tags": {"host": "a"}, "columns": ["time", "v"], "values": [[1, 1.0], [0, 5.0]]}]});
        assert_eq!(
            merge_results(0, vec![a, b], false),
            json!({"statement_id": 0, "series": [
                {"name": "cpu", "tags": {"host": "a"}, "columns": ["time", "v"], "values": [[0, 5.0], [1, 1.0], [2, 2.0]]},
                {"name": "mem", "tags": {"host": "b"}, "columns": ["time", "v"], "values": [[3, 1.0]]}]})
        );
    }

    #[test]
    fn an_error_from_any_backend_is_the_answer_and_empty_is_empty() {
        let ok = json!({"statement_id": 0, "series": []});
        let error = json!({"statement_id": 0, "error": "database not found: x"});
        assert_eq!(
            merge_results(1, vec![ok.clone(), error], false),
            json!({"statement_id": 1, "error": "database not found: x"})
        );
        assert_eq!(
            merge_results(2, vec![ok.clone(), json!({"statement_id": 0})], false),
            json!({"statement_id": 2})
        );
    }

    #[test]
    fn malformed_backend_answers_do_not_panic() {
        let odd = json!({"statement_id": 0, "series": [1, {"values": [[1]]}, "x", {"name": "m", "values": [3, [2], "s", [1, "a"], [1, 2]]}]});
        let other = json!({"statement_id": 0, "series": [{"values": [[0]]}, {"name": "m", "values": [[0], null]}]});
        for is_show in [false, true] {
            let merged = merge_results(0, vec![odd.clone(), other.clone(), odd.clone()], is_show);
            assert_eq!(merged["statement_id"], 0);
            assert!(
                merged["series"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(Value::is_object),
                "{merged}"
            );
        }
    }

    #[test]
    fn csv_has_influxdb_shape() {
        let results = vec![json!({"statement_id": 0, "series": [
            {"name": "cpu", "tags": {"host": "a", "dc": "x"}, "columns": ["time", "v", "s"], "values": [[1, 1.5, "a,b"], [2, null, "q\"t"]]},
            {"name": "measurements", "columns": ["name"], "values": [["cpu"]]}]})];
        assert_eq!(
            render_csv(&results),
            "name,tags,time,v,s\ncpu,\"dc=x,host=a\",1,1.5,\"a,b\"\ncpu,\"dc=x,host=a\",2,,\"q\"\"t\"\n\nname,tags,name\nmeasurements,,cpu\n"
        );
    }
}
