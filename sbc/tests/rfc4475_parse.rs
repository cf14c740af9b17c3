//! RFC 4475 torture messages through `Message::parse` + `Message::validate`.
//!
//! Reads the 49 `*.dat` files of `shared/testdata/rfc4475` (a sibling of the
//! repository) and checks each against the outcome table below, then feeds
//! every truncation and random byte flips of each file to the parser, which
//! must never panic.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sbc::sip::{reject_response, Limits, Message, ParseError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Valid,
    Reject(Option<u16>),
}
use Outcome::{Reject, Valid};

/// What parse + validate must give for each file (RFC 4475 section in the
/// comment). Choices where the RFC allows either: regbadct and badaspec are
/// accepted (as Kamailio does); mismatch02 gets 400 rather than 501.
const TABLE: &[(&str, Outcome)] = &[
    // 3.1.1 valid
    ("wsinv.dat", Valid),
    ("intmeth.dat", Valid),
    ("esc01.dat", Valid),
    ("escnull.dat", Valid),
    ("esc02.dat", Valid),
    ("lwsdisp.dat", Valid),
    ("longreq.dat", Valid),
    ("dblreq.dat", Valid),
    ("semiuri.dat", Valid),
    ("transports.dat", Valid),
    ("mpart01.dat", Valid),
    ("unreason.dat", Valid),
    ("noreason.dat", Valid),
    // 3.1.2 invalid
    ("badinv01.dat", Reject(Some(400))),
    ("clerr.dat", Reject(Some(400))),
    ("ncl.dat", Reject(Some(400))),
    ("scalar02.dat", Reject(Some(400))),
    ("scalarlg.dat", Reject(None)),
    ("quotbal.dat", Reject(Some(400))),
    ("ltgtruri.dat", Reject(Some(400))),
    ("lwsruri.dat", Reject(Some(400))),
    ("lwsstart.dat", Reject(Some(400))),
    ("trws.dat", Reject(Some(400))),
    ("escruri.dat", Reject(Some(400))),
    ("baddate.dat", Reject(Some(400))),
    ("regbadct.dat", Valid),
    ("badaspec.dat", Valid),
    ("baddn.dat", Reject(Some(400))),
    ("badvers.dat", Reject(Some(505))),
    ("mismatch01.dat", Reject(Some(400))),
    ("mismatch02.dat", Reject(Some(400))),
    ("bigcode.dat", Reject(None)),
    // 3.2 transaction layer
    ("badbranch.dat", Valid),
    // 3.3 application layer
    ("insuf.dat", Reject(Some(400))),
    ("unkscm.dat", Valid),
    ("novelsc.dat", Valid),
    ("unksm2.dat", Valid),
    ("bext01.dat", Valid),
    ("invut.dat", Valid),
    ("regaut01.dat", Valid),
    ("multi01.dat", Reject(Some(400))),
    ("mcl01.dat", Reject(Some(400))),
    ("bcast.dat", Valid),
    ("zeromf.dat", Valid),
    ("cparam01.dat", Valid),
    ("cparam02.dat", Valid),
    ("regescrt.dat", Valid),
    ("sdp01.dat", Valid),
    // 3.4 backward compatibility
    ("inv2543.dat", Valid),
];

/// The `*.dat` files by name, or `None` (test skipped) when the folder is
/// absent outside CI.
fn load() -> Option<BTreeMap<String, Vec<u8>>> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/rfc4475"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "missing {}", dir.display());
        println!("SKIPPED: {} not found", dir.display());
        return None;
    };
    let mut files = BTreeMap::new();
    for e in entries {
        let path = e.expect("readable directory entry").path();
        if path.extension().is_some_and(|x| x == "dat") {
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            files.insert(name, std::fs::read(&path).expect("readable .dat file"));
        }
    }
    Some(files)
}

fn parse_and_validate(bytes: &[u8]) -> Result<Message, ParseError> {
    let m = Message::parse(bytes)?;
    m.validate()?;
    Ok(m)
}

/// The default `[limits]` let every torture message through to the parser,
/// so the outcome table above holds with the limits on.
#[test]
fn rfc4475_messages_pass_the_default_limits() {
    let Some(files) = load() else { return };
    assert_eq!(files.len(), 49, "expected the 49 RFC 4475 messages");
    let over: Vec<String> = files
        .iter()
        .filter_map(|(name, bytes)| Limits::default().check(bytes).err().map(|b| format!("{name}: {b:?}")))
        .collect();
    assert!(over.is_empty(), "over a default limit: {over:?}");
}

