//! A small blocking HTTPS client for the portal API: what `kolokol demo`,
//! the API's integration tests and the API load tool (`apiload`) use.
//! HTTP/1.1 over rustls: [`Client::request`] opens one connection per
//! request (`Connection: close`); a [`Session`] keeps one persistent
//! connection (`Connection: keep-alive`) for many. Chunked or
//! length-delimited bodies, and a server-sent-event reader.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// One response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let n = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: String,
    timeout: Duration,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Client {
    /// A client for `https://addr`, trusting the CAs in `ca_pem` (the test
    /// CA in `config/tls/test-ca.crt` for the example config), sending
    /// `token` as the bearer.
    pub fn https(addr: SocketAddr, ca_pem: &Path, token: &str) -> io::Result<Client> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca_pem).map_err(invalid)? {
            roots.add(c.map_err(invalid)?).map_err(invalid)?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Client {
            addr,
            tls: Some(Arc::new(cfg)),
            token: token.to_string(),
            timeout: Duration::from_secs(10),
        })
    }

    /// A plain-HTTP client (for `api.insecure_http`).
    pub fn http(addr: SocketAddr, token: &str) -> Client {
        Client {
            addr,
            tls: None,
            token: token.to_string(),
            timeout: Duration::from_secs(10),
        }
    }

    /// The same client with another bearer token ("" sends none).
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: token.to_string(),
            ..self.clone()
        }
    }

    /// A new connection; with `handshake`, the TLS handshake is finished
    /// here rather than on the first write.
    fn connect(&self, handshake: bool) -> io::Result<Box<dyn ReadWrite>> {
        let mut sock = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        sock.set_read_timeout(Some(self.timeout))?;
        sock.set_write_timeout(Some(self.timeout))?;
        sock.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(sock)),
            Some(cfg) => {
                let name = ServerName::IpAddress(self.addr.ip().into());
                let mut conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(invalid)?;
                while handshake && conn.is_handshaking() {
                    conn.complete_io(&mut sock)?;
                }
                Ok(Box::new(rustls::StreamOwned::new(conn, sock)))
            }
        }
    }

    /// A persistent connection to the server (opened on its first request,
    /// or by [`Session::connect`]).
    pub fn session(&self) -> Session {
        Session {
            client: self.clone(),
            conn: None,
            connects: 0,
        }
    }

    fn head(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        len: usize,
        keep_alive: bool,
    ) -> String {
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let mut h = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: {connection}\r\n",
            self.addr
        );
        if !self.token.is_empty() {
            h.push_str(&format!("Authorization: Bearer {}\r\n", self.token));
        }
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        if len > 0 || method == "POST" {
            h.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {len}\r\n"
            ));
        }
        h.push_str("\r\n");
        h
    }

    /// One request with an optional JSON body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> io::Result<Response> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = self.connect(false)?;
        let mut msg = self
            .head(method, path, headers, body.len(), false)
            .into_bytes();
        msg.extend_from_slice(body.as_bytes());
        s.write_all(&msg)?;
        s.flush()?;
        let mut r = BufReader::new(s);
        read_response(&mut r).map(|(resp, _)| resp)
    }

    /// `GET path` as a server-sent event stream: calls `on_event` with each
    /// event's `data` parsed as JSON until it returns false or the stream
    /// ends (read timeout: `idle`).
    pub fn events(
        &self,
        path: &str,
        idle: Duration,
        mut on_event: impl FnMut(serde_json::Value) -> bool,
    ) -> io::Result<()> {
        let mut s = self.connect(false)?;
        s.write_all(
            self.head("GET", path, &[("Accept", "text/event-stream")], 0, false)
                .as_bytes(),
        )?;
        s.flush()?;
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r)?;
        if status != 200 {
            return Err(invalid(format!("event stream: HTTP {status}")));
        }
        let _ = idle;
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        let mut pending = String::new();
        let mut data = String::new();
        loop {
            let piece = if chunked {
                match read_chunk(&mut r)? {
                    Some(c) => String::from_utf8_lossy(&c).into_owned(),
                    None => return Ok(()),
                }
            } else {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                line
            };
            pending.push_str(&piece);
            while let Some(nl) = pending.find('\n') {
                let line: String = pending.drain(..=nl).collect();
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if !data.is_empty() {
                        let v = serde_json::from_str(&data).unwrap_or(serde_json::Value::Null);
                        data.clear();
                        if !on_event(v) {
                            return Ok(());
                        }
                    }
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
        }
    }
}

