//! `fake-config-service`: the fake isp-config-service as a standalone program, for local
//! development (point a Go isp-kit service's config hosts at `--listen`) and for tests that
//! need the service in another process.
//!
//! ```text
//! fake-config-service [--listen ADDR] [--admin ADDR] [--shutdown-timeout DUR]
//!     [--admin-header-timeout DUR] [--admin-body-timeout DUR] [--admin-max-connections N]
//! ```
//! - `--listen` (default `127.0.0.1:9001`): modules connect to `ws://ADDR/isp-etp/`;
//! - `--admin` (default `127.0.0.1:9002`): the admin HTTP API (`cluster_testkit::admin`);
//! - `--shutdown-timeout` (default `5s`): after SIGINT/SIGTERM the process exits at the latest
//!   this long after the signal, whatever is still open;
//! - `--admin-header-timeout` (default `10s`), `--admin-body-timeout` (default `10s`),
//!   `--admin-write-timeout` (default `10s`), `--admin-max-connections` (default `256`): the
//!   admin server's limits
//!   (`cluster_testkit::admin::AdminConfig`).
//!
//! Durations are whole numbers with `ms` or `s` (`500ms`, `5s`).
//!
//! Port `0` picks a free port. Once both are bound it prints them on stdout, one a line, and
//! flushes:
//! ```text
//! listen ws://127.0.0.1:9001/isp-etp/
//! admin http://127.0.0.1:9002/
//! ```
//! Logs go to stderr (`RUST_LOG`, default `info`). On SIGINT or SIGTERM it refuses new module
//! connections (closed with 1013), closes the open ones with 1000 (normal closure, so Go
//! clients reconnect elsewhere as after any normal close), stops both listeners, and exits
//! with status 0 — within `--shutdown-timeout` of the signal: past it, whatever is still open
//! (a module that does not answer its close, an admin request that never ends) is dropped.
//! Usage errors exit with 2, a failure to bind with 1.
//!
//! At start it raises its soft limit of open files to the hard limit (as Go programs do since
//! Go 1.19), so it can serve as many module connections as the system lets it.
//!
//! Each connection reads with a 1 KiB buffer (the library's default is 4 KiB): modules send
//! few and small messages, and a server with thousands of them saves ~3 KiB each.
//!
//! Frame recording is off: a long-running process should not keep every frame, and the admin
//! API does not show frames.
//!
//! Arguments are parsed by hand: two options do not justify a parser dependency in a crate
//! that tests depend on.

use cluster_testkit::FakeConfigService;
use cluster_testkit::admin::{AdminConfig, DEFAULT_SHUTDOWN_TIMEOUT};
use cluster_transport::ws::WsServerConfig;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
fake-config-service: a fake isp-config-service for local development and tests

USAGE:
    fake-config-service [--listen ADDR] [--admin ADDR] [OPTIONS]

OPTIONS:
    --listen ADDR                 where modules connect: ws://ADDR/isp-etp/ (default 127.0.0.1:9001)
    --admin ADDR                  the admin HTTP API (default 127.0.0.1:9002)
    --shutdown-timeout DUR        exit at the latest this long after SIGINT/SIGTERM (default 5s)
    --admin-header-timeout DUR    close an admin connection whose request head is late (default 10s)
    --admin-body-timeout DUR      answer 408 to a request body that is late (default 10s)
    --admin-write-timeout DUR     drop an admin client that stops reading its response (default 10s)
    --admin-max-connections N     answer 503 to admin connections over N (default 256)
    -h, --help                    print this help

Durations: a whole number with ms or s (500ms, 5s). Port 0 picks a free port; the bound
addresses are printed on stdout. Logs go to stderr, filtered by RUST_LOG (default info).
SIGINT/SIGTERM close the module connections with 1000 and exit 0.

ADMIN API:
    GET  /modules                      modules, connections, instances, configs, schemas
    GET  /modules/{name}/config        the active config (raw JSON)
    PUT  /modules/{name}/config[?version=N][&unsafe=true]   body: the new config
    POST /modules/{name}/error?event=ERROR_CONFIG|ERROR_CONNECTION   body: the text
    POST /modules/{name}/disconnect    close the module's connections
    GET  /routes                       the routing table as modules get it
    POST /config/config/get_active_config_by_module_name, /config/config/create_update_config,
         /config/module/get_modules_info, /config/routing/get_routes   (isp-config-service)
";

#[derive(Debug, PartialEq, Eq)]
struct Args {
    listen: String,
    admin: String,
    shutdown_timeout: Duration,
    admin_config: AdminConfig,
}

