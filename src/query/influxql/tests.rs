use proptest::prelude::*;

use super::lexer::{tokenize, TokenKind};
use super::StatementKind::*;
use super::*;

/// `Sources` as one line: `None`, `All`, or `db.rp.name | ...` with `-` for a
/// missing part and `/body/` for a regex.
fn render(sources: &Sources) -> String {
    match sources {
        Sources::None => "None".into(),
        Sources::All => "All".into(),
        Sources::Some(list) => list
            .iter()
            .map(|s| {
                let name = match &s.name {
                    MeasurementName::Name(n) => n.clone(),
                    MeasurementName::Regex(r) => format!("/{r}/"),
                };
                let part = |p: &Option<String>| p.clone().unwrap_or_else(|| "-".into());
                format!(
                    "{}.{}.{}",
                    part(&s.database),
                    part(&s.retention_policy),
                    name
                )
            })
            .collect::<Vec<_>>()
            .join(" | "),
    }
}

/// `query` is one statement of `kind` reading `sources` (see [`render`]).
#[track_caller]
fn case(query: &str, kind: StatementKind, sources: &str) {
    // Twice: nothing may leak between calls.
    for _ in 0..2 {
        let got = parse_query(query).unwrap_or_else(|e| panic!("{query:?} rejected: {e}"));
        assert_eq!(got.len(), 1, "{query:?} split into {got:?}");
        assert_eq!(got[0].kind, kind, "{query:?}");
        assert_eq!(render(&got[0].sources), sources, "{query:?}");
    }
}

/// `query` splits into statements with exactly these texts.
#[track_caller]
fn split(query: &str, texts: &[&str]) {
    for _ in 0..2 {
        let got = parse_query(query).unwrap_or_else(|e| panic!("{query:?} rejected: {e}"));
        let got: Vec<&str> = got.iter().map(|s| s.text).collect();
        assert_eq!(got, texts, "{query:?}");
        assert_eq!(
            naive::split(query).as_deref(),
            Some(texts),
            "naive on {query:?}"
        );
    }
}

#[track_caller]
fn err(query: &str, want: ParseError, message: &str) {
    for _ in 0..2 {
        match parse_query(query) {
            Ok(s) => panic!("{query:?} accepted: {s:?}"),
            Err(e) => {
                assert_eq!(e, want, "{query:?}");
                assert_eq!(e.to_string(), message, "{query:?}");
            }
        }
    }
}

