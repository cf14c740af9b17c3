// SPDX-License-Identifier: Apache-2.0
/*
 * xdp-bench's sink in XDP (`--sink xdp`), on the sinks' veth `gb`. It takes
 * the generator's RTP packets (version 2, payload type 0) before the
 * kernel's IP and UDP receive path: the send time the generator wrote after
 * the RTP header, flow id and sequence number (CLOCK_MONOTONIC nanoseconds,
 * big-endian, at UDP payload offset 20) gives the one-way latency,
 * which is counted in `sink_hist`, and the packet is dropped. Anything else
 * (ARP, ICMP) passes. A receiving host's stack is not the relay's work, and
 * in a veth lab it would otherwise run on the relay's core.
 *
 * `sink_hist` buckets: 0..LINEAR-1 are whole microseconds; from LINEAR on,
 * bucket LINEAR + k holds [LINEAR << k, LINEAR << (k + 1)) microseconds,
 * and the last one everything above. xdp-bench's SINK_LINEAR must match.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define LINEAR 16384
#define LOG_BUCKETS 32

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, LINEAR + LOG_BUCKETS);
} sink_hist SEC(".maps");

/* Counts the packet if it is the generator's RTP; returns whether it was. */
static __always_inline int count_rtp(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	__u8 *rtp = (void *)(udp + 1);
	__u64 sent, now, us, *count;
	__u32 key, k;

	if ((void *)(rtp + 28) > end)
		return 0;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return 0;
	if (rtp[0] != 0x80 || rtp[1] != 0)
		return 0;
	__builtin_memcpy(&sent, rtp + 20, 8);
	sent = bpf_be64_to_cpu(sent);
	now = bpf_ktime_get_ns();
	us = now > sent ? (now - sent) / 1000 : 0;
	if (us < LINEAR) {
		key = us;
	} else {
		key = LINEAR;
		for (k = 1; k < LOG_BUCKETS; k++) {
			if ((us >> k) < LINEAR)
				break;
			key = LINEAR + k;
		}
	}
	count = bpf_map_lookup_elem(&sink_hist, &key);
	if (count)
		*count += 1;
	return 1;
}

SEC("xdp")
int sink_xdp(struct xdp_md *ctx)
{
	if (count_rtp((void *)(long)ctx->data, (void *)(long)ctx->data_end))
		return XDP_DROP;
	return XDP_PASS;
}

/*
 * The same sink at tc ingress (`--sink tc`). An XDP program on a veth needs
 * each sk_buff it receives copied into a page with XDP headroom (the relays
 * other than the in-kernel forwarder send sk_buffs); at tc the packet is
 * read where it lies.
 */
SEC("classifier")
int sink_tc(struct __sk_buff *skb)
{
	if (count_rtp((void *)(long)skb->data, (void *)(long)skb->data_end))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "Apache-2.0";
