use agent::config::{HELP, Settings};
use runtime::config::{Env, cli_args, exit_on_config_error};

// As in the gateway: glibc malloc/free were the largest share (28 %) of an agent's CPU per
// task in the throughput benchmark's profile.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = cli_args("agent", HELP);
    let healthcheck = args.first().map(String::as_str) == Some("healthcheck") && args.len() == 1;
    if let Some(other) = args.first().filter(|_| !healthcheck) {
        eprintln!("agent: unknown argument {other:?}; see --help");
        std::process::exit(2);
    }
    let settings = Settings::from_env(&Env::from_process()).unwrap_or_else(|e| exit_on_config_error("agent", &e));
    if healthcheck {
        runtime::healthcheck::exit("agent", settings.health_addr);
    }
    runtime::telemetry::init();
    let health = tokio::net::TcpListener::bind(settings.health_addr).await?;
    let ran = agent::run(health, settings, runtime::shutdown::signal()).await;
    runtime::telemetry::shutdown();
    ran
}
