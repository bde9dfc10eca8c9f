// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/*
 * Kolokol's XDP relay (DESIGN.md, "Two data paths behind one relay table").
 *
 * A plain-RTP leg whose remote is known and that needs no userspace work is
 * installed by its shard into `relay_map`, keyed by the local address and
 * port the remote sends to. For a matching IPv4/UDP datagram this program
 * checks the source (strict mode: drop and count), rewrites MACs, addresses
 * and ports with incremental IP and UDP checksum updates, counts it in the
 * entry's per-CPU counters and sends it with XDP_TX (same interface) or
 * bpf_redirect. An entry with action TO_USER instead goes to the AF_XDP
 * socket of the receiving queue (`xsks`), for the shard to relay it in
 * userspace (SRTP, socket-less legs). Everything else (unknown ports, fragments, IP options,
 * non-IPv4, VLAN tags) goes to the stack untouched: the socket path handles
 * it.
 *
 * The map layouts are mirrored by src/media/xdp/mod.rs (RawKey, RawEntry,
 * RawCounters); every address and port is in network byte order.
 *
 * Built by build.rs with `clang -O2 -g -target bpf` when clang and
 * libbpf-dev are present.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET 2
#endif

struct relay_key {
	__u32 addr; /* local IPv4 address the remote sends to */
	__u16 port; /* local UDP port */
	__u16 pad;
};

struct relay_entry {
	__u32 expect_addr; /* expected source (0: any) */
	__u16 expect_port; /* expected source port (0: any) */
	__u8 strict;       /* 1: drop a datagram from another source */
	__u8 action;       /* enum action: FORWARD or TO_USER */
	__u32 new_saddr; /* our egress socket address toward the peer */
	__u16 new_sport;
	__u16 pad1;
	__u32 new_daddr; /* the peer's remote address */
	__u16 new_dport;
	__u16 pad2;
	__u8 dst_mac[ETH_ALEN]; /* next hop's MAC */
	__u8 src_mac[ETH_ALEN]; /* egress interface's MAC */
	__u32 ifindex;          /* egress interface; 0: FIB lookup */
};

/* What a matching datagram gets. */
enum action {
	ACTION_FORWARD = 0, /* rewrite and send (XDP_TX / redirect) */
	ACTION_TO_USER = 1, /* to the AF_XDP socket of the rx queue (xsks) */
	/* FORWARD, but when the FIB has no answer (no route, no neighbour)
	 * to the AF_XDP socket instead of the stack: a socket-less leg has no
	 * socket there to catch it. */
	ACTION_FORWARD_USER = 2,
};

struct relay_counters {
	__u64 packets;
	__u64 bytes;
	__u64 src_drops;
	__u64 last_seen_ns;
};

/* Program-wide counters, index = enum stat. */
enum stat {
	STAT_PASS_NOT_UDP4 = 0,
	STAT_PASS_NO_ENTRY = 1,
	STAT_PASS_OTHER = 2, /* fragments, options, FIB miss */
	STAT_FORWARDED = 3,
	STAT_DROP_SOURCE = 4,
	STAT_REDIRECT_ERR = 5,
	STAT_TO_USER = 6, /* TO_USER: redirected to the queue's XSK (or passed if none) */
	STAT_COUNT = 7,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct relay_key);
	__type(value, struct relay_entry);
} relay_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct relay_key);
	__type(value, struct relay_counters);
} relay_ctrs SEC(".maps");

/* AF_XDP sockets by (interface, rx queue): an XSK receives only from the
 * device and queue it is bound to, and queue numbers repeat across
 * interfaces, so `xsk_ifs` gives each interface a base index and
 * `xsks[base + rx_queue_index]` holds the socket a shard registered. An
 * interface or queue without one passes TO_USER traffic to the stack
 * (bpf_redirect_map's XDP_PASS fallback). */
#define XSK_QUEUES_PER_IF 64
#define XSK_IFS_MAX 16

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XSK_QUEUES_PER_IF * XSK_IFS_MAX);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XSK_IFS_MAX);
	__type(key, __u32);   /* ifindex */
	__type(value, __u32); /* base index in xsks */
} xsk_ifs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} relay_stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&relay_stats, &idx);
	if (v)
		*v += 1;
}

/* RFC 1624 incremental update: HC' = ~(~HC + ~m + m'). Byte order does not
 * matter as long as old and new words are taken the same way. */
static __always_inline __u16 csum_fold32(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)c;
}

static __always_inline __u32 csum_add16(__u32 acc, __u16 old, __u16 new)
{
	return acc + (__u16)~old + new;
}

static __always_inline __u32 csum_add32(__u32 acc, __u32 old, __u32 new)
{
	acc = csum_add16(acc, (__u16)(old >> 16), (__u16)(new >> 16));
	return csum_add16(acc, (__u16)old, (__u16)new);
}

