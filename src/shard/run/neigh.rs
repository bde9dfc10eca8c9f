//! Egress of offloaded entries from the shard's own neighbour table
//! (issue 7): the XDP relay sends an entry with a known egress (interface,
//! next hop's MAC, own MAC) straight out, without `bpf_fib_lookup`, which
//! costs ~80 ns a packet and refuses (FWD_DISABLED) where IPv4 forwarding
//! is off on the ingress interface.
//!
//! The egress interface is the `xdp_interface` whose IPv4 subnet holds the
//! destination; the next hop is the destination itself (on-link). Its MAC
//! comes from the kernel's neighbour table (`/proc/net/arp`, complete
//! entries of that interface), re-read at most every [`REREAD_MIN`] on a
//! miss and at the start of each re-validation pass, plus what the AF_XDP
//! path learned from received frames (the caller passes that). A
//! destination on no such subnet, or with no MAC known, has no egress: the
//! entry keeps the FIB lookup, exactly as without this table.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::xsk::{if_nets, in_net, kernel_arp};
use crate::media::xdp::Egress;

/// Neighbour entries kept (the table is cleared when full).
const NEIGH_MAX: usize = 65_536;
/// Least time between two reads of the kernel's table on misses.
pub(super) const REREAD_MIN: Duration = Duration::from_millis(20);

struct Iface {
    name: String,
    ifindex: u32,
    mac: [u8; 6],
    /// IPv4 networks on the interface (address, prefix length).
    nets: Vec<(Ipv4Addr, u8)>,
}

/// The interfaces of `xdp_interface` and their neighbours' MACs.
pub(super) struct NeighTable {
    ifaces: Vec<Iface>,
    /// Next hop -> (MAC, index in `ifaces`).
    neigh: HashMap<Ipv4Addr, ([u8; 6], usize)>,
    read_at: Option<Instant>,
    /// Kernel table reads so far.
    pub(super) reads: u64,
}

impl NeighTable {
    /// The table of `names` (those this namespace has, with a MAC and an
    /// IPv4 subnet); empty when none does.
    pub(super) fn open(names: &[String]) -> NeighTable {
        let ifaces = names
            .iter()
            .filter_map(|n| {
                Some(Iface {
                    name: n.clone(),
                    ifindex: crate::media::xdp::ifindex(n)?,
                    mac: crate::media::xdp::mac(n)?,
                    nets: if_nets(n),
                })
            })
            .filter(|f| !f.nets.is_empty())
            .collect();
        let mut t = NeighTable {
            ifaces,
            neigh: HashMap::new(),
            read_at: None,
            reads: 0,
        };
        t.read_kernel();
        t
    }

    /// Whether the table has any interface (else every lookup is `None`).
    pub(super) fn is_empty(&self) -> bool {
        self.ifaces.is_empty()
    }

    /// Takes in the kernel's complete neighbour entries of our interfaces.
    pub(super) fn read_kernel(&mut self) {
        if self.ifaces.is_empty() {
            return;
        }
        self.reads += 1;
        self.read_at = Some(Instant::now());
        self.take(kernel_arp());
    }

    fn take(&mut self, arp: Vec<(Ipv4Addr, [u8; 6], String)>) {
        for (ip, mac, dev) in arp {
            if let Some(i) = self.ifaces.iter().position(|f| f.name == dev) {
                if self.neigh.get(&ip) != Some(&(mac, i)) {
                    if self.neigh.len() >= NEIGH_MAX {
                        self.neigh.clear();
                    }
                    self.neigh.insert(ip, (mac, i));
                }
            }
        }
    }

    /// The interface (index) whose subnet holds `dst`.
    fn iface_of(&self, dst: Ipv4Addr) -> Option<usize> {
        self.ifaces
            .iter()
            .position(|f| f.nets.iter().any(|&(n, p)| in_net(dst, n, p)))
    }

