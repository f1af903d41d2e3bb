use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use tollgate::config::{DatabaseSettings, ServerSettings, Settings, StripeSettings};
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
    CheckConfig {
        /// Also print the configuration in force (defaults, file and environment merged), with
        /// secrets redacted.
        #[arg(long)]
        print: bool,
        /// Also reach the database, the identity provider and Stripe with these settings.
        #[arg(long)]
        connect: bool,
    },
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
    /// Set up Stripe's side (reads the stripe settings only).
    #[command(subcommand)]
    Stripe(StripeCommand),
}

#[derive(Subcommand)]
enum StripeCommand {
    /// Create the webhook endpoint that delivers to Tollgate, with exactly the events Tollgate
    /// handles and pinned to the API version it speaks, and print its signing secret; if an
    /// endpoint with this URL exists, update its events instead.
    WebhookEndpoint {
        /// Where Stripe delivers: https://YOUR_HOST/v1/webhooks/stripe (http:// only for
        /// localhost or 127.0.0.1, for testing).
        #[arg(long)]
        url: String,
        /// What the endpoint is for, shown in Stripe's Dashboard.
        #[arg(long)]
        description: Option<String>,
    },
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
        Some(Command::Stripe(StripeCommand::WebhookEndpoint { url, description })) => {
            Some(webhook_endpoint(cli.config.as_deref(), url, description.as_deref()).await)
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
    let command = cli.command.unwrap_or(Command::Serve);
    // The server logs to standard output; a command's standard output is its result, so its
    // log lines go to standard error.
    // The server's log writer lives until `main` returns (its drop writes what is queued).
    let _log_writer = match command {
        Command::Serve => Some(tollgate::telemetry::init(settings.server.json_logs)),
        _ => {
            tollgate::telemetry::init_for_command(settings.server.json_logs);
            None
        }
    };
    let serving = matches!(command, Command::Serve);
    for notice in &settings.notices {
        if serving {
            tracing::warn!("{notice}");
        } else {
            eprintln!("warning: {notice}");
        }
    }
    if dotenv && serving {
        tracing::info!("read .env from the working directory");
    }
    let result = match command {
        Command::Serve => serve(settings).await,
        Command::Migrate | Command::Healthcheck { .. } | Command::Stripe(_) => {
            unreachable!("handled above")
        }
        Command::CheckConfig { print, connect } => {
            check_config(&settings, dotenv, print, connect).await
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

/// `check-config`: the configuration is valid (else loading failed before); with `print`, the
/// configuration in force; with `connect`, whether each outside party answers.
async fn check_config(
    settings: &Settings,
    dotenv: bool,
    print: bool,
    connect: bool,
) -> anyhow::Result<()> {
    if print {
        println!("{}", settings.effective_toml()?);
    }
    println!(
        "configuration is valid: {} plans, from {}{}",
        settings.plans.len(),
        settings.source,
        if dotenv { " and .env" } else { "" }
    );
    if !connect {
        return Ok(());
    }
    let mut failed = 0;
    let mut report = |what: &str, result: anyhow::Result<String>| match result {
        Ok(found) => println!("ok    {what}: {found}"),
        Err(e) => {
            failed += 1;
            println!("FAIL  {what}: {e:#}");
        }
    };
    let database = &settings.database;
    let db = tollgate::db::Database::connect(
        database.url.expose_secret(),
        1,
        std::time::Duration::from_secs(database.connect_timeout_seconds),
    );
    let reached = match db {
        Ok(db) => db.ping().await.map(|()| "reachable".to_owned()),
        Err(e) => Err(e),
    };
    report(&format!("database {}", database.display_url()), reached);
    let auth = &settings.auth;
    let hs256_only = auth.jwks_url.is_none()
        && auth.hs256_secret.is_some()
        && auth.issuer.as_deref() == Some(tollgate::config::PLACEHOLDER_ISSUER);
    if auth.issuer_is_placeholder() {
        report(
            "identity provider",
            Err(anyhow::anyhow!(
                "auth.issuer is the shipped placeholder: set TOLLGATE_AUTH__ISSUER (or auth.jwks_url)"
            )),
        );
    } else if hs256_only {
        report(
            "identity provider",
            Ok("HS256 shared secret only: nothing to reach".to_owned()),
        );
    } else {
        let verifier = tollgate::identity::IdentityVerifier::new(
            auth.clone(),
            settings.exemptions.clone(),
            None,
        )?;
        report(
            "identity provider",
            verifier
                .check_provider()
                .await
                .map(|(source, keys)| format!("{keys} signing key(s) from {source}")),
        );
    }
    match tollgate::stripe::StripeGateway::from_settings(&settings.stripe)? {
        Some(gateway) => {
            let mode = if settings.stripe.is_live() {
                "live"
            } else {
                "test"
            };
            report(
                &format!("Stripe ({mode} mode)"),
                gateway
                    .check_access()
                    .await
                    .map(|()| "the secret key reads customers".to_owned())
                    .map_err(anyhow::Error::from),
            );
        }
        None => println!("skip  Stripe: not configured (STRIPE_SECRET_KEY unset)"),
    }
    if !settings.github_plans().is_empty() {
        // Validation made sure the provisioner is complete when a plan lists it.
        if let Some(github) =
            tollgate::github::GitHub::from_settings(&settings.provisioning.github)?
        {
            let what = format!(
                "GitHub organization {} team {}",
                github.organization(),
                github.team_slug()
            );
            report(
                &what,
                github
                    .check_access()
                    .await
                    .map(|team| {
                        format!("team id {team}; the token sees the organization's invitations")
                    })
                    .map_err(anyhow::Error::from),
            );
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
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

/// Creates (or brings up to date) the webhook endpoint on Stripe, with the stripe settings
/// alone: the endpoint's secret is what the rest of the configuration still lacks.
async fn webhook_endpoint(
    config: Option<&Path>,
    url: &str,
    description: Option<&str>,
) -> anyhow::Result<()> {
    use tollgate::stripe::endpoints::{self, EndpointChange};

    // The URL is checked before anything is read or asked.
    let url = endpoints::endpoint_url(url).map_err(|e| anyhow::anyhow!("--url {e}"))?;
    if let Some(warning) = endpoints::path_warning(&url) {
        eprintln!("warning: {warning}");
    }
    let settings: StripeSettings = Settings::load_section(config, "stripe")?;
    let Some(stripe) = tollgate::stripe::StripeGateway::from_settings(&settings)? else {
        anyhow::bail!(
            "Stripe is not configured: set STRIPE_SECRET_KEY (stripe.secret_key) to a secret key, \
             or a restricted key with write access to Webhook Endpoints, of the mode (test or \
             live) the endpoint is for"
        );
    };
    let version = endpoints::api_version();
    let events = tollgate::stripe::webhook::EVENTS;
    let mode = |livemode: bool| if livemode { "live mode" } else { "test mode" };
    match stripe.ensure_webhook_endpoint(&url, description).await? {
        EndpointChange::Created { endpoint, secret } => {
            println!(
                "created webhook endpoint {} ({}) for {}\n  API version {version}, {} events: {}",
                endpoint.id,
                mode(endpoint.livemode),
                endpoint.url,
                events.len(),
                events.join(", ")
            );
            let secret =
                secret.ok_or_else(|| anyhow::anyhow!("Stripe's answer carried no secret"))?;
            println!(
                "\nIts signing secret, which Stripe shows only now: give it to Tollgate as\n\n  \
                 STRIPE_WEBHOOK_SECRET={}\n\n(or stripe.webhook_secrets in the configuration \
                 file; while another endpoint's secret is still in use, list both, comma-separated: \
                 STRIPE_WEBHOOK_SECRET=whsec_new,whsec_old), then restart Tollgate.",
                secret.expose_secret()
            );
        }
        EndpointChange::Updated {
            endpoint,
            before,
            others,
        } => {
            let added: Vec<&str> = events
                .iter()
                .copied()
                .filter(|e| !before.iter().any(|b| b == e))
                .collect();
            let removed: Vec<&str> = before
                .iter()
                .map(String::as_str)
                .filter(|b| !events.contains(b))
                .collect();
            let change = match (added.is_empty(), removed.is_empty()) {
                (true, true) => "they were already these".to_owned(),
                _ => format!(
                    "added: {}; removed: {}",
                    list_or_none(&added),
                    list_or_none(&removed)
                ),
            };
            println!(
                "webhook endpoint {} ({}) already listens at {}: its events are now the {} \
                 Tollgate handles ({change})",
                endpoint.id,
                mode(endpoint.livemode),
                endpoint.url,
                events.len(),
            );
            println!(
                "Its signing secret is unchanged (Stripe shows a secret only when it creates an \
                 endpoint): Tollgate reads it from STRIPE_WEBHOOK_SECRET (stripe.webhook_secrets); \
                 the Dashboard shows it again under Developers > Webhooks > {} > Signing secret.",
                endpoint.id
            );
            if !endpoint.speaks_our_version() {
                let theirs = match &endpoint.api_version {
                    Some(v) => format!("API version {v}"),
                    None => "the account's default API version (which changes whenever the \
                             account is upgraded)"
                        .to_owned(),
                };
                eprintln!(
                    "warning: endpoint {id} renders events in {theirs}, but Tollgate speaks \
                     {version}, and Stripe cannot change an endpoint's API version. To move: \
                     create a second endpoint pinned to {version} (Dashboard: Developers > \
                     Webhooks > Add destination, or the Stripe CLI command in \
                     docs/STRIPE_SETUP.md, section 5), set STRIPE_WEBHOOK_SECRET=<its \
                     secret>,<the current one> and deploy, then delete endpoint {id}.",
                    id = endpoint.id
                );
            }
            if !endpoint.enabled {
                eprintln!(
                    "warning: endpoint {} is disabled: Stripe delivers nothing to it until it is \
                     enabled again (Dashboard: Developers > Webhooks)",
                    endpoint.id
                );
            }
            for other in others {
                eprintln!(
                    "note: endpoint {} ({}) also delivers to this URL; Tollgate processes each \
                     event once, but delete it once its secret is no longer in \
                     STRIPE_WEBHOOK_SECRET",
                    other.id,
                    other
                        .api_version
                        .as_deref()
                        .map_or("the account's default API version".to_owned(), |v| {
                            format!("API version {v}")
                        })
                );
            }
        }
    }
    Ok(())
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
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
            let progress = Progress::new();
            let report = reconcile::reconcile_all(&state, stripe, |report, total| {
                progress.show(report.customers, total)
            })
            .await?;
            progress.finish();
            report
        }
    };
    println!(
        "re-read {} customer(s): {} had drifted ({} record(s) repaired), {} failed",
        report.customers, report.drifted, report.changes, report.failed
    );
    if report.duplicates > 0 {
        println!(
            "{} of them carry a subject that is linked to another Stripe customer (the warnings \
             above name them): one subject should have one customer",
            report.duplicates
        );
    }
    if report.failed > 0 {
        anyhow::bail!(
            "{} customer(s) could not be re-read (the warnings above name them); run the sync \
             again to retry them",
            report.failed
        );
    }
    Ok(())
}

/// The progress of `sync --all`: a bar on a terminal; elsewhere (a log file, a CI or
/// Kubernetes job) plain lines, at each 5% of the customers and at least every 10 seconds.
enum Progress {
    Bar(indicatif::ProgressBar),
    Lines(std::sync::Mutex<LastLine>),
}

struct LastLine {
    at: std::time::Instant,
    done: usize,
}

impl Progress {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// The bar draws on standard error, so that is the terminal that counts.
    fn new() -> Progress {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Progress::Lines(std::sync::Mutex::new(LastLine {
                at: std::time::Instant::now(),
                done: 0,
            }));
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} customers {elapsed_precise}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Progress::Bar(bar)
    }

    fn show(&self, done: usize, total: usize) {
        match self {
            Progress::Bar(bar) => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            Progress::Lines(last) => {
                let Ok(mut last) = last.lock() else { return };
                let step = total.div_ceil(20).max(1);
                let due = done == total
                    || done / step > last.done / step
                    || last.at.elapsed() >= Self::EVERY;
                if due && done > last.done {
                    eprintln!("synced {done}/{total} customers");
                    *last = LastLine {
                        at: std::time::Instant::now(),
                        done,
                    };
                }
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish();
        }
    }
}
