//! A lean NATS connection for catch-up reads: the NATS client protocol on a plain TCP
//! socket, reading JetStream messages in place.
//!
//! async-nats's connection task turns every delivered message into an owned `Message` (its
//! subject, reply and payload, and every header parsed into a `HeaderMap` of owned
//! strings), sends it over a channel to the subscription, and the JetStream layer wraps it
//! with a clone of the context; a reader then parses the reply subject again for the
//! sequences. For a projector catching up that is about half of its process's CPU
//! (docs/benchmarks.md, "the ceiling of a projector"). This connection parses each message's
//! control line in the reader's own task and hands out the reply subject and payload as
//! slices of its read buffer: no allocation, no channel, no header map.
//!
//! It speaks only what a range read needs (`CONNECT`, `SUB`, `PUB`, `PING`/`PONG`, `MSG`,
//! `HMSG`, `INFO`, `+OK`, `-ERR`) over plain TCP, with no credentials, a user and password
//! or a token. A configuration it cannot speak (TLS, a `.creds` file, an nkey, websockets,
//! credentials in the URL) has no [`Dialer`], and range reads then go through async-nats as
//! before.

use std::io;
use std::time::Duration;

use async_nats::ServerAddr;
use bytes::{Buf, BytesMut};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::connect::{NatsConfig, Secret};

/// How long connecting and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A control line longer than this is a protocol error (subjects are at most a few hundred
/// bytes; INFO carries the server's URLs).
const MAX_CONTROL_LINE: usize = 64 * 1024;
/// The largest message body taken (nats-server's own limit on `max_payload` is 64 MiB).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 256 * 1024;

/// What opens a lean connection: the servers of the configuration and its credentials.
#[derive(Clone)]
pub struct Dialer {
    servers: Vec<(String, u16)>,
    user: Option<(String, Secret)>,
    token: Option<Secret>,
    name: String,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// The dialer for `config`, or `None` when the configuration needs what this connection
    /// does not speak (TLS, a credentials file, an nkey, websockets, credentials in the URL,
    /// an unparsable URL).
    pub fn new(config: &NatsConfig) -> Option<Self> {
        if config.require_tls
            || config.tls_ca_file.is_some()
            || config.tls_cert_file.is_some()
            || config.credentials_file.is_some()
            || config.nkey_seed.is_some()
        {
            return None;
        }
        let user = match (&config.user, &config.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        };
        let mut servers = Vec::new();
        for url in config.url.split(',') {
            let addr: ServerAddr = url.trim().parse().ok()?;
            // Credentials in a URL: reads go through async-nats's connection, which
            // `crate::connect()` logs in with them.
            if addr.tls_required() || addr.is_websocket() || addr.has_user_pass() {
                return None;
            }
            servers.push((addr.host().to_owned(), addr.port()));
        }
        if servers.is_empty() {
            return None;
        }
        Some(Self {
            servers,
            user,
            token: config.token.clone(),
            name: format!("{}-reader", config.name),
        })
    }

    /// A connection to the first server that takes one.
    pub async fn connect(&self) -> io::Result<Wire> {
        let mut last = io::Error::other("no server to connect to");
        for (host, port) in &self.servers {
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connect_to(host, *port)).await {
                Ok(Ok(wire)) => return Ok(wire),
                Ok(Err(e)) => last = e,
                Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            }
        }
        Err(last)
    }

    async fn connect_to(&self, host: &str, port: u16) -> io::Result<Wire> {
        let socket = TcpStream::connect((host, port)).await?;
        socket.set_nodelay(true)?;
        let mut wire = Wire {
            socket,
            buf: BytesMut::with_capacity(READ_CHUNK),
            consumed: 0,
        };
        // The server speaks first.
        let info = match wire.next_op().await? {
            Op::Info(info) => info,
            _ => return Err(protocol("the server did not start with INFO")),
        };
        let info: ServerInfo = serde_json::from_slice(&info).map_err(protocol)?;
        if info.tls_required {
            return Err(protocol("the server requires TLS"));
        }
        if !info.headers {
            return Err(protocol("the server does not support headers"));
        }
        let mut connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "lang": "rust",
            "version": env!("CARGO_PKG_VERSION"),
            "name": self.name,
            "protocol": 1,
            "headers": true,
            "no_responders": true,
        });
        if let Some((user, pass)) = &self.user {
            connect["user"] = user.clone().into();
            connect["pass"] = pass.expose().into();
        }
        if let Some(token) = &self.token {
            connect["auth_token"] = token.expose().into();
        }
        let mut out = b"CONNECT ".to_vec();
        out.extend_from_slice(connect.to_string().as_bytes());
        out.extend_from_slice(b"\r\nPING\r\n");
        wire.socket.write_all(&out).await?;
        // PONG answers the PING once the server has taken the CONNECT; a refusal (bad
        // credentials) is an -ERR first.
        loop {
            match wire.next_op().await? {
                Op::Pong => return Ok(wire),
                Op::Err(e) => return Err(protocol(format!("the server refused: {e}"))),
                Op::Ping => wire.socket.write_all(b"PONG\r\n").await?,
                _ => {}
            }
        }
    }
}