/// One persistent HTTP/1.1 connection (`Connection: keep-alive`), reopened
/// when the server closes it. Not shared between threads: give each thread
/// its own ([`Client::session`]).
pub struct Session {
    client: Client,
    conn: Option<BufReader<Box<dyn ReadWrite>>>,
    connects: u64,
}

impl Session {
    /// Opens the connection now (TLS handshake included) unless it is open.
    pub fn connect(&mut self) -> io::Result<()> {
        if self.conn.is_none() {
            let s = self.client.connect(true)?;
            self.connects += 1;
            self.conn = Some(BufReader::new(s));
        }
        Ok(())
    }

    /// Connections opened so far, the first included.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// One request on the persistent connection (see [`Client::request`]).
    /// A reused connection that fails before the first byte of the answer
    /// (the server closed it while idle) is reopened and the request sent
    /// once more; any other failure closes it and is returned.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> io::Result<Response> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut msg = self
            .client
            .head(method, path, headers, body.len(), true)
            .into_bytes();
        msg.extend_from_slice(body.as_bytes());
        let reused = self.conn.is_some();
        match self.exchange(&msg) {
            Err(e) if reused && is_stale(&e) => self.exchange(&msg),
            r => r,
        }
    }

    fn exchange(&mut self, msg: &[u8]) -> io::Result<Response> {
        self.connect()?;
        let r = self.conn.as_mut().expect("connected above");
        let result = (|| {
            let s = r.get_mut();
            s.write_all(msg)?;
            s.flush()?;
            read_response(r)
        })();
        match result {
            Ok((resp, keep)) => {
                if !keep {
                    self.conn = None;
                }
                Ok(resp)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// An error that a connection closed by the server while idle gives before
/// any of the answer was read.
fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// Reads one response; the flag is whether the connection may carry
/// another request (a delimited body and no `Connection: close`).
fn read_response(r: &mut impl BufRead) -> io::Result<(Response, bool)> {
    let (status, headers) = read_head(r)?;
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let close = headers
        .iter()
        .any(|(k, v)| k == "connection" && v.to_ascii_lowercase().contains("close"));
    let mut body = Vec::new();
    let delimited = if chunked {
        while let Some(c) = read_chunk(r)? {
            body.extend_from_slice(&c);
        }
        true
    } else if let Some(n) = len {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
        true
    } else {
        // Close-delimited; a TLS peer that closes without close_notify
        // ends the body too.
        let _ = r.read_to_end(&mut body);
        false
    };
    Ok((
        Response {
            status,
            headers,
            body,
        },
        delimited && !close,
    ))
}

fn read_head(r: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the response",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// One chunk of a chunked body; `None` at the last one.
fn read_chunk(r: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
        .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
    if size == 0 {
        let mut end = String::new();
        let _ = r.read_line(&mut end);
        return Ok(None);
    }
    let mut c = vec![0u8; size];
    r.read_exact(&mut c)?;
    let mut crlf = [0u8; 2];
    r.read_exact(&mut crlf)?;
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that answers every request of a connection with a
    /// length-delimited 200 and closes a connection after `per_conn`
    /// requests; returns the requests' first lines.
    fn server(per_conn: usize, conns: usize) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for _ in 0..conns {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s);
                for n in 0..per_conn {
                    let mut first = String::new();
                    r.read_line(&mut first).unwrap();
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    lines.push(first.trim().to_string());
                    let b = format!("{{\"n\":{n}}}");
                    write!(
                        r.get_mut(),
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{b}",
                        b.len()
                    )
                    .unwrap();
                }
            }
            lines
        });
        (addr, h)
    }

    #[test]
    fn session_reuses_its_connection_and_reopens_a_closed_one() {
        let (addr, h) = server(2, 2);
        let mut s = Client::http(addr, "t").session();
        let body = serde_json::json!({"a": 1});
        for want in [0, 1, 0, 1] {
            let r = s.request("POST", "/x", &[], Some(&body)).unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["n"], want);
            if want == 1 {
                // Let the server close the connection while it is idle.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        assert_eq!(s.connects(), 2);
        assert_eq!(h.join().unwrap(), vec!["POST /x HTTP/1.1"; 4]);
    }
}
