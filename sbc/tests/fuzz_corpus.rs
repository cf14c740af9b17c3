//! Replays the saved fuzz corpora of the sbc's targets (`fuzz/corpus/<target>/`)
//! through the same functions the cargo-fuzz targets call
//! (`fuzz/bodies/sbc.rs`), on stable Rust: every input that once crashed, or
//! that the fuzzer kept for its coverage, must still be handled without a
//! panic.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

include!("../../fuzz/bodies/sbc.rs");

/// Runs `body` on every file of `fuzz/corpus/<target>/`; fails if there are none.
fn replay(target: &str, body: fn(&[u8])) {
    testkit::fuzz::replay(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz"), target, body);
}

#[test]
fn sip_message_corpus() {
    replay("sip_message", sip_message);
}

#[test]
fn digest_corpus() {
    replay("digest", digest);
}

#[test]
fn config_corpus() {
    replay("config", config);
}
