//! The control port: tests read what the test node holds and inject faults, one line each.
//!
//! Commands (answers end with a line `END`):
//! - `rows`: every stored row as one JSON object per line.
//! - `writes`: every write request: receiving node and shard, and each row's token with the
//!   node and shard that own it.
//! - `summary`: `{"rows": N, "writes": N, "misrouted_writes": N, "null_values": N}`; a
//!   write is misrouted if any of its rows is owned by another node or shard than the one
//!   that received it; `null_values` counts values bound as null rather than unset (each a
//!   tombstone on ScyllaDB).
//! - `forget-writes`: clear the recorded writes (rows stay), e.g. after a warm-up.
//! - `fault NODE latency MS`, `fault NODE overloaded on|off`, `fault NODE timeout on|off`,
//!   `fault NODE invalid on|off`, `fault NODE stall on|off`, `fault NODE down on|off`,
//!   `clear`: inject or clear faults.
//! - `join NODE`, `leave NODE`: a standby node (`--standby`) joins the token ring, or a
//!   member leaves it (and stops answering); ownership moves at once, drivers follow at
//!   their next metadata refresh, and writes sent to the old owner meanwhile count as
//!   misrouted.
//!
//! NODE counts from 0; a node that is down drops its connections and refuses new ones.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::result::ColumnType;
use crate::{Faults, Shared};

pub async fn serve(listener: TcpListener, state: Shared) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut reply = command(&state, line.trim());
                reply.push_str("END\n");
                if write.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// `s` as a JSON string literal (RFC 8259: quote, backslash and control characters escaped).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn cell(ty: &ColumnType, value: Option<&[u8]>) -> String {
    let Some(v) = value else {
        return "null".into();
    };
    match ty {
        ColumnType::Text => json_string(&String::from_utf8_lossy(v)),
        ColumnType::Uuid if v.len() == 16 => {
            format!("\"{}\"", uuid::Uuid::from_slice(v).unwrap())
        }
        ColumnType::Timestamp if v.len() == 8 => {
            i64::from_be_bytes(v.try_into().unwrap()).to_string()
        }
        ColumnType::Int if v.len() == 4 => i32::from_be_bytes(v.try_into().unwrap()).to_string(),
        _ => json_string(&format!("{v:02x?}")),
    }
}

fn command(state: &Shared, line: &str) -> String {
    let mut s = state.lock().unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = String::new();
    match words.as_slice() {
        ["rows"] => {
            for row in &s.rows {
                out.push_str(&format!(
                    "{{\"keyspace\":{},\"table\":{}",
                    json_string(&row.keyspace),
                    json_string(&row.table)
                ));
                for (name, ty, value) in &row.values {
                    out.push_str(&format!(
                        ",{}:{}",
                        json_string(name),
                        cell(ty, value.as_deref())
                    ));
                }
                out.push_str("}\n");
            }
        }
        ["writes"] => {
            for w in &s.writes {
                let rows: Vec<String> = w
                    .rows
                    .iter()
                    .map(|(t, n, sh)| format!("{{\"token\":{t},\"node\":{n},\"shard\":{sh}}}"))
                    .collect();
                out.push_str(&format!(
                    "{{\"node\":{},\"shard\":{},\"kind\":\"{}\",\"rows\":[{}]}}\n",
                    w.node,
                    w.shard,
                    w.kind,
                    rows.join(",")
                ));
            }
        }
        ["summary"] => {
            let misrouted = s
                .writes
                .iter()
                .filter(|w| {
                    w.rows
                        .iter()
                        .any(|&(_, n, sh)| (n, sh) != (w.node, w.shard))
                })
                .count();
            out.push_str(&format!(
                "{{\"rows\":{},\"writes\":{},\"misrouted_writes\":{misrouted},\"null_values\":{}}}\n",
                s.rows.len(),
                s.writes.len(),
                crate::NULL_VALUES.load(std::sync::atomic::Ordering::Relaxed)
            ));
        }
        ["forget-writes"] => s.writes.clear(),
        [verb @ ("join" | "leave"), node] => {
            let Ok(node) = node.parse::<usize>() else {
                return format!("error: no node {node}\n");
            };
            if let Err(message) = s.set_member(node, *verb == "join") {
                return format!("error: {message}\n");
            }
        }
        ["clear"] => {
            let s = &mut *s;
            for (f, n) in s.faults.iter_mut().zip(&s.cluster.nodes) {
                // A node outside the ring stays unreachable: that is membership, not a fault.
                *f = Faults {
                    down: !n.member,
                    ..Default::default()
                };
            }
        }
        ["fault", node, what, value] => {
            let Some(f) = node.parse::<usize>().ok().and_then(|n| s.faults.get_mut(n)) else {
                return format!("error: no node {node}\n");
            };
            let on = *value == "on";
            match *what {
                "latency" => f.latency_ms = value.parse().unwrap_or(0),
                "overloaded" => f.overloaded = on,
                "timeout" => f.timeout = on,
                "invalid" => f.invalid = on,
                "stall" => f.stalled = on,
                "down" => f.down = on,
                other => return format!("error: unknown fault {other}\n"),
            }
        }
        _ => out.push_str(&format!("error: unknown command {line:?}\n")),
    }
    out
}
