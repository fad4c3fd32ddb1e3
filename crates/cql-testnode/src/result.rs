//! CQL column types, values, and the RESULT and ERROR bodies the test node sends.

use std::net::IpAddr;

use bytes::BufMut;
use uuid::Uuid;

use crate::frame::Writer;

/// The column types the test node's tables use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Uuid,
    Inet,
    Boolean,
    Int,
    Timestamp,
    ListOfText,
    SetOfText,
    MapOfText,
}

impl ColumnType {
    fn write(&self, w: &mut Writer) {
        match self {
            ColumnType::Text => w.short(0x000D),
            ColumnType::Uuid => w.short(0x000C),
            ColumnType::Inet => w.short(0x0010),
            ColumnType::Boolean => w.short(0x0004),
            ColumnType::Int => w.short(0x0009),
            ColumnType::Timestamp => w.short(0x000B),
            ColumnType::ListOfText => w.short(0x0020).short(0x000D),
            ColumnType::SetOfText => w.short(0x0022).short(0x000D),
            ColumnType::MapOfText => w.short(0x0021).short(0x000D).short(0x000D),
        };
    }

    /// The CQL name, as `system_schema.columns` spells it.
    pub fn cql_name(&self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Uuid => "uuid",
            ColumnType::Inet => "inet",
            ColumnType::Boolean => "boolean",
            ColumnType::Int => "int",
            ColumnType::Timestamp => "timestamp",
            ColumnType::ListOfText => "list<text>",
            ColumnType::SetOfText => "set<text>",
            ColumnType::MapOfText => "map<text, text>",
        }
    }

    pub fn parse(cql: &str) -> Option<ColumnType> {
        Some(match cql.trim().to_ascii_lowercase().as_str() {
            "text" | "varchar" => ColumnType::Text,
            "uuid" | "timeuuid" => ColumnType::Uuid,
            "inet" => ColumnType::Inet,
            "boolean" => ColumnType::Boolean,
            "int" => ColumnType::Int,
            "timestamp" => ColumnType::Timestamp,
            _ => return None,
        })
    }
}

/// A cell value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Text(String),
    Uuid(Uuid),
    Inet(IpAddr),
    Boolean(bool),
    Int(i32),
    Timestamp(i64),
    TextList(Vec<String>),
    TextMap(Vec<(String, String)>),
}

impl Value {
    fn serialize(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let text_items = |out: &mut Vec<u8>, items: &[&str]| {
            out.put_i32(items.len() as i32);
            for item in items {
                out.put_i32(item.len() as i32);
                out.put_slice(item.as_bytes());
            }
        };
        match self {
            Value::Null => return None,
            Value::Text(s) => out.put_slice(s.as_bytes()),
            Value::Uuid(u) => out.put_slice(u.as_bytes()),
            Value::Inet(IpAddr::V4(a)) => out.put_slice(&a.octets()),
            Value::Inet(IpAddr::V6(a)) => out.put_slice(&a.octets()),
            Value::Boolean(b) => out.put_u8(u8::from(*b)),
            Value::Int(i) => out.put_i32(*i),
            Value::Timestamp(t) => out.put_i64(*t),
            Value::TextList(items) => text_items(
                &mut out,
                &items.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
            Value::TextMap(entries) => {
                out.put_i32(entries.len() as i32);
                for (k, v) in entries {
                    for s in [k, v] {
                        out.put_i32(s.len() as i32);
                        out.put_slice(s.as_bytes());
                    }
                }
            }
        }
        Some(out)
    }
}

/// A RESULT of kind Rows: column specs from one table, then the rows.
pub fn rows(
    keyspace: &str,
    table: &str,
    columns: &[(String, ColumnType)],
    rows: &[Vec<Value>],
) -> Writer {
    let mut w = Writer::default();
    w.int(0x0002); // Rows
    w.int(0x0001); // Global_tables_spec; no paging state: every row fits one page
    w.int(columns.len() as i32);
    w.string(keyspace).string(table);
    for (name, ty) in columns {
        w.string(name);
        ty.write(&mut w);
    }
    w.int(rows.len() as i32);
    for row in rows {
        for value in row {
            w.bytes(value.serialize().as_deref());
        }
    }
    w
}

pub fn void() -> Writer {
    let mut w = Writer::default();
    w.int(0x0001);
    w
}

pub fn set_keyspace(keyspace: &str) -> Writer {
    let mut w = Writer::default();
    w.int(0x0003).string(keyspace);
    w
}

/// A RESULT of kind Schema_change for a keyspace or a table.
pub fn schema_change(keyspace: &str, table: Option<&str>) -> Writer {
    let mut w = Writer::default();
    w.int(0x0005).string("CREATED");
    match table {
        None => w.string("KEYSPACE").string(keyspace),
        Some(table) => w.string("TABLE").string(keyspace).string(table),
    };
    w
}

/// A RESULT of kind Prepared for a statement binding `columns` of one table, whose
/// partition key is made of the bound columns at `pk_indexes`.
pub fn prepared(
    id: &[u8],
    keyspace: &str,
    table: &str,
    columns: &[(String, ColumnType)],
    pk_indexes: &[u16],
) -> Writer {
    let mut w = Writer::default();
    w.int(0x0004);
    w.short_bytes(id);
    w.int(0x0001); // Global_tables_spec
    w.int(columns.len() as i32);
    w.int(pk_indexes.len() as i32);
    for i in pk_indexes {
        w.short(*i);
    }
    w.string(keyspace).string(table);
    for (name, ty) in columns {
        w.string(name);
        ty.write(&mut w);
    }
    // Result metadata: an INSERT returns no rows.
    w.int(0x0004).int(0);
    w
}

/// A RESULT of kind Prepared for a SELECT: its bind markers, and the columns it returns.
pub fn prepared_select(
    id: &[u8],
    keyspace: &str,
    table: &str,
    markers: &[(String, ColumnType)],
    columns: &[(String, ColumnType)],
) -> Writer {
    let mut w = Writer::default();
    w.int(0x0004);
    w.short_bytes(id);
    w.int(0x0001).int(markers.len() as i32).int(0);
    w.string(keyspace).string(table);
    for (name, ty) in markers {
        w.string(name);
        ty.write(&mut w);
    }
    w.int(0x0001).int(columns.len() as i32);
    w.string(keyspace).string(table);
    for (name, ty) in columns {
        w.string(name);
        ty.write(&mut w);
    }
    w
}

/// The ERROR codes the test node produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Protocol = 0x000A,
    Overloaded = 0x1001,
    WriteTimeout = 0x1100,
    Syntax = 0x2000,
    Invalid = 0x2200,
    Unprepared = 0x2500,
}

pub fn error(code: ErrorCode, message: &str) -> Writer {
    let mut w = Writer::default();
    w.int(code as i32).string(message);
    w
}

/// A Write_timeout error: consistency, received, block_for, write type.
pub fn write_timeout(message: &str) -> Writer {
    let mut w = error(ErrorCode::WriteTimeout, message);
    w.short(0x0006) // LOCAL_QUORUM
        .int(0)
        .int(1)
        .string("UNLOGGED_BATCH");
    w
}

pub fn unprepared(id: &[u8]) -> Writer {
    let mut w = error(ErrorCode::Unprepared, "unknown prepared statement");
    w.short_bytes(id);
    w
}
