//! Structured logging setup shared by the `media-relay` and `sbc` binaries.

/// Installs the global tracing subscriber on stderr. `RUST_LOG` overrides
/// `level`; `json` writes JSON lines; colours only on a terminal.
pub fn init(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}
