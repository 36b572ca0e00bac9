use gateway::config::{HELP, Settings};
use runtime::config::{Env, cli_args, exit_on_config_error};

// glibc's malloc was about a quarter of the gateway's CPU under load (perf: malloc, _int_free,
// malloc_consolidate); every request allocates and frees headers, JSON and buffers on two threads.
// Without transparent huge pages (`no_thp`): with them RSS under load rose from 37 to 61 MB.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = cli_args("gateway", HELP);
    let env = Env::from_process();
    let settings = Settings::from_env(&env).unwrap_or_else(|e| exit_on_config_error("gateway", &e));
    if args.first().map(String::as_str) == Some("token") {
        // A usage error is a usage error (exit 2, one line), not a backtrace.
        if let Err(e) = print_token(&settings, &args[1..]) {
            eprintln!("gateway token: {e:#}");
            std::process::exit(2);
        }
        return Ok(());
    }
    if args == ["healthcheck"] {
        runtime::healthcheck::exit("gateway", settings.addr);
    }
    if let Some(other) = args.first() {
        eprintln!("gateway: unknown argument {other:?}; see --help");
        std::process::exit(2);
    }
    runtime::telemetry::init();
    let listener = tokio::net::TcpListener::bind(settings.addr).await?;
    let ran = gateway::run(listener, settings, runtime::shutdown::signal()).await;
    runtime::telemetry::shutdown();
    ran
}

fn print_token(settings: &Settings, args: &[String]) -> anyhow::Result<()> {
    let mut sub = None;
    let mut ttl = 3600u64;
    let mut key = None;
    let mut kid = None;
    let mut operator = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sub" => sub = it.next().cloned(),
            "--ttl" => {
                ttl = it.next().and_then(|v| v.parse().ok()).ok_or_else(|| anyhow::anyhow!("--ttl takes seconds"))?
            }
            "--key" => key = it.next().cloned(),
            "--kid" => kid = it.next().cloned(),
            "--operator" => operator = true,
            other => anyhow::bail!("unknown argument {other:?}; see --help"),
        }
    }
    let sub = sub.ok_or_else(|| anyhow::anyhow!("token needs --sub <user id>"))?;
    let (aud, iss) = (&settings.auth.audience, settings.auth.issuer.as_deref());
    let token = match (key, kid) {
        (Some(path), Some(kid)) => {
            let pem = std::fs::read(&path).map_err(|e| anyhow::anyhow!("--key {path}: {e}"))?;
            gateway::auth::dev_token::with_pem(&pem, &kid, &sub, aud, iss, ttl)?
        }
        (Some(_), None) | (None, Some(_)) => anyhow::bail!("--key and --kid go together"),
        (None, None) => {
            let secret = settings
                .auth
                .hs256_secret()
                .ok_or_else(|| anyhow::anyhow!("no SUPABASE_JWT_SECRET to sign with; pass --key <pem> --kid <kid>"))?;
            let mut claims = gateway::auth::dev_token::claims(&sub, aud, iss, ttl)?;
            if operator {
                let claim = settings
                    .auth
                    .operator_claim
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("OPERATOR_CLAIM is none: nobody is an operator"))?;
                gateway::auth::dev_token::make_operator(&mut claims, claim);
            }
            gateway::auth::dev_token::sign_hs256(secret, &claims)?
        }
    };
    #[allow(clippy::print_stdout)]
    {
        println!("{token}");
    }
    Ok(())
}
