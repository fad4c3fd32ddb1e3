//! Open-loop load: a fixed request rate, latency measured from each request's intended send
//! time, as wrk2 does.
//!
//! A closed-loop generator (plain wrk) sends the next request only after the previous answer,
//! so a server stall also stalls the measurement and the tail is under-reported
//! (coordinated omission). Here every connection has a schedule: request k is due at
//! `start + offset + k * interval`. If the connection is still waiting for an earlier answer,
//! the request goes out late, and its latency still counts from when it was due.
//!
//! One thread drives every connection from one epoll loop, so the generator costs a few
//! system calls per request rather than a thread wake-up per request, and it reports its own
//! limits: how late it sent requests whose connection was free (`gen_lag_*`), and the CPU it
//! spent per request, from which `gen_capacity` (requests/s one core of it could offer) is
//! derived. A run whose offered rate is near that capacity measures the generator.
//!
//! ```text
//! openloop ADDR RATE SECONDS [CONNECTIONS] [single|batch100]
//! ```
//! prints sent, answered, non-2xx, errors, achieved rate and latency percentiles (µs).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn body(scenario: &str) -> String {
    let event = |i: usize| {
        format!(
            r#"{{"user_id":"user-{i:06}","event_type":"screen_view","event_time":"2024-05-01T12:00:{:02}.123Z","payload":{{"screen":"home","app_version":"4.2.1","os":"android","n":{i}}}}}"#,
            i % 60
        )
    };
    match scenario {
        "batch100" => format!("[{}]", (1..=100).map(event).collect::<Vec<_>>().join(",")),
        _ => event(42),
    }
}

/// One connection's schedule and the request it has on the wire.
struct Connection {
    stream: TcpStream,
    /// When its next request is due.
    due: Instant,
    /// The due time of the request awaiting its answer, if any.
    in_flight: Option<Instant>,
    /// Bytes of the current request already written.
    written: usize,
    received: Vec<u8>,
}

impl Connection {
    fn open(addr: SocketAddr, epoll: i32, token: usize) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token as u64,
        };
        // SAFETY: both descriptors are open; the kernel copies `event`.
        let rc =
            unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut event) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// What one response on a connection's buffer amounts to.
enum Parsed {
    Complete { status: u16, length: usize },
    Partial,
    Invalid,
}

