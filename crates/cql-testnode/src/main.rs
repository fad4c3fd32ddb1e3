//! cql-testnode: a CQL test node, a fixture for tidegate's tests. Not a database.
//!
//! ScyllaDB cannot be installed on the machines tidegate is tested on, so this program
//! speaks enough of the CQL native protocol v4 for the real `scylla` driver to connect,
//! discover the topology, prepare and execute inserts and batches. It simulates N nodes on
//! 127.0.0.1, 127.0.0.2, ..., each with M shards and its own vnode tokens, and announces
//! ScyllaDB's sharding extension so the driver is really shard-aware: connections to the
//! shard-aware port land on shard `source port % M`. Rows are kept in memory and every
//! write request is recorded with the node and shard that received it, so tests can check
//! that each batch went where its rows live. A control port serves dumps as NDJSON.
//!
//! Production uses real ScyllaDB; see the README.

mod cluster;
mod control;
mod frame;
mod result;
mod sharding;
mod statement;
mod topology;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use cluster::{Cluster, Keyspace, Table, IGNORE_MSB};
use frame::{Opcode, Reader, Writer};
use murmur3_token::murmur3_token;
use result::{ColumnType, ErrorCode};
use sharding::Sharding;
use statement::Statement;
use topology::{Node as RouteNode, Topology};

/// A prepared INSERT.
#[derive(Clone)]
struct PreparedInsert {
    keyspace: String,
    table: String,
    columns: Vec<(String, ColumnType)>,
    pk_index: usize,
}

/// A prepared statement: an INSERT of tidegate's, or a SELECT of the driver's (it prepares
/// its system-table queries).
#[derive(Clone)]
enum Prepared {
    Insert(PreparedInsert),
    Select {
        keyspace: String,
        table: String,
        columns: Option<Vec<String>>,
    },
}

/// One stored row: the bound values by column name (serialized CQL values).
#[derive(Clone)]
pub struct Row {
    pub keyspace: String,
    pub table: String,
    pub values: Vec<(String, ColumnType, Option<Bytes>)>,
}

/// One write request as the receiving node saw it.
#[derive(Clone)]
pub struct RecordedWrite {
    pub node: usize,
    pub shard: u16,
    pub kind: &'static str,
    /// (token, owning node, owning shard) of every row.
    pub rows: Vec<(i64, usize, u16)>,
}

#[derive(Default, Clone, Copy)]
pub struct Faults {
    pub latency_ms: u64,
    pub overloaded: bool,
    pub timeout: bool,
    /// Refuse every write as Invalid (what a real node answers to a bad row, for good).
    pub invalid: bool,
    /// Hold every request until lifted (a stalled node).
    pub stalled: bool,
    /// Closed: open connections are dropped and new ones refused (a node that went down).
    pub down: bool,
}

pub struct State {
    pub cluster: Cluster,
    topology: Topology,
    port: u16,
    prepared: HashMap<Vec<u8>, Prepared>,
    pub rows: Vec<Row>,
    pub writes: Vec<RecordedWrite>,
    pub faults: Vec<Faults>,
    next_shard: Vec<u16>,
    /// Every TOPOLOGY_CHANGE event body so far; each registered connection pushes the ones
    /// it has not sent yet.
    events: Vec<Bytes>,
}

type Shared = Arc<Mutex<State>>;