    /// The egress toward on-link `dst`, if its interface and MAC are known.
    /// `learned` is a MAC the caller learned otherwise (the AF_XDP path's
    /// table, from received frames), used when the kernel's table has none:
    /// the kernel's is the one kept current while XDP carries a leg's
    /// packets (ARP, gratuitous ARP, its own probes), while frames no
    /// longer reach the AF_XDP path then. A miss of both re-reads the
    /// kernel's table, at most every [`REREAD_MIN`].
    pub(super) fn egress(&mut self, dst: Ipv4Addr, learned: Option<[u8; 6]>) -> Option<Egress> {
        let i = self.iface_of(dst)?;
        let mut mac = self.mac_on(dst, i);
        if mac.is_none()
            && learned.is_none()
            && self.read_at.is_none_or(|t| t.elapsed() >= REREAD_MIN)
        {
            self.read_kernel();
            mac = self.mac_on(dst, i);
        }
        let mac = mac.or(learned);
        let f = &self.ifaces[i];
        Some(Egress {
            ifindex: f.ifindex,
            dst_mac: mac?,
            src_mac: f.mac,
        })
    }

    fn mac_on(&self, dst: Ipv4Addr, i: usize) -> Option<[u8; 6]> {
        self.neigh
            .get(&dst)
            .filter(|&&(_, at)| at == i)
            .map(|&(m, _)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> NeighTable {
        NeighTable {
            ifaces: vec![
                Iface {
                    name: "a0".into(),
                    ifindex: 7,
                    mac: [2, 0, 0, 0, 0, 7],
                    nets: vec![(Ipv4Addr::new(10, 1, 0, 1), 24)],
                },
                Iface {
                    name: "b0".into(),
                    ifindex: 9,
                    mac: [2, 0, 0, 0, 0, 9],
                    nets: vec![(Ipv4Addr::new(10, 2, 0, 1), 16)],
                },
            ],
            neigh: HashMap::new(),
            // Never re-read the real kernel table in these tests.
            read_at: Some(Instant::now() + Duration::from_secs(3600)),
            reads: 0,
        }
    }

    #[test]
    fn egress_by_subnet_and_neighbour() {
        let mut t = table();
        let (m1, m2) = ([0xaa, 0, 0, 0, 0, 1], [0xbb, 0, 0, 0, 0, 2]);
        t.take(vec![
            (Ipv4Addr::new(10, 1, 0, 5), m1, "a0".into()),
            (Ipv4Addr::new(10, 2, 3, 4), m2, "b0".into()),
            (Ipv4Addr::new(10, 3, 0, 1), m2, "other".into()),
        ]);
        let e = t.egress(Ipv4Addr::new(10, 1, 0, 5), None).expect("known");
        assert_eq!(
            (e.ifindex, e.dst_mac, e.src_mac),
            (7, m1, [2, 0, 0, 0, 0, 7])
        );
        let e = t.egress(Ipv4Addr::new(10, 2, 3, 4), None).expect("known");
        assert_eq!((e.ifindex, e.dst_mac), (9, m2));
        // On a subnet, MAC unknown: none, unless learned elsewhere.
        assert_eq!(t.egress(Ipv4Addr::new(10, 1, 0, 6), None), None);
        let e = t
            .egress(Ipv4Addr::new(10, 1, 0, 6), Some(m2))
            .expect("learned");
        assert_eq!((e.ifindex, e.dst_mac), (7, m2));
        // Off every subnet (routed): none, even with a MAC.
        assert_eq!(t.egress(Ipv4Addr::new(10, 3, 0, 1), Some(m1)), None);
        // A neighbour seen on another interface than its subnet's: not used.
        t.take(vec![(Ipv4Addr::new(10, 1, 0, 9), m1, "b0".into())]);
        assert_eq!(t.egress(Ipv4Addr::new(10, 1, 0, 9), None), None);
    }

    #[test]
    fn a_changed_mac_replaces_the_old_one() {
        let mut t = table();
        let ip = Ipv4Addr::new(10, 1, 0, 5);
        t.take(vec![(ip, [1; 6], "a0".into())]);
        t.take(vec![(ip, [3; 6], "a0".into())]);
        assert_eq!(t.egress(ip, None).map(|e| e.dst_mac), Some([3; 6]));
        // The kernel's entry wins over one learned from frames.
        assert_eq!(t.egress(ip, Some([4; 6])).map(|e| e.dst_mac), Some([3; 6]));
    }

    #[test]
    fn no_interfaces_no_egress() {
        let mut t = NeighTable::open(&[]);
        assert!(t.is_empty());
        assert_eq!(t.egress(Ipv4Addr::new(10, 1, 0, 5), Some([1; 6])), None);
        assert_eq!(t.reads, 0);
    }
}
