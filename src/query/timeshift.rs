//! Timeshift, which InfluxDB lacks: compare a series with its own past on
//! one Grafana panel.
//!
//! A `SELECT` whose field alias starts with `shift_<n><unit>` (units `s`, `m`,
//! `h`, `d`, `w`; e.g. `SELECT mean(v) AS "shift_1d" FROM cpu WHERE time >
//! now() - 1h GROUP BY time(1m)`) is run over its time range moved back by
//! that amount (each `time` comparison of its `WHERE` gets `- 1d` appended),
//! and the timestamps of the answer are moved forward by the same amount, so
//! yesterday's curve lies on today's axis. The alias stays as written, so
//! the column says what it is. All shifted aliases of one statement must ask
//! for the same shift, and the statement needs a time range in its `WHERE`.

use serde_json::Value;

use super::influxql::{select_aliases, time_conditions, Statement, StatementKind};

/// The alias prefix that asks for a shift.
const PREFIX: &str = "shift_";

/// A shift back in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift {
    /// As written in the alias ("1d"), an InfluxQL duration literal.
    pub literal: String,
    pub nanos: i64,
}

/// The shift a statement asks for, if any.
///
/// # Errors
/// Different shifts in one statement.
pub fn requested(statement: &Statement<'_>) -> Result<Option<Shift>, String> {
    if statement.kind != StatementKind::Select {
        return Ok(None);
    }
    let mut found: Option<Shift> = None;
    for (_, alias) in select_aliases(statement) {
        let Some(shift) = parse_alias(&alias) else {
            continue;
        };
        match &found {
            Some(previous) if *previous != shift => {
                return Err(format!(
                    "timeshift: one statement asks for both {} and {}; use one shift per statement",
                    previous.literal, shift.literal
                ))
            }
            _ => found = Some(shift),
        }
    }
    Ok(found)
}

/// `shift_<n><unit>[_...]` -> the shift.
fn parse_alias(alias: &str) -> Option<Shift> {
    let rest = alias.strip_prefix(PREFIX)?;
    let literal = rest.split('_').next()?;
    let unit_at = literal.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = literal.split_at(unit_at);
    let number: i64 = number.parse().ok()?;
    let unit_nanos: i64 = match unit {
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        "w" => 7 * 86_400 * 1_000_000_000,
        _ => return None,
    };
    Some(Shift {
        literal: literal.to_owned(),
        nanos: number.checked_mul(unit_nanos)?,
    })
}

/// The statement with every `time` comparison of its `WHERE` moved back.
///
/// # Errors
/// A statement without a time range the rewrite recognises.
pub fn rewrite(statement: &Statement<'_>, shift: &Shift) -> Result<String, String> {
    let mut ranges = time_conditions(statement);
    if ranges.is_empty() {
        return Err(format!(
            "timeshift {}: the statement needs a time range in its WHERE clause (e.g. time > now() - 1h)",
            shift.literal
        ));
    }
    ranges.sort_by_key(|r| std::cmp::Reverse(r.end));
    let mut text = statement.text.to_owned();
    for range in ranges {
        text.insert_str(range.end, &format!(" - {}", shift.literal));
    }
    Ok(text)
}

/// Moves the `time` column of every series forward by `shift_nanos`. The
/// answer was requested with `epoch=ns`; times are written back in the
/// client's format: `epoch` units, or RFC3339 when it asked for none.
pub fn shift_times(result: &mut Value, shift_nanos: i64, client_epoch: Option<&str>) {
    let Some(series) = result.get_mut("series").and_then(Value::as_array_mut) else {
        return;
    };
    for s in series {
        let Some(time_column) = s
            .get("columns")
            .and_then(Value::as_array)
            .and_then(|columns| columns.iter().position(|c| c == "time"))
        else {
            continue;
        };
        let Some(rows) = s.get_mut("values").and_then(Value::as_array_mut) else {
            continue;
        };
        for row in rows {
            if let Some(cell) = row.get_mut(time_column) {
                if let Some(ns) = cell.as_i64() {
                    *cell = format_time(ns.saturating_add(shift_nanos), client_epoch);
                }
            }
        }
    }
}

