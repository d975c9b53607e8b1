//! Free loopback ports.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

/// Offset of a cluster node's bus port from its client port (fixed by Redis).
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// Ports this process has handed out, so two servers started concurrently
/// never get the same one (the OS may offer a released port again at once).
static ISSUED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before returning, so another process could take it
/// before the server binds; [`crate::RedisServer::start_with`] retries with a
/// new port when that happens. A port is never handed out twice by one
/// process.
///
/// # Errors
///
/// When binding `127.0.0.1:0` fails, or no unissued port turns up.
pub fn find_free_port() -> io::Result<u16> {
    find(|_| true)
}

/// A free port `P` on 127.0.0.1 whose cluster bus port `P + 10000` is free too.
///
/// # Errors
///
/// As [`find_free_port`].
pub fn find_free_cluster_port() -> io::Result<u16> {
    find(|port| {
        port.checked_add(CLUSTER_BUS_OFFSET)
            .is_some_and(|bus| TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_ok())
    })
}

fn find(also_free: impl Fn(u16) -> bool) -> io::Result<u16> {
    for _ in 0..200 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        if !also_free(port) {
            continue;
        }
        let mut issued = ISSUED.lock().unwrap_or_else(PoisonError::into_inner);
        if issued.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::other(
        "found no free port on 127.0.0.1 after 200 tries",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bus_ports_fit() {
        let a = find_free_port().unwrap();
        let b = find_free_port().unwrap();
        assert_ne!(a, b);
        let c = find_free_cluster_port().unwrap();
        assert!(c <= u16::MAX - CLUSTER_BUS_OFFSET);
    }
}
