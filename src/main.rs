use clap::Parser;
use stowage::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.json_logs);
    let result = match &cli.command {
        Command::Plan(args) => stowage::commands::plan::run(args),
        Command::Synth(args) => stowage::commands::synth::run(args),
        Command::Serve(args) => stowage::commands::serve::run(args),
        Command::Manifests(args) => stowage::commands::manifests::run(args),
        Command::Targets(args) => stowage::commands::targets::run(args),
        Command::Upload(args) => stowage::commands::upload::run(args),
        Command::Profile(args) => stowage::commands::profile::run(args),
        Command::Attack(args) => stowage::commands::attack::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Off EC2 the SDK's metadata lookup fails on every start; that warning says nothing useful.
const DEFAULT_LOG_FILTER: &str = "info,aws_config::imds=error";

/// The AWS SDK's crates. At debug they log the credentials they resolved (the access key id)
/// and every request's endpoint resolution; they stay at info unless `RUST_LOG` names one of
/// them (`RUST_LOG=debug,aws_smithy_runtime=debug`).
const AWS_TARGETS: [&str; 18] = [
    "aws_config",
    "aws_credential_types",
    "aws_runtime",
    "aws_sdk_s3",
    "aws_sdk_sts",
    "aws_sigv4",
    "aws_smithy_async",
    "aws_smithy_checksums",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_smithy_json",
    "aws_smithy_observability",
    "aws_smithy_query",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_types",
    "aws_smithy_xml",
    "aws_types",
];

/// `RUST_LOG` (else the default) with the AWS SDK held at info unless it is asked for by name.
fn log_filter(env: Option<&str>) -> String {
    match env.filter(|e| !e.trim().is_empty()) {
        None => DEFAULT_LOG_FILTER.to_string(),
        Some(e) if e.contains("aws") => e.to_string(),
        Some(e) => AWS_TARGETS.iter().fold(e.to_string(), |f, t| format!("{f},{t}=info")),
    }
}

fn init_logging(json: bool) {
    let wanted = std::env::var("RUST_LOG").ok();
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(wanted.as_deref())).unwrap_or_else(|e| {
        eprintln!("RUST_LOG: {e}; logging at the default ({DEFAULT_LOG_FILTER})");
        DEFAULT_LOG_FILTER.into()
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    // A panic (an engine bug on an inference thread, which the node survives) is logged like
    // everything else, so that `--json-logs` collectors see it with its thread and place.
    std::panic::set_hook(Box::new(|info| {
        let message = info.payload_as_str().unwrap_or("(no message)");
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        // As the default hook: a backtrace when RUST_BACKTRACE asks for one.
        let trace = std::backtrace::Backtrace::capture();
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(%thread, %location, backtrace = %trace, "panic: {message}");
        } else {
            tracing::error!(%thread, %location, "panic: {message}");
        }
    }));
}