#[derive(Deserialize)]
struct ServerInfo {
    #[serde(default)]
    tls_required: bool,
    #[serde(default)]
    headers: bool,
}

fn protocol(reason: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_string())
}

/// One open connection.
pub struct Wire {
    socket: TcpStream,
    buf: BytesMut,
    /// Bytes of `buf` the last returned op still borrows; dropped on the next call.
    consumed: usize,
}

/// One protocol operation from the server; message parts borrow the read buffer.
pub enum Op<'a> {
    Msg(Delivered<'a>),
    Ping,
    Pong,
    Ok,
    Err(String),
    Info(Vec<u8>),
}

/// A message delivered to a subscription.
pub struct Delivered<'a> {
    pub subject: &'a str,
    pub reply: Option<&'a str>,
    /// The header block (`NATS/1.0 …` and header lines), empty without headers.
    pub headers: &'a [u8],
    pub payload: &'a [u8],
}

impl Delivered<'_> {
    /// The status code of a status message (`NATS/1.0 404 No Messages`), if this is one.
    pub fn status(&self) -> Option<u16> {
        let line = self.headers.split(|&b| b == b'\r').next()?;
        let rest = line.strip_prefix(b"NATS/1.0")?;
        let code = std::str::from_utf8(rest).ok()?.split_whitespace().next()?;
        code.parse().ok()
    }

    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let text = std::str::from_utf8(self.headers).ok()?;
        text.split("\r\n").skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

impl Wire {
    /// Subscribes to `subject` as subscription `sid`.
    pub async fn subscribe(&mut self, subject: &str, sid: u64) -> io::Result<()> {
        let line = format!("SUB {subject} {sid}\r\n");
        self.socket.write_all(line.as_bytes()).await
    }

    /// Publishes `payload` to `subject` with `reply` as its reply subject.
    pub async fn publish(&mut self, subject: &str, reply: &str, payload: &[u8]) -> io::Result<()> {
        let mut out = format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes();
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        self.socket.write_all(&out).await
    }

    /// Answers a server's PING.
    pub async fn pong(&mut self) -> io::Result<()> {
        self.socket.write_all(b"PONG\r\n").await
    }

    /// The next operation, reading from the socket as needed. Cancel-safe: bytes read
    /// stay in the buffer.
    pub async fn next_op(&mut self) -> io::Result<Op<'_>> {
        self.buf.advance(self.consumed);
        self.consumed = 0;
        loop {
            if let Some((len, kind)) = frame(&self.buf)? {
                self.consumed = len;
                return Ok(op_of(&self.buf[..len], kind));
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.socket.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
        }
    }
}

