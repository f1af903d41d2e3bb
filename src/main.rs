use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use tollgate::config::{DatabaseSettings, ServerSettings, Settings};
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
    /// Configuration file, merged over the built-in defaults (config/default.toml): it needs
    /// only the keys it changes. Unset: /etc/tollgate/tollgate.toml if it exists, else the
    /// defaults alone. Environment variables (and a .env file in the working directory)
    /// override both.
    #[arg(long, env = "TOLLGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Apply pending database migrations and exit (reads the database settings only).
    Migrate,
    /// Exit 0 when the local server is ready (GET /readyz), 1 otherwise: for container health
    /// checks.
    Healthcheck {
        /// Ask this URL instead of http://127.0.0.1:<server.port>/readyz.
        #[arg(long)]
        url: Option<String>,
    },
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
    /// Print a development token (accepted only by a server with dev.tokens = true).
    DevToken(DevTokenArgs),
}

/// Who a development token speaks for.
#[derive(clap::Args)]
struct DevTokenArgs {
    /// The user's id (as the identity provider would put it in `sub`), or a service's name.
    #[arg(long)]
    sub: String,
    /// A tenant the user belongs to (repeat for several).
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// A role or group (repeat for several; an exempt role such as `admin` always has access).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// An OAuth scope (repeat for several), e.g. billing:read for a service.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// A service token: every scope of auth.scopes (read, write and admin).
    #[arg(long)]
    service: bool,
    #[arg(long)]
    email: Option<String>,
    /// Seconds until the token expires.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(i64).range(1..=31_536_000))]
    ttl_seconds: i64,
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
    // A .env file in the working directory sets what the environment does not already set.
    let dotenv = match dotenvy::from_path(".env") {
        Ok(()) => true,
        Err(e) if e.not_found() => false,
        Err(e) => {
            eprintln!("error: .env: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // These need one section each, not a configuration that would serve.
    let narrow = match &cli.command {
        Some(Command::Migrate) => Some(migrate(cli.config.as_deref())),
        Some(Command::Healthcheck { url }) => {
            Some(healthcheck(cli.config.as_deref(), url.as_deref()).await)
        }
        _ => None,
    };
    if let Some(result) = narrow {
        return match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tollgate::telemetry::init(settings.server.json_logs);
    let command = cli.command.unwrap_or(Command::Serve);
    for notice in &settings.notices {
        // Only the server logs to standard output; a command's output is its own.
        match command {
            Command::Serve => tracing::warn!("{notice}"),
            _ => eprintln!("warning: {notice}"),
        }
    }
    if dotenv && matches!(command, Command::Serve) {
        tracing::info!("read .env from the working directory");
    }
    let serving = matches!(command, Command::Serve);
    let result = match command {
        Command::Serve => serve(settings).await,
        Command::Migrate | Command::Healthcheck { .. } => unreachable!("handled above"),
        Command::CheckConfig => {
            println!(
                "configuration is valid: {} plans, from {}{}",
                settings.plans.len(),
                settings.source,
                if dotenv { " and .env" } else { "" }
            );
            Ok(())
        }
        Command::Sync { all, user, subject } => sync(settings, all, user, subject).await,
        Command::DevToken(args) => dev_token(&settings, args),
        Command::Openapi => unreachable!("handled above"),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // One line, with every cause: the server's in its log, a command's on stderr.
        Err(e) if serving => {
            tracing::error!(error = format_args!("{e:#}"), "tollgate failed");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let config = settings.source.to_string();
    let database = settings.database.display_url();
    let app = Application::build(settings)?;
    tracing::info!(port = app.port(), %database, %config, "Tollgate listening");
    app.run_until_stopped().await?;
    Ok(())
}

/// Applies pending migrations with the database settings alone (the rest of the configuration
/// is not read, so a job that only migrates needs no Stripe or identity settings).
fn migrate(config: Option<&Path>) -> anyhow::Result<()> {
    let database: DatabaseSettings = Settings::load_section(config, "database")?;
    let db = tollgate::db::Database::connect(
        database.url.expose_secret(),
        1,
        std::time::Duration::from_secs(database.connect_timeout_seconds),
    )
    .with_context(|| format!("database {}", database.display_url()))?;
    let applied = db.migrate()?;
    println!(
        "applied {} migration(s) to {}",
        applied.len(),
        database.display_url()
    );
    Ok(())
}

/// Asks the local server's `/readyz` (or `url`): for container health checks, without curl.
async fn healthcheck(config: Option<&Path>, url: Option<&str>) -> anyhow::Result<()> {
    let url = match url {
        Some(url) => url.to_owned(),
        None => {
            let server: ServerSettings = Settings::load_section(config, "server")?;
            format!("http://127.0.0.1:{}/readyz", server.port)
        }
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let res = client
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    if !res.status().is_success() {
        anyhow::bail!("{url} answered {}", res.status());
    }
    println!("{url}: {}", res.status());
    Ok(())
}

fn dev_token(settings: &Settings, args: DevTokenArgs) -> anyhow::Result<()> {
    use tollgate::billing::ids::{TenantId, UserId};
    use tollgate::identity::dev::{DevClaims, DevKey};

    if settings.stripe.is_live() {
        anyhow::bail!("stripe.secret_key is a live key: development tokens are refused beside it");
    }
    let mut scopes = args.scopes;
    if args.service {
        let s = &settings.auth.scopes;
        scopes.extend([s.read.clone(), s.write.clone(), s.admin.clone()]);
    }
    let claims = DevClaims {
        subject: UserId::parse(&args.sub).map_err(|e| anyhow::anyhow!("--sub {e}"))?,
        email: args.email,
        tenants: args
            .tenants
            .iter()
            .map(|t| TenantId::parse(t).map_err(|e| anyhow::anyhow!("--tenant {e}")))
            .collect::<anyhow::Result<_>>()?,
        roles: args.roles,
        scopes,
        ttl_seconds: args.ttl_seconds,
        issued_at: chrono::Utc::now().timestamp(),
    };
    let key = DevKey::load_or_create(&settings.dev.key_file)?;
    println!("{}", key.mint(&claims.to_json(&settings.auth.claims)?)?);
    if !settings.dev.tokens {
        eprintln!(
            "note: dev.tokens is off in this configuration; the server accepts this token only when \
             started with TOLLGATE_DEV__TOKENS=true (and the same dev.key_file, {})",
            key.path().display()
        );
    }
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
