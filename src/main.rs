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

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
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