/// The length and shape of the complete op at the front of `buf`, if it is all there.
fn frame(buf: &[u8]) -> io::Result<Option<(usize, Kind)>> {
    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_CONTROL_LINE {
            return Err(protocol("control line too long"));
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let kind = Kind::of(line)?;
    let body = match kind {
        Kind::Msg { total, .. } => total + 2,
        _ => 0,
    };
    let len = eol + 1 + body;
    Ok((buf.len() >= len).then_some((len, kind)))
}

/// An op's shape, read off its control line.
#[derive(Clone, Copy)]
enum Kind {
    /// `MSG`/`HMSG`: where the subject and the reply subject are in the control line, and
    /// the sizes.
    Msg {
        subject: (usize, usize),
        reply: Option<(usize, usize)>,
        headers: usize,
        total: usize,
    },
    Ping,
    Pong,
    Ok,
    Err,
    Info,
}

impl Kind {
    fn of(line: &[u8]) -> io::Result<Self> {
        let word_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        let word = &line[..word_end];
        if word.eq_ignore_ascii_case(b"HMSG") || word.eq_ignore_ascii_case(b"MSG") {
            let with_headers = word.len() == 4;
            // Fields and their offsets in the line.
            let mut fields: [(usize, usize); 6] = [(0, 0); 6];
            let mut n = 0;
            let mut i = word_end;
            while i < line.len() {
                while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
                    i += 1;
                }
                let start = i;
                while i < line.len() && line[i] != b' ' && line[i] != b'\t' {
                    i += 1;
                }
                if start < i {
                    if n == fields.len() {
                        return Err(protocol("too many fields in a message line"));
                    }
                    fields[n] = (start, i);
                    n += 1;
                }
            }
            let number = |(s, e): (usize, usize)| -> io::Result<usize> {
                std::str::from_utf8(&line[s..e])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| protocol("bad size in a message line"))
            };
            // subject sid [reply] [hdr-len] total-len
            let sizes = if with_headers { 2 } else { 1 };
            let reply = match n.checked_sub(sizes) {
                Some(3) => Some(fields[2]),
                Some(2) => None,
                _ => return Err(protocol("bad message line")),
            };
            let total = number(fields[n - 1])?;
            let headers = if with_headers {
                number(fields[n - 2])?
            } else {
                0
            };
            if headers > total {
                return Err(protocol("header size past the message"));
            }
            if total > MAX_MESSAGE {
                return Err(protocol("message larger than any server sends"));
            }
            // The offsets count from the line start, which is the op's start.
            return Ok(Self::Msg {
                subject: fields[0],
                reply,
                headers,
                total,
            });
        }
        Ok(match word.to_ascii_uppercase().as_slice() {
            b"PING" => Self::Ping,
            b"PONG" => Self::Pong,
            b"+OK" => Self::Ok,
            b"-ERR" => Self::Err,
            b"INFO" => Self::Info,
            _ => return Err(protocol("unknown protocol operation")),
        })
    }
}

/// The op of the complete frame `frame` (control line, then any body and its CRLF).
fn op_of(frame: &[u8], kind: Kind) -> Op<'_> {
    let eol = frame.iter().position(|&b| b == b'\n').unwrap_or(0);
    let line = &frame[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest_of_line = || {
        let at = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        &line[at..]
    };
    match kind {
        Kind::Msg {
            subject,
            reply,
            headers,
            total,
        } => {
            let body = &frame[eol + 1..eol + 1 + total];
            let text = |(s, e): (usize, usize)| std::str::from_utf8(&line[s..e]).ok();
            Op::Msg(Delivered {
                subject: text(subject).unwrap_or_default(),
                reply: reply.and_then(text),
                headers: &body[..headers],
                payload: &body[headers..],
            })
        }
        Kind::Ping => Op::Ping,
        Kind::Pong => Op::Pong,
        Kind::Ok => Op::Ok,
        Kind::Err => Op::Err(
            String::from_utf8_lossy(rest_of_line())
                .trim()
                .trim_matches('\'')
                .to_owned(),
        ),
        Kind::Info => Op::Info(rest_of_line().trim_ascii().to_vec()),
    }
}

/// The delivery, stream sequence and pending count of a JetStream message, from its
/// `$JS.ACK.` reply subject (both forms of ADR-15, as async-nats reads them).
pub struct AckInfo {
    pub stream_sequence: u64,
    pub consumer_sequence: u64,
    pub pending: u64,
}

