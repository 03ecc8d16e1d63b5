use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use watchpost::{Server, app, cli, config};

/// Watchpost: turn phones and browsers into a self-hosted home-camera system.
///
/// Configuration comes from environment variables (and a `.env` file); see README.md.
#[derive(Parser)]
#[command(name = "watchpost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit (the server also applies them at boot).
    Migrate,
    /// Backfill Better Auth credential accounts for users that have none.
    AuthMigrate,
}

/// mimalloc, with large blocks left to glibc (see [`watchpost::allocator`]).
#[global_allocator]
static ALLOCATOR: watchpost::allocator::Allocator = watchpost::allocator::Allocator;

/// glibc serves the large blocks ([`watchpost::allocator`]) and the C libraries linked in
/// (SQLite, GStreamer, aws-lc): allocations this large are mapped on their own and
/// unmapped when freed. Without a fixed threshold glibc raises its own after the first
/// such free and keeps the blocks in per-thread arenas for good: password hashing (scrypt,
/// as Better Auth does it) takes 32 MiB per sign-in, and a burst of 20 sign-ups left the
/// process 330 MiB larger.
const MMAP_THRESHOLD_BYTES: i32 = watchpost::allocator::LARGE_BLOCK_BYTES as i32;

/// Before any thread starts. An operator's own `MALLOC_MMAP_THRESHOLD_` wins.
fn return_large_allocations_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only changes allocator tuning; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        }
    }
}

fn main() -> ExitCode {
    return_large_allocations_to_the_os();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .init();
    let config = match config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("watchpost: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("watchpost: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("watchpost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: watchpost::Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let server = Server::build(config).await?;
            server.run(shutdown_signal()).await?;
            tracing::info!("shut down cleanly");
        }
        Command::Migrate => {
            let db = app::connect_and_migrate(&config).await?;
            println!("migrations applied ({})", db.kind());
            db.close().await;
        }
        Command::AuthMigrate => {
            let db = app::connect_and_migrate(&config).await?;
            let report = cli::auth_migrate::run(&db).await?;
            println!(
                "auth-migrate: {} users created, {} credential accounts created, {} users still without a password",
                report.users_created, report.accounts_created, report.users_without_password
            );
            db.close().await;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested; draining connections");
}