SEC("xdp")
int kolokol_relay(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;

	if ((void *)(eth + 1) > data_end)
		goto not_udp4;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		goto not_udp4;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		goto not_udp4;
	if (ip->protocol != IPPROTO_UDP || ip->version != 4)
		goto not_udp4;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		goto not_udp4;

	struct relay_key key = {
		.addr = ip->daddr,
		.port = udp->dest,
		.pad = 0,
	};
	struct relay_entry *e = bpf_map_lookup_elem(&relay_map, &key);
	if (!e) {
		stat_inc(STAT_PASS_NO_ENTRY);
		return XDP_PASS;
	}
	/* Options or fragments: leave them to the socket path. */
	if (ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff))) {
		stat_inc(STAT_PASS_OTHER);
		return XDP_PASS;
	}

	struct relay_counters *c = bpf_map_lookup_elem(&relay_ctrs, &key);
	if (e->action == ACTION_TO_USER) {
		/* The shard does source checks, SRTP and the rewrite. */
		if (c) {
			c->packets += 1;
			c->bytes += (__u64)(data_end - data);
			c->last_seen_ns = bpf_ktime_get_ns();
		}
		goto to_user;
	}
	if (e->strict && ((e->expect_addr && ip->saddr != e->expect_addr) ||
			  (e->expect_port && udp->source != e->expect_port))) {
		if (c)
			c->src_drops += 1;
		stat_inc(STAT_DROP_SOURCE);
		return XDP_DROP;
	}

	__u32 ifindex = e->ifindex;
	__u8 dmac[ETH_ALEN], smac[ETH_ALEN];
	__builtin_memcpy(dmac, e->dst_mac, ETH_ALEN);
	__builtin_memcpy(smac, e->src_mac, ETH_ALEN);
	if (ifindex == 0) {
		struct bpf_fib_lookup fib = {};
		fib.family = AF_INET;
		fib.l4_protocol = IPPROTO_UDP;
		fib.tot_len = bpf_ntohs(ip->tot_len);
		fib.ipv4_src = e->new_saddr;
		fib.ipv4_dst = e->new_daddr;
		fib.ifindex = ctx->ingress_ifindex;
		if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS) {
			if (e->action == ACTION_FORWARD_USER)
				goto to_user;
			stat_inc(STAT_PASS_OTHER);
			return XDP_PASS;
		}
		ifindex = fib.ifindex;
		__builtin_memcpy(dmac, fib.dmac, ETH_ALEN);
		__builtin_memcpy(smac, fib.smac, ETH_ALEN);
	}

	/* IP header: addresses. */
	__u32 ipc = (__u16)~ip->check;
	ipc = csum_add32(ipc, ip->saddr, e->new_saddr);
	ipc = csum_add32(ipc, ip->daddr, e->new_daddr);
	ip->check = ~csum_fold32(ipc);

	/* UDP: pseudo-header addresses and ports (0 = no checksum, IPv4). */
	if (udp->check) {
		__u32 uc = (__u16)~udp->check;
		uc = csum_add32(uc, ip->saddr, e->new_saddr);
		uc = csum_add32(uc, ip->daddr, e->new_daddr);
		uc = csum_add16(uc, udp->source, e->new_sport);
		uc = csum_add16(uc, udp->dest, e->new_dport);
		__u16 sum = ~csum_fold32(uc);
		udp->check = sum ? sum : 0xffff;
	}
	ip->saddr = e->new_saddr;
	ip->daddr = e->new_daddr;
	udp->source = e->new_sport;
	udp->dest = e->new_dport;
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);

	if (c) {
		c->packets += 1;
		c->bytes += (__u64)(data_end - data);
		c->last_seen_ns = bpf_ktime_get_ns();
	}
	stat_inc(STAT_FORWARDED);
	if (ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	long rc = bpf_redirect(ifindex, 0);
	if (rc != XDP_REDIRECT)
		stat_inc(STAT_REDIRECT_ERR);
	return rc;

to_user:
	stat_inc(STAT_TO_USER);
	{
		__u32 ifx = ctx->ingress_ifindex;
		__u32 *base = bpf_map_lookup_elem(&xsk_ifs, &ifx);
		if (!base || ctx->rx_queue_index >= XSK_QUEUES_PER_IF)
			return XDP_PASS;
		return bpf_redirect_map(&xsks, *base + ctx->rx_queue_index, XDP_PASS);
	}

not_udp4:
	stat_inc(STAT_PASS_NOT_UDP4);
	return XDP_PASS;
}

/* For the receiving peers of a veth pair: native XDP redirect into a veth
 * needs a program on the peer. */
SEC("xdp")
int kolokol_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