#[test]
fn rfc4475_outcome_table() {
    let Some(files) = load() else { return };
    assert_eq!(files.len(), 49, "expected the 49 RFC 4475 messages");
    assert_eq!(TABLE.len(), 49);
    let mut mismatches = Vec::new();
    for (name, want) in TABLE {
        let Some(bytes) = files.get(*name) else {
            mismatches.push(format!("{name}: file missing"));
            continue;
        };
        let result = parse_and_validate(bytes);
        let got = match &result {
            Ok(_) => Valid,
            Err(e) => Reject(e.response_code()),
        };
        if got != *want {
            mismatches.push(format!("{name}: want {want:?}, got {result:?}"));
            continue;
        }
        match result {
            Ok(m) => {
                // Untouched, a message serializes to the bytes received.
                let out = m.to_bytes();
                if !bytes.starts_with(&out) {
                    mismatches.push(format!("{name}: to_bytes differs from the input"));
                }
                match Message::parse(&out) {
                    Ok(again) if again.to_bytes() == out && again == m => {}
                    other => mismatches.push(format!("{name}: reparse differs: {other:?}")),
                }
                // Stream framing gives the same message when Content-Length is there.
                if m.header("content-length").is_some() {
                    match Message::parse_stream(bytes) {
                        Ok(Some((s, used))) if s == m && used == out.len() => {}
                        other => mismatches.push(format!("{name}: parse_stream gave {other:?}")),
                    }
                }
            }
            Err(e) => {
                if let Some(code) = e.response_code() {
                    match reject_response(bytes, &e, Some("sbc-tag")) {
                        Some(r) if r.code() == Some(code) && Message::parse(&r.to_bytes()).is_ok() => {}
                        other => mismatches.push(format!("{name}: no {code} answer: {other:?}")),
                    }
                }
            }
        }
    }
    for name in files.keys() {
        if !TABLE.iter().any(|(n, _)| n == name) {
            mismatches.push(format!("{name}: not in the table"));
        }
    }
    assert!(mismatches.is_empty(), "RFC 4475 mismatches:\n{}", mismatches.join("\n"));
}

#[test]
fn rfc4475_details() {
    let Some(files) = load() else { return };
    let get = |n: &str| parse_and_validate(&files[n]).unwrap();

    let m = get("dblreq.dat");
    assert_eq!(m.method().map(ToString::to_string).as_deref(), Some("REGISTER"));
    let (_, used) = Message::parse_stream(&files["dblreq.dat"]).unwrap().unwrap();
    let (second, _) = Message::parse_stream(&files["dblreq.dat"][used..]).unwrap().unwrap();
    assert_eq!(second.method().map(ToString::to_string).as_deref(), Some("INVITE"));

    let m = get("wsinv.dat");
    assert_eq!(m.max_forwards(), Some(68));
    assert_eq!(m.cseq().map(|c| c.0), Some(9));
    assert_eq!(m.vias().len(), 3);
    assert_eq!(m.vias()[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(m.to_tag().as_deref(), Some("1918181833n"));
    assert_eq!(m.from_tag().as_deref(), Some("98asjd8"));
    assert_eq!(m.header("subject"), Some(""));
    assert_eq!(m.header("NewFangledHeader"), Some("newfangled value continued newfangled value"));
    assert_eq!(m.contacts()[0].addr().unwrap().param("q"), Some(Some("0.33")));
    assert_eq!(m.routes()[0].uri.param("unknown-no-value"), Some(None));

    let m = get("longreq.dat");
    assert_eq!(m.vias().len(), 34);
    assert_eq!(m.top_via().unwrap().host, "sip33.example.com");

    let m = get("esc02.dat");
    assert_eq!(m.contacts().len(), 2, "C%6Fntact is another header");
    let m = get("transports.dat");
    let t: Vec<String> = m.vias().into_iter().map(|v| v.transport).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    let m = get("inv2543.dat");
    assert_eq!(m.to_bytes(), files["inv2543.dat"], "no Content-Length: the body is the rest");
    assert!(!m.top_via().unwrap().has_rfc3261_branch());
    let m = get("zeromf.dat");
    assert_eq!(m.max_forwards(), Some(0));
    let m = get("escnull.dat");
    assert_eq!(m.contacts().len(), 2);
    let m = get("intmeth.dat");
    assert_eq!(m.cseq().map(|c| c.1.to_string()).as_deref(), Some("!interesting-Method0123456789_*+`.%indeed'~"));
    assert!(m.to().unwrap().display.unwrap().contains('\0'));
    let m = get("unkscm.dat");
    assert_eq!(sbc::sip::Uri::parse(m.request_uri().unwrap()).unwrap().opaque.as_deref(), Some("totallyopaquecontent"));
}

/// Tiny deterministic PRNG for the fuzz-ish loop.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs everything a proxy would run on untrusted bytes.
fn exercise(bytes: &[u8]) {
    if let Ok(m) = Message::parse(bytes) {
        let _ = m.validate();
        let _ = (m.call_id(), m.cseq(), m.max_forwards(), m.from(), m.to(), m.from_tag(), m.to_tag());
        let _ = (m.vias(), m.top_via(), m.contacts(), m.routes(), m.record_routes());
        let _ = m.header_values("accept");
        let mut m2 = m.clone();
        let _ = m2.remove_first_value("via");
        m2.set_body(b"x".to_vec());
        let _ = Message::parse(&m2.to_bytes());
        let _ = m.response_with_tag(400, "Bad Request", "t");
    } else if let Err(e) = Message::parse(bytes) {
        let _ = reject_response(bytes, &e, Some("t"));
    }
    let _ = Message::parse_stream(bytes);
}

#[test]
fn truncations_and_flips_never_panic() {
    let Some(files) = load() else { return };
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for bytes in files.values() {
        for cut in 0..=bytes.len() {
            exercise(&bytes[..cut]);
        }
        for _ in 0..1000 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() % b.len() as u64) as usize;
                b[i] = match rng.next() % 4 {
                    0 => 0,
                    1 => b"\r\n \t:;,<>\"\\@%"[(rng.next() % 13) as usize],
                    _ => rng.next() as u8,
                };
            }
            exercise(&b);
        }
    }
}
