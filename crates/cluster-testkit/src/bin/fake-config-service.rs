//! `fake-config-service`: the fake isp-config-service as a standalone program, for local
//! development (point a Go isp-kit service's config hosts at `--listen`) and for tests that
//! need the service in another process.
//!
//! ```text
//! fake-config-service [--listen ADDR] [--admin ADDR] [--shutdown-timeout DUR]
//!     [--admin-header-timeout DUR] [--admin-body-timeout DUR] [--admin-max-connections N]
//! ```
//! - `--listen` (default `127.0.0.1:9001`): modules connect to `ws://ADDR/isp-etp/`;
//! - `--admin` (default `127.0.0.1:9002`): the admin HTTP API (`cluster_testkit::admin`; the
//!   routes are listed in `--help`), which also answers isp-config-service's infra route
//!   `/internal/metrics/autodiscovery`, so Prometheus can discover the modules' metrics from
//!   it as from the real service;
//! - `--shutdown-timeout` (default `5s`): after SIGINT/SIGTERM the process exits at the latest
//!   this long after the signal, whatever is still open;
//! - `--admin-header-timeout` (default `10s`), `--admin-body-timeout` (default `10s`),
//!   `--admin-write-timeout` (default `10s`), `--admin-max-connections` (default `256`): the
//!   admin server's limits
//!   (`cluster_testkit::admin::AdminConfig`).
//!
//! Durations are written as in Go (`500ms`, `5s`, `2m`, `1h30m`; a bare number is seconds):
//! [`cluster_testkit::duration::parse_duration`], the probe's parser too.
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
//! Frame recording is off: a long-running process should not keep every frame, and the admin
//! API does not show frames.
//!
//! Arguments are parsed by clap (derive), behind the testkit's `bin` feature, so the library
//! that tests depend on does not pull it.

use clap::Parser;
use clap::builder::NonEmptyStringValueParser;
use cluster_testkit::FakeConfigService;
use cluster_testkit::admin::AdminConfig;
use cluster_testkit::duration::parse_duration;
use cluster_transport::ws::WsServerConfig;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

/// What `--help` shows after the flags.
const AFTER_HELP: &str = "\
Durations: as in Go (500ms, 5s, 2m, 1h30m; a bare number is seconds). Port 0 picks a free
port; the bound addresses are printed on stdout, one a line:
    listen ws://127.0.0.1:9001/isp-etp/
    admin http://127.0.0.1:9002/
Logs go to stderr, filtered by RUST_LOG (default info).
SIGINT/SIGTERM close the module connections with 1000 and exit 0.

EXIT STATUS:
    0 stopped by SIGINT/SIGTERM (or --help)   1 cannot bind or start   2 usage error

ADMIN API:
    GET  /modules                      modules, connections, instances, configs, schemas
    GET  /modules/{name}/config        the active config (raw JSON)
    PUT  /modules/{name}/config[?version=N][&unsafe=true]   body: the new config
    POST /modules/{name}/error?event=ERROR_CONFIG|ERROR_CONNECTION   body: the text
    POST /modules/{name}/disconnect    close the module's connections
    GET  /routes                       the routing table as modules get it
    POST /config/config/get_active_config_by_module_name, /config/config/create_update_config,
         /config/module/get_modules_info, /config/routing/get_routes   (isp-config-service)
    GET|POST /internal/metrics/autodiscovery   Prometheus HTTP service discovery: the ready
         instances that declared metricsAutodiscovery (isp-config-service's infra server)";

/// The command line. Defaults are those of [`AdminConfig::default`] and
/// `admin::DEFAULT_SHUTDOWN_TIMEOUT` (a unit test checks they agree).
#[derive(Debug, Parser)]
#[command(
    name = "fake-config-service",
    about = "fake-config-service: a fake isp-config-service for local development and tests",
    after_help = AFTER_HELP,
    args_override_self = true,
    disable_version_flag = true
)]
struct Cli {
    /// Where modules connect: ws://ADDR/isp-etp/
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001", value_parser = NonEmptyStringValueParser::new())]
    listen: String,
    /// The admin HTTP API
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9002", value_parser = NonEmptyStringValueParser::new())]
    admin: String,
    /// Exit at the latest this long after SIGINT/SIGTERM
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// Close an admin connection whose request head is late
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    admin_header_timeout: Duration,
    /// Answer 408 to a request body that is late
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    admin_body_timeout: Duration,
    /// Drop an admin client that stops reading its response
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    admin_write_timeout: Duration,
    /// Answer 503 to admin connections over N (at least 1)
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    admin_max_connections: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct Args {
    listen: String,
    admin: String,
    shutdown_timeout: Duration,
    admin_config: AdminConfig,
}

impl From<Cli> for Args {
    fn from(cli: Cli) -> Self {
        Self {
            listen: cli.listen,
            admin: cli.admin,
            shutdown_timeout: cli.shutdown_timeout,
            admin_config: AdminConfig {
                max_connections: usize::try_from(cli.admin_max_connections).unwrap_or(usize::MAX),
                header_timeout: cli.admin_header_timeout,
                body_timeout: cli.admin_body_timeout,
                write_timeout: cli.admin_write_timeout,
                shutdown_timeout: cli.shutdown_timeout,
                ..AdminConfig::default()
            },
        }
    }
}

/// The smallest allocation glibc's malloc serves with a mapping of its own (8 KiB), set before
/// anything else runs.
///
/// Why: a burst of connections allocates and frees larger buffers in their handshakes (the
/// upgrade request's read buffer, the first frames) between the connections' small long-lived
/// allocations; in the heap, what they leave stays in the RSS as holes, in mappings of their
/// own it goes back to the kernel. The scale bench (`benches/scale.rs`, which prints the
/// per-connection growth) decided it, first against mimalloc and glibc's arena and trim
/// settings, and again once the WebSocket layer held no buffer while idle (the figures with
/// and without it: the repository's `docs/performance.md`, server memory per connection).
/// The price, an `mmap` and a `munmap` per such buffer, is paid in handshakes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn map_large_allocations() {
    // SAFETY: mallopt only changes a malloc setting; called before any thread starts.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 10) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn map_large_allocations() {}

fn main() -> ExitCode {
    map_large_allocations();
    // Help exits 0 on stdout; a usage error exits 2 on stderr (clap's `exit`).
    let args = Args::from(Cli::try_parse().unwrap_or_else(|err| err.exit()));
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
    // Before the addresses are printed: whoever reads them may signal at once.
    let signal = shutdown_signal()?;
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

    let signal = signal.await;
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

/// Installs the SIGINT and SIGTERM handlers now (so that a signal sent once the addresses are
/// printed is never the default action, which kills the process), and returns the wait for
/// the first of them, which yields its name.
fn shutdown_signal() -> Result<impl Future<Output = &'static str>, String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_testkit::admin::DEFAULT_SHUTDOWN_TIMEOUT;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("fake-config-service").chain(args.iter().copied()))
            .map(Args::from)
    }

