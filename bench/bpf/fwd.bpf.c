// SPDX-License-Identifier: Apache-2.0
/*
 * The in-kernel baseline of xdp-bench: a static UDP forwarder in XDP. A
 * packet to a UDP port found in `fwd` gets the entry's MACs, addresses and
 * ports (IPv4 header and UDP checksums updated incrementally, a zero UDP
 * checksum stays zero) and is redirected out of the entry's interface. No
 * latching, no statistics: the floor any userspace relay is compared with.
 * `pass` is a do-nothing program for the receiving veth peer (a veth only
 * accepts redirected frames when its peer runs XDP).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct fwd_value {
	__u32 ifindex;
	__u8 src_mac[6];
	__u8 dst_mac[6];
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* destination UDP port, host order */
	__type(value, struct fwd_value);
	__uint(max_entries, 65536);
} fwd SEC(".maps");

static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int fwd_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	struct fwd_value *v;
	__u32 port, from[3], to[3];

	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	port = bpf_ntohs(udp->dest);
	v = bpf_map_lookup_elem(&fwd, &port);
	if (!v)
		return XDP_PASS;
	from[0] = ip->saddr;
	from[1] = ip->daddr;
	from[2] = *(__u32 *)udp; /* source and destination ports */
	to[0] = v->saddr;
	to[1] = v->daddr;
	to[2] = ((__u32)v->dport << 16) | v->sport;
	ip->check = fold(bpf_csum_diff(from, 8, to, 8, (__u16)~ip->check));
	if (udp->check)
		udp->check = fold(bpf_csum_diff(from, 12, to, 12, (__u16)~udp->check)) ?: 0xffff;
	ip->saddr = v->saddr;
	ip->daddr = v->daddr;
	udp->source = v->sport;
	udp->dest = v->dport;
	__builtin_memcpy(eth->h_source, v->src_mac, 6);
	__builtin_memcpy(eth->h_dest, v->dst_mac, 6);
	return bpf_redirect(v->ifindex, 0);
}

SEC("xdp")
int pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Apache-2.0";
