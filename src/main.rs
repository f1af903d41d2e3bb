use std::path::PathBuf;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use tollgate::config::Settings;
use tollgate::startup::Application;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Headless billing API for SaaS products that sell through Stripe"
)]
struct Cli {
    /// Configuration file; environment variables override it.
    #[arg(
        long,
        env = "TOLLGATE_CONFIG",
        default_value = "config/default.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Print the OpenAPI document (what /openapi.json serves).
    Openapi,
}

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        match tollgate::api::openapi().to_pretty_json() {
            Ok(json) => {
                println!("{json}");
                return std::process::ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let settings = match Settings::load(&cli.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tollgate::telemetry::init(settings.server.json_logs);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(&settings),
        Command::CheckConfig => {
            println!("configuration is valid ({} plans)", settings.plans.len());
            Ok(())
        }
        Command::Openapi => unreachable!("handled above"),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = ?e, "tollgate failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings)?;
    tracing::info!(port = app.port(), "Tollgate listening");
    app.run_until_stopped().await?;
    Ok(())
}

fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = tollgate::db::Database::connect(
        settings.database.url.expose_secret(),
        1,
        std::time::Duration::from_secs(settings.database.connect_timeout_seconds),
    )?;
    let applied = db.migrate()?;
    println!("applied {} migration(s)", applied.len());
    Ok(())
}
