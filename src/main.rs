use std::path::PathBuf;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use tollgate::config::Settings;
use tollgate::startup::Application;

/// mimalloc rather than glibc's malloc: cheaper for the many short-lived allocations of a
/// request (the library, and tests through it, keep the system allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Re-read customers from Stripe and repair drift (missed or failed webhooks).
    Sync {
        /// Every customer, with a progress bar.
        #[arg(long, conflicts_with_all = ["user", "subject"])]
        all: bool,
        /// One user, by identity-provider id.
        #[arg(long, conflicts_with = "subject")]
        user: Option<String>,
        /// One subject, by its stored key (`user:...`, `tenant:...`).
        #[arg(long)]
        subject: Option<String>,
    },
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
        Command::Sync { all, user, subject } => sync(settings, all, user, subject).await,
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

async fn sync(
    settings: Settings,
    all: bool,
    user: Option<String>,
    subject: Option<String>,
) -> anyhow::Result<()> {
    use tollgate::billing::subject::Subject;
    use tollgate::service::reconcile;

    let state = tollgate::state::build_state(settings, tollgate::state::system_clock())?;
    let stripe = state
        .stripe
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("Stripe is not configured: set STRIPE_SECRET_KEY"))?;
    let target = match (all, user, subject) {
        (true, _, _) => None,
        (false, Some(user), _) => Some(Subject::user(
            tollgate::billing::ids::UserId::parse(&user)
                .map_err(|e| anyhow::anyhow!("--user {e}"))?,
        )),
        (false, None, Some(key)) => Some(Subject::parse_key(&key).ok_or_else(|| {
            anyhow::anyhow!(
                "`{key}` is not a subject key (user:<id>, tenant:<id>, membership:<tenant>:<user>)"
            )
        })?),
        (false, None, None) => anyhow::bail!("say what to sync: --all, --user ID or --subject KEY"),
    };
    let report = match target {
        Some(subject) => reconcile::reconcile_subject(&state, stripe, &subject)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{subject} has no Stripe customer"))?,
        None => {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} customers {elapsed_precise}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let report = reconcile::reconcile_all(&state, stripe, |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })
            .await?;
            bar.finish();
            report
        }
    };
    println!(
        "re-read {} customer(s): {} had drifted ({} record(s) repaired), {} failed",
        report.customers, report.drifted, report.changes, report.failed
    );
    if report.failed > 0 {
        anyhow::bail!(
            "{} customer(s) could not be re-read; see the log",
            report.failed
        );
    }
    Ok(())
}
