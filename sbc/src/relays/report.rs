//! A remote relay's `query`/`delete` reply read back into a [`CallReport`]:
//! the rtpengine-shaped `tags` → `medias` → `streams` → `stats` tree that
//! `media-relay` writes and rtpengine writes with fewer keys. Missing keys
//! read as zero; nothing in a reply can make this fail.

use std::net::{IpAddr, SocketAddr};

use media_relay::bencode::Value;
use media_relay::control::{CallReport, LegReport, MediaReport, StreamReport};

fn int(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_int).unwrap_or(0)
}

fn uint(v: Option<&Value>) -> u64 {
    u64::try_from(int(v)).unwrap_or(0)
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn endpoint(v: Option<&Value>) -> Option<SocketAddr> {
    let v = v?;
    let ip: IpAddr = v.get("address")?.as_str()?.parse().ok()?;
    let port = u16::try_from(int(v.get("port"))).ok()?;
    Some(SocketAddr::new(ip, port))
}

fn stream(v: &Value) -> StreamReport {
    let mut s = StreamReport {
        local_port: u16::try_from(int(v.get("local port"))).unwrap_or(0),
        endpoint: endpoint(v.get("endpoint")),
        advertised: endpoint(v.get("advertised endpoint")),
        latched: int(v.get("latched")) != 0,
        stats: Default::default(),
    };
    if let Some(st) = v.get("stats") {
        let d = &mut s.stats;
        d.stats.packets = uint(st.get("packets"));
        d.stats.bytes = uint(st.get("bytes"));
        d.foreign_drops = uint(st.get("errors"));
        d.stats.rtp_packets = uint(st.get("rtp-packets"));
        d.stats.expected = uint(st.get("expected"));
        d.stats.lost = int(st.get("lost"));
        d.stats.duplicates = uint(st.get("duplicates"));
        d.stats.reordered = uint(st.get("reordered"));
        d.stats.jitter = u32::try_from(uint(st.get("jitter"))).unwrap_or(u32::MAX);
        d.stats.jitter_us = u32::try_from(uint(st.get("jitter-us"))).unwrap_or(u32::MAX);
    }
    s
}

fn media(v: &Value) -> MediaReport {
    let mut streams = v.get("streams").and_then(Value::as_list).unwrap_or_default().iter().map(stream);
    let rtp = streams.next().unwrap_or_else(|| stream(&Value::dict()));
    let rtcp = streams.next().unwrap_or_else(|| stream(&Value::dict()));
    MediaReport {
        index: usize::try_from(int(v.get("index"))).unwrap_or(0),
        kind: text(v.get("type")),
        protocol: text(v.get("protocol")),
        codecs: v
            .get("codecs")
            .and_then(Value::as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        streams: [rtp, rtcp],
        // The ng reply carries no quality scores: a remote relay's calls
        // have none in their CDRs (docs/quality.md).
        quality: media_relay::control::QualityReport::default(),
    }
}

/// The report in a `query` or `delete` reply of call `call_id`.
#[must_use]
pub fn call_report(call_id: &str, reply: &Value) -> CallReport {
    let legs = reply
        .get("tags")
        .and_then(Value::as_dict)
        .unwrap_or_default()
        .iter()
        .map(|(key, leg)| LegReport {
            tag: leg
                .get("tag")
                .and_then(Value::as_str)
                .map_or_else(|| String::from_utf8_lossy(key).into_owned(), str::to_owned),
            medias: leg.get("medias").and_then(Value::as_list).unwrap_or_default().iter().map(media).collect(),
        })
        .collect();
    CallReport {
        call_id: call_id.to_owned(),
        created: uint(reply.get("created")),
        last_signal: uint(reply.get("last signal")),
        legs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_relay_reports_read_back_unchanged() {
        let mut leg = LegReport { tag: "a".into(), medias: Vec::new() };
        let mut s = stream(&Value::dict());
        s.local_port = 30_000;
        s.endpoint = Some("10.0.0.1:4000".parse().unwrap());
        s.latched = true;
        s.stats.stats.packets = 50;
        s.stats.stats.bytes = 8600;
        s.stats.stats.lost = -1;
        s.stats.stats.jitter_us = 125;
        s.stats.foreign_drops = 2;
        let rtcp = stream(&Value::dict());
        leg.medias.push(MediaReport {
            index: 1,
            kind: "audio".into(),
            protocol: "RTP/AVP".into(),
            codecs: vec!["PCMU/8000".into()],
            streams: [s, rtcp],
            quality: media_relay::control::QualityReport::default(),
        });
        let r = CallReport { call_id: "c1".into(), created: 7, last_signal: 9, legs: vec![leg] };
        let back = call_report("c1", &media_relay::ng::report_value(&r));
        assert_eq!(back.created, 7);
        assert_eq!(back.last_signal, 9);
        assert_eq!(back.legs.len(), 1);
        let m = &back.legs[0].medias[0];
        assert_eq!((m.index, m.kind.as_str(), m.codecs.as_slice()), (1, "audio", &["PCMU/8000".to_owned()][..]));
        let st = &m.streams[0];
        assert_eq!(st.local_port, 30_000);
        assert_eq!(st.endpoint, Some("10.0.0.1:4000".parse().unwrap()));
        assert!(st.latched);
        assert_eq!(st.stats, r.legs[0].medias[0].streams[0].stats);
        assert_eq!(back.totals(false), (50, 8600, 2));
    }

    #[test]
    fn sparse_and_odd_replies_do_not_fail() {
        let v = media_relay::bencode::decode(b"d4:tagsd1:xd6:mediasl5:helloi3eeee6:resulti1ee").unwrap();
        let r = call_report("c", &v);
        assert_eq!(r.legs.len(), 1);
        assert_eq!(r.legs[0].tag, "x");
        assert_eq!(r.legs[0].medias.len(), 2);
        assert_eq!(r.totals(false), (0, 0, 0));
        let r = call_report("c", &Value::Int(3));
        assert!(r.legs.is_empty());
    }
}
