//! Replays the saved fuzz corpora of the media relay's targets (`fuzz/corpus/<target>/`)
//! through the same functions the cargo-fuzz targets call
//! (`fuzz/bodies/media.rs`), on stable Rust: every input that once crashed, or
//! that the fuzzer kept for its coverage, must still be handled without a
//! panic.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

include!("../../fuzz/bodies/media.rs");

/// Runs `body` on every file of `fuzz/corpus/<target>/`; fails if there are none.
fn replay(target: &str, body: fn(&[u8])) {
    testkit::fuzz::replay(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz"), target, body);
}

#[test]
fn sdp_corpus() {
    replay("sdp", sdp);
}

#[test]
fn ng_corpus() {
    replay("ng", ng);
}

#[test]
fn rtp_corpus() {
    replay("rtp", rtp);
}

#[test]
fn afxdp_frame_corpus() {
    replay("afxdp_frame", afxdp_frame);
}