/// `500ms` or `5s`.
fn parse_duration(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        ms.parse().ok().map(Duration::from_millis)
    } else {
        text.strip_suffix('s')?
            .parse()
            .ok()
            .map(Duration::from_secs)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Run(Args),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut parsed = Args {
        listen: "127.0.0.1:9001".to_owned(),
        admin: "127.0.0.1:9002".to_owned(),
        shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        admin_config: AdminConfig::default(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let what = match name.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--listen" | "--admin" => "an address, e.g. 127.0.0.1:0",
            "--shutdown-timeout"
            | "--admin-header-timeout"
            | "--admin-body-timeout"
            | "--admin-write-timeout" => "a duration, e.g. 5s or 500ms",
            "--admin-max-connections" => "a positive number",
            _ => return Err(format!("unknown argument {arg:?}")),
        };
        let value = match inline {
            Some(value) => value,
            None => args.next().unwrap_or_default(),
        };
        let bad = || format!("{name} needs {what}");
        if value.is_empty() {
            return Err(bad());
        }
        let duration = || parse_duration(&value).ok_or_else(bad);
        match name.as_str() {
            "--listen" => parsed.listen = value.clone(),
            "--admin" => parsed.admin = value.clone(),
            "--shutdown-timeout" => {
                parsed.shutdown_timeout = duration()?;
                parsed.admin_config.shutdown_timeout = parsed.shutdown_timeout;
            }
            "--admin-header-timeout" => parsed.admin_config.header_timeout = duration()?,
            "--admin-body-timeout" => parsed.admin_config.body_timeout = duration()?,
            "--admin-write-timeout" => parsed.admin_config.write_timeout = duration()?,
            _ => {
                parsed.admin_config.max_connections =
                    value.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
            }
        }
    }
    Ok(Parsed::Run(parsed))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("fake-config-service: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match raise_open_file_limit() {
        Ok((before, after)) if before != after => {
            tracing::debug!(before, after, "raised the open-file limit");
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("fake-config-service: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // Whatever is still running (nothing, unless the shutdown deadline passed) is dropped.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("fake-config-service: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let ws_config = WsServerConfig::default();
    let service = FakeConfigService::builder()
        .recording(false)
        .ws_config(ws_config)
        .build();
    let listen = service
        .listen_ws(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let admin_listener = tokio::net::TcpListener::bind(&args.admin)
        .await
        .map_err(|e| format!("cannot bind the admin API to {}: {e}", args.admin))?;
    let admin = admin_listener
        .local_addr()
        .map_err(|e| format!("admin listener: {e}"))?;
    {
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop the service.
        let _ = writeln!(out, "listen ws://{listen}/isp-etp/");
        let _ = writeln!(out, "admin http://{admin}/");
        let _ = out.flush();
    }
    tracing::info!(%listen, %admin, "fake config service started");

    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(cluster_testkit::admin::serve_with(
        admin_listener,
        service.clone(),
        args.admin_config,
        async {
            let _ = admin_stopped.await;
        },
    ));

    let signal = shutdown_signal().await?;
    tracing::info!(
        signal,
        deadline_ms = args.shutdown_timeout.as_millis(),
        "shutting down"
    );
    let shutdown = async {
        service.refuse_connections(true);
        // The admin server winds down (its requests in flight get the same deadline) while
        // the module connections close.
        let _ = stop_admin.send(());
        let closed = service.disconnect_all().await;
        service.stop().await;
        match admin_task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "admin API ended with an error"),
            Err(err) => tracing::warn!(error = %err, "admin API task failed"),
        }
        closed
    };
    match tokio::time::timeout(args.shutdown_timeout, shutdown).await {
        Ok(closed) => tracing::info!(closed, "fake config service stopped"),
        Err(_) => tracing::warn!(
            deadline_ms = args.shutdown_timeout.as_millis(),
            "shutdown deadline passed; exiting with what is still open"
        ),
    }
    Ok(())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit before and after.
#[cfg(unix)]
fn raise_open_file_limit() -> std::io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit; raising the soft limit up to the hard one is
        // allowed to any process.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> std::io::Result<(u64, u64)> {
    Ok((0, 0))
}

/// Waits for SIGINT or SIGTERM; returns its name.
async fn shutdown_signal() -> Result<&'static str, String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("Ctrl-C: {e}"))?;
        Ok("Ctrl-C")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults_and_both_spellings() {
        let defaults = Args {
            listen: "127.0.0.1:9001".into(),
            admin: "127.0.0.1:9002".into(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            admin_config: AdminConfig::default(),
        };
        assert_eq!(parse(&[]), Ok(Parsed::Run(defaults)));
        let Ok(Parsed::Run(args)) = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--admin=127.0.0.1:7",
            "--shutdown-timeout=250ms",
            "--admin-header-timeout",
            "2s",
            "--admin-body-timeout=3s",
            "--admin-write-timeout=4s",
            "--admin-max-connections",
            "9",
        ]) else {
            panic!("not parsed");
        };
        assert_eq!(
            (args.listen.as_str(), args.admin.as_str()),
            ("127.0.0.1:0", "127.0.0.1:7")
        );
        assert_eq!(args.shutdown_timeout, Duration::from_millis(250));
        assert_eq!(
            args.admin_config,
            AdminConfig {
                max_connections: 9,
                header_timeout: Duration::from_secs(2),
                body_timeout: Duration::from_secs(3),
                write_timeout: Duration::from_secs(4),
                shutdown_timeout: Duration::from_millis(250),
                ..AdminConfig::default()
            }
        );
        assert_eq!(parse(&["--listen", "a", "-h"]), Ok(Parsed::Help));
    }

    #[test]
    fn refuses_unknown_and_missing_values() {
        assert!(
            parse(&["--port", "1"])
                .unwrap_err()
                .contains("unknown argument")
        );
        assert!(
            parse(&["--listen"])
                .unwrap_err()
                .contains("needs an address")
        );
        assert!(
            parse(&["--admin="])
                .unwrap_err()
                .contains("needs an address")
        );
        for bad in [
            &["--shutdown-timeout", "5"][..],
            &["--admin-body-timeout=fast"],
            &["--admin-max-connections", "0"],
            &["--admin-header-timeout"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
