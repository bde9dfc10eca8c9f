//! SIP over TCP and TLS on a shard (RFC 3261 §18, RFC 5630 for TLS): the
//! listeners, the connections and their framing.
//!
//! Every shard has its own listener on each `sip.tcp` address and on
//! `sip.tls`, in one `SO_REUSEPORT` group per address, so the kernel spreads
//! new connections over the shards. A connection lives on the shard that
//! accepted (or opened) it; one connection carries the messages of many
//! calls (SIPp and proxies multiplex everything over one), and those calls
//! belong to different shards. So the connection's shard frames the stream
//! ([`StreamFramer`]) and hands each message to its owner like a datagram,
//! tagged with the connection's shard; the owner sends its answers back
//! through that shard ([`super::sip::Handoff::Outbound`]). A request to a
//! peer without a connection (a TCP/TLS trunk) opens one from the sending
//! shard.
//!
//! All descriptors of a shard sit in one level-triggered epoll set, and the
//! shard's io_uring polls the epoll descriptor: the run loop sees one more
//! "socket". A turn handles at most [`EVENTS_MAX`] ready descriptors and
//! reads each for at most [`READS_PER_EVENT`] reads, so a fast peer cannot
//! starve media.
//!
//! Bounds: [`CONNS_MAX`] connections per shard (a new one beyond it is
//! refused and counted), [`MESSAGE_MAX`] per message (larger is a framing
//! error: the connection is closed), [`OUT_MAX`] unsent bytes per
//! connection (a peer that does not read is disconnected), and connections
//! silent for [`IDLE`] are closed.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::{Config, Transport};
use crate::sip::endpoint::Remote;
use crate::sip::stream::{Frame, StreamFramer, PONG};

/// Connections per shard.
pub const CONNS_MAX: usize = 2048;

/// Largest SIP message on a stream (the UDP datagram limit).
pub const MESSAGE_MAX: usize = 65_535;

/// Unsent bytes a connection may hold before it is closed.
pub const OUT_MAX: usize = 4 << 20;

/// A connection with no traffic this long is closed (RFC 5923 leaves the
/// choice to the implementation; calls refresh long before this with
/// session timers or media-plane keep-alives do not matter here).
pub const IDLE: Duration = Duration::from_secs(900);

/// Ready descriptors handled per turn.
pub const EVENTS_MAX: usize = 128;

/// Reads from one connection per readiness event.
pub const READS_PER_EVENT: usize = 16;

/// Accepts per listener per readiness event.
const ACCEPTS_PER_EVENT: usize = 64;

/// Pending connections a listener queues.
const BACKLOG: i32 = 1024;

/// Epoll data of a listener: this bit set, the listener's index below.
const LISTENER_BIT: u64 = 1 << 63;

/// Where the system keeps its CA bundle on Debian.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A bound listener before it is given to its shard.
pub struct Listener {
    sock: TcpListener,
    transport: Transport,
}

/// The TLS configurations, shared by the shards.
#[derive(Clone)]
pub struct TlsConfigs {
    server: Option<Arc<rustls::ServerConfig>>,
    client: Option<Arc<rustls::ClientConfig>>,
}

impl TlsConfigs {
    /// Whether TLS connections toward peers can be opened.
    pub fn has_client(&self) -> bool {
        self.client.is_some()
    }
}

/// Counters of the stream transports.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamCounters {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections opened toward peers.
    pub opened: u64,
    /// Connections that could not be opened or failed while connecting.
    pub connect_failed: u64,
    /// Connections refused because the shard holds [`CONNS_MAX`].
    pub refused_full: u64,
    /// Connections closed (by us or the peer).
    pub closed: u64,
    /// Connections closed because the stream could not be framed.
    pub frame_errors: u64,
    /// Connections closed on a TLS error (handshake, certificate, alert).
    pub tls_errors: u64,
    /// Connections closed because the peer did not read ([`OUT_MAX`]).
    pub overflowed: u64,
    /// Connections closed after [`IDLE`].
    pub idle_closed: u64,
    /// Messages framed off connections.
    pub rx: u64,
    /// Messages written to connections.
    pub tx: u64,
    /// Messages that had no connection to go on.
    pub tx_dropped: u64,
    /// RFC 5626 keep-alive pings answered.
    pub pings: u64,
}

