// SPDX-License-Identifier: Apache-2.0
/*
 * xsbc XDP program: steers SIP and RTP to AF_XDP sockets, drops banned
 * sources and UDP to the relay's unused media ports, and passes everything
 * else to the kernel.
 *
 * Verdicts, in the order they are decided:
 *
 *   not IPv4/IPv6 (ARP, LLDP, QinQ, ...)      -> XDP_PASS     passed_not_ip
 *   a header shorter than it must be           -> XDP_PASS     passed_truncated
 *   source address in `bans` (any protocol)    -> XDP_DROP     dropped_banned
 *   not UDP (TCP, ICMP, IPv6 ext. headers)     -> XDP_PASS     passed_not_udp
 *   IPv4 fragment (first or not)               -> XDP_PASS     passed_fragment
 *   (dst addr, dst port) in `media_ports`      -> redirect     redirected_media
 *   dst port in `sip_ports`                    -> redirect     redirected_sip
 *   dst port in the `relay_ports` range of     -> XDP_DROP     dropped_no_session
 *     the dst addr (a media port, no session)
 *   any other UDP                              -> XDP_PASS     passed_no_match
 *
 * "redirect" is bpf_redirect_map(&xsks, rx_queue_index, XDP_PASS): when no
 * AF_XDP socket is bound for the queue, the packet goes to the kernel and
 * redirect_failed is counted as well as redirected_media/redirected_sip.
 * Every other packet increments exactly one counter.
 *
 * The ban check runs on every IPv4/IPv6 packet, not only UDP: a banned source
 * (SIP brute force, scanners) then costs nothing on TCP/TLS SIP either.
 *
 * `relay_ports` holds, per local address the relay allocates media ports on,
 * its port range: UDP to a port of that range with no `media_ports` entry has
 * no session (never had, or ended), so nobody would read it. The relay puts a
 * port in `media_ports` before the SDP that advertises it goes out, so a new
 * session's first packet is steered, not dropped. SIP ports are looked up
 * first, so a SIP port inside the range is still steered.
 *
 * Everything shared with userspace lives in the maps below. Their names, the
 * key/value layouts and the counter indexes are mirrored in the `xdp_prog`
 * crate (src/types.rs, src/counters.rs); its unit tests compare them with this
 * file and with the compiled object.
 *
 * Addresses: one 16-byte form for both families. IPv4 is stored IPv4-mapped
 * (::ffff:a.b.c.d), so an IPv4 /N ban is stored with prefixlen N + 96.
 * Addresses are in network byte order; ports in map keys are in host order.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Counter indexes into `counters`. Mirrored by `xdp_prog::Counter`. */
enum xsbc_counter {
	XSBC_CNT_PASSED_NOT_IP = 0,
	XSBC_CNT_PASSED_NOT_UDP = 1,
	XSBC_CNT_PASSED_FRAGMENT = 2,
	XSBC_CNT_PASSED_TRUNCATED = 3,
	XSBC_CNT_PASSED_NO_MATCH = 4,
	XSBC_CNT_DROPPED_BANNED = 5,
	XSBC_CNT_REDIRECTED_MEDIA = 6,
	XSBC_CNT_REDIRECTED_SIP = 7,
	XSBC_CNT_REDIRECT_FAILED = 8,
	XSBC_CNT_DROPPED_NO_SESSION = 9,
	XSBC_CNT_COUNT = 10,
};

/* Key of `media_ports`. Mirrored by `xdp_prog::MediaKey` (20 bytes). An
 * all-zero addr is the wildcard: it matches any destination address. */
struct media_key {
	__u8 addr[16]; /* destination address, network order, IPv4-mapped */
	__u16 port;    /* destination UDP port, host order */
	__u16 pad;     /* always 0 */
};

/* Value of `media_ports`. Mirrored by `xdp_prog::MediaValue` (8 bytes). */
struct media_value {
	__u32 session_id; /* opaque to this program, for userspace */
	__u32 flags;      /* reserved, 0 */
};

