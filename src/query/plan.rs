//! Where each statement of a query goes.
//!
//! - A statement reading measurements that all route to one backend set goes
//!   to one healthy backend of that set.
//! - A statement whose measurements route to several sets, or that reads a
//!   regex or everything (`SHOW MEASUREMENTS`, `SHOW TAG KEYS` without `FROM`,
//!   `SHOW DATABASES`, ...), fans out to one healthy backend of every set that
//!   may hold its data, and the answers are merged.
//! - `CREATE DATABASE` and `CREATE RETENTION POLICY` go to every backend, so a
//!   database exists wherever its points may be routed.
//! - Statements that change data or access (`DROP`, `DELETE`, `GRANT`,
//!   `REVOKE`, `ALTER`, `SELECT INTO`, ...) are refused unless
//!   `query.allow_admin`, and then go to every backend.

use super::influxql::{MeasurementName, Sources, Statement, StatementKind};
use crate::route::{Router, SetId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One healthy backend of this set.
    One(SetId),
    /// One healthy backend of each set; answers merged.
    Each(Vec<SetId>),
    /// Every backend; the first error wins.
    Every,
    /// Not sent anywhere: not allowed (403).
    Refused(String),
    /// Not sent anywhere: not a statement (400, as InfluxDB's parser).
    Invalid(String),
}

/// Decides where `statement` goes.
pub fn plan(statement: &Statement<'_>, router: &Router, allow_admin: bool) -> Target {
    use StatementKind::*;
    let kind = statement.kind;
    match kind {
        Unknown => {
            let found = statement.text.split_whitespace().next().unwrap_or("EOF");
            return Target::Invalid(format!(
                "found {found}, expected SELECT, DELETE, SHOW, CREATE, DROP, EXPLAIN, GRANT, REVOKE, ALTER, SET, KILL at line 1, char 1"
            ));
        }
        CreateDatabase | CreateRetentionPolicy => return Target::Every,
        _ if kind.is_admin() && allow_admin => return Target::Every,
        _ if kind.is_admin() => {
            return Target::Refused(format!(
            "{} statements change data or access on the backends and are refused by this proxy; \
                 set query.allow_admin = true to send them to every backend",
            keyword(kind)
        ))
        }
        _ => {}
    }
    let all_sets = || {
        (0..router.set_count() as u32)
            .map(SetId)
            .collect::<Vec<_>>()
    };
    match &statement.sources {
        Sources::None | Sources::All => Target::Each(all_sets()),
        Sources::Some(sources) => {
            let mut sets: Vec<SetId> = Vec::new();
            for source in sources {
                match &source.name {
                    MeasurementName::Name(name) => match router.route(name.as_bytes()) {
                        Some(set) if !sets.contains(&set) => sets.push(set),
                        Some(_) => {}
                        // Nothing routes there, so nothing was written there:
                        // ask every set, as InfluxDB would answer (empty).
                        None => return Target::Each(all_sets()),
                    },
                    MeasurementName::Regex(_) => return Target::Each(all_sets()),
                }
            }
            match sets.as_slice() {
                [one] => Target::One(*one),
                _ => Target::Each(sets),
            }
        }
    }
}

fn keyword(kind: StatementKind) -> &'static str {
    use StatementKind::*;
    match kind {
        Drop => "DROP",
        Delete => "DELETE",
        Grant => "GRANT",
        Revoke => "REVOKE",
        Alter => "ALTER",
        Set => "SET PASSWORD",
        Kill => "KILL",
        SelectInto => "SELECT ... INTO",
        CreateUser => "CREATE USER",
        CreateContinuousQuery => "CREATE CONTINUOUS QUERY",
        CreateOther => "CREATE",
        _ => "such",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::query::influxql::parse_query;

    fn router() -> Router {
        let config = Config::from_toml(
            "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n[[backends]]\nname = \"b\"\nurl = \"http://h:2\"\n\
             [[backends]]\nname = \"c\"\nurl = \"http://h:3\"\n\
             [routes]\n_default_ = [\"a\", \"b\"]\ncpu = [\"c\"]\nmem = [\"c\"]",
        )
        .unwrap();
        Router::new(&config)
    }

    #[track_caller]
    fn planned(query: &str, allow_admin: bool) -> Target {
        let statements = parse_query(query).unwrap();
        assert_eq!(statements.len(), 1, "{query}");
        plan(&statements[0], &router(), allow_admin)
    }

    #[test]
    fn statements_go_where_their_measurements_live() {
        let r = router();
        let cpu = r.route(b"cpu").unwrap();
        let default = r.route(b"disk").unwrap();
        let every_set = Target::Each(vec![SetId(0), SetId(1)]);
        // One set.
        assert_eq!(
            planned("SELECT mean(v) FROM cpu WHERE time > now() - 1h", false),
            Target::One(cpu)
        );
        assert_eq!(planned("SELECT * FROM cpu, mem", false), Target::One(cpu));
        assert_eq!(
            planned("SELECT * FROM \"db\".\"rp\".\"disk\"", false),
            Target::One(default)
        );
        assert_eq!(planned("SHOW TAG KEYS FROM cpu", false), Target::One(cpu));
        assert_eq!(
            planned("SELECT * FROM (SELECT v FROM mem)", false),
            Target::One(cpu)
        );
        // Several sets, regexes, everything.
        let mut both = vec![cpu, default];
        both.sort_by_key(|s| s.0);
        let Target::Each(mut got) = planned("SELECT * FROM cpu, disk", false) else {
            panic!()
        };
        got.sort_by_key(|s| s.0);
        assert_eq!(got, both);
        assert_eq!(planned("SELECT * FROM /c.*/", false), every_set);
        assert_eq!(planned("SHOW MEASUREMENTS", false), every_set);
        assert_eq!(planned("SHOW DATABASES", false), every_set);
        assert_eq!(planned("SHOW TAG KEYS", false), every_set);
        // Every backend.
        assert_eq!(planned("CREATE DATABASE x", false), Target::Every);
        assert_eq!(planned("DROP MEASUREMENT cpu", true), Target::Every);
        // Refused.
        for query in [
            "DROP DATABASE x",
            "DELETE FROM cpu",
            "GRANT ALL TO joe",
            "REVOKE ALL FROM joe",
            "SELECT * INTO x FROM cpu",
        ] {
            assert!(
                matches!(planned(query, false), Target::Refused(_)),
                "{query}"
            );
        }
        let Target::Refused(reason) = planned("DROP DATABASE x", false) else {
            panic!()
        };
        assert!(
            reason.starts_with("DROP statements change data"),
            "{reason}"
        );
    }
}
