//! `mandate-gateway --config FILE`: see docs/GATEWAY.md.

use std::path::PathBuf;
use std::process::ExitCode;

use actix_web::{web, App, HttpServer};
use clap::Parser;
use mandate_gateway::config::GatewayConfig;

/// mandate's verifying gateway: forward-auth checks or a reverse proxy that accepts only live
/// mandate tokens for each route's audience.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The TOML configuration (docs/GATEWAY.md).
    #[arg(long, env = "MANDATE_GATEWAY_CONFIG")]
    config: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = match GatewayConfig::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mandate-gateway: {error}");
            return ExitCode::from(2);
        }
    };
    match actix_web::rt::System::new().block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mandate-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: GatewayConfig) -> anyhow::Result<()> {
    let gateway = web::Data::new(mandate_gateway::build(&config).await?);
    tracing::info!(listen = %config.listen, mode = ?config.mode, routes = config.routes.len(), "mandate-gateway listening");
    HttpServer::new(move || {
        App::new()
            .app_data(gateway.clone())
            .configure(mandate_gateway::server::configure)
    })
    .bind(config.listen)?
    .run()
    .await?;
    Ok(())
}
