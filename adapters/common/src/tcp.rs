//! Socket set-up shared by the adapters: listeners, TCP options, and address
//! resolution.

use crate::config::Config;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Pending connections the kernel may queue per listener (it caps this at
/// `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;

/// The TCP options applied to every accepted and every upstream socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpTuning {
    /// `SO_SNDBUF`, when configured (`tcp_send_buffer_bytes`).
    pub send_buffer_bytes: Option<usize>,
    /// `SO_RCVBUF`, when configured (`tcp_recv_buffer_bytes`).
    pub recv_buffer_bytes: Option<usize>,
}

impl TcpTuning {
    /// The tuning a config asks for.
    pub fn from_config(config: &Config) -> Self {
        TcpTuning {
            send_buffer_bytes: config.tcp_send_buffer_bytes,
            recv_buffer_bytes: config.tcp_recv_buffer_bytes,
        }
    }

    /// Sets TCP_NODELAY (always) and the configured buffer sizes. A failure
    /// is logged, not fatal: the connection still works untuned.
    pub fn apply(&self, socket: SockRef<'_>) {
        if let Err(e) = socket.set_tcp_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        if let Some(bytes) = self.send_buffer_bytes {
            if let Err(e) = socket.set_send_buffer_size(bytes) {
                tracing::warn!("cannot set the TCP send buffer to {bytes} bytes: {e}");
            }
        }
        if let Some(bytes) = self.recv_buffer_bytes {
            if let Err(e) = socket.set_recv_buffer_size(bytes) {
                tracing::warn!("cannot set the TCP receive buffer to {bytes} bytes: {e}");
            }
        }
    }
}

/// A non-blocking std listener bound to `host:port` (the first address the
/// host resolves to that binds), with `SO_REUSEADDR` and [`LISTEN_BACKLOG`].
pub fn bind_listener(host: &str, port: u16) -> io::Result<std::net::TcpListener> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match bind_one(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to listen on")
    }))
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The addresses of `host:port`: at once for an IP literal, else `None`
/// (the caller resolves the name on a blocking thread with [`resolve`]).
pub fn literal_addr(host: &str, port: u16) -> Option<SocketAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// Resolves `host:port` (blocking: DNS).
pub fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_sets_nodelay_and_buffers() {
        let listener = bind_listener("127.0.0.1", 0).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let tuning = TcpTuning {
            send_buffer_bytes: Some(64 * 1024),
            recv_buffer_bytes: Some(32 * 1024),
        };
        tuning.apply(SockRef::from(&client));
        let sock = SockRef::from(&client);
        assert!(sock.tcp_nodelay().unwrap());
        // Linux doubles the value asked for (bookkeeping overhead).
        assert!(sock.send_buffer_size().unwrap() >= 64 * 1024);
        assert!(sock.recv_buffer_size().unwrap() >= 32 * 1024);
        assert!(sock.send_buffer_size().unwrap() <= 4 * 64 * 1024);

        let untouched = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        TcpTuning::default().apply(SockRef::from(&untouched));
        assert!(SockRef::from(&untouched).tcp_nodelay().unwrap());
    }

    #[test]
    fn literals_and_names() {
        assert_eq!(
            literal_addr("127.0.0.1", 80),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(literal_addr("[::1]", 80), Some("[::1]:80".parse().unwrap()));
        assert_eq!(literal_addr("::1", 80), Some("[::1]:80".parse().unwrap()));
        assert_eq!(literal_addr("localhost", 80), None);
        assert!(!resolve("localhost", 80).unwrap().is_empty());
    }

    #[test]
    fn listener_is_nonblocking() {
        let listener = bind_listener("127.0.0.1", 0).unwrap();
        let err = listener.accept().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