pub fn ack_info(reply: &str) -> Option<AckInfo> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let mut tokens: [&str; 12] = [""; 12];
    let mut n = 0;
    for t in rest.split('.') {
        if n == tokens.len() {
            break;
        }
        tokens[n] = t;
        n += 1;
    }
    // <domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.…]
    // or, from older servers, <stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.
    let at = match n {
        7 => 3,
        n if n >= 9 => 5,
        _ => return None,
    };
    Some(AckInfo {
        stream_sequence: tokens[at].parse().ok()?,
        consumer_sequence: tokens[at + 1].parse().ok()?,
        pending: tokens[at + 3].parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Option<(usize, Kind)> {
        frame(bytes).expect("a valid frame")
    }

    #[test]
    fn a_frame_cut_anywhere_waits_for_the_rest() {
        let bytes = b"HMSG CRM_EVENTS.p.0.x 1 $JS.ACK.CRM.c.1.7.3.1700000000.9 12 17\r\nNATS/1.0\r\n\r\nhello\r\nPING\r\n";
        let first = bytes.len() - b"PING\r\n".len();
        for cut in 0..=bytes.len() {
            let got = whole(&bytes[..cut]).map(|(len, _)| len);
            let want = (cut >= first).then_some(first);
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn parses_a_message_with_headers_and_reply() {
        let bytes = b"HMSG CRM_EVENTS.p.0.x 1 $JS.ACK.CRM.c.1.7.3.1700000000.9 12 17\r\nNATS/1.0\r\n\r\nhello\r\nPING\r\n";
        let (len, kind) = whole(bytes).expect("a whole frame");
        let Op::Msg(m) = op_of(&bytes[..len], kind) else {
            panic!("not a message")
        };
        assert_eq!(m.reply, Some("$JS.ACK.CRM.c.1.7.3.1700000000.9"));
        assert_eq!(m.headers, b"NATS/1.0\r\n\r\n");
        assert_eq!(m.payload, b"hello");
        assert_eq!(m.status(), None);
        assert_eq!(&bytes[len..], b"PING\r\n");
    }

    #[test]
    fn a_partial_message_is_not_a_frame() {
        let bytes = b"HMSG s 1 r 12 17\r\nNATS/1.0\r\n\r\nhel";
        assert!(whole(bytes).is_none());
    }

    #[test]
    fn reads_status_messages_and_their_headers() {
        let headers = "NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 12\r\n\r\n";
        let text = format!(
            "HMSG _INBOX.x 1 {} {}\r\n{headers}\r\n",
            headers.len(),
            headers.len()
        );
        let bytes = text.as_bytes();
        let (len, kind) = whole(bytes).expect("a whole frame");
        let Op::Msg(m) = op_of(&bytes[..len], kind) else {
            panic!("not a message")
        };
        assert_eq!(m.reply, None);
        assert_eq!(m.status(), Some(408));
        assert_eq!(m.header("nats-pending-messages"), Some("12"));
        assert!(m.payload.is_empty());
    }

    #[test]
    fn reads_both_forms_of_the_ack_subject() {
        let old = ack_info("$JS.ACK.CRM_EVENTS.c1.1.42.7.1700000000000000000.3").expect("old form");
        assert_eq!(
            (old.stream_sequence, old.consumer_sequence, old.pending),
            (42, 7, 3)
        );
        let new = ack_info("$JS.ACK._.ACCHASH.CRM_EVENTS.c1.1.42.7.1700000000000000000.3.tok")
            .expect("new form");
        assert_eq!(
            (new.stream_sequence, new.consumer_sequence, new.pending),
            (42, 7, 3)
        );
        assert!(ack_info("$JS.ACK.too.few").is_none());
        assert!(ack_info("_INBOX.x").is_none());
    }

    #[test]
    fn refuses_malformed_lines() {
        assert!(Kind::of(b"HMSG s 1 r x 17").is_err());
        assert!(Kind::of(b"HMSG s 1 20 17").is_err());
        assert!(Kind::of(b"MSG s 1 18446744073709551615").is_err());
        assert!(Kind::of(b"WHAT").is_err());
        assert!(matches!(Kind::of(b"ping"), Ok(Kind::Ping)));
    }

    #[test]
    fn dialer_refuses_what_it_cannot_speak() {
        assert!(Dialer::new(&NatsConfig::url("nats://127.0.0.1:4222")).is_some());
        assert!(Dialer::new(&NatsConfig::url("tls://127.0.0.1:4222")).is_none());
        let mut tls = NatsConfig::url("nats://127.0.0.1:4222");
        tls.require_tls = true;
        assert!(Dialer::new(&tls).is_none());
        let mut nkey = NatsConfig::url("nats://127.0.0.1:4222");
        nkey.nkey_seed = Some(Secret::new("SU..."));
        assert!(Dialer::new(&nkey).is_none());
        assert!(Dialer::new(&NatsConfig::url("nats://u:p@b:2")).is_none());
        let mut two = NatsConfig::url("nats://a:1, b:2");
        two.user = Some("u".into());
        two.password = Some(Secret::new("p"));
        let d = Dialer::new(&two).expect("two servers");
        assert_eq!(d.servers, vec![("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(d.user.as_ref().map(|(u, _)| u.as_str()), Some("u"));
    }
}