/* Key of `bans`, an LPM trie. Mirrored by `xdp_prog::BanKey` (20 bytes). */
struct ban_key {
	__u32 prefixlen; /* 0..=128; an IPv4 /N is stored as N + 96 */
	__u8 addr[16];   /* source prefix, network order, IPv4-mapped */
};

/* Value of `bans`. Mirrored by `xdp_prog::BanValue` (4 bytes). */
struct ban_value {
	__u32 reason; /* opaque to this program, for userspace */
};

/* Value of `relay_ports`, whose key is a local address (16 bytes, network
 * order, IPv4-mapped; all zero: any address). Mirrored by
 * `xdp_prog::PortRange` (4 bytes). */
struct port_range {
	__u16 min; /* lowest media port, host order, inclusive */
	__u16 max; /* highest media port, host order, inclusive */
};

/* Key of `sip_ports` is a __u16 UDP port in host order; the value is a __u32
 * of flags (reserved, 0). */

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__type(key, __u32);   /* rx queue index */
	__type(value, __u32); /* AF_XDP socket fd (from userspace) */
	__uint(max_entries, 64);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct media_key);
	__type(value, struct media_value);
	__uint(max_entries, 65536);
} media_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ban_key);
	__type(value, struct ban_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
} bans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, __u32);
	__uint(max_entries, 16);
} sip_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u8[16]); /* local address, as in media_key */
	__type(value, struct port_range);
	__uint(max_entries, 64);
} relay_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, XSBC_CNT_COUNT);
} counters SEC(".maps");

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define IPV4_FRAG_MASK 0x3fff /* MF flag | fragment offset */

