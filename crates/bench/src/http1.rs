//! The load driver's HTTP/1.1 client: one keep-alive connection per worker, a request
//! written with one `write`, the response parsed with `httparse` (the parser hyper uses).
//!
//! It does what `wrk` does and no more — no pool, no redirects, no chunked bodies — so the
//! driver sharing the 2 cores with the gateway and nats-server costs as little as it can.
//! With reqwest (over hyper's pool) in its place, the same runs reached 28,300–28,400
//! commands/s with the bench process at 124 % CPU; with this one 35,900–36,500/s at 109 %
//! (docs/benchmarks.md, 2026-12-01 evening).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Response headers we accept, at most.
const MAX_HEADERS: usize = 32;

/// A response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One keep-alive connection; reconnects on the next request after an error.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    out: Vec<u8>,
    inbuf: Vec<u8>,
}

impl Connection {
    /// A connection to `addr`, opened on first use.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            out: Vec::with_capacity(1024),
            inbuf: Vec::with_capacity(4096),
        }
    }

    /// `POST path` with a JSON `body` and an `authorization` header value.
    pub async fn post(
        &mut self,
        path: &str,
        authorization: &str,
        body: &[u8],
    ) -> std::io::Result<Response> {
        let result = self.exchange(path, authorization, body).await;
        if result.is_err() {
            // A half-read response leaves the connection unusable.
            self.stream = None;
            self.inbuf.clear();
        }
        result
    }

    async fn exchange(
        &mut self,
        path: &str,
        authorization: &str,
        body: &[u8],
    ) -> std::io::Result<Response> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_mut() else {
            unreachable!("connected above");
        };
        self.out.clear();
        self.out.extend_from_slice(b"POST ");
        self.out.extend_from_slice(path.as_bytes());
        self.out
            .extend_from_slice(b" HTTP/1.1\r\nhost: bench\r\nauthorization: ");
        self.out.extend_from_slice(authorization.as_bytes());
        self.out
            .extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
        self.out
            .extend_from_slice(body.len().to_string().as_bytes());
        self.out.extend_from_slice(b"\r\n\r\n");
        self.out.extend_from_slice(body);
        stream.write_all(&self.out).await?;

        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.inbuf).map_err(invalid)? {
                httparse::Status::Complete(head) => {
                    let status = resp.code.ok_or_else(|| invalid("no status"))?;
                    let mut length = None;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let v = std::str::from_utf8(h.value).map_err(invalid)?;
                            length = Some(v.trim().parse::<usize>().map_err(invalid)?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            return Err(invalid("chunked responses are not supported"));
                        }
                    }
                    let length = length.unwrap_or(0);
                    while self.inbuf.len() < head + length {
                        read_more(stream, &mut self.inbuf).await?;
                    }
                    let body = self.inbuf[head..head + length].to_vec();
                    self.inbuf.drain(..head + length);
                    return Ok(Response { status, body });
                }
                httparse::Status::Partial => read_more(stream, &mut self.inbuf).await?,
            }
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.reserve(4096);
    if stream.read_buf(buf).await? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed mid-response",
        ));
    }
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers two requests on one connection, the second response split
    /// across writes, then closes.
    #[tokio::test]
    async fn keep_alive_exchanges_and_split_responses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            for reply in [
                &b"HTTP/1.1 201 Created\r\ncontent-length: 7\r\n\r\n{\"a\":1}"[..],
                &b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}"[..],
            ] {
                let n = s.read(&mut buf).await.expect("read");
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let (a, b) = reply.split_at(20);
                s.write_all(a).await.expect("write");
                s.flush().await.expect("flush");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                s.write_all(b).await.expect("write");
            }
            seen
        });
        let mut c = Connection::new(addr);
        let r1 = c
            .post("/v1/x", "Bearer k", b"{\"b\":2}")
            .await
            .expect("first");
        assert_eq!(
            r1,
            Response {
                status: 201,
                body: b"{\"a\":1}".to_vec()
            }
        );
        let r2 = c.post("/v1/y", "Bearer k", b"{}").await.expect("second");
        assert_eq!(
            r2,
            Response {
                status: 409,
                body: b"{}".to_vec()
            }
        );
        let seen = server.await.expect("server");
        assert!(
            seen[0].starts_with("POST /v1/x HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains("authorization: Bearer k\r\n"));
        assert!(seen[0].ends_with("content-length: 7\r\n\r\n{\"b\":2}"));
        // The server closed: the next request fails, and the one after reconnects (and
        // fails to connect here, as nothing listens any more).
        assert!(c.post("/v1/z", "Bearer k", b"{}").await.is_err());
    }
}
