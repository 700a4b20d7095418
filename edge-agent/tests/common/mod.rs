//! A real `storesync-edge` process on a temporary data directory, and a minimal HTTP/1.1
//! client over `std::net::TcpStream` (the workspace declares no HTTP client).

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::zombie_processes
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_storesync-edge");

pub struct Agent {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub api: SocketAddr,
    pub bridge: Option<SocketAddr>,
}

/// Creates a data directory with `init`, then applies `edit` to the config text.
pub fn init(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let out = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(dir)
        .args([
            "--tenant",
            "acme",
            "--store",
            "s1",
            "--time-zone",
            "Europe/Paris",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.join("storesync-edge.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("api = \"127.0.0.1:7400\"", "api = \"127.0.0.1:0\"")
        .replace("bridge = \"127.0.0.1:7401\"", "bridge = \"127.0.0.1:0\"");
    std::fs::write(&config, edit(text)).unwrap();
    config
}

impl Agent {
    pub fn start(dir: &Path, config: &Path) -> Agent {
        let _ = std::fs::remove_file(dir.join("run.json"));
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let run_json = dir.join("run.json");
        loop {
            if let Ok(text) = std::fs::read_to_string(&run_json) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if v["pid"].as_u64() == Some(u64::from(child.id())) {
                        let api: SocketAddr = v["api"].as_str().unwrap().parse().unwrap();
                        let bridge = v["bridge"].as_str().map(|b| b.parse().unwrap());
                        return Agent {
                            dir: dir.to_owned(),
                            config: config.to_owned(),
                            child: Some(child),
                            api,
                            bridge,
                        };
                    }
                }
            }
            assert!(Instant::now() < deadline, "agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn new(edit: impl FnOnce(String) -> String) -> (tempfile::TempDir, Agent) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let config = init(&dir, edit);
        let agent = Agent::start(&dir, &config);
        (tmp, agent)
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then waits; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let mut agent = Agent::start(&self.dir, &self.config);
        self.child = agent.child.take();
        self.api = agent.api;
        self.bridge = agent.bridge;
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = request(self.api, "GET", path, &[], b"");
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn post(&self, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        self.post_with(path, &[("Content-Type", "application/json")], body)
    }

    pub fn post_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let (status, body) = request(self.api, "POST", path, headers, body);
        let value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        (status, value)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One request on a fresh connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut conn = HttpConn::connect(addr).unwrap();
    conn.request(method, path, headers, body).unwrap()
}

/// A keep-alive HTTP/1.1 connection; responses must carry Content-Length.
pub struct HttpConn {
    reader: BufReader<TcpStream>,
}

impl HttpConn {
    pub fn connect(addr: SocketAddr) -> std::io::Result<HttpConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(HttpConn {
            reader: BufReader::new(stream),
        })
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: agent\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        // A small request goes out in one write (one segment with TCP_NODELAY), as real
        // clients send it; a large one keeps the body apart so an early 413 is seen.
        if body.len() <= 64 * 1024 {
            let mut request = head.into_bytes();
            request.extend_from_slice(body);
            stream.write_all(&request)?;
            return self.read_response();
        }
        stream.write_all(head.as_bytes())?;
        // A server may answer (413) before reading a large body; ignore a broken pipe.
        if let Err(e) = stream.write_all(body) {
            if e.kind() != std::io::ErrorKind::BrokenPipe
                && e.kind() != std::io::ErrorKind::ConnectionReset
            {
                return Err(e);
            }
        }
        self.read_response()
    }

    fn read_response(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((k, v)) = trimmed.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
                if k.eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
                {
                    chunked = true;
                }
            }
        }
        let mut body = Vec::new();
        if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        } else if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)?;
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            self.reader.read_to_end(&mut body)?;
        }
        Ok((status, body))
    }
}

/// A transaction JSON with `items` lines of price 1.25 each, at `now - minutes_ago`.
pub fn transaction(id: &str, items: usize, minutes_ago: i64) -> serde_json::Value {
    let ts = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(minutes_ago);
    let lines: Vec<serde_json::Value> = (0..items)
        .map(|i| serde_json::json!({"itemId": format!("sku-{}", i % 7), "quantity": 1 + (i % 3) as i64, "price": 1.25}))
        .collect();
    let total: f64 = (0..items).map(|i| (1 + (i % 3)) as f64 * 1.25).sum();
    serde_json::json!({
        "transactionId": id,
        "storeId": "s1",
        "timestamp": ts.to_string(),
        "items": lines,
        "totalAmount": total,
        "paymentMethod": if items.is_multiple_of(2) { "card" } else { "cash" },
        "registerId": format!("r{}", items % 3),
    })
}

pub const TOKEN_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIGdOW1DZlh+yauOY0zk0Xxx3QY7jOO2UUov5ULRNBGtd
-----END PRIVATE KEY-----
";
pub const TOKEN_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAY3Ru+RxAC9MfXisaBYQGW9C9BAdqO2gOyhRckOi6ufc=
-----END PUBLIC KEY-----
";
