//! A minimal blocking RESP2 client over plain TCP.
//!
//! Enough for readiness probes, topology checks and for tests that want to
//! read Redis directly, bypassing the library under test. It speaks no TLS;
//! use [`crate::RedisServer::cli`] for TLS servers.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Default connect timeout of [`Connection::connect`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default read and write timeout of [`Connection::connect`].
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest bulk string this client accepts (Redis's own limit).
const MAX_BULK: usize = 512 * 1024 * 1024;

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `+PONG`, …
    Status(String),
    /// `-ERR …`: an error reply (the request reached the server).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$…`: a bulk string, `None` for the nil bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*…`: an array, `None` for the nil array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a status or bulk reply (bulk decoded lossily as UTF-8).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }

    /// The integer of an integer reply, or of a status or bulk reply that holds one.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(i) => Some(*i),
            other => other.text()?.trim().parse().ok(),
        }
    }

    /// The elements of an array reply (empty for anything else).
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            _ => &[],
        }
    }

    /// Turns an [`Reply::Error`] into an `Err`.
    ///
    /// # Errors
    ///
    /// When the reply is an error reply; its message is kept.
    pub fn into_result(self) -> io::Result<Reply> {
        match self {
            Reply::Error(message) => Err(io::Error::other(message)),
            other => Ok(other),
        }
    }
}

/// A connection to a server on 127.0.0.1.
#[derive(Debug)]
pub struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    /// Connects with [`CONNECT_TIMEOUT`] and [`IO_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// When the connection cannot be made.
    pub fn connect(port: u16) -> io::Result<Self> {
        Self::connect_with(port, CONNECT_TIMEOUT, IO_TIMEOUT)
    }

    /// Connects with the given timeouts; `io_timeout` bounds every read and write.
    ///
    /// # Errors
    ///
    /// When the connection cannot be made.
    pub fn connect_with(port: u16, connect: Duration, io_timeout: Duration) -> io::Result<Self> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, connect)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply. An error reply is `Ok(Reply::Error)`.
    ///
    /// # Errors
    ///
    /// On I/O errors, timeouts and malformed replies.
    pub fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            let arg = arg.as_ref();
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&request)?;
        read_reply(&mut self.stream)
    }
}

/// Sends one command on a fresh connection to `127.0.0.1:port`.
///
/// # Errors
///
/// As [`Connection::command`], plus connection errors.
pub fn command<A: AsRef<[u8]>>(port: u16, args: &[A]) -> io::Result<Reply> {
    Connection::connect(port)?.command(args)
}

/// Parses `field:value` lines (the output of `INFO` and `CLUSTER INFO`) and returns `field`'s value.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_owned())
    })
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(reader)?;
    let Some(rest) = line.get(1..) else {
        return Err(malformed(&line));
    };
    match line.as_bytes()[0] {
        b'+' => Ok(Reply::Status(rest.to_owned())),
        b'-' => Ok(Reply::Error(rest.to_owned())),
        b':' => Ok(Reply::Integer(parse_int(rest)?)),
        b'$' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&len| len <= MAX_BULK)
                .ok_or_else(|| malformed(&line))?;
            let mut buf = vec![0; len + 2];
            reader.read_exact(&mut buf)?;
            buf.truncate(len);
            Ok(Reply::Bulk(Some(buf)))
        }
        b'*' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let items = (0..len).map(|_| read_reply(reader)).collect::<io::Result<_>>()?;
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(malformed(&line)),
    }
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed by the server",
        ));
    }
    let trimmed = line.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        return Err(malformed(&line));
    }
    Ok(trimmed.to_owned())
}

fn parse_int(text: &str) -> io::Result<i64> {
    text.parse().map_err(|_| malformed(text))
}

fn malformed(text: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed RESP reply near {text:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Reply {
        read_reply(&mut &bytes[..]).unwrap()
    }

    #[test]
    fn parses_every_type() {
        assert_eq!(parse(b"+PONG\r\n"), Reply::Status("PONG".into()));
        assert_eq!(parse(b"-ERR no\r\n"), Reply::Error("ERR no".into()));
        assert_eq!(parse(b":-3\r\n"), Reply::Integer(-3));
        assert_eq!(parse(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(parse(b"$3\r\na\r\n\r\n"), Reply::Bulk(Some(b"a\r\n".to_vec())));
        let array = parse(b"*2\r\n$6\r\nmaster\r\n:7\r\n");
        assert_eq!(array.items()[0].text().as_deref(), Some("master"));
        assert_eq!(array.items()[1].integer(), Some(7));
    }

    #[test]
    fn reads_info_fields() {
        let info = "# Cluster\r\ncluster_state:ok\r\ncluster_slots_ok:16384\r\n";
        assert_eq!(info_field(info, "cluster_state").as_deref(), Some("ok"));
        assert_eq!(info_field(info, "cluster_slots_ok").as_deref(), Some("16384"));
        assert_eq!(info_field(info, "missing"), None);
    }
}