fn parse_response(buffer: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buffer) {
        Ok(httparse::Status::Complete(head)) => {
            let body = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            if buffer.len() < head + body {
                return Parsed::Partial;
            }
            Parsed::Complete {
                status: response.code.unwrap_or(0),
                length: head + body,
            }
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Invalid,
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    /// How late requests went out whose connection was free when they were due.
    lag_us: Vec<u32>,
    non_2xx: u64,
    errors: u64,
}

struct Generator {
    addr: SocketAddr,
    epoll: i32,
    request: Vec<u8>,
    interval: Duration,
    connections: Vec<Connection>,
    /// Free connections by due time.
    idle: BinaryHeap<Reverse<(Instant, usize)>>,
    tally: Tally,
    end: Instant,
    /// Time spent on requests and answers: every turn of the loop but its polls, unless a
    /// poll that did not sleep returned work.
    busy: Duration,
}

/// How close to a due time the loop stops sleeping and polls instead.
const SPIN: Duration = Duration::from_micros(200);

impl Generator {
    /// Writes what it can of connection `c`'s request; the rest goes out on EPOLLOUT.
    fn write(&mut self, c: usize) {
        let connection = &mut self.connections[c];
        while connection.written < self.request.len() {
            match connection.stream.write(&self.request[connection.written..]) {
                Ok(n) => connection.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.watch(c, libc::EPOLLIN | libc::EPOLLOUT);
                    return;
                }
                Err(_) => return self.fail(c),
            }
        }
    }

    fn send(&mut self, c: usize) {
        let connection = &mut self.connections[c];
        connection.in_flight = Some(connection.due);
        connection.written = 0;
        connection.due += self.interval;
        self.write(c);
    }

    /// Puts a free connection back on the schedule, unless its next request falls after the
    /// run.
    fn schedule(&mut self, c: usize) {
        let due = self.connections[c].due;
        if due < self.end {
            self.idle.push(Reverse((due, c)));
        }
    }

    fn watch(&self, c: usize, events: i32) {
        let mut event = libc::epoll_event {
            events: (events | libc::EPOLLRDHUP) as u32,
            u64: c as u64,
        };
        let fd = self.connections[c].stream.as_raw_fd();
        // SAFETY: the descriptor is registered and open.
        unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_MOD, fd, &mut event) };
    }

    /// A closed or broken connection: a request awaiting its answer counts as an error, and
    /// a fresh connection takes over the schedule.
    fn fail(&mut self, c: usize) {
        let connection = &mut self.connections[c];
        let was_in_flight = connection.in_flight.take().is_some();
        connection.received.clear();
        if was_in_flight {
            self.tally.errors += 1;
        }
        match Connection::open(self.addr, self.epoll, c) {
            // The old socket closes on assignment and leaves the epoll set with it.
            Ok(stream) => self.connections[c].stream = stream,
            Err(_) => {
                self.tally.errors += 1;
                self.idle.retain(|Reverse((_, queued))| *queued != c);
                return;
            }
        }
        // A free connection is already on the schedule; a failed request frees it.
        if was_in_flight {
            self.schedule(c);
        }
    }

    fn readable(&mut self, c: usize, now: Instant) {
        let mut chunk = [0u8; 16 * 1024];
        let mut closed = false;
        loop {
            match self.connections[c].stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    self.connections[c].received.extend_from_slice(&chunk[..n]);
                    // Level-triggered: whatever is left is reported again.
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let garbled = !self.answers(c, now);
        if closed || garbled {
            self.fail(c);
        }
    }

    /// Takes the complete answers off connection `c`'s buffer; false if what it holds is
    /// not an answer to a request of ours.
    fn answers(&mut self, c: usize, now: Instant) -> bool {
        loop {
            let connection = &mut self.connections[c];
            let (status, length) = match parse_response(&connection.received) {
                Parsed::Complete { status, length } => (status, length),
                Parsed::Partial => return true,
                Parsed::Invalid => return false,
            };
            connection.received.drain(..length);
            let Some(due) = connection.in_flight.take() else {
                return false;
            };
            let micros = now.saturating_duration_since(due).as_micros();
            self.tally
                .latencies_us
                .push(micros.min(u32::MAX as u128) as u32);
            if !(200..300).contains(&status) {
                self.tally.non_2xx += 1;
            }
            let next = connection.due;
            if next >= self.end {
                continue;
            }
            if next <= now {
                // Overdue because the answer came late: the server's delay, not ours.
                self.send(c);
            } else {
                self.schedule(c);
            }
        }
    }

    fn in_flight(&self) -> bool {
        self.connections.iter().any(|c| c.in_flight.is_some())
    }

    fn run(&mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; self.connections.len()];
        let drain_deadline = self.end + Duration::from_secs(10);
        loop {
            let turn = Instant::now();
            let now = turn;
            while let Some(&Reverse((due, c))) = self.idle.peek() {
                if due > now {
                    break;
                }
                self.idle.pop();
                let lag = now.duration_since(due).as_micros();
                self.tally.lag_us.push(lag.min(u32::MAX as u128) as u32);
                self.send(c);
            }
            if self.idle.is_empty() && (!self.in_flight() || now >= drain_deadline) {
                return;
            }
            // Close to the next due time it polls without sleeping: a timer wake-up per
            // request would cost more than the request and arrive late.
            let wait = self
                .idle
                .peek()
                .map(|Reverse((due, _))| due.saturating_duration_since(now));
            let spinning = wait.is_some_and(|w| w <= SPIN);
            let sleep = wait.map(|w| w.saturating_sub(SPIN / 2));
            let timeout = match (spinning, sleep) {
                (true, _) => Some(libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                }),
                (false, Some(w)) => Some(libc::timespec {
                    tv_sec: w.as_secs() as libc::time_t,
                    tv_nsec: w.subsec_nanos() as libc::c_long,
                }),
                (false, None) => None,
            };
            let timeout_ptr = timeout
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            let polled = Instant::now();
            if spinning {
                // Let a runnable kernel worker go first. The disk's completions run on a
                // worker of the core that took the interrupt, which may be this one: a
                // loop that never yields would hold an O_DSYNC write's completion until
                // its time slice ends, milliseconds later, and measure that as the
                // server's latency. Time given away here is idle time, not busy.
                // SAFETY: no arguments.
                unsafe { libc::sched_yield() };
            }
            let yielded = Instant::now();
            // SAFETY: `events` outlives the call; a null timeout waits for an event.
            let ready = unsafe {
                libc::epoll_pwait2(
                    self.epoll,
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout_ptr,
                    std::ptr::null(),
                )
            };
            if ready < 0 {
                let error = std::io::Error::last_os_error();
                assert_eq!(
                    error.kind(),
                    ErrorKind::Interrupted,
                    "epoll_pwait2: {error}"
                );
                continue;
            }
            let now = Instant::now();
            self.busy += polled - turn;
            if spinning && ready > 0 {
                self.busy += now - yielded;
            }
            for event in &events[..ready as usize] {
                let c = event.u64 as usize;
                let flags = event.events as i32;
                if flags & libc::EPOLLOUT != 0 {
                    self.watch(c, libc::EPOLLIN);
                    self.write(c);
                }
                if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0
                {
                    self.readable(c, now);
                }
            }
            self.busy += now.elapsed();
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: openloop ADDR RATE SECONDS [CONNECTIONS] [single|batch100]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR is host:port");
    let rate: f64 = args[2].parse().expect("RATE is requests per second");
    let seconds: f64 = args[3].parse().expect("SECONDS");
    let connections: usize = args.get(4).map_or(32, |c| c.parse().expect("CONNECTIONS"));
    let scenario = args.get(5).map_or("single", String::as_str);

    let body = body(scenario);
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    // Timers fire when asked, not up to 50 µs later (the default slack).
    // SAFETY: PR_SET_TIMERSLACK takes a plain value.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    // SAFETY: no arguments beyond flags.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(
        epoll >= 0,
        "epoll_create1: {}",
        std::io::Error::last_os_error()
    );

    // Each connection sends every `interval`; connections are staggered evenly.
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let mut generator = Generator {
        addr,
        epoll,
        request,
        interval,
        connections: Vec::with_capacity(connections),
        idle: BinaryHeap::with_capacity(connections),
        tally: Tally::default(),
        end: start + Duration::from_secs_f64(seconds),
        busy: Duration::ZERO,
    };
    for c in 0..connections {
        let stream = Connection::open(addr, epoll, c).expect("connect");
        let due = start + interval.mul_f64(c as f64 / connections as f64);
        generator.connections.push(Connection {
            stream,
            due,
            in_flight: None,
            written: 0,
            received: Vec::with_capacity(4096),
        });
        generator.idle.push(Reverse((due, c)));
    }
    generator.run();
    let busy = generator.busy;
    let elapsed = start.elapsed().as_secs_f64().max(seconds);

    let mut tally = generator.tally;
    tally.latencies_us.sort_unstable();
    tally.lag_us.sort_unstable();
    let answered = tally.latencies_us.len();
    let busy_per_request = busy.as_secs_f64() * 1e6 / answered.max(1) as f64;
    println!(
        "scenario={scenario} target_rate={rate} answered={answered} achieved_rate={:.0} non_2xx={} errors={} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} gen_lag_p99_us={} gen_lag_p999_us={} gen_busy_us_per_request={busy_per_request:.2} gen_capacity={:.0}",
        answered as f64 / elapsed,
        tally.non_2xx,
        tally.errors,
        percentile(&tally.latencies_us, 50.0),
        percentile(&tally.latencies_us, 90.0),
        percentile(&tally.latencies_us, 99.0),
        percentile(&tally.latencies_us, 99.9),
        tally.latencies_us.last().copied().unwrap_or(0),
        percentile(&tally.lag_us, 99.0),
        percentile(&tally.lag_us, 99.9),
        1e6 / busy_per_request.max(f64::MIN_POSITIVE),
    );
}