struct Args {
    nodes: usize,
    standby: usize,
    shards: u16,
    vnodes: usize,
    port: u16,
    shard_aware_port: u16,
    control_port: u16,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nodes: 3,
        standby: 0,
        shards: 4,
        vnodes: 16,
        port: 9042,
        shard_aware_port: 19042,
        control_port: 9142,
        seed: 42,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--nodes" => args.nodes = number(value()?)? as usize,
            "--standby" => args.standby = number(value()?)? as usize,
            "--shards" => args.shards = number(value()?)? as u16,
            "--vnodes" => args.vnodes = number(value()?)? as usize,
            "--port" => args.port = number(value()?)? as u16,
            "--shard-aware-port" => args.shard_aware_port = number(value()?)? as u16,
            "--control-port" => args.control_port = number(value()?)? as u16,
            "--seed" => args.seed = number(value()?)?,
            "--help" | "-h" => {
                println!(
                    "cql-testnode [--nodes N] [--standby K] [--shards M] [--vnodes V] [--port P] \
                     [--shard-aware-port P] [--control-port P] [--seed S]\n\
                     A CQL test node for tidegate's tests (not a database). Nodes listen on \
                     127.0.0.1..127.0.0.N; K more stand by on the next addresses until a \
                     `join` command; the control port on 127.0.0.1 takes line commands \
                     (see src/bin/cql-testnode/control.rs)."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.nodes == 0 || args.nodes + args.standby > 200 || args.shards == 0 || args.vnodes == 0 {
        return Err(
            "--nodes must be at least 1 and --nodes + --standby at most 200; --shards and \
             --vnodes at least 1"
                .into(),
        );
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("cql-testnode: {message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(err) = runtime.block_on(serve(args)) {
        eprintln!("cql-testnode: {err}");
        std::process::exit(1);
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let all = args.nodes + args.standby;
    let cluster = Cluster::new(all, args.nodes, args.shards, args.vnodes, args.seed);
    let topology = ring_of(&cluster, args.port);
    // A standby node refuses connections, as an address with no server yet would.
    let mut faults = vec![Faults::default(); all];
    for fault in &mut faults[args.nodes..] {
        fault.down = true;
    }
    let state: Shared = Arc::new(Mutex::new(State {
        faults,
        next_shard: vec![0; all],
        cluster,
        topology,
        port: args.port,
        events: Vec::new(),
        prepared: HashMap::new(),
        rows: Vec::new(),
        writes: Vec::new(),
    }));
    let sa_port_cell =
        std::sync::Arc::new(std::sync::atomic::AtomicU16::new(args.shard_aware_port));
    // Port 0 picks a free port on the first node; every node then uses that same port, as
    // drivers expect of a cluster.
    let (mut port, mut sa_port) = (args.port, args.shard_aware_port);
    for node in 0..all {
        let ip = Ipv4Addr::new(127, 0, 0, (node + 1) as u8);
        for shard_aware in [false, true] {
            let wanted = if shard_aware { sa_port } else { port };
            let listener = TcpListener::bind((ip, wanted)).await?;
            let bound = listener.local_addr()?.port();
            if shard_aware {
                sa_port = bound;
            } else {
                port = bound;
            }
            let (state, shards) = (state.clone(), args.shards);
            let announced_sa_port = std::sync::Arc::clone(&sa_port_cell);
            tokio::spawn(async move {
                while let Ok((stream, peer)) = listener.accept().await {
                    if state.lock().unwrap().faults[node].down {
                        drop(stream); // a node that is down refuses connections
                        continue;
                    }
                    let shard = {
                        let mut s = state.lock().unwrap();
                        if shard_aware {
                            peer.port() % shards
                        } else {
                            let shard = s.next_shard[node];
                            s.next_shard[node] = (shard + 1) % shards;
                            shard
                        }
                    };
                    let state = state.clone();
                    let sa = announced_sa_port.load(std::sync::atomic::Ordering::Relaxed);
                    tokio::spawn(connection(state, node, shard, shards, sa, stream));
                }
            });
        }
        sa_port_cell.store(sa_port, std::sync::atomic::Ordering::Relaxed);
    }
    state.lock().unwrap().port = port;
    let control = TcpListener::bind(("127.0.0.1", args.control_port)).await?;
    let control_port = control.local_addr()?.port();
    println!(
        "cql-testnode: {} nodes on 127.0.0.1..127.0.0.{} port {port} shard-aware-port {sa_port} shards {} control-port {control_port}",
        args.nodes, args.nodes, args.shards
    );
    control::serve(control, state).await
}

/// The token ring of the cluster's members: who owns what, for recording misrouted writes.
fn ring_of(cluster: &Cluster, port: u16) -> Topology {
    Topology::new(
        cluster
            .nodes
            .iter()
            .map(|n| RouteNode {
                address: SocketAddr::from((n.ip, port)),
                datacenter: cluster::DATACENTER.into(),
                sharding: Sharding {
                    nr_shards: n.shards,
                    ignore_msb: IGNORE_MSB,
                },
            })
            .collect(),
        cluster
            .nodes
            .iter()
            .filter(|n| n.member)
            .flat_map(|n| n.tokens.iter().map(move |&t| (t, n.index))),
        None,
    )
    .expect("at least one member has tokens")
}

impl State {
    /// A standby node joins the ring (and starts answering), or a member leaves it (its
    /// token ranges pass to the next members, and it stops answering, as a decommissioned
    /// node does). Drivers learn of it from system.peers at their next metadata refresh.
    pub fn set_member(&mut self, node: usize, member: bool) -> Result<(), String> {
        let Some(n) = self.cluster.nodes.get_mut(node) else {
            return Err(format!("no node {node}"));
        };
        n.member = member;
        if !self.cluster.nodes.iter().any(|n| n.member) {
            self.cluster.nodes[node].member = true;
            return Err("the last member cannot leave".into());
        }
        self.faults[node].down = !member;
        self.topology = ring_of(&self.cluster, self.port);
        let mut event = Writer::default();
        event
            .string("TOPOLOGY_CHANGE")
            .string(if member { "NEW_NODE" } else { "REMOVED_NODE" })
            .inet(SocketAddr::from((self.cluster.nodes[node].ip, self.port)));
        self.events.push(event.buf.freeze());
        Ok(())
    }
}

/// What one connection remembers.
struct Session {
    node: usize,
    shard: u16,
    keyspace: Option<String>,
    /// Registered for events: how many of `State::events` this connection has pushed.
    events_sent: Option<usize>,
}

async fn connection(
    state: Shared,
    node: usize,
    shard: u16,
    shards: u16,
    shard_aware_port: u16,
    mut stream: TcpStream,
) {
    let _ = stream.set_nodelay(true);
    let mut session = Session {
        node,
        shard,
        keyspace: None,
        events_sent: None,
    };
    let mut input = BytesMut::with_capacity(64 * 1024);
    let mut output = BytesMut::new();
    loop {
        let request = match frame::take_frame(&mut input) {
            Ok(Some(request)) => request,
            Ok(None) => {
                // Wake now and then to notice the node going down, as a dead server's
                // connections would break.
                let read = tokio::time::timeout(
                    std::time::Duration::from_millis(50),
                    stream.read_buf(&mut input),
                )
                .await;
                if state.lock().unwrap().faults[node].down {
                    return;
                }
                if push_events(&state, &mut session, &mut stream)
                    .await
                    .is_err()
                {
                    return;
                }
                match read {
                    Err(_) => continue,
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(_)) => continue,
                }
            }
            Err(err) => {
                frame::write_frame(
                    &mut output,
                    0,
                    Opcode::Error,
                    &result::error(ErrorCode::Protocol, &err.to_string()).buf,
                );
                let _ = stream.write_all(&output).await;
                return;
            }
        };
        // A stalled node holds every request until the stall is lifted, then answers late,
        // as a node that hung and came back would; clients' timeouts decide meanwhile.
        while state.lock().unwrap().faults[node].stalled {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let faults = state.lock().unwrap().faults[node];
        if faults.latency_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(faults.latency_ms)).await;
        }
        let (opcode, body) = if request.version & 0x7f != 4 {
            (
                Opcode::Error,
                result::error(
                    ErrorCode::Protocol,
                    "the CQL test node speaks protocol v4 only",
                ),
            )
        } else {
            handle(
                &state,
                &mut session,
                shards,
                shard_aware_port,
                faults,
                request.opcode,
                request.body,
            )
        };
        output.clear();
        frame::write_frame(&mut output, request.stream, opcode, &body.buf);
        if stream.write_all(&output).await.is_err() {
            return;
        }
    }
}

/// Sends the events this registered connection has not sent yet, as a node pushes them.
async fn push_events(
    state: &Shared,
    session: &mut Session,
    stream: &mut TcpStream,
) -> std::io::Result<()> {
    let Some(sent) = session.events_sent else {
        return Ok(());
    };
    let pending: Vec<Bytes> = state.lock().unwrap().events[sent..].to_vec();
    let mut out = BytesMut::new();
    for event in &pending {
        frame::write_frame(&mut out, -1, Opcode::Event, event);
    }
    session.events_sent = Some(sent + pending.len());
    stream.write_all(&out).await
}

fn handle(
    state: &Shared,
    session: &mut Session,
    shards: u16,
    shard_aware_port: u16,
    faults: Faults,
    opcode: u8,
    body: Bytes,
) -> (Opcode, Writer) {
    let mut reader = Reader::new(body);
    let outcome = match Opcode::from_byte(opcode) {
        Some(Opcode::Options) => {
            let mut w = Writer::default();
            w.string_multimap(&[
                ("CQL_VERSION", vec!["3.3.1".into()]),
                ("COMPRESSION", vec![]),
                ("SCYLLA_SHARD", vec![session.shard.to_string()]),
                ("SCYLLA_NR_SHARDS", vec![shards.to_string()]),
                (
                    "SCYLLA_PARTITIONER",
                    vec!["org.apache.cassandra.dht.Murmur3Partitioner".into()],
                ),
                (
                    "SCYLLA_SHARDING_ALGORITHM",
                    vec!["biased-token-round-robin".into()],
                ),
                ("SCYLLA_SHARDING_IGNORE_MSB", vec![IGNORE_MSB.to_string()]),
                (
                    "SCYLLA_SHARD_AWARE_PORT",
                    vec![shard_aware_port.to_string()],
                ),
            ]);
            Ok((Opcode::Supported, w))
        }
        Some(Opcode::Startup) => startup(&mut reader),
        Some(Opcode::Register) => {
            // Only what happens from now on is pushed.
            session.events_sent = Some(state.lock().unwrap().events.len());
            Ok((Opcode::Ready, Writer::default()))
        }
        Some(Opcode::Query) => query(state, session, &mut reader),
        Some(Opcode::Prepare) => prepare(state, session, &mut reader),
        Some(Opcode::Execute) | Some(Opcode::Batch) if faults.overloaded => Ok((
            Opcode::Error,
            result::error(ErrorCode::Overloaded, "injected: node overloaded"),
        )),
        Some(Opcode::Execute) | Some(Opcode::Batch) if faults.invalid => Ok((
            Opcode::Error,
            result::error(ErrorCode::Invalid, "injected: invalid row"),
        )),
        Some(Opcode::Execute) | Some(Opcode::Batch) if faults.timeout => Ok((
            Opcode::Error,
            result::write_timeout("injected: write timed out"),
        )),
        Some(Opcode::Execute) => execute(state, session, &mut reader),
        Some(Opcode::Batch) => batch(state, session, &mut reader),
        _ => Ok((
            Opcode::Error,
            result::error(
                ErrorCode::Protocol,
                &format!("unsupported opcode {opcode:#04x}"),
            ),
        )),
    };
    outcome.unwrap_or_else(|message| (Opcode::Error, result::error(ErrorCode::Protocol, &message)))
}

type Outcome = Result<(Opcode, Writer), String>;

/// STARTUP: accepted unless the client asks for compression, which the test node lacks.
fn startup(reader: &mut Reader) -> Outcome {
    let options = reader.short().map_err(|e| e.to_string())?;
    for _ in 0..options {
        let key = reader.string().map_err(|e| e.to_string())?;
        let value = reader.string().map_err(|e| e.to_string())?;
        if key.eq_ignore_ascii_case("COMPRESSION") && !value.is_empty() {
            return Ok((
                Opcode::Error,
                result::error(
                    ErrorCode::Protocol,
                    &format!("the CQL test node does not support {value} compression"),
                ),
            ));
        }
    }
    Ok((Opcode::Ready, Writer::default()))
}

/// Column specs and rows of a result.
type Projection = (Vec<(String, ColumnType)>, Vec<Vec<result::Value>>);

/// The rows of a system table, projected onto the requested columns.
fn select(
    s: &State,
    node: usize,
    keyspace: &str,
    table: &str,
    columns: &Option<Vec<String>>,
) -> Result<Projection, Writer> {
    let Some((all_columns, rows)) = s.cluster.system_table(node, keyspace, table) else {
        return Err(result::error(
            ErrorCode::Invalid,
            &format!("unconfigured table {keyspace}.{table}"),
        ));
    };
    let picked: Vec<usize> = match columns {
        None => (0..all_columns.len()).collect(),
        Some(names) => names
            .iter()
            .map(|name| {
                all_columns
                    .iter()
                    .position(|(c, _)| c == name)
                    .ok_or_else(|| {
                        result::error(
                            ErrorCode::Invalid,
                            &format!("undefined column {name} in {keyspace}.{table}"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let specs = picked
        .iter()
        .map(|&i| (all_columns[i].0.to_owned(), all_columns[i].1.clone()))
        .collect();
    let rows = rows
        .into_iter()
        .map(|row| picked.iter().map(|&i| row[i].clone()).collect())
        .collect();
    Ok((specs, rows))
}

fn query(state: &Shared, session: &mut Session, reader: &mut Reader) -> Outcome {
    let text = reader.long_string().map_err(|e| e.to_string())?;
    let statement = match statement::parse(&text) {
        Ok(statement) => statement,
        Err(message) => return Ok((Opcode::Error, result::error(ErrorCode::Syntax, &message))),
    };
    let mut s = state.lock().unwrap();
    let in_keyspace = |ks: Option<String>| ks.or_else(|| session.keyspace.clone());
    let reply = match statement {
        Statement::Select {
            keyspace,
            table,
            columns,
        } => {
            let keyspace = in_keyspace(keyspace).unwrap_or_default();
            match select(&s, session.node, &keyspace, &table, &columns) {
                Ok((specs, rows)) => result::rows(&keyspace, &table, &specs, &rows),
                Err(error) => return Ok((Opcode::Error, error)),
            }
        }
        Statement::Use(keyspace) => {
            session.keyspace = Some(keyspace.clone());
            result::set_keyspace(&keyspace)
        }
        Statement::CreateKeyspace {
            name,
            if_not_exists,
            replication,
        } => {
            if s.cluster.keyspaces.iter().any(|k| k.name == name) {
                if !if_not_exists {
                    return Ok((
                        Opcode::Error,
                        result::error(ErrorCode::Invalid, &format!("keyspace {name} exists")),
                    ));
                }
                result::void()
            } else {
                s.cluster.keyspaces.push(Keyspace {
                    name: name.clone(),
                    replication,
                });
                s.cluster.schema_changed();
                result::schema_change(&name, None)
            }
        }
        Statement::CreateTable {
            keyspace,
            name,
            if_not_exists,
            columns,
            partition_key,
            clustering_key,
        } => {
            let Some(keyspace) = in_keyspace(keyspace) else {
                return Ok((
                    Opcode::Error,
                    result::error(ErrorCode::Invalid, "no keyspace given"),
                ));
            };
            if s.cluster.table(&keyspace, &name).is_some() {
                if !if_not_exists {
                    return Ok((
                        Opcode::Error,
                        result::error(ErrorCode::Invalid, &format!("table {name} exists")),
                    ));
                }
                result::void()
            } else {
                s.cluster.tables.push(Table {
                    keyspace: keyspace.clone(),
                    name: name.clone(),
                    columns,
                    partition_key,
                    clustering_key,
                });
                s.cluster.schema_changed();
                result::schema_change(&keyspace, Some(&name))
            }
        }
        Statement::AddColumn {
            keyspace,
            table,
            column,
        } => {
            let Some(keyspace) = in_keyspace(keyspace) else {
                return Ok((
                    Opcode::Error,
                    result::error(ErrorCode::Invalid, "no keyspace given"),
                ));
            };
            let Some(def) = s
                .cluster
                .tables
                .iter_mut()
                .find(|t| t.keyspace == keyspace && t.name == table)
            else {
                return Ok((
                    Opcode::Error,
                    result::error(
                        ErrorCode::Invalid,
                        &format!("unconfigured table {keyspace}.{table}"),
                    ),
                ));
            };
            if def.columns.iter().any(|(name, _)| *name == column.0) {
                // ScyllaDB's words for it.
                return Ok((
                    Opcode::Error,
                    result::error(
                        ErrorCode::Invalid,
                        &format!(
                            "Invalid column name {} because it conflicts with an existing column",
                            column.0
                        ),
                    ),
                ));
            }
            def.columns.push(column);
            s.cluster.schema_changed();
            result::schema_change(&keyspace, Some(&table))
        }
        Statement::Insert { .. } => {
            return Ok((
                Opcode::Error,
                result::error(
                    ErrorCode::Invalid,
                    "the CQL test node takes INSERTs as prepared statements only",
                ),
            ))
        }
    };
    Ok((Opcode::Result, reply))
}

fn prepare(state: &Shared, session: &mut Session, reader: &mut Reader) -> Outcome {
    let text = reader.long_string().map_err(|e| e.to_string())?;
    let id = murmur3_token(text.as_bytes()).to_be_bytes().to_vec();
    let (keyspace, table, columns) = match statement::parse(&text) {
        Ok(Statement::Insert {
            keyspace,
            table,
            columns,
        }) => (keyspace, table, columns),
        Ok(Statement::Select {
            keyspace,
            table,
            columns,
        }) => {
            let mut s = state.lock().unwrap();
            let keyspace = keyspace
                .or_else(|| session.keyspace.clone())
                .unwrap_or_default();
            let (specs, _) = match select(&s, session.node, &keyspace, &table, &columns) {
                Ok(found) => found,
                Err(error) => return Ok((Opcode::Error, error)),
            };
            // Bind markers (a driver filters by `keyspace_name IN ?`): a list after IN,
            // text otherwise. The values are accepted and ignored: system tables are small.
            let lower = text.to_ascii_lowercase();
            let markers: Vec<(String, ColumnType)> = lower
                .match_indices('?')
                .map(|(at, _)| {
                    let before = lower[..at].trim_end();
                    let ty = if before.ends_with(" in") {
                        ColumnType::ListOfText
                    } else {
                        ColumnType::Text
                    };
                    (format!("[marker{at}]"), ty)
                })
                .collect();
            s.prepared.insert(
                id.clone(),
                Prepared::Select {
                    keyspace: keyspace.clone(),
                    table: table.clone(),
                    columns,
                },
            );
            return Ok((
                Opcode::Result,
                result::prepared_select(&id, &keyspace, &table, &markers, &specs),
            ));
        }
        _ => {
            return Ok((
                Opcode::Error,
                result::error(
                    ErrorCode::Syntax,
                    &format!("the CQL test node prepares INSERTs and SELECTs only: {text}"),
                ),
            ))
        }
    };
    let mut s = state.lock().unwrap();
    let keyspace = keyspace
        .or_else(|| session.keyspace.clone())
        .unwrap_or_default();
    let Some(def) = s.cluster.table(&keyspace, &table).cloned() else {
        return Ok((
            Opcode::Error,
            result::error(
                ErrorCode::Invalid,
                &format!("unconfigured table {keyspace}.{table}"),
            ),
        ));
    };
    if def.partition_key.len() != 1 {
        return Ok((
            Opcode::Error,
            result::error(ErrorCode::Invalid, "only single-column partition keys"),
        ));
    }
    let mut bound = Vec::new();
    for name in &columns {
        match def.columns.iter().find(|(c, _)| c == name) {
            Some(column) => bound.push(column.clone()),
            None => {
                return Ok((
                    Opcode::Error,
                    result::error(ErrorCode::Invalid, &format!("undefined column {name}")),
                ))
            }
        }
    }
    // `USING TTL ?` binds one more value, an int.
    if text.to_ascii_lowercase().contains("ttl ?") {
        bound.push(("[ttl]".into(), ColumnType::Int));
    }
    let Some(pk_index) = columns.iter().position(|c| *c == def.partition_key[0]) else {
        return Ok((
            Opcode::Error,
            result::error(ErrorCode::Invalid, "the partition key must be bound"),
        ));
    };
    s.prepared.insert(
        id.clone(),
        Prepared::Insert(PreparedInsert {
            keyspace: keyspace.clone(),
            table: table.clone(),
            columns: bound.clone(),
            pk_index,
        }),
    );
    Ok((
        Opcode::Result,
        result::prepared(&id, &keyspace, &table, &bound, &[pk_index as u16]),
    ))
}

/// Values bound as null (not unset) in executed statements, for the `summary` command: on
/// ScyllaDB each is a tombstone.
pub static NULL_VALUES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Reads `count` bound values.
fn values(reader: &mut Reader, count: usize) -> Result<Vec<Option<Bytes>>, String> {
    (0..count)
        .map(|_| {
            let (value, null) = reader.value().map_err(|e| e.to_string())?;
            if null {
                NULL_VALUES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(value)
        })
        .collect()
}

/// Stores one execution of a prepared INSERT; returns its row's token.
fn store(
    s: &mut State,
    prepared: &PreparedInsert,
    bound: Vec<Option<Bytes>>,
) -> Result<i64, String> {
    if bound.len() != prepared.columns.len() {
        return Err(format!(
            "{} values bound, {} expected",
            bound.len(),
            prepared.columns.len()
        ));
    }
    let key = bound[prepared.pk_index]
        .clone()
        .ok_or("the partition key is null")?;
    let token = murmur3_token(&key);
    s.rows.push(Row {
        keyspace: prepared.keyspace.clone(),
        table: prepared.table.clone(),
        values: prepared
            .columns
            .iter()
            .cloned()
            .zip(bound)
            .map(|((name, ty), value)| (name, ty, value))
            .collect(),
    });
    Ok(token)
}

fn record(s: &mut State, session: &Session, kind: &'static str, tokens: Vec<i64>) {
    let rows = tokens
        .into_iter()
        .map(|t| {
            let (node, shard) = s.topology.target(t);
            (t, node, shard)
        })
        .collect();
    s.writes.push(RecordedWrite {
        node: session.node,
        shard: session.shard,
        kind,
        rows,
    });
}

fn execute(state: &Shared, session: &mut Session, reader: &mut Reader) -> Outcome {
    let id = reader.short_bytes().map_err(|e| e.to_string())?;
    let _consistency = reader.short().map_err(|e| e.to_string())?;
    let flags = reader.byte().map_err(|e| e.to_string())?;
    let mut s = state.lock().unwrap();
    let Some(prepared) = s.prepared.get(&id[..]).cloned() else {
        return Ok((Opcode::Error, result::unprepared(&id)));
    };
    let bound = if flags & 0x01 != 0 {
        let n = reader.short().map_err(|e| e.to_string())? as usize;
        values(reader, n)?
    } else {
        Vec::new()
    };
    let prepared = match prepared {
        Prepared::Insert(insert) => insert,
        Prepared::Select {
            keyspace,
            table,
            columns,
        } => {
            return Ok(
                match select(&s, session.node, &keyspace, &table, &columns) {
                    Ok((specs, rows)) => (
                        Opcode::Result,
                        result::rows(&keyspace, &table, &specs, &rows),
                    ),
                    Err(error) => (Opcode::Error, error),
                },
            )
        }
    };
    let token = store(&mut s, &prepared, bound)?;
    record(&mut s, session, "execute", vec![token]);
    Ok((Opcode::Result, result::void()))
}

fn batch(state: &Shared, session: &mut Session, reader: &mut Reader) -> Outcome {
    let _kind = reader.byte().map_err(|e| e.to_string())?;
    let n = reader.short().map_err(|e| e.to_string())?;
    let mut statements = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let kind = reader.byte().map_err(|e| e.to_string())?;
        if kind != 1 {
            return Ok((
                Opcode::Error,
                result::error(ErrorCode::Invalid, "batches of prepared statements only"),
            ));
        }
        let id = reader.short_bytes().map_err(|e| e.to_string())?;
        let count = reader.short().map_err(|e| e.to_string())? as usize;
        statements.push((id, values(reader, count)?));
    }
    let mut s = state.lock().unwrap();
    let mut tokens = Vec::with_capacity(statements.len());
    // Validate every statement before storing any: a batch applies whole or not at all.
    let mut resolved = Vec::with_capacity(statements.len());
    for (id, bound) in statements {
        match s.prepared.get(&id[..]).cloned() {
            Some(Prepared::Insert(p)) => resolved.push((p, bound)),
            Some(Prepared::Select { .. }) => {
                return Ok((
                    Opcode::Error,
                    result::error(ErrorCode::Invalid, "a batch holds modifications only"),
                ))
            }
            None => return Ok((Opcode::Error, result::unprepared(&id))),
        }
    }
    for (prepared, bound) in resolved {
        tokens.push(store(&mut s, &prepared, bound)?);
    }
    record(&mut s, session, "batch", tokens);
    Ok((Opcode::Result, result::void()))
}
