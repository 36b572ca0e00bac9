use gateway::config::{HELP, Settings};
use proto::config::{Env, cli_args, exit_on_config_error};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = cli_args("gateway", HELP);
    let env = Env::from_process();
    let settings = Settings::from_env(&env).unwrap_or_else(|e| exit_on_config_error("gateway", &e));
    if args.first().map(String::as_str) == Some("token") {
        return print_token(&settings, &args[1..]);
    }
    if let Some(other) = args.first() {
        eprintln!("gateway: unknown argument {other:?}; see --help");
        std::process::exit(2);
    }
    proto::telemetry::init();
    let listener = tokio::net::TcpListener::bind(settings.addr).await?;
    gateway::run(listener, settings, proto::shutdown::signal()).await
}

fn print_token(settings: &Settings, args: &[String]) -> anyhow::Result<()> {
    let mut sub = None;
    let mut ttl = 3600u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sub" => sub = it.next().cloned(),
            "--ttl" => {
                ttl = it.next().and_then(|v| v.parse().ok()).ok_or_else(|| anyhow::anyhow!("--ttl takes seconds"))?
            }
            other => anyhow::bail!("unknown argument {other:?}; see --help"),
        }
    }
    let sub = sub.ok_or_else(|| anyhow::anyhow!("token needs --sub <user id>"))?;
    let token = gateway::auth::mint_dev_token(
        settings.jwt_secret_bytes(),
        &sub,
        &settings.audience,
        settings.issuer.as_deref(),
        ttl,
    )?;
    #[allow(clippy::print_stdout)]
    {
        println!("{token}");
    }
    Ok(())
}