struct Conn {
    sock: Socket,
    peer: SocketAddr,
    transport: Transport,
    /// For TLS.
    tls: Option<rustls::Connection>,
    framer: StreamFramer,
    /// Bytes not yet written to the socket (ciphertext for TLS is kept by
    /// rustls itself; this holds plain TCP bytes).
    out: Vec<u8>,
    connecting: bool,
    /// EPOLLOUT is in the interest set.
    want_out: bool,
    last: Instant,
}

/// The stream transports of one shard. See the module docs.
pub(super) struct Streams {
    epfd: OwnedFd,
    listeners: Vec<Listener>,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    by_peer: HashMap<(Transport, SocketAddr), u32>,
    tls: TlsConfigs,
    buf: Vec<u8>,
    events: Vec<libc::epoll_event>,
    next_sweep: Instant,
    pub counters: StreamCounters,
}

fn tls_error(e: impl std::fmt::Display, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the TLS server (certificate and key of `sip.tls`) and client
/// (trust anchors for TLS trunks) configurations.
pub fn tls_configs(cfg: &Config) -> io::Result<TlsConfigs> {
    let s = &cfg.sip;
    let server = match (&s.tls, &s.tls_cert, &s.tls_key) {
        (Some(_), Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| tls_error(e, &format!("sip.tls_cert {}", cert.display())))?;
            if certs.is_empty() {
                return Err(tls_error(
                    "no certificate in the file",
                    &format!("sip.tls_cert {}", cert.display()),
                ));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_error(e, &format!("sip.tls_key {}", key.display())))?;
            let c = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| tls_error(e, "TLS"))?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|e| tls_error(e, "sip.tls_cert/sip.tls_key"))?;
            Some(Arc::new(c))
        }
        _ => None,
    };
    let needs_client = cfg.trunks.iter().any(|t| t.transport == Transport::Tls)
        || cfg.contact_centre.transport == Transport::Tls;
    let client = if needs_client {
        let path = s
            .tls_ca
            .clone()
            .unwrap_or_else(|| Path::new(SYSTEM_CA_BUNDLE).to_path_buf());
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| tls_error(e, &format!("sip.tls_ca {}", path.display())))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(tls_error(
                "no usable CA certificate",
                &format!("sip.tls_ca {}", path.display()),
            ));
        }
        let c = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e, "TLS"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(Arc::new(c))
    } else {
        None
    };
    Ok(TlsConfigs { server, client })
}

/// Binds `n` listeners on `addr` in one `SO_REUSEPORT` group, after a
/// probe bind that makes a port held by another process a clear error.
pub fn bind_listeners(addr: SocketAddr, t: Transport, n: usize) -> io::Result<Vec<Listener>> {
    let domain = Domain::for_address(addr);
    let name = if t == Transport::Tls { "TLS" } else { "TCP" };
    let new = || -> io::Result<Socket> {
        let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        Ok(s)
    };
    // As for UDP (shard::sip::bind_group): a just-killed gateway's ring may
    // hold the port for a moment.
    let deadline = std::time::Instant::now() + super::sip::PORT_BUSY_WAIT;
    loop {
        let probe = new()?;
        match probe.bind(&addr.into()) {
            Ok(()) => break,
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("SIP {name} {addr}: {e} (is another SIP server running?)"),
                ))
            }
        }
    }
    (0..n)
        .map(|_| {
            let s = new()?;
            s.set_reuse_port(true)?;
            s.set_nonblocking(true)?;
            s.bind(&addr.into())
                .map_err(|e| io::Error::new(e.kind(), format!("SIP {name} {addr}: {e}")))?;
            s.listen(BACKLOG)?;
            Ok(Listener {
                sock: s.into(),
                transport: t,
            })
        })
        .collect()
}

fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: plain syscall on descriptors we own; `ev` outlives the call.
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const EV_IN: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
const EV_OUT: u32 = libc::EPOLLOUT as u32;

/// A message framed off a connection, for the shard to dispatch.
pub(super) struct Inbound {
    pub src: Remote,
    pub bytes: Vec<u8>,
}

/// Why a message could not be sent.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SendError {
    /// No connection and none could be opened (the counter says why).
    NoConnection,
}

