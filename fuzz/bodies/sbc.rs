// What each sbc fuzz target does with one input. Shared, through
// `include!`, by the cargo-fuzz targets (fuzz/fuzz_targets/) and by the
// corpus replay test (sbc/tests/fuzz_corpus.rs), so both run the same code.
// Every function must return without panicking for any input.

/// SIP: parse a datagram and a stream buffer, then validate what parsed.
pub fn sip_message(data: &[u8]) {
    if let Ok(msg) = sbc::sip::Message::parse(data) {
        let _ = msg.validate();
        let _ = sbc::sip::validate_request(&msg);
    }
    if let Ok(Some((msg, used))) = sbc::sip::Message::parse_stream(data) {
        assert!(used <= data.len(), "parse_stream consumed more than it was given");
        let _ = msg.validate();
    }
    let _ = sbc::sip::keepalive_len(data);
    // The guard's scan before any parse (first line, User-Agent).
    let _ = sbc::guard::peek::kind(data);
    if let Some(ua) = sbc::guard::peek::user_agent(data) {
        let _ = sbc::guard::peek::matches_any(ua, &["friendly-scanner".to_owned()]);
    }
    // The header-value parsers, on the whole input as one value.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sbc::sip::Uri::parse(text);
        let _ = sbc::sip::Via::parse(text);
        let _ = sbc::sip::NameAddr::parse(text);
        let _ = sbc::sip::Contact::parse(text);
    }
}

/// Digest `WWW-Authenticate` / `Authorization` header values.
pub fn digest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(ch) = sbc::auth::digest::Challenge::parse(text) {
        let _ = sbc::auth::digest::Challenge::parse(&ch.to_value());
    }
    let _ = sbc::auth::digest::Credentials::parse(text);
    let _ = sbc::auth::digest::Algorithm::parse(text);
}

/// The sbc's TOML configuration loader.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = sbc::config::Config::from_toml(text);
}
