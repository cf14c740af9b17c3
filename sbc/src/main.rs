//! `sbc` binary placeholder: the signaling plane is not implemented yet.

fn main() {
    eprintln!("sbc: the SIP signaling plane is not implemented yet; run `media-relay` (see README.md)");
    std::process::exit(2);
}
