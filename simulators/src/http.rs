//! A minimal blocking HTTP/1.1 client for loopback use: one request per connection.
//!
//! The simulator talks only to agents and a hub on the same machine, so it needs no TLS; a
//! few dozen lines over `TcpStream` keep a client library out of the dependency tree.
//! [`request`] opens a connection per request; [`Connection`] keeps one open (HTTP/1.1
//! keep-alive) for the load generator, where a POS posts many requests in a row.

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

/// Largest response read, in bytes.
const RESPONSE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Sends one request to `addr` (`host:port`) and reads the whole response.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Response> {
    let sock_addr = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("cannot resolve {addr}")))?;
    let mut stream = TcpStream::connect_timeout(&sock_addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = request_head(method, path, addr, headers, body.len(), true);
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.take(RESPONSE_BYTES_MAX).read_to_end(&mut raw)?;
    parse(&raw)
}

/// The request line and headers, ending in the blank line.
fn request_head(
    method: &str,
    path: &str,
    addr: &str,
    headers: &[(&str, &str)],
    body_len: usize,
    close: bool,
) -> String {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {body_len}\r\n");
    if close {
        head.push_str("Connection: close\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A kept-alive connection to one server: requests go one after another on it, and it
/// reconnects on the next request after an error or when the server closed it.
#[derive(Debug)]
pub struct Connection {
    addr: String,
    timeout: Duration,
    stream: Option<BufReader<TcpStream>>,
}

impl Connection {
    /// A connection to `addr` (`host:port`), opened on the first request.
    pub fn new(addr: &str, timeout: Duration) -> Connection {
        Connection {
            addr: addr.to_owned(),
            timeout,
            stream: None,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn open(&mut self) -> std::io::Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let sock_addr = std::net::ToSocketAddrs::to_socket_addrs(self.addr.as_str())?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("cannot resolve {}", self.addr)))?;
            let stream = TcpStream::connect_timeout(&sock_addr, self.timeout)?;
            stream.set_read_timeout(Some(self.timeout))?;
            stream.set_write_timeout(Some(self.timeout))?;
            stream.set_nodelay(true)?;
            self.stream = Some(BufReader::new(stream));
        }
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no connection"))
    }

    /// Sends one request and reads its response. On any error the connection is dropped,
    /// so the next request opens a new one.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let result = self.exchange(method, path, headers, body);
        match &result {
            Ok((_, true)) => {}
            _ => self.stream = None,
        }
        result.map(|(r, _)| r)
    }

    /// The response and whether the connection stays open.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(Response, bool)> {
        let head = request_head(method, path, &self.addr, headers, body.len(), false);
        let reader = self.open()?;
        let mut message = head.into_bytes();
        message.extend_from_slice(body);
        reader.get_mut().write_all(&message)?;
        read_response(reader)
    }
}

/// Reads one response off a kept-alive connection: the head, then a body framed by
/// `Content-Length` or chunked encoding. Returns whether the server keeps the connection.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(Response, bool)> {
    let mut line = String::new();
    let mut head_bytes = 0usize;
    let mut read_line = |reader: &mut BufReader<TcpStream>, line: &mut String| {
        line.clear();
        let n = reader.take(16 * 1024).read_line(line)?;
        head_bytes += n;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if head_bytes > 64 * 1024 {
            return Err(bad("response head larger than 64 KiB"));
        }
        Ok(())
    };
    read_line(reader, &mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut keep = true;
    loop {
        read_line(reader, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            return Err(bad("bad header line"));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => length = value.parse().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            read_line(reader, &mut line)?;
            let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                read_line(reader, &mut line)?;
                break;
            }
            if body.len() as u64 + size > RESPONSE_BYTES_MAX {
                return Err(bad("response larger than the limit"));
            }
            reader.take(size).read_to_end(&mut body)?;
            read_line(reader, &mut line)?;
        }
    } else if let Some(length) = length {
        if length > RESPONSE_BYTES_MAX {
            return Err(bad("response larger than the limit"));
        }
        reader.take(length).read_to_end(&mut body)?;
        if body.len() as u64 != length {
            return Err(bad("truncated body"));
        }
    } else {
        reader.take(RESPONSE_BYTES_MAX).read_to_end(&mut body)?;
        keep = false;
    }
    Ok((Response { status, body }, keep))
}

fn bad(reason: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_owned())
}

fn parse(raw: &[u8]) -> std::io::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let rest = &raw[split + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("bad chunk"))?;
        let size_text = std::str::from_utf8(&rest[..end]).map_err(|_| bad("bad chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size {
            return Err(bad("truncated chunk"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or(&[]);
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let plain = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").expect("plain");
        assert_eq!((plain.status, plain.body.as_slice()), (200, &b"{}"[..]));
        let chunked = parse(
            b"HTTP/1.1 207 Multi-Status\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .expect("chunked");
        assert_eq!(
            (chunked.status, chunked.body.as_slice()),
            (207, &b"abcde"[..])
        );
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn connection_keeps_one_stream_for_several_requests() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = std::thread::spawn(move || {
            // One connection answers two requests (sized, then chunked) and closes on the
            // third; a second connection answers the fourth.
            let answers: [&[u8]; 2] = [
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst",
                b"HTTP/1.1 207 Multi-Status\r\ntransfer-encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n",
            ];
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream);
            for answer in answers.iter().chain([
                &&b"HTTP/1.1 503 Busy\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"[..],
            ]) {
                let mut line = String::new();
                loop {
                    line.clear();
                    reader.read_line(&mut line).expect("read");
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = [0u8; 2];
                reader.read_exact(&mut body).expect("body");
                reader.get_mut().write_all(answer).expect("write");
            }
            let (mut stream, _) = listener.accept().expect("accept again");
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf).expect("read");
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnew!")
                .expect("write");
        });
        let mut c = Connection::new(&addr, Duration::from_secs(5));
        let a = c.request("POST", "/x", &[], b"{}").expect("first");
        assert_eq!((a.status, a.body.as_slice()), (200, &b"first"[..]));
        let b = c.request("POST", "/x", &[], b"{}").expect("second");
        assert_eq!((b.status, b.body.as_slice()), (207, &b"second"[..]));
        let closed = c.request("POST", "/x", &[], b"{}").expect("third");
        assert_eq!(closed.status, 503);
        let d = c
            .request("GET", "/y", &[], b"")
            .expect("fourth, reconnected");
        assert_eq!((d.status, d.body.as_slice()), (200, &b"new!"[..]));
        server.join().expect("server");
    }

    #[test]
    fn encodes_form_values() {
        assert_eq!(form_encode("a b&c=d"), "a%20b%26c%3Dd");
    }
}