struct vlan_tag {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* Where parsing has got to in the packet. */
struct cursor {
	void *pos;
	void *end;
};

/*
 * The one bounds check: returns the next `len` bytes and advances past them,
 * or NULL when the packet is shorter. Every packet read goes through it.
 */
static __always_inline void *take(struct cursor *c, __u32 len)
{
	void *p = c->pos;

	if (p + len > c->end)
		return NULL;
	c->pos = p + len;
	return p;
}

static __always_inline void set_v4_mapped(__u32 *addr32, __be32 v4)
{
	addr32[0] = 0;
	addr32[1] = 0;
	addr32[2] = bpf_htonl(0x0000ffff);
	addr32[3] = v4;
}

static __always_inline void set_v6(__u32 *addr32, const struct in6_addr *v6)
{
	addr32[0] = v6->in6_u.u6_addr32[0];
	addr32[1] = v6->in6_u.u6_addr32[1];
	addr32[2] = v6->in6_u.u6_addr32[2];
	addr32[3] = v6->in6_u.u6_addr32[3];
}

union addr16 {
	__u8 b[16];
	__u32 w[4];
};

static __always_inline int is_banned(const union addr16 *src)
{
	struct {
		__u32 prefixlen;
		union addr16 addr;
	} key = { .prefixlen = 128, .addr = *src };

	return bpf_map_lookup_elem(&bans, &key) != NULL;
}

/* Looks (dst, port) up in media_ports, then (wildcard, port). */
static __always_inline int is_media(const union addr16 *dst, __u16 port)
{
	struct media_key key = { .port = port, .pad = 0 };

	__builtin_memcpy(key.addr, dst->b, sizeof(key.addr));
	if (bpf_map_lookup_elem(&media_ports, &key))
		return 1;
	__builtin_memset(key.addr, 0, sizeof(key.addr));
	return bpf_map_lookup_elem(&media_ports, &key) != NULL;
}

/* Whether `port` is in the media port range of `dst`, or of any address. */
static __always_inline int is_relay_port(const union addr16 *dst, __u16 port)
{
	union addr16 any = { .w = { 0, 0, 0, 0 } };
	struct port_range *r = bpf_map_lookup_elem(&relay_ports, dst);

	if (!r)
		r = bpf_map_lookup_elem(&relay_ports, &any);
	return r && port >= r->min && port <= r->max;
}

/*
 * Decides what to do with the packet and returns the counter that names the
 * decision. Only reads: counting and redirecting happen once, in xsbc_xdp.
 */
static __always_inline enum xsbc_counter try_xsbc(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	union addr16 src, dst;
	struct ethhdr *eth;
	struct udphdr *udp;
	__u16 proto;

	eth = take(&c, sizeof(*eth));
	if (!eth)
		return XSBC_CNT_PASSED_TRUNCATED;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
		struct vlan_tag *tag = take(&c, sizeof(*tag));

		if (!tag)
			return XSBC_CNT_PASSED_TRUNCATED;
		proto = tag->encapsulated_proto;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = take(&c, sizeof(*ip));
		__u32 options;

		if (!ip)
			return XSBC_CNT_PASSED_TRUNCATED;
		if (ip->version != 4 || ip->ihl < 5)
			return XSBC_CNT_PASSED_TRUNCATED;
		options = (ip->ihl - 5) * 4;
		if (options && !take(&c, options))
			return XSBC_CNT_PASSED_TRUNCATED;
		set_v4_mapped(src.w, ip->saddr);
		set_v4_mapped(dst.w, ip->daddr);
		if (is_banned(&src))
			return XSBC_CNT_DROPPED_BANNED;
		if (ip->protocol != IPPROTO_UDP)
			return XSBC_CNT_PASSED_NOT_UDP;
		/* A first fragment has the UDP header but the rest of the datagram
		 * would still reach the kernel: leave all fragments to it. */
		if (ip->frag_off & bpf_htons(IPV4_FRAG_MASK))
			return XSBC_CNT_PASSED_FRAGMENT;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = take(&c, sizeof(*ip6));

		if (!ip6)
			return XSBC_CNT_PASSED_TRUNCATED;
		if (ip6->version != 6)
			return XSBC_CNT_PASSED_TRUNCATED;
		set_v6(src.w, &ip6->saddr);
		set_v6(dst.w, &ip6->daddr);
		if (is_banned(&src))
			return XSBC_CNT_DROPPED_BANNED;
		/* Extension headers (fragments included) go to the kernel. */
		if (ip6->nexthdr != IPPROTO_UDP)
			return XSBC_CNT_PASSED_NOT_UDP;
	} else {
		return XSBC_CNT_PASSED_NOT_IP;
	}

	udp = take(&c, sizeof(*udp));
	if (!udp)
		return XSBC_CNT_PASSED_TRUNCATED;
	if (is_media(&dst, bpf_ntohs(udp->dest)))
		return XSBC_CNT_REDIRECTED_MEDIA;
	{
		__u16 port = bpf_ntohs(udp->dest);

		if (bpf_map_lookup_elem(&sip_ports, &port))
			return XSBC_CNT_REDIRECTED_SIP;
		if (is_relay_port(&dst, port))
			return XSBC_CNT_DROPPED_NO_SESSION;
	}
	return XSBC_CNT_PASSED_NO_MATCH;
}

static __always_inline void count(__u32 index)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &index);

	if (n)
		*n += 1; /* per-CPU slot: no atomic needed */
}

SEC("xdp")
int xsbc_xdp(struct xdp_md *ctx)
{
	enum xsbc_counter decision = try_xsbc(ctx);
	long action;

	count(decision);
	switch (decision) {
	case XSBC_CNT_DROPPED_BANNED:
	case XSBC_CNT_DROPPED_NO_SESSION:
		return XDP_DROP;
	case XSBC_CNT_REDIRECTED_MEDIA:
	case XSBC_CNT_REDIRECTED_SIP:
		action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
		if (action != XDP_REDIRECT)
			count(XSBC_CNT_REDIRECT_FAILED);
		return action;
	default:
		return XDP_PASS;
	}
}

char _license[] SEC("license") = "Apache-2.0";
