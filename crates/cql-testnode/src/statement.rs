//! Just enough CQL to serve a driver and tidegate: SELECT from tables, USE, CREATE KEYSPACE,
//! CREATE TABLE, ALTER TABLE … ADD (tidegate's schema migrations) and INSERT with bind
//! markers. Anything else is refused with a syntax error
//! that names the statement, so a gap in the fixture is obvious rather than silent.

use crate::result::ColumnType;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    Select {
        keyspace: Option<String>,
        table: String,
        /// `None` for `*`.
        columns: Option<Vec<String>>,
    },
    Use(String),
    CreateKeyspace {
        name: String,
        if_not_exists: bool,
        replication: Vec<(String, String)>,
    },
    CreateTable {
        keyspace: Option<String>,
        name: String,
        if_not_exists: bool,
        columns: Vec<(String, ColumnType)>,
        partition_key: Vec<String>,
        clustering_key: Vec<String>,
    },
    Insert {
        keyspace: Option<String>,
        table: String,
        columns: Vec<String>,
    },
    /// `ALTER TABLE t ADD column type`: one regular column.
    AddColumn {
        keyspace: Option<String>,
        table: String,
        column: (String, ColumnType),
    },
}

/// Splits `ks.table` (either part possibly quoted) into its parts, lowercased unless quoted.
fn qualified(name: &str) -> (Option<String>, String) {
    let ident = |s: &str| {
        let s = s.trim();
        if let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            inner.to_owned()
        } else {
            s.to_ascii_lowercase()
        }
    };
    match name.split_once('.') {
        Some((ks, table)) => (Some(ident(ks)), ident(table)),
        None => (None, ident(name)),
    }
}

fn ident(s: &str) -> String {
    qualified(s).1
}

/// Finds `keyword` (lowercase) as a whole word in `lower`, from `from`.
fn find_word(lower: &str, keyword: &str, from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(found) = lower[at..].find(keyword) {
        let start = at + found;
        let end = start + keyword.len();
        let before = start == 0 || !lower.as_bytes()[start - 1].is_ascii_alphanumeric();
        let after = end == lower.len() || !lower.as_bytes()[end].is_ascii_alphanumeric();
        if before && after {
            return Some(start);
        }
        at = end;
    }
    None
}

/// The text between the parenthesis at `open` and its match.
fn parenthesized(text: &str, open: usize) -> Option<(&str, usize)> {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&text[open + 1..open + i], open + i + 1));
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits on commas outside parentheses and angle brackets.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = text[start..].trim();
    if !last.is_empty() {
        parts.push(last);
    }
    parts
}

