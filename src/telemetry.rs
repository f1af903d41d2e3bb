//! Logs: human-readable by default, JSON lines with `server.json_logs`; `RUST_LOG` filters.

use std::io::IsTerminal;

use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter, Layer};

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // async-stripe logs at ERROR every event its typed structs cannot hold; Tollgate reads
    // only the envelope and accepts such events (src/stripe/webhook.rs), so that is no error.
    let no_sdk_parse_errors = filter_fn(|meta| {
        !(*meta.level() == tracing::Level::ERROR && meta.target().starts_with("stripe_webhook"))
    });
    let layer = if json {
        fmt::layer()
            .with_target(false)
            .json()
            .flatten_event(true)
            .boxed()
    } else {
        // Colours only on a terminal: a log file or collector gets plain text.
        fmt::layer()
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .boxed()
    };
    // A second init (tests spawning several apps) is harmless.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter).with_filter(no_sdk_parse_errors))
        .try_init();
}
