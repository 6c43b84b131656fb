use clap::Parser;
use stowage::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let service = match &cli.command {
        Command::Serve(_) => "stowage-node",
        Command::Gateway(_) => "stowage-gateway",
        _ => "stowage",
    };
    // Held to the end: dropping it sends the spans not yet sent.
    let _exporter = match init_logging(cli.json_logs, cli.otlp_endpoint.as_deref(), service) {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Plan(args) => stowage::commands::plan::run(args),
        Command::Diff(args) => stowage::commands::diff::run(args),
        Command::Synth(args) => stowage::commands::synth::run(args),
        Command::Serve(args) => stowage::commands::serve::run(args),
        Command::Gateway(args) => stowage::commands::gateway::run(args),
        Command::Manifests(args) => stowage::commands::manifests::run(args),
        Command::Targets(args) => stowage::commands::targets::run(args),
        Command::Upload(args) => stowage::commands::upload::run(args),
        Command::Profile(args) => stowage::commands::profile::run(args),
        Command::Attack(args) => stowage::commands::attack::run(args),
        Command::Verify(args) => stowage::commands::verify::run(args),
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

/// Where actix-http reports a request it could not parse, at ERROR: anyone could flood the log
/// (and trip alerts) with malformed requests. Counted in `stowage_malformed_requests_total`;
/// logged only when `RUST_LOG` names `actix_http`.
const MALFORMED_HTTP: &str = "actix_http::h1::dispatcher";

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

/// `RUST_LOG` (else the default) with the AWS SDK held at info, malformed-request reports and the
/// request steps' spans off, each unless `RUST_LOG` asks for it by name.
fn log_filter(env: Option<&str>) -> String {
    let wanted = env.filter(|e| !e.trim().is_empty()).unwrap_or(DEFAULT_LOG_FILTER);
    let mut filter = wanted.to_string();
    if !wanted.contains("aws_") {
        filter = AWS_TARGETS.iter().fold(filter, |f, t| format!("{f},{t}=info"));
    }
    if !wanted.contains("actix_http") {
        filter = format!("{filter},{MALFORMED_HTTP}=off");
    }
    if !wanted.contains(STEPS) {
        filter = format!("{filter},{STEPS}=off");
    }
    filter
}

/// The spans of a request's steps on the node (`stowage_node::step!`): for the trace exporter,
/// not the logs, unless `RUST_LOG` names them.
const STEPS: &str = "stowage::step";

/// Counts what actix-http reports about requests it could not parse.
struct MalformedHttp;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for MalformedHttp {
    fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        metrics::counter!(stowage_node::metrics::MALFORMED).increment(1);
    }
}

/// Sets up logging and, with an OTLP endpoint, trace export (returned: keep it to the end).
fn init_logging(json: bool, otlp: Option<&str>, service: &str) -> anyhow::Result<Option<stowage::trace::Exporter>> {
    let wanted = std::env::var("RUST_LOG").ok();
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(wanted.as_deref())).unwrap_or_else(|e| {
        eprintln!("RUST_LOG: {e}; logging at the default ({DEFAULT_LOG_FILTER})");
        DEFAULT_LOG_FILTER.into()
    });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // Colour only for a person at a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    // JSON lines with the message and the event's fields at the top level, as collectors expect.
    let fmt = if json {
        fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
    } else {
        fmt.boxed()
    };
    let malformed = tracing_subscriber::filter::Targets::new().with_target(MALFORMED_HTTP, tracing::Level::ERROR);
    let (exporter, otel) = match otlp {
        Some(endpoint) => {
            let (exporter, layer) = stowage::trace::Exporter::start(endpoint, service)?;
            (Some(exporter), Some(layer))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(MalformedHttp.with_filter(malformed))
        .with(otel)
        .init();
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
    Ok(exporter)
}
