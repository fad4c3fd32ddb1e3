//! The listening sockets every shard opens on the same address.
//!
//! SO_REUSEPORT lets each shard own a listening socket on one port; the kernel spreads new
//! connections across them, so connections are accepted on the core that will serve them
//! and no accept lock is shared. The sockets are created up front on the main thread, so
//! that port 0 resolves to one port for all shards and the address can be announced before
//! any shard starts; each shard then adopts its socket into its own glommio reactor.
//! (glommio's own `bind` also fixes the backlog at 1024, which matters under storms.)

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// Creates `count` listening sockets sharing one address; returns them and that address.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
) -> std::io::Result<(Vec<Socket>, SocketAddr)> {
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_port(true)?;
        socket.set_reuse_address(true)?;
        socket.set_nodelay(true)?;
        socket.bind(&bound.into())?;
        socket.listen(backlog.min(i32::MAX as u32) as i32)?;
        if bound.port() == 0 {
            bound = socket
                .local_addr()?
                .as_socket()
                .expect("a TCP socket has an IP address");
        }
        sockets.push(socket);
    }
    Ok((sockets, bound))
}

/// Hands a listening socket to the current shard's reactor.
pub fn adopt(socket: Socket) -> TcpListener {
    // SAFETY: the descriptor is an open listening TCP socket whose ownership moves into
    // glommio's listener, which closes it.
    unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) }
}