/// A time in nanoseconds, as InfluxDB writes it for `epoch` (or RFC3339).
pub fn format_time(ns: i64, epoch: Option<&str>) -> Value {
    let divisor: i64 = match epoch {
        Some("ns" | "n") => 1,
        Some("u" | "µ" | "us") => 1_000,
        Some("ms") => 1_000_000,
        Some("s") => 1_000_000_000,
        Some("m") => 60_000_000_000,
        Some("h") => 3_600_000_000_000,
        _ => return Value::String(rfc3339_nanos(ns)),
    };
    Value::from(ns.div_euclid(divisor))
}

/// RFC3339 with the fraction trimmed of trailing zeros, as Go's `RFC3339Nano`.
pub fn rfc3339_nanos(ns: i64) -> String {
    let seconds = ns.div_euclid(1_000_000_000);
    let fraction = ns.rem_euclid(1_000_000_000);
    let days = seconds.div_euclid(86_400);
    let in_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    );
    if fraction != 0 {
        let digits = format!("{fraction:09}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::influxql::parse_query;
    use serde_json::json;

    fn statement(query: &str) -> Statement<'_> {
        parse_query(query).unwrap().remove(0)
    }

    #[test]
    fn aliases_ask_for_shifts() {
        let s = statement("SELECT mean(v) AS \"shift_1d\" FROM cpu WHERE time > now() - 1h");
        assert_eq!(
            requested(&s),
            Ok(Some(Shift {
                literal: "1d".into(),
                nanos: 86_400_000_000_000
            }))
        );
        let s = statement("SELECT mean(v) AS shift_2w_mean, max(v) AS shift_2w_max FROM cpu WHERE time > now() - 1h");
        assert_eq!(requested(&s).unwrap().unwrap().literal, "2w");
        assert_eq!(
            requested(&statement("SELECT mean(v) AS m FROM cpu")),
            Ok(None)
        );
        assert_eq!(
            requested(&statement("SELECT v AS shift_xd FROM cpu")),
            Ok(None)
        );
        assert!(requested(&statement(
            "SELECT v AS shift_1d, w AS shift_2d FROM cpu WHERE time > 0"
        ))
        .is_err());
    }

    #[test]
    fn rewrite_moves_every_time_condition_back() {
        let s = statement("SELECT mean(v) AS shift_1h FROM cpu WHERE time > now() - 1h AND time < now() AND host = 'a' GROUP BY time(1m)");
        let shift = requested(&s).unwrap().unwrap();
        assert_eq!(
            rewrite(&s, &shift).unwrap(),
            "SELECT mean(v) AS shift_1h FROM cpu WHERE time > now() - 1h - 1h AND time < now() - 1h AND host = 'a' GROUP BY time(1m)"
        );
        let s = statement("SELECT v AS shift_1d FROM cpu");
        assert!(rewrite(&s, &requested(&s).unwrap().unwrap())
            .unwrap_err()
            .contains("needs a time range"));
    }

    #[test]
    fn times_move_forward_in_the_clients_format() {
        let mut result = json!({"statement_id": 0, "series": [{"name": "cpu", "columns": ["time", "shift_1s"], "values": [[1_000_000_000_i64, 1.0], [1_500_000_000_i64, null]]}]});
        shift_times(&mut result, 1_000_000_000, Some("ms"));
        assert_eq!(
            result["series"][0]["values"],
            json!([[2000, 1.0], [2500, null]])
        );
        let mut result = json!({"series": [{"columns": ["time", "v"], "values": [[1_700_000_000_123_000_000_i64, 1]]}]});
        shift_times(&mut result, 86_400_000_000_000, None);
        assert_eq!(
            result["series"][0]["values"][0][0],
            "2023-11-15T22:13:20.123Z"
        );
    }

    #[test]
    fn rfc3339_matches_go() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nanos(1), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(rfc3339_nanos(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            rfc3339_nanos(951_782_400_000_000_000),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339_nanos(1_700_000_000_500_000_000),
            "2023-11-14T22:13:20.5Z"
        );
    }
}