impl Streams {
    pub(super) fn new(listeners: Vec<Listener>, tls: TlsConfigs, now: Instant) -> io::Result<Self> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        for (i, l) in listeners.iter().enumerate() {
            epoll_ctl(
                fd,
                libc::EPOLL_CTL_ADD,
                l.sock.as_raw_fd(),
                libc::EPOLLIN as u32,
                LISTENER_BIT | i as u64,
            )?;
        }
        Ok(Streams {
            epfd,
            listeners,
            conns: Vec::new(),
            free: Vec::new(),
            by_peer: HashMap::new(),
            tls,
            buf: vec![0; MESSAGE_MAX + 1],
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_MAX],
            next_sweep: now + IDLE,
            counters: StreamCounters::default(),
        })
    }

    /// The descriptor the run loop polls.
    pub(super) fn fd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }

    /// Open connections.
    pub(super) fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether any connection is still connecting.
    #[cfg(test)]
    fn conns_connecting(&self) -> bool {
        self.conns.iter().flatten().any(|c| c.connecting)
    }

    /// Whether a connection to `dst` is open on this shard.
    pub(super) fn has(&self, dst: Remote) -> bool {
        self.by_peer.contains_key(&(dst.transport, dst.addr))
    }

    /// Handles ready descriptors: accepts, connects completing, reads
    /// (framed messages go to `out`), writes. True when work is left for
    /// the next turn (the budget ran out).
    pub(super) fn poll(&mut self, now: Instant, out: &mut Vec<Inbound>) -> bool {
        if now >= self.next_sweep {
            self.sweep(now);
        }
        // SAFETY: the buffer holds EVENTS_MAX entries; timeout 0 never
        // blocks.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS_MAX as i32,
                0,
            )
        };
        if n <= 0 {
            return false;
        }
        let mut more = n as usize == EVENTS_MAX;
        for k in 0..n as usize {
            let ev = self.events[k];
            let (flags, data) = (ev.events, ev.u64);
            if data & LISTENER_BIT != 0 {
                more |= self.accept(now, (data & !LISTENER_BIT) as usize);
                continue;
            }
            let idx = data as u32;
            if flags & EV_OUT != 0 {
                self.on_writable(idx);
            }
            if flags & (EV_IN | (libc::EPOLLHUP | libc::EPOLLERR) as u32) != 0 {
                more |= self.on_readable(now, idx, out);
            }
        }
        more
    }

    fn accept(&mut self, now: Instant, i: usize) -> bool {
        for _ in 0..ACCEPTS_PER_EVENT {
            let (sock, peer) = match self.listeners[i].sock.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EMFILE and the like: the pending connection stays queued;
                // try again next turn rather than spin now.
                Err(_) => return false,
            };
            let t = self.listeners[i].transport;
            if self.by_peer.len() >= CONNS_MAX {
                self.counters.refused_full += 1;
                continue;
            }
            let tls = match t {
                Transport::Tls => {
                    let Some(cfg) = self.tls.server.clone() else {
                        continue;
                    };
                    match rustls::ServerConnection::new(cfg) {
                        Ok(c) => Some(rustls::Connection::Server(c)),
                        Err(_) => {
                            self.counters.tls_errors += 1;
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let sock = Socket::from(sock);
            if sock.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = sock.set_nodelay(true);
            if self.insert(now, sock, peer, t, tls, false).is_some() {
                self.counters.accepted += 1;
            }
        }
        true
    }

    fn insert(
        &mut self,
        now: Instant,
        sock: Socket,
        peer: SocketAddr,
        transport: Transport,
        tls: Option<rustls::Connection>,
        connecting: bool,
    ) -> Option<u32> {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                (self.conns.len() - 1) as u32
            }
        };
        let events = if connecting { EV_IN | EV_OUT } else { EV_IN };
        if epoll_ctl(
            self.epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            sock.as_raw_fd(),
            events,
            u64::from(idx),
        )
        .is_err()
        {
            self.free.push(idx);
            return None;
        }
        let mut tls = tls;
        if let Some(t) = tls.as_mut() {
            t.set_buffer_limit(Some(OUT_MAX));
        }
        // A newer connection from the same peer replaces the older one in
        // the index (the old one still works until it closes).
        self.by_peer.insert((transport, peer), idx);
        self.conns[idx as usize] = Some(Conn {
            sock,
            peer,
            transport,
            tls,
            framer: StreamFramer::new(MESSAGE_MAX),
            out: Vec::new(),
            connecting,
            want_out: connecting,
            last: now,
        });
        Some(idx)
    }

    fn close(&mut self, idx: u32) {
        let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::take) else {
            return;
        };
        // Closing the descriptor takes it out of the epoll set.
        if self.by_peer.get(&(c.transport, c.peer)) == Some(&idx) {
            self.by_peer.remove(&(c.transport, c.peer));
        }
        self.free.push(idx);
        self.counters.closed += 1;
    }

    fn on_writable(&mut self, idx: u32) {
        let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        if c.connecting {
            match c.sock.take_error() {
                Ok(None) => c.connecting = false,
                _ => {
                    self.counters.connect_failed += 1;
                    return self.close(idx);
                }
            }
        }
        if self.flush(idx).is_err() {
            self.close(idx);
        }
    }

    /// Writes what is pending; keeps EPOLLOUT in the interest set exactly
    /// while something is left.
    fn flush(&mut self, idx: u32) -> io::Result<()> {
        let epfd = self.epfd.as_raw_fd();
        let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return Ok(());
        };
        if c.connecting {
            return Ok(());
        }
        let mut blocked = false;
        if let Some(tls) = c.tls.as_mut() {
            while tls.wants_write() {
                match tls.write_tls(&mut SockIo(&c.sock)) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        } else {
            let mut done = 0;
            while done < c.out.len() {
                match (&c.sock).write(&c.out[done..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            c.out.drain(..done);
        }
        if blocked != c.want_out {
            let ev = if blocked { EV_IN | EV_OUT } else { EV_IN };
            epoll_ctl(
                epfd,
                libc::EPOLL_CTL_MOD,
                c.sock.as_raw_fd(),
                ev,
                u64::from(idx),
            )?;
            c.want_out = blocked;
        }
        Ok(())
    }

    /// Reads a connection; false when it was drained (or closed).
    fn on_readable(&mut self, now: Instant, idx: u32, out: &mut Vec<Inbound>) -> bool {
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.read_conn(now, idx, &mut buf, out);
        self.buf = buf;
        match r {
            Ok(more) => {
                if self.flush(idx).is_err() {
                    self.close(idx);
                    return false;
                }
                more
            }
            Err(()) => {
                // A TLS alert may be queued; a last best-effort write.
                let _ = self.flush(idx);
                self.close(idx);
                false
            }
        }
    }

    fn read_conn(
        &mut self,
        now: Instant,
        idx: u32,
        buf: &mut [u8],
        out: &mut Vec<Inbound>,
    ) -> Result<bool, ()> {
        let counters = &mut self.counters;
        let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            return Ok(false);
        };
        if c.connecting {
            // Readable before writable: the connect failed (RST).
            if !matches!(c.sock.take_error(), Ok(None)) {
                counters.connect_failed += 1;
                return Err(());
            }
            c.connecting = false;
        }
        for _ in 0..READS_PER_EVENT {
            if c.tls.is_none() {
                match (&c.sock).read(buf) {
                    Ok(0) => return Err(()),
                    Ok(n) => c.framer.push(&buf[..n]).map_err(|_| {
                        counters.frame_errors += 1;
                    })?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(()),
                }
            } else {
                let r = match c.tls.as_mut() {
                    Some(tls) => tls.read_tls(&mut SockIo(&c.sock)),
                    None => return Err(()),
                };
                match r {
                    Ok(0) => return Err(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(()),
                }
                if c.tls
                    .as_mut()
                    .is_some_and(|t| t.process_new_packets().is_err())
                {
                    counters.tls_errors += 1;
                    return Err(());
                }
                loop {
                    let r = match c.tls.as_mut() {
                        Some(tls) => tls.reader().read(buf),
                        None => return Err(()),
                    };
                    match r {
                        Ok(0) => return Err(()), // close_notify
                        Ok(k) => c.framer.push(&buf[..k]).map_err(|_| {
                            counters.frame_errors += 1;
                        })?,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return Err(()),
                    }
                    // Drain frames between reads so the framer's buffer
                    // stays within one message plus one read.
                    drain_frames(c, counters, out)?;
                }
            }
            c.last = now;
            drain_frames(c, counters, out)?;
        }
        Ok(true)
    }

    /// Sends `bytes` on the connection to `dst`, opening one if there is
    /// none and `open` allows it.
    pub(super) fn send(
        &mut self,
        now: Instant,
        dst: Remote,
        bytes: &[u8],
        open: bool,
    ) -> Result<(), SendError> {
        let idx = match self.by_peer.get(&(dst.transport, dst.addr)) {
            Some(&i) => i,
            None if open => self.open(now, dst).ok_or(SendError::NoConnection)?,
            None => {
                self.counters.tx_dropped += 1;
                return Err(SendError::NoConnection);
            }
        };
        let Some(c) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
            self.counters.tx_dropped += 1;
            return Err(SendError::NoConnection);
        };
        match c.tls.as_mut() {
            // rustls holds plaintext until the handshake is done and
            // ciphertext until written, up to its buffer limit (set to
            // OUT_MAX): a write it cannot take means the peer does not read.
            Some(t) => {
                if t.writer().write_all(bytes).is_err() {
                    self.counters.overflowed += 1;
                    self.close(idx);
                    return Err(SendError::NoConnection);
                }
            }
            None => {
                if c.out.len() + bytes.len() > OUT_MAX {
                    self.counters.overflowed += 1;
                    self.close(idx);
                    return Err(SendError::NoConnection);
                }
                c.out.extend_from_slice(bytes);
            }
        }
        self.counters.tx += 1;
        if self.flush(idx).is_err() {
            self.close(idx);
        }
        Ok(())
    }

    fn open(&mut self, now: Instant, dst: Remote) -> Option<u32> {
        if self.by_peer.len() >= CONNS_MAX {
            self.counters.refused_full += 1;
            return None;
        }
        let tls = match dst.transport {
            Transport::Tls => {
                let Some(cfg) = self.tls.client.clone() else {
                    self.counters.connect_failed += 1;
                    return None;
                };
                let name = ServerName::IpAddress(dst.addr.ip().into());
                match rustls::ClientConnection::new(cfg, name) {
                    Ok(c) => Some(rustls::Connection::Client(c)),
                    Err(_) => {
                        self.counters.tls_errors += 1;
                        return None;
                    }
                }
            }
            _ => None,
        };
        let sock = Socket::new(
            Domain::for_address(dst.addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .and_then(|s| {
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            Ok(s)
        });
        let Ok(sock) = sock else {
            self.counters.connect_failed += 1;
            return None;
        };
        match sock.connect(&SockAddr::from(dst.addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(_) => {
                self.counters.connect_failed += 1;
                return None;
            }
        }
        let idx = self.insert(now, sock, dst.addr, dst.transport, tls, true)?;
        self.counters.opened += 1;
        Some(idx)
    }

    /// Closes connections silent for [`IDLE`].
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = now + IDLE / 4;
        let idle: Vec<u32> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.as_ref()
                    .filter(|c| now.duration_since(c.last) >= IDLE)
                    .map(|_| i as u32)
            })
            .collect();
        for i in idle {
            self.counters.idle_closed += 1;
            self.close(i);
        }
    }
}

/// Frames what a connection has buffered; a framing error is final.
fn drain_frames(
    c: &mut Conn,
    counters: &mut StreamCounters,
    out: &mut Vec<Inbound>,
) -> Result<(), ()> {
    while let Some(f) = c.framer.next() {
        match f {
            Ok(Frame::Message(bytes)) => {
                counters.rx += 1;
                out.push(Inbound {
                    src: Remote {
                        addr: c.peer,
                        transport: c.transport,
                    },
                    bytes,
                });
            }
            Ok(Frame::KeepAlive) => {
                counters.pings += 1;
                match c.tls.as_mut() {
                    Some(t) => {
                        let _ = t.writer().write_all(PONG);
                    }
                    None => c.out.extend_from_slice(PONG),
                }
            }
            Ok(Frame::Pong) => {}
            Err(_) => {
                counters.frame_errors += 1;
                return Err(());
            }
        }
    }
    Ok(())
}

/// `Read`/`Write` over a shared socket reference, for rustls.
struct SockIo<'a>(&'a Socket);