    #[test]
    fn the_defaults_are_the_libraries_and_both_spellings_parse() {
        let defaults = Args {
            listen: "127.0.0.1:9001".into(),
            admin: "127.0.0.1:9002".into(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            admin_config: AdminConfig::default(),
        };
        assert_eq!(parse(&[]).unwrap(), defaults);
        let args = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--admin=127.0.0.1:7",
            "--shutdown-timeout=250ms",
            "--admin-header-timeout",
            "2s",
            "--admin-body-timeout=3s",
            "--admin-write-timeout=1m30s",
            "--admin-max-connections",
            "9",
            "--listen=127.0.0.1:1", // given twice: the last one counts
        ])
        .unwrap();
        assert_eq!(
            (args.listen.as_str(), args.admin.as_str()),
            ("127.0.0.1:1", "127.0.0.1:7")
        );
        assert_eq!(args.shutdown_timeout, Duration::from_millis(250));
        assert_eq!(
            args.admin_config,
            AdminConfig {
                max_connections: 9,
                header_timeout: Duration::from_secs(2),
                body_timeout: Duration::from_secs(3),
                write_timeout: Duration::from_secs(90),
                shutdown_timeout: Duration::from_millis(250),
                ..AdminConfig::default()
            }
        );
        let help = parse(&["--listen", "a", "-h"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        assert_eq!(help.exit_code(), 0);
    }

    #[test]
    fn refuses_unknown_and_missing_values_with_status_2() {
        for (bad, says) in [
            (&["--port", "1"][..], "unexpected argument '--port'"),
            (&["--listen"], "a value is required for '--listen <ADDR>'"),
            (&["--admin="], "a value is required for '--admin <ADDR>'"),
            (&["--shutdown-timeout", "5 s"], "is not a duration"),
            (&["--admin-body-timeout=fast"], "\"fast\" is not a duration"),
            (&["--admin-max-connections", "0"], "invalid value '0'"),
            (&["--admin-header-timeout"], "a value is required"),
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            assert!(err.to_string().contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn help_shows_every_flag_its_default_the_output_and_the_exit_statuses() {
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        for flag in [
            "--listen <ADDR>",
            "--admin <ADDR>",
            "--shutdown-timeout <DUR>",
            "--admin-header-timeout <DUR>",
            "--admin-body-timeout <DUR>",
            "--admin-write-timeout <DUR>",
            "--admin-max-connections <N>",
            "-h, --help",
        ] {
            assert!(help.contains(flag), "{flag} missing:\n{help}");
        }
        for default in [
            "[default: 127.0.0.1:9001]",
            "[default: 127.0.0.1:9002]",
            "[default: 5s]",
            "[default: 10s]",
            "[default: 256]",
        ] {
            assert!(help.contains(default), "{default} missing:\n{help}");
        }
        for text in [
            "listen ws://",
            "EXIT STATUS",
            "2 usage error",
            "ADMIN API",
            "/internal/metrics/autodiscovery",
            "RUST_LOG",
        ] {
            assert!(help.contains(text), "{text} missing:\n{help}");
        }
    }
}
