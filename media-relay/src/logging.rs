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

/// Changes the log filter of a subscriber installed by [`init_reloadable`].
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// As [`init`], and returns a function that replaces the filter with a new
/// level (a configuration reload). With `RUST_LOG` set, the environment
/// keeps precedence: the function then leaves the filter as it is.
#[must_use]
pub fn init_reloadable(level: &str, json: bool) -> LogReload {
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    fn set<S: 'static>(
        handle: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, S>,
        from_env: bool,
    ) -> LogReload {
        Box::new(move |level: &str| {
            if from_env {
                return Ok(());
            }
            let f = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| format!("log level `{level}`: {e}"))?;
            handle.reload(f).map_err(|e| e.to_string())
        })
    }
    if json {
        let b = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter_reloading();
        let h = set(b.reload_handle(), from_env);
        b.init();
        h
    } else {
        let b = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter_reloading();
        let h = set(b.reload_handle(), from_env);
        b.init();
        h
    }
}
