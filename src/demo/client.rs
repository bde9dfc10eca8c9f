//! A small blocking HTTPS client for the portal API: what `kolokol demo`,
//! the API's integration tests and the API load tool use. HTTP/1.1 over
//! rustls, one connection per request (`Connection: close`), chunked or
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

    fn connect(&self) -> io::Result<Box<dyn ReadWrite>> {
        let sock = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        sock.set_read_timeout(Some(self.timeout))?;
        sock.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(sock)),
            Some(cfg) => {
                let name = ServerName::IpAddress(self.addr.ip().into());
                let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(invalid)?;
                Ok(Box::new(rustls::StreamOwned::new(conn, sock)))
            }
        }
    }

    fn head(&self, method: &str, path: &str, headers: &[(&str, &str)], len: usize) -> String {
        let mut h = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
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
        let mut s = self.connect()?;
        s.write_all(self.head(method, path, headers, body.len()).as_bytes())?;
        s.write_all(body.as_bytes())?;
        s.flush()?;
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r)?;
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        let len = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.trim().parse::<usize>().ok());
        let mut body = Vec::new();
        if chunked {
            while let Some(c) = read_chunk(&mut r)? {
                body.extend_from_slice(&c);
            }
        } else if let Some(n) = len {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        } else {
            // Close-delimited; a TLS peer that closes without close_notify
            // ends the body too.
            let _ = r.read_to_end(&mut body);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
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
        let mut s = self.connect()?;
        s.write_all(
            self.head("GET", path, &[("Accept", "text/event-stream")], 0)
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

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

fn read_head(r: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
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