pub fn parse(cql: &str) -> Result<Statement, String> {
    let text = cql.trim().trim_end_matches(';').trim();
    let lower = text.to_ascii_lowercase();
    let unsupported = || format!("the CQL test node does not support: {text}");
    if lower.starts_with("select ") {
        let from = find_word(&lower, "from", 0).ok_or_else(unsupported)?;
        let list = text[7..from].trim();
        let rest = text[from + 4..].trim_start();
        let name = rest.split_whitespace().next().ok_or_else(unsupported)?;
        let (keyspace, table) = qualified(name);
        let columns = if list == "*" {
            None
        } else {
            Some(split_top_level(list).into_iter().map(ident).collect())
        };
        return Ok(Statement::Select {
            keyspace,
            table,
            columns,
        });
    }
    if lower.starts_with("use ") {
        return Ok(Statement::Use(ident(&text[4..])));
    }
    if lower.starts_with("create keyspace") {
        let if_not_exists = lower.contains("if not exists");
        let after = if if_not_exists {
            find_word(&lower, "exists", 0).unwrap() + 6
        } else {
            15
        };
        let name = text[after..]
            .split_whitespace()
            .next()
            .ok_or_else(unsupported)?;
        let open = text.find('{').ok_or_else(unsupported)?;
        let close = text[open..].find('}').ok_or_else(unsupported)? + open;
        let replication = text[open + 1..close]
            .split(',')
            .filter_map(|pair| {
                let (k, v) = pair.split_once(':')?;
                let clean = |s: &str| s.trim().trim_matches('\'').to_owned();
                Some((clean(k), clean(v)))
            })
            .collect();
        return Ok(Statement::CreateKeyspace {
            name: ident(name),
            if_not_exists,
            replication,
        });
    }
    if lower.starts_with("create table") {
        let if_not_exists = lower.contains("if not exists");
        let open = text.find('(').ok_or_else(unsupported)?;
        let head = &text[12..open];
        let name = head.split_whitespace().last().ok_or_else(unsupported)?;
        let (keyspace, name) = qualified(name);
        let (body, _) = parenthesized(text, open).ok_or_else(unsupported)?;
        let mut columns = Vec::new();
        let mut partition_key = Vec::new();
        let mut clustering_key = Vec::new();
        for part in split_top_level(body) {
            let lower_part = part.to_ascii_lowercase();
            if lower_part.starts_with("primary key") {
                let open = part.find('(').ok_or_else(unsupported)?;
                let (key, _) = parenthesized(part, open).ok_or_else(unsupported)?;
                let mut parts = split_top_level(key).into_iter();
                let first = parts.next().ok_or_else(unsupported)?;
                partition_key = match first.strip_prefix('(') {
                    Some(inner) => split_top_level(inner.trim_end_matches(')'))
                        .into_iter()
                        .map(ident)
                        .collect(),
                    None => vec![ident(first)],
                };
                clustering_key = parts.map(ident).collect();
            } else {
                let mut words = part.split_whitespace();
                let column = ident(words.next().ok_or_else(unsupported)?);
                let ty_text = words.next().ok_or_else(unsupported)?;
                let ty = ColumnType::parse(ty_text)
                    .ok_or_else(|| format!("the CQL test node has no type {ty_text}"))?;
                if words.any(|w| w.eq_ignore_ascii_case("primary")) {
                    partition_key = vec![column.clone()];
                }
                columns.push((column, ty));
            }
        }
        return Ok(Statement::CreateTable {
            keyspace,
            name,
            if_not_exists,
            columns,
            partition_key,
            clustering_key,
        });
    }
    if lower.starts_with("alter table") {
        let words: Vec<&str> = text[11..].split_whitespace().collect();
        let [name, add, column, ty_text] = words[..] else {
            return Err(unsupported());
        };
        if !add.eq_ignore_ascii_case("add") {
            return Err(unsupported());
        }
        let (keyspace, table) = qualified(name);
        let ty = ColumnType::parse(ty_text)
            .ok_or_else(|| format!("the CQL test node has no type {ty_text}"))?;
        return Ok(Statement::AddColumn {
            keyspace,
            table,
            column: (ident(column), ty),
        });
    }
    if lower.starts_with("insert into") {
        let open = text.find('(').ok_or_else(unsupported)?;
        let (keyspace, table) = qualified(text[11..open].trim());
        let (list, _) = parenthesized(text, open).ok_or_else(unsupported)?;
        let columns = split_top_level(list).into_iter().map(ident).collect();
        return Ok(Statement::Insert {
            keyspace,
            table,
            columns,
        });
    }
    Err(unsupported())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_drivers_and_tidegate_send() {
        assert_eq!(
            parse("SELECT host_id, rpc_address, tokens FROM system.local WHERE key='local'")
                .unwrap(),
            Statement::Select {
                keyspace: Some("system".into()),
                table: "local".into(),
                columns: Some(vec![
                    "host_id".into(),
                    "rpc_address".into(),
                    "tokens".into()
                ]),
            }
        );
        assert_eq!(
            parse("USE \"MyKs\";").unwrap(),
            Statement::Use("MyKs".into())
        );
        match parse(
            "CREATE KEYSPACE IF NOT EXISTS tidegate WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'datacenter1': '3'} AND tablets = {'enabled': false}",
        )
        .unwrap()
        {
            Statement::CreateKeyspace {
                name,
                if_not_exists,
                replication,
            } => {
                assert_eq!(name, "tidegate");
                assert!(if_not_exists);
                assert_eq!(replication[1], ("datacenter1".into(), "3".into()));
            }
            other => panic!("{other:?}"),
        }
        match parse(
            "CREATE TABLE IF NOT EXISTS tidegate.events (user_id text, event_time timestamp, \
             event_id uuid, event_type text, payload text, received_at timestamp, \
             PRIMARY KEY ((user_id), event_time, event_id)) WITH CLUSTERING ORDER BY \
             (event_time DESC, event_id ASC) AND default_time_to_live = 2592000",
        )
        .unwrap()
        {
            Statement::CreateTable {
                keyspace,
                name,
                columns,
                partition_key,
                clustering_key,
                ..
            } => {
                assert_eq!(
                    (keyspace.as_deref(), name.as_str()),
                    (Some("tidegate"), "events")
                );
                assert_eq!(columns.len(), 6);
                assert_eq!(partition_key, vec!["user_id"]);
                assert_eq!(clustering_key, vec!["event_time", "event_id"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse("INSERT INTO tidegate.events (user_id, event_time) VALUES (?, ?) USING TTL ?")
                .unwrap(),
            Statement::Insert {
                keyspace: Some("tidegate".into()),
                table: "events".into(),
                columns: vec!["user_id".into(), "event_time".into()],
            }
        );
        assert_eq!(
            parse("ALTER TABLE tidegate.events ADD source text").unwrap(),
            Statement::AddColumn {
                keyspace: Some("tidegate".into()),
                table: "events".into(),
                column: ("source".into(), ColumnType::Text),
            }
        );
        assert!(parse("ALTER TABLE t DROP source").is_err());
        assert!(parse("DROP TABLE x").unwrap_err().contains("DROP TABLE x"));
    }
}