#[test]
fn strings_and_quoted_identifiers_hide_semicolons_and_from() {
    // Quoted identifiers are identifiers, whatever they hold.
    case(
        r#"SELECT v FROM "my;measurement""#,
        Select,
        "-.-.my;measurement",
    );
    case(r#"SELECT v FROM "cpu""#, Select, "-.-.cpu");
    case(r#"SELECT v FROM "a\"b""#, Select, r#"-.-.a"b"#);
    case(r#"SELECT v FROM "a\\b""#, Select, r"-.-.a\b");
    case(r#"SELECT "FROM x" FROM cpu"#, Select, "-.-.cpu");
    case(r#"SELECT v FROM "select""#, Select, "-.-.select");
    case(r#"SELECT v FROM """#, Select, "-.-.");
    // A bare word glued to a quoted one is the quoted part, as in InfluxDB.
    case(r#"SELECT v FROM a"b;c""#, Select, "-.-.b;c");
    // String literals are never measurements.
    case("SELECT v FROM cpu WHERE host = 'cpu'", Select, "-.-.cpu");
    case(
        r"SELECT v FROM cpu WHERE host = 'it\'s; FROM x'",
        Select,
        "-.-.cpu",
    );
    case(
        r#"SELECT v FROM cpu WHERE host = '"; FROM x'"#,
        Select,
        "-.-.cpu",
    );
    case(
        "SELECT v FROM cpu WHERE host = '/* -- ;'",
        Select,
        "-.-.cpu",
    );
    case(r"SELECT v FROM cpu WHERE host = '\\'", Select, "-.-.cpu");
}

#[test]
fn regexes_are_read_only_where_influxdb_reads_them() {
    // After FROM, `,`, `.` in a source, `=~` and `!~`.
    case("SELECT v FROM /cpu.*/", Select, "-.-./cpu.*/");
    case(r"SELECT v FROM /a\/b;c/", Select, "-.-./a/b;c/");
    case(r"SELECT v FROM /a\d\\\//", Select, r"-.-./a\d\\//");
    case("SELECT v FROM/x/", Select, "-.-./x/");
    case(
        "SELECT v FROM a, /b;/, c",
        Select,
        "-.-.a | -.-./b;/ | -.-.c",
    );
    case("SELECT v FROM m WHERE h =~ /x;y/", Select, "-.-.m");
    case(
        r"SELECT v FROM m WHERE h !~ /x\/;/ AND a = 1",
        Select,
        "-.-.m",
    );
    case("SELECT v FROM m WHERE h=~/;/", Select, "-.-.m");
    // Elsewhere `/` divides.
    case("SELECT a / 2 FROM m", Select, "-.-.m");
    case(
        "SELECT a/2, b /c FROM m WHERE d / 2 > 1 / 4",
        Select,
        "-.-.m",
    );
    case("SELECT (a) / 2 FROM m", Select, "-.-.m");
    // InfluxDB reads `/` after FROM as a regex even when `/*` follows.
    case("SELECT v FROM /* c */ m", Select, "-.-./* c */");
}

#[test]
fn comments_hide_semicolons_and_from() {
    case(
        "SELECT v FROM m /* ; FROM x */ WHERE a = 1",
        Select,
        "-.-.m",
    );
    case("SELECT /* FROM x */ v FROM m", Select, "-.-.m");
    case("SELECT v -- ; FROM x\nFROM m", Select, "-.-.m");
    case("SELECT v FROM -- FROM x\n m", Select, "-.-.m");
    case("SELECT v FROM m -- ; DROP DATABASE db", Select, "-.-.m");
    case("SELECT v/**/FROM m", Select, "-.-.m");
    case("SELECT v FROM m /* * / ** */", Select, "-.-.m");
    case("SELECT v FROM m -- c\r\n", Select, "-.-.m");
    case("SELECT a--b\nFROM m", Select, "-.-.m");
}

#[test]
fn keywords_are_case_insensitive() {
    case("select v from CPU", Select, "-.-.CPU");
    case("SeLeCt v FrOm m WhErE a = 1", Select, "-.-.m");
    case("show measurements", ShowMeasurements, "All");
    case("Drop Database db", Drop, "None");
    case("explain analyze select v from m", Explain, "-.-.m");
}

#[test]
fn sources_have_database_and_retention_policy() {
    case("SELECT v FROM db.rp.m", Select, "db.rp.m");
    case(r#"SELECT v FROM "db"."rp"."m""#, Select, "db.rp.m");
    case(r#"SELECT v FROM "d.b"."r;p"."m.x""#, Select, "d.b.r;p.m.x");
    case("SELECT v FROM db..m", Select, "db.-.m");
    case("SELECT v FROM rp.m", Select, "-.rp.m");
    case(r#"SELECT v FROM "".rp.m"#, Select, "-.rp.m");
    case("SELECT v FROM rp./re/", Select, "-.rp./re/");
    case("SELECT v FROM db.rp./re;/", Select, "db.rp./re;/");
    case("SELECT v FROM db../re/", Select, "db.-./re/");
}

#[test]
fn subqueries_contribute_their_sources() {
    case("SELECT * FROM (SELECT v FROM inner1)", Select, "-.-.inner1");
    case(
        "SELECT * FROM (SELECT v FROM a, (SELECT w FROM db.rp.b)), /c/ WHERE time > now() - 1h",
        Select,
        "-.-.a | db.rp.b | -.-./c/",
    );
    case(
        "SELECT * FROM (SELECT * FROM a), b",
        Select,
        "-.-.a | -.-.b",
    );
    case(
        "SELECT * FROM (SELECT * FROM a WHERE h =~ /;/) GROUP BY h",
        Select,
        "-.-.a",
    );
    // Unclosed: the backend rejects it; what it names is still routed.
    case("SELECT * FROM (SELECT * FROM a", Select, "-.-.a");
    // Without any FROM there is nothing to route.
    case("SELECT 1", Select, "None");
    case("SELECT * FROM (SELECT 1)", Select, "None");
}

#[test]
fn select_into_target_is_not_a_source() {
    case("SELECT * INTO other FROM m", SelectInto, "-.-.m");
    case(
        r#"SELECT * INTO "db"."rp".:MEASUREMENT FROM /.*/"#,
        SelectInto,
        "-.-./.*/",
    );
    case(
        "SELECT mean(v) INTO db..m_1h FROM m GROUP BY time(1h)",
        SelectInto,
        "-.-.m",
    );
    case(
        "SELECT * FROM (SELECT * FROM into_like) WHERE x = 'INTO'",
        Select,
        "-.-.into_like",
    );
}

#[test]
fn show_statements() {
    // Measurement family: FROM lists, else everything; ON db sets the database.
    case("SHOW MEASUREMENTS", ShowMeasurements, "All");
    case("SHOW MEASUREMENTS ON db", ShowMeasurements, "All");
    case(
        "SHOW MEASUREMENTS WITH MEASUREMENT =~ /cpu.*/",
        ShowMeasurements,
        "-.-./cpu.*/",
    );
    case(
        "SHOW MEASUREMENTS ON db WITH MEASUREMENT =~ /a;b/",
        ShowMeasurements,
        "db.-./a;b/",
    );
    case(
        "SHOW MEASUREMENTS WITH MEASUREMENT = cpu",
        ShowMeasurements,
        "-.-.cpu",
    );
    case(
        "SHOW MEASUREMENTS WITH MEASUREMENT = /c;/",
        ShowMeasurements,
        "-.-./c;/",
    );
    case(
        "SHOW MEASUREMENTS WITH MEASUREMENT !~ /cpu/",
        ShowMeasurements,
        "All",
    );
    case("SHOW MEASUREMENT CARDINALITY", ShowMeasurements, "All");
    case(
        "SHOW MEASUREMENT EXACT CARDINALITY ON db FROM m",
        ShowMeasurements,
        "db.-.m",
    );
    case("SHOW SERIES", ShowSeries, "All");
    case(
        "SHOW SERIES ON db FROM a, other.rp.b WHERE h = 'x'",
        ShowSeries,
        "db.-.a | other.rp.b",
    );
    case(
        "SHOW SERIES EXACT CARDINALITY FROM /m/",
        ShowSeries,
        "-.-./m/",
    );
    case("SHOW TAG KEYS", ShowTagKeys, "All");
    case(
        "SHOW TAG KEYS ON db FROM m WITH KEY =~ /h;/",
        ShowTagKeys,
        "db.-.m",
    );
    case("SHOW TAG KEY CARDINALITY", ShowTagKeys, "All");
    case(
        r#"SHOW TAG VALUES FROM m WITH KEY = "k""#,
        ShowTagValues,
        "-.-.m",
    );
    case(r#"SHOW TAG VALUES WITH KEY = "k;""#, ShowTagValues, "All");
    case(
        r#"SHOW TAG VALUES ON db WITH KEY IN ("a", "b")"#,
        ShowTagValues,
        "All",
    );
    case(
        "SHOW TAG VALUES EXACT CARDINALITY FROM m WITH KEY = k",
        ShowTagValues,
        "-.-.m",
    );
    case("SHOW FIELD KEYS FROM m", ShowFieldKeys, "-.-.m");
    case("SHOW FIELD KEYS ON \"d b\"", ShowFieldKeys, "All");
    case("SHOW FIELD KEY CARDINALITY ON db", ShowFieldKeys, "All");
    // The rest read no measurement.
    case("SHOW DATABASES", ShowDatabases, "None");
    case(
        "SHOW RETENTION POLICIES ON db",
        ShowRetentionPolicies,
        "None",
    );
    case("SHOW USERS", ShowUsers, "None");
    case("SHOW SHARDS", ShowShards, "None");
    case("SHOW SHARD GROUPS", ShowOther, "None");
    case("SHOW STATS", ShowStats, "None");
    case("SHOW STATS FOR 'shard'", ShowStats, "None");
    case("SHOW DIAGNOSTICS", ShowDiagnostics, "None");
    case("SHOW CONTINUOUS QUERIES", ShowContinuousQueries, "None");
    case("SHOW GRANTS FOR bob", ShowOther, "None");
    case("SHOW QUERIES", ShowQueries, "None");
    case("SHOW/* queries */GRANTS FOR bob", ShowOther, "None");
    case("SHOW SUBSCRIPTIONS", ShowOther, "None");
    case("SHOW", ShowOther, "None");
}

#[test]
fn create_drop_delete_and_access_statements() {
    case(
        r#"CREATE DATABASE "x;y" WITH DURATION 1d"#,
        CreateDatabase,
        "None",
    );
    case(
        "CREATE RETENTION POLICY rp ON db DURATION 1d REPLICATION 1 DEFAULT",
        CreateRetentionPolicy,
        "None",
    );
    case(
        "CREATE USER bob WITH PASSWORD 'p;w' WITH ALL PRIVILEGES",
        CreateUser,
        "None",
    );
    case(
        "CREATE CONTINUOUS QUERY cq ON db BEGIN SELECT mean(v) INTO m_1h FROM m GROUP BY time(1h) END",
        CreateContinuousQuery,
        "db.-.m",
    );
    case(
        "CREATE CONTINUOUS QUERY \"c q\" ON db RESAMPLE EVERY 1h BEGIN SELECT count(v) INTO x FROM other.rp.m, /re/ GROUP BY time(1h) END",
        CreateContinuousQuery,
        "other.rp.m | db.-./re/",
    );
    case(
        "CREATE SUBSCRIPTION s ON db.rp DESTINATIONS ALL 'udp://h:1'",
        CreateOther,
        "None",
    );
    case(r#"DROP MEASUREMENT "m;x""#, Drop, "-.-.m;x");
    case("DROP SERIES FROM m WHERE host = 'a'", Drop, "-.-.m");
    case("DROP SERIES FROM /m/, n", Drop, "-.-./m/ | -.-.n");
    case("DROP SERIES WHERE host = 'a'", Drop, "All");
    case("DROP DATABASE db", Drop, "None");
    case("DROP SHARD 1", Drop, "None");
    case("DROP RETENTION POLICY rp ON db", Drop, "None");
    case("DROP CONTINUOUS QUERY cq ON db", Drop, "None");
    case("DROP USER bob", Drop, "None");
    case("DELETE FROM m WHERE time < '2020-01-01'", Delete, "-.-.m");
    case("DELETE FROM /m;/", Delete, "-.-./m;/");
    case("DELETE WHERE time < 0", Delete, "All");
    case("GRANT ALL ON db TO bob", Grant, "None");
    case("GRANT READ ON db TO bob", Grant, "None");
    // `FROM user` names a user, not a measurement.
    case("REVOKE READ ON db FROM bob", Revoke, "None");
    case("REVOKE ALL PRIVILEGES FROM bob", Revoke, "None");
    case("ALTER RETENTION POLICY rp ON db DURATION 1h", Alter, "None");
    case("SET PASSWORD FOR bob = 'x;y'", Set, "None");
    case("KILL QUERY 36", Kill, "None");
}

#[test]
fn explain_reads_its_select() {
    case("EXPLAIN SELECT v FROM m", Explain, "-.-.m");
    case(
        "EXPLAIN ANALYZE SELECT v FROM /re/, db.rp.n",
        Explain,
        "-.-./re/ | db.rp.n",
    );
    case("EXPLAIN SHOW DATABASES", Unknown, "None");
}

#[test]
fn unknown_statements() {
    case("INSERT cpu v=1", Unknown, "None");
    case("foo FROM bar", Unknown, "None");
    case("\"SELECT\" v FROM m", Unknown, "None");
    case("(SELECT v FROM m)", Unknown, "None");
}

#[test]
fn unicode_identifiers() {
    case("SELECT v FROM température", Select, "-.-.température");
    case("SELECT \"温度\" FROM 測定", Select, "-.-.測定");
    case("SELECT v FROM \"dé\".\"rp\".\"μ;x\"", Select, "dé.rp.μ;x");
    case("SELECT v FROM m WHERE h = 'ü;'; ", Select, "-.-.m");
}

#[test]
fn statement_kinds_admin_and_show() {
    for kind in [
        SelectInto,
        CreateUser,
        CreateDatabase,
        Drop,
        Delete,
        Grant,
        Revoke,
        Alter,
        Set,
        Kill,
        Unknown,
    ] {
        assert!(kind.is_admin(), "{kind:?}");
        assert!(!kind.is_show(), "{kind:?}");
    }
    for kind in [Select, Explain, ShowMeasurements, ShowDatabases, ShowOther] {
        assert!(!kind.is_admin(), "{kind:?}");
    }
    for kind in [ShowMeasurements, ShowTagValues, ShowUsers, ShowOther] {
        assert!(kind.is_show(), "{kind:?}");
    }
    assert!(!Select.is_show());
}

#[test]
fn splitting() {
    split("SELECT 1; SELECT 2", &["SELECT 1", "SELECT 2"]);
    split(";;  ;SELECT v FROM m;;", &["SELECT v FROM m"]);
    // Surrounding comments are not part of a statement, inner ones are.
    split("SELECT v FROM m -- trailing; comment", &["SELECT v FROM m"]);
    split(
        "/* lead; */ SELECT /* in */ v FROM m /* tail */",
        &["SELECT /* in */ v FROM m"],
    );
    split(
        "-- a\nSELECT v FROM m; -- b\nSHOW DATABASES",
        &["SELECT v FROM m", "SHOW DATABASES"],
    );
    // `;` inside literals and comments.
    split(
        r#"SELECT v FROM "a;b"; SHOW DATABASES"#,
        &[r#"SELECT v FROM "a;b""#, "SHOW DATABASES"],
    );
    split(
        "SELECT v FROM m WHERE h = 'a;b';SHOW DATABASES",
        &["SELECT v FROM m WHERE h = 'a;b'", "SHOW DATABASES"],
    );
    split(
        "SELECT v FROM /a;b/; SHOW DATABASES",
        &["SELECT v FROM /a;b/", "SHOW DATABASES"],
    );
    split("SELECT v FROM a, /;/; X", &["SELECT v FROM a, /;/", "X"]);
    split(
        "SELECT v FROM m WHERE h =~ /a;b/; X",
        &["SELECT v FROM m WHERE h =~ /a;b/", "X"],
    );
    split("SELECT v FROM m /* ; */; X", &["SELECT v FROM m", "X"]);
    split(
        "SELECT * FROM (SELECT v FROM /;/), /;/; X",
        &["SELECT * FROM (SELECT v FROM /;/), /;/", "X"],
    );
    split(
        "SHOW MEASUREMENTS WITH MEASUREMENT = /;/; X",
        &["SHOW MEASUREMENTS WITH MEASUREMENT = /;/", "X"],
    );
    // Division is no regex: the `;` ends the statement.
    split(
        "SELECT v / 2 FROM m; SELECT v / 3 FROM n",
        &["SELECT v / 2 FROM m", "SELECT v / 3 FROM n"],
    );
    split(
        "SELECT v FROM m WHERE a = 1 /2; X",
        &["SELECT v FROM m WHERE a = 1 /2", "X"],
    );
    // CRLF.
    split(
        "SELECT v FROM m\r\n;\r\nSHOW DATABASES\r\n",
        &["SELECT v FROM m", "SHOW DATABASES"],
    );
    // Unbalanced parentheses do not carry over into the next statement.
    split(
        "SELECT (v FROM m; SELECT v FROM /;/",
        &["SELECT (v FROM m", "SELECT v FROM /;/"],
    );
}

#[test]
fn errors() {
    // Empty.
    let empty = "found EOF, expected SELECT, DELETE, SHOW, CREATE, DROP, EXPLAIN, GRANT, REVOKE, ALTER, SET, KILL";
    err("", ParseError::Empty, empty);
    err("  ;; -- c\n/* d */;", ParseError::Empty, empty);
    // Unterminated literals and comments, at their opening delimiter.
    err(
        "SELECT 'abc",
        ParseError::UnterminatedString { at: 7 },
        "found unterminated string at byte 7, expected closing '",
    );
    err(
        "SELECT 'a\nb' FROM m",
        ParseError::UnterminatedString { at: 7 },
        "found unterminated string at byte 7, expected closing '",
    );
    err(
        r"SELECT 'a\",
        ParseError::UnterminatedString { at: 7 },
        "found unterminated string at byte 7, expected closing '",
    );
    err(
        "SELECT v FROM m; SELECT 'x",
        ParseError::UnterminatedString { at: 24 },
        "found unterminated string at byte 24, expected closing '",
    );
    err(
        "SELECT \"abc",
        ParseError::UnterminatedIdentifier { at: 7 },
        "found unterminated quoted identifier at byte 7, expected closing \"",
    );
    err(
        "SELECT a\"bc",
        ParseError::UnterminatedIdentifier { at: 8 },
        "found unterminated quoted identifier at byte 8, expected closing \"",
    );
    err(
        "SELECT v FROM /abc",
        ParseError::UnterminatedRegex { at: 14 },
        "found unterminated regex at byte 14, expected closing /",
    );
    err(
        r"SELECT v FROM /a\/",
        ParseError::UnterminatedRegex { at: 14 },
        "found unterminated regex at byte 14, expected closing /",
    );
    // InfluxDB reads `\\/` as `\` then an escaped `/`.
    err(
        r"SELECT v FROM /a\\/",
        ParseError::UnterminatedRegex { at: 14 },
        "found unterminated regex at byte 14, expected closing /",
    );
    err(
        "SELECT v FROM /a\n/",
        ParseError::UnterminatedRegex { at: 14 },
        "found unterminated regex at byte 14, expected closing /",
    );
    err(
        "SELECT /* abc",
        ParseError::UnterminatedComment { at: 7 },
        "found unterminated comment at byte 7, expected */",
    );
    err(
        "SELECT /*/",
        ParseError::UnterminatedComment { at: 7 },
        "found unterminated comment at byte 7, expected */",
    );
    // FROM without a measurement.
    let expected = |at| {
        (
            ParseError::ExpectedMeasurement { at },
            format!("expected identifier, regex or subquery at byte {at}"),
        )
    };
    for (query, at) in [
        ("SELECT v FROM", 13),
        ("SELECT v FROM WHERE a = 1", 14),
        ("SELECT v FROM a,", 16),
        ("SELECT v FROM a, ,b", 17),
        ("SELECT v FROM a.b.c.d", 20),
        ("SELECT v FROM a.", 16),
        ("SELECT v FROM 'm'", 14),
        ("SELECT v FROM (SHOW DATABASES)", 15),
        ("SHOW TAG KEYS FROM (SELECT v FROM m)", 19),
        ("SHOW MEASUREMENTS WITH MEASUREMENT = ", 36),
        ("DROP MEASUREMENT", 16),
        ("DELETE FROM ; SELECT 1", 11),
        ("SELECT 1; SELECT v FROM", 23),
    ] {
        let (want, message) = expected(at);
        err(query, want, &message);
    }
}

#[test]
fn select_aliases_finds_field_aliases() {
    #[track_caller]
    fn aliases(query: &str, want: &[(&str, &str)]) {
        let statements = parse_query(query).unwrap();
        let got = select_aliases(&statements[0]);
        let got: Vec<(&str, &str)> = got
            .iter()
            .map(|(r, a)| (&statements[0].text[r.clone()], a.as_str()))
            .collect();
        assert_eq!(got, want, "{query:?}");
    }
    aliases(
        r#"SELECT mean(v) AS m, max(v) as "my alias", min(v) AS "a\"b" FROM cpu"#,
        &[
            ("m", "m"),
            (r#""my alias""#, "my alias"),
            (r#""a\"b""#, r#"a"b"#),
        ],
    );
    aliases(
        r#"SELECT count(v) AS "c" INTO x FROM m"#,
        &[(r#""c""#, "c")],
    );
    aliases(
        "SELECT v AS \"x;y\" FROM m; SELECT w AS z FROM n",
        &[("\"x;y\"", "x;y")],
    );
    // Not recognised: subquery aliases, AS after FROM, keywords, non-SELECTs.
    aliases("SELECT v FROM (SELECT v AS inner FROM m)", &[]);
    aliases("SELECT v AS limit FROM m", &[]);
    aliases(r#"SELECT v AS "from" FROM m"#, &[(r#""from""#, "from")]);
    aliases("SELECT v FROM m", &[]);
    aliases("SHOW TAG KEYS", &[]);
    aliases("EXPLAIN SELECT v AS x FROM m", &[]);
}

#[test]
fn time_conditions_finds_outer_time_comparisons() {
    #[track_caller]
    fn conditions(query: &str, want: &[&str]) {
        let statements = parse_query(query).unwrap();
        let got = time_conditions(&statements[0]);
        let got: Vec<&str> = got.iter().map(|r| &statements[0].text[r.clone()]).collect();
        assert_eq!(got, want, "{query:?}");
    }
    conditions(
        "SELECT v FROM m WHERE time > now() - 1h",
        &["time > now() - 1h"],
    );
    conditions(
        "SELECT v FROM m WHERE host = 'a' AND time >= '2024-01-01T00:00:00Z' AND time < 1700000000000000000 GROUP BY time(1m)",
        &["time >= '2024-01-01T00:00:00Z'", "time < 1700000000000000000"],
    );
    conditions(
        "SELECT v FROM m WHERE \"time\" <= now()",
        &["\"time\" <= now()"],
    );
    conditions(
        "SELECT v FROM m WHERE (time > now()-1h+5m) AND h = 'a'",
        &["time > now()-1h+5m"],
    );
    conditions(
        "SELECT v FROM m WHERE time >= 1700000000000ms and TIME <= 1700003600000ms fill(none)",
        &["time >= 1700000000000ms", "TIME <= 1700003600000ms"],
    );
    conditions(
        "SELECT v FROM m WHERE time > now() - 1h tz('Europe/Paris')",
        &["time > now() - 1h"],
    );
    conditions(
        "SELECT v INTO x FROM m WHERE time = '2024-01-01' - 1d LIMIT 1",
        &["time = '2024-01-01' - 1d"],
    );
    conditions(
        "SELECT v FROM (SELECT v FROM m WHERE time > now() - 2h) WHERE time > now() - 1h",
        &["time > now() - 1h"],
    );
    // Not recognised.
    conditions("SELECT v FROM m WHERE now() - 1h < time", &[]);
    conditions("SELECT v FROM m WHERE time > now() * 2", &[]);
    conditions("SELECT v FROM m WHERE time > $start", &[]);
    conditions("SELECT v FROM m WHERE a + time > 1", &[]);
    conditions("SELECT v FROM m WHERE time > -1", &[]);
    conditions(
        "SELECT v FROM (SELECT v FROM m WHERE time > now() - 2h)",
        &[],
    );
    conditions("SELECT v FROM m GROUP BY time(1h)", &[]);
    conditions("DELETE FROM m WHERE time < 0", &[]);
}

#[test]
fn deep_nesting_does_not_overflow() {
    let depth = 100_000;
    let query = format!(
        "SELECT * FROM {}(SELECT v FROM m){}",
        "(SELECT * FROM ".repeat(depth),
        ")".repeat(depth)
    );
    let got = parse_query(&query).unwrap();
    assert_eq!(render(&got[0].sources), "-.-.m");
    let parens = format!("SELECT {}v{} FROM m", "(".repeat(depth), ")".repeat(depth));
    assert_eq!(render(&parse_query(&parens).unwrap()[0].sources), "-.-.m");
}

/// Texts of the statements as split by the lexer alone (no classification).
fn lexer_split(query: &str) -> Option<Vec<&str>> {
    let tokens = tokenize(query).ok()?;
    Some(
        tokens
            .split(|t| t.kind == TokenKind::Semicolon)
            .filter(|p| !p.is_empty())
            .map(|p| &query[p[0].start..p[p.len() - 1].end])
            .collect(),
    )
}

/// Everything a caller can do with a query, checking spans stay in bounds.
fn exercise(query: &str) {
    let Ok(statements) = parse_query(query) else {
        return;
    };
    for statement in &statements {
        assert!(!statement.text.is_empty());
        for (range, _) in select_aliases(statement) {
            assert!(statement.text.get(range).is_some());
        }
        for range in time_conditions(statement) {
            assert!(statement.text.get(range).is_some());
        }
        if let Sources::Some(list) = &statement.sources {
            assert!(!list.is_empty());
        }
    }
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "cpu",
        "\"my;measurement\"",
        r#""a\";b""#,
        "\"FROM x\"",
        "température",
        "db.rp.cpu",
        r#""db"."rp"."m;x""#,
        "db..m",
        "rp.m",
        "rp./r;/",
    ])
}

fn regex() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/cpu.*/", "/a;b/", r"/a\/;b/", "/ -- ;/", r#"/'"/"#, r"/\d;/",
    ])
}

fn source() -> impl Strategy<Value = String> {
    prop_oneof![
        name().prop_map(str::to_owned),
        regex().prop_map(str::to_owned),
        (name(), regex()).prop_map(|(n, r)| format!("(SELECT v FROM {n}, {r} WHERE h = 'a;b')")),
    ]
}

fn from_list() -> impl Strategy<Value = String> {
    prop::collection::vec(source(), 1..4).prop_map(|s| s.join(", "))
}

fn condition() -> impl Strategy<Value = String> {
    let string = prop::sample::select(vec!["'a;b'", r"'it\'s;'", "'/*'", "'--;'", "'\"'"]);
    prop_oneof![
        string.clone().prop_map(|s| format!("host = {s}")),
        regex().prop_map(|r| format!("host =~ {r}")),
        Just("v / 2 > 1".to_owned()),
        Just("time > now() - 1h".to_owned()),
        string.prop_map(|s| format!("\"k;\" != {s}")),
    ]
}

fn field() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "v",
        "mean(v) AS \"m;a\"",
        "v / 2",
        "\"f;x\"",
        "v /* ; */",
        "v -- ;\n",
    ])
}

/// One statement, starting and ending with a token.
fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        (field(), from_list(), condition())
            .prop_map(|(f, s, c)| format!("SELECT {f}, w FROM {s} WHERE {c}")),
        (field(), from_list()).prop_map(|(f, s)| format!("SELECT {f} INTO \"o;x\" FROM {s}")),
        regex().prop_map(|r| format!("SHOW MEASUREMENTS WITH MEASUREMENT =~ {r}")),
        regex().prop_map(|r| format!("SHOW MEASUREMENTS WITH MEASUREMENT = {r}")),
        name().prop_map(|n| format!("SHOW TAG VALUES FROM {n} WITH KEY = \"k;\"")),
        (regex(), condition()).prop_map(|(r, c)| format!("DELETE FROM {r} WHERE {c}")),
        Just("DROP DATABASE \"x;y\"".to_owned()),
        Just("SELECT /* ; FROM x */ v -- ;\n FROM m".to_owned()),
    ]
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        ";",
        " ; ",
        ";\n",
        "; -- c;\n",
        ";;",
        "; /* ; */ ;",
        ";\t",
    ])
}

fn statement_list() -> impl Strategy<Value = (Vec<String>, String)> {
    (
        prop::collection::vec((statement(), separator()), 1..5),
        prop::sample::select(vec!["", " ", "-- lead;\n", "/* ; */"]),
    )
        .prop_map(|(parts, lead)| {
            let mut query = lead.to_owned();
            for (s, sep) in &parts {
                query.push_str(s);
                query.push_str(sep);
            }
            (parts.into_iter().map(|(s, _)| s).collect(), query)
        })
}

/// Characters that matter to the lexer, and some that do not.
const INTERESTING: &[char] = &[
    ';', '\'', '"', '/', '*', '-', '\\', '\n', '\r', ' ', '.', ',', '(', ')', '=', '~', '!', 'a',
    'F', 'é',
];

proptest! {
    // Failures are not persisted: this module must not write files outside itself;
    // add a minimal failing input as a unit case instead.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn splitter_matches_naive_splitter_and_generator((statements, query) in statement_list()) {
        let got = parse_query(&query).unwrap();
        let texts: Vec<&str> = got.iter().map(|s| s.text).collect();
        prop_assert_eq!(&texts, &statements);
        prop_assert_eq!(naive::split(&query), Some(texts));
        for s in &got {
            prop_assert_ne!(s.kind, Unknown);
        }
    }

    #[test]
    fn random_strings_never_panic(query in "\\PC{0,64}") {
        exercise(&query);
    }

    #[test]
    fn random_lexer_soup_never_panics_and_splits_like_naive(query in "[;'\"/*\\\\\n .,()=~!aFROMfromé-]{0,48}") {
        exercise(&query);
        if let Some(texts) = lexer_split(&query) {
            prop_assert_eq!(naive::split(&query), Some(texts));
        }
    }

    #[test]
    fn mutated_queries_never_panic(
        (_, query) in statement_list(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::option::of(prop::sample::select(INTERESTING))), 1..5),
    ) {
        let mut chars: Vec<char> = query.chars().collect();
        for (at, insert) in edits {
            let at = at.index(chars.len() + 1);
            match insert {
                Some(c) => chars.insert(at, c),
                None if at < chars.len() => { chars.remove(at); }
                None => {}
            }
        }
        let query: String = chars.into_iter().collect();
        exercise(&query);
        if let Some(texts) = lexer_split(&query) {
            prop_assert_eq!(naive::split(&query), Some(texts));
        }
    }
}
