//! The command line both transport probes (`grpc_probe`, `http_probe`) share: `call` or
//! `serve`, `--help`, and the flags they have in common (`--hosts`, `--body`, `--timeout`,
//! `--n`, `--listen`); each probe adds its own flags through a callback.

use std::time::Duration;

/// The flags both probes have.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Common {
    /// `call --hosts`, comma-separated.
    pub(crate) hosts: Vec<String>,
    /// `call --body`, checked to be JSON.
    pub(crate) body: Option<String>,
    /// `call --timeout`.
    pub(crate) timeout: Option<Duration>,
    /// `call --n` (at least 1).
    pub(crate) n: usize,
    /// `serve --listen` (default `127.0.0.1:0`).
    pub(crate) listen: String,
}

/// What the command line asks for, before the probe's own checks.
pub(crate) enum Parsed {
    /// `--help`, `-h`, `help` or nothing.
    Help,
    /// `call` with the common flags.
    Call(Common),
    /// `serve` with the common flags.
    Serve(Common),
}

/// Walks `args` (without the program name). Every flag takes a value; a flag that is not
/// common goes to `specific(command, flag, value)`, which returns `Ok(false)` when it does
/// not know it either.
pub(crate) fn parse<I, F>(args: I, mut specific: F) -> Result<Parsed, String>
where
    I: IntoIterator,
    I::Item: Into<String>,
    F: FnMut(&str, &str, String) -> Result<bool, String>,
{
    let mut args = args.into_iter().map(Into::into);
    let command = match args.next().as_deref() {
        None | Some("--help" | "-h" | "help") => return Ok(Parsed::Help),
        Some(c @ ("call" | "serve")) => c.to_owned(),
        Some(other) => return Err(format!("unknown command {other:?} (call or serve)")),
    };
    let mut common = Common {
        hosts: Vec::new(),
        body: None,
        timeout: None,
        n: 1,
        listen: "127.0.0.1:0".to_owned(),
    };
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(Parsed::Help);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match (command.as_str(), flag.as_str()) {
            ("call", "--hosts") => {
                common.hosts = value
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            ("call", "--body") => {
                serde_json::from_str::<serde::de::IgnoredAny>(&value)
                    .map_err(|e| format!("--body is not JSON: {e}"))?;
                common.body = Some(value);
            }
            ("call", "--timeout") => {
                common.timeout = Some(crate::probe::parse_duration(&value).map_err(|_| {
                    format!("--timeout {value:?} is not a duration (try 2s, 500ms)")
                })?);
            }
            ("call", "--n") => {
                common.n = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--n {value:?} is not a positive integer"))?;
            }
            ("serve", "--listen") => common.listen = value,
            (command, flag) => {
                if !specific(command, flag, value)? {
                    return Err(format!("unknown flag {flag:?} for {command}"));
                }
            }
        }
    }
    if command == "serve" {
        return Ok(Parsed::Serve(common));
    }
    if common.hosts.is_empty() {
        return Err("call needs --hosts".to_owned());
    }
    Ok(Parsed::Call(common))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> Result<Common, String> {
        let mut extra = Vec::new();
        match parse(args.iter().copied(), |command, flag, value| {
            Ok((command, flag) == ("call", "--path") && {
                extra.push(value);
                true
            })
        })? {
            Parsed::Call(common) => {
                assert_eq!(extra.len(), usize::from(args.contains(&"--path")));
                Ok(common)
            }
            _ => Err("not a call".to_owned()),
        }
    }

    #[test]
    fn the_common_flags_and_the_probes_own() {
        let common = call(&[
            "call",
            "--hosts",
            "a:1, b:2,",
            "--path",
            "/x",
            "--body",
            "{}",
            "--timeout",
            "2s",
            "--n",
            "3",
        ])
        .unwrap();
        assert_eq!(common.hosts, ["a:1", "b:2"]);
        assert_eq!(common.body.as_deref(), Some("{}"));
        assert_eq!(common.timeout, Some(Duration::from_secs(2)));
        assert_eq!(common.n, 3);
    }

    #[test]
    fn usage_errors_name_the_flag() {
        assert_eq!(call(&["call"]).unwrap_err(), "call needs --hosts");
        assert_eq!(
            call(&["call", "--hosts", "a:1", "--n", "0"]).unwrap_err(),
            "--n \"0\" is not a positive integer"
        );
        assert_eq!(
            call(&["call", "--hosts", "a:1", "--listen", "x"]).unwrap_err(),
            "unknown flag \"--listen\" for call"
        );
        assert_eq!(
            call(&["call", "--hosts"]).unwrap_err(),
            "--hosts needs a value"
        );
        assert!(
            call(&["call", "--body", "{"])
                .unwrap_err()
                .starts_with("--body is not JSON")
        );
        assert!(matches!(
            parse(["serve", "--listen", "0.0.0.0:1"], |_, _, _| Ok(false)),
            Ok(Parsed::Serve(Common { listen, .. })) if listen == "0.0.0.0:1"
        ));
        assert!(matches!(
            parse(["call", "-h"], |_, _, _| Ok(false)),
            Ok(Parsed::Help)
        ));
        assert_eq!(
            parse(["run"], |_, _, _| Ok(false)).err().unwrap(),
            "unknown command \"run\" (call or serve)"
        );
    }
}
