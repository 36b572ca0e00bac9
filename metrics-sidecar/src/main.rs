use metrics_sidecar::config::{HELP, Settings};
use runtime::config::{Env, cli_args, exit_on_config_error};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = cli_args("metrics-sidecar", HELP);
    let healthcheck = args.first().map(String::as_str) == Some("healthcheck") && args.len() == 1;
    if let Some(other) = args.first().filter(|_| !healthcheck) {
        eprintln!("metrics-sidecar: unknown argument {other:?}; see --help");
        std::process::exit(2);
    }
    let settings =
        Settings::from_env(&Env::from_process()).unwrap_or_else(|e| exit_on_config_error("metrics-sidecar", &e));
    if healthcheck {
        runtime::healthcheck::exit("metrics-sidecar", settings.addr);
    }
    runtime::telemetry::init();
    // Listening for the signal from here, so one during the CloudWatch setup is not fatal.
    let shutdown = runtime::shutdown::token();
    let publisher = metrics_sidecar::publisher(&settings).await;
    let listener = tokio::net::TcpListener::bind(settings.addr).await?;
    let ran = metrics_sidecar::run(listener, settings, publisher, shutdown.cancelled_owned()).await;
    runtime::telemetry::shutdown();
    ran
}