impl Read for SockIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.0;
        s.read(buf)
    }
}

impl Write for SockIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.0;
        s.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::net::{Ipv4Addr, TcpStream};

    /// A shard's streams with one TCP listener on a free loopback port.
    fn streams() -> (Streams, SocketAddr) {
        let l = bind_listeners((Ipv4Addr::LOCALHOST, 0).into(), Transport::Tcp, 1)
            .unwrap()
            .remove(0);
        let addr = l.sock.local_addr().unwrap();
        let tls = TlsConfigs {
            server: None,
            client: None,
        };
        (Streams::new(vec![l], tls, Instant::now()).unwrap(), addr)
    }

    /// Polls until `f` holds (bounded: 2 s).
    fn poll_until(
        st: &mut Streams,
        out: &mut Vec<Inbound>,
        f: impl Fn(&Streams, &[Inbound]) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !f(st, out) {
            assert!(
                Instant::now() < deadline,
                "condition not reached: {:?}",
                st.counters
            );
            st.poll(Instant::now(), out);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 3\r\n\r\nabc";

    #[test]
    fn frames_messages_answers_pings_and_writes_back() {
        let (mut st, addr) = streams();
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // Two messages and a ping, split at awkward places.
        let mut all = MSG.to_vec();
        all.extend_from_slice(b"\r\n\r\n");
        all.extend_from_slice(MSG);
        c.write_all(&all[..10]).unwrap();
        let mut out = Vec::new();
        poll_until(&mut st, &mut out, |s, _| s.counters.accepted == 1);
        c.write_all(&all[10..]).unwrap();
        poll_until(&mut st, &mut out, |_, o| o.len() == 2);
        assert!(out
            .iter()
            .all(|m| m.bytes == MSG && m.src.transport == Transport::Tcp));
        let peer = out[0].src;
        assert_eq!(peer.addr, c.local_addr().unwrap());
        assert_eq!(st.counters.pings, 1);
        let mut pong = [0u8; 2];
        c.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, PONG);
        // An answer goes back on the same connection.
        st.send(Instant::now(), peer, b"SIP/2.0 200 OK\r\n\r\n", false)
            .unwrap();
        let mut back = [0u8; 18];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"SIP/2.0 200 OK\r\n\r\n");
        assert_eq!(st.len(), 1);
        // The peer hangs up: the connection is closed and forgotten.
        drop(c);
        poll_until(&mut st, &mut out, |s, _| s.counters.closed == 1);
        assert_eq!(st.len(), 0);
        assert_eq!(
            st.send(Instant::now(), peer, b"x", false),
            Err(SendError::NoConnection)
        );
        assert_eq!(st.counters.tx_dropped, 1);
    }

    #[test]
    fn unframable_stream_is_closed_and_counted() {
        let (mut st, addr) = streams();
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.write_all(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        poll_until(&mut st, &mut out, |s, _| s.counters.closed == 1);
        assert_eq!(st.counters.frame_errors, 1);
        assert!(out.is_empty());
        let mut b = [0u8; 8];
        assert_eq!(c.read(&mut b).unwrap_or(0), 0, "connection not closed");
    }

    #[test]
    fn opens_a_connection_to_a_peer_without_one() {
        let (mut st, _) = streams();
        let far = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let dst = Remote {
            addr: far.local_addr().unwrap(),
            transport: Transport::Tcp,
        };
        st.send(Instant::now(), dst, MSG, true).unwrap();
        assert_eq!(st.counters.opened, 1);
        let (mut s, _) = far.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = Vec::new();
        // The connect completes and the queued message is written.
        let mut got = vec![0u8; MSG.len()];
        poll_until(&mut st, &mut out, |s, _| !s.conns_connecting());
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, MSG);
        // A refused connect is counted, and the message is not lost
        // silently: the next send fails.
        drop(far);
        let gone = Remote {
            addr: (Ipv4Addr::LOCALHOST, dst.addr.port()).into(),
            transport: Transport::Tcp,
        };
        drop(s);
        poll_until(&mut st, &mut out, |s, _| s.len() == 0);
        let _ = st.send(Instant::now(), gone, MSG, true);
        poll_until(&mut st, &mut out, |s, _| s.counters.connect_failed == 1);
    }
}
