//! The local config file and the environment, layered as isp-kit's `config` package layers
//! them: the YAML file, then environment variables over it.
//!
//! isp-kit's rules, kept here:
//! - keys are case-insensitive: the file's keys and the variables' names are lower-cased, and
//!   a key matches a field whatever its case (so `grpcOuterAddress` in the file and
//!   `GRPCOUTERADDRESS.IP` in the environment are the same key);
//! - every environment variable is a key (the whole environment, when
//!   `APP_CONFIG_ENV_PREFIX` is unset; else only the variables with that prefix, the prefix
//!   removed); a `.` in a name nests (`GRPCINNERADDRESS.PORT=9000`), and `.[2].` indexes a
//!   list (`HOSTS.[1]`);
//! - values are weakly typed: a text where a number is wanted is parsed, a number where a text
//!   is wanted is written out, one value where a list is wanted is a list of one.
//!
//! One difference: Go drops every `=` from a variable's value (`A=x=y` reads `xy`); here the
//! value is kept whole.

mod de;
mod env;

pub use env::{APP_CONFIG_ENV_PREFIX, APP_CONFIG_PATH, APP_MODE, CLUSTER_MODE, Environment};

use config::{File, FileFormat, Source, Value, ValueKind};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// A local config that cannot be used: the file is missing or unreadable, its YAML is
/// broken, or a key is missing or has the wrong type. The message names the file, the key
/// path and what was expected; it never shows a value (it could be a secret).
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
        /// How the path was chosen (`APP_CONFIG_PATH`, `APP_MODE=dev`, the default).
        chosen_by: &'static str,
    },
    /// The file is not YAML, or not a map of keys at its top.
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (where, and what it met).
        message: String,
    },
    /// A key is missing, or its value cannot be read as what the module expects.
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key path, dotted (`grpcInnerAddress.port`).
        key: String,
        /// What is wrong, with where the value came from (never the value).
        problem: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable {
                path,
                source,
                chosen_by,
            } => write!(
                f,
                "local config {}: cannot be read: {source} (the path comes from {chosen_by})",
                path.display()
            ),
            Self::Syntax { path, message } => {
                write!(
                    f,
                    "local config {}: not valid YAML: {message}",
                    path.display()
                )
            }
            Self::Invalid { path, problem, .. } => {
                write!(f, "local config {}: {problem}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unreadable { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The local config's keys, loaded: the file and the environment over it. Read typed
/// sections from it with [`LocalSource::read`].
#[derive(Debug, Clone)]
pub struct LocalSource {
    path: PathBuf,
    root: Value,
}

impl LocalSource {
    /// Loads the file `env` names ([`Environment::config_path`]) and the environment's
    /// overrides.
    ///
    /// # Errors
    /// [`ConfigError::Unreadable`] or [`ConfigError::Syntax`] for the file.
    pub fn load(env: &Environment) -> Result<Self, ConfigError> {
        let chosen_by = if env.var(APP_CONFIG_PATH).is_some_and(|p| !p.is_empty()) {
            "APP_CONFIG_PATH"
        } else if env.is_dev() {
            "APP_MODE=dev: conf/config_dev.yml; set APP_CONFIG_PATH for another file"
        } else {
            "the default, config.yml beside the binary; set APP_CONFIG_PATH for another file"
        };
        Self::load_file(&env.config_path(), env, chosen_by)
    }

    fn load_file(
        path: &Path,
        env: &Environment,
        chosen_by: &'static str,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_path_buf(),
            source,
            chosen_by,
        })?;
        let origin = path.display().to_string();
        let file = Lowercased(File::from_str(&text, FileFormat::Yaml), origin.clone());
        let mut root = Value::new(Some(&origin), ValueKind::Table(config::Map::new()));
        file.collect_to(&mut root)
            .map_err(|err| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: syntax_message(&err),
            })?;
        GoEnvironment::new(env)
            .collect_to(&mut root)
            .map_err(|err| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: syntax_message(&err),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            root,
        })
    }

    /// The file the keys come from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole config as `T` (its fields are matched to keys without regard to
    /// case; keys `T` does not have are ignored): the bootstrap reads its
    /// [`LocalConfig`](crate::LocalConfig) this way, and a module its own section with
    /// [`Bootstrap::read`](crate::Bootstrap::read).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`]: a key missing, or a value of the wrong type.
    pub fn read<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        de::read(self.root.clone()).map_err(|mut err| {
            // Where the value came from is worth saying only when it is not the file.
            if err.origin.as_deref() == Some(self.path.display().to_string().as_str()) {
                err.origin = None;
            }
            ConfigError::Invalid {
                path: self.path.clone(),
                key: err.dotted_path(),
                problem: err.to_string(),
            }
        })
    }
}

/// The parser's message without a copy of the file's text.
fn syntax_message(err: &config::ConfigError) -> String {
    match err {
        config::ConfigError::FileParse { cause, .. } => cause.to_string(),
        other => other.to_string(),
    }
}

/// A source whose keys are lower-cased at every depth, as isp-kit's config does, with the
/// origin of every value set to the file.
#[derive(Debug, Clone)]
struct Lowercased(config::File<config::FileSourceString, FileFormat>, String);

impl Source for Lowercased {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, Value>, config::ConfigError> {
        let table = self.0.collect()?;
        Ok(lower_table(table, &self.1))
    }
}

fn lower_table(table: config::Map<String, Value>, origin: &String) -> config::Map<String, Value> {
    table
        .into_iter()
        .map(|(key, value)| (key.to_lowercase(), lower_value(value, origin)))
        .collect()
}

fn lower_value(value: Value, origin: &String) -> Value {
    let kind = match value.kind {
        ValueKind::Table(table) => ValueKind::Table(lower_table(table, origin)),
        ValueKind::Array(items) => {
            ValueKind::Array(items.into_iter().map(|v| lower_value(v, origin)).collect())
        }
        other => other,
    };
    Value::new(Some(origin), kind)
}

/// Environment variables as isp-kit's config takes them: lower-cased, filtered by the
/// prefix and stripped of it, `.` nesting, `.[n]` indexing; each value's origin names its
/// variable.
#[derive(Debug, Clone)]
struct GoEnvironment {
    entries: Vec<(String, String, String)>,
}

impl GoEnvironment {
    fn new(env: &Environment) -> Self {
        let prefix = env.env_prefix().to_lowercase();
        let entries = env
            .vars()
            .filter_map(|(name, value)| {
                let key = name.to_lowercase();
                let key = key.strip_prefix(prefix.as_str())?;
                if key.is_empty() {
                    return None;
                }
                // Go's `slice.[1].field` is config-rs's `slice[1].field`.
                let key = key.replace(".[", "[");
                Some((
                    key,
                    value.to_owned(),
                    format!("environment variable {name}"),
                ))
            })
            .collect();
        Self { entries }
    }
}

impl Source for GoEnvironment {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, Value>, config::ConfigError> {
        Ok(self
            .entries
            .iter()
            .map(|(key, value, origin)| {
                (
                    key.clone(),
                    Value::new(Some(origin), ValueKind::String(value.clone())),
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalConfig;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cluster-bootstrap-config-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const GO_SHAPED: &str = "\
configServiceAddress:
  ip: 127.0.0.1
  port: 9001
grpcOuterAddress:
  ip: 127.0.0.1
  port: 9003
grpcInnerAddress:
  ip: 0.0.0.0
  port: 9003
moduleName: isp-test-service

infraServerPort: 9553

logfile:
  maxSizeMb: 512
  maxBackups: 4
  compress: true
";

    #[test]
    fn a_go_modules_config_reads_unchanged() {
        let dir = temp_dir("go");
        write(&dir, "conf/config_dev.yml", GO_SHAPED);
        let env = Environment::from_vars([("APP_MODE", "dev")]).with_current_dir(&dir);
        let local: LocalConfig = LocalSource::load(&env).unwrap().read().unwrap();
        assert_eq!(local.module_name, "isp-test-service");
        let address = local.config_service_address.as_ref().unwrap();
        assert_eq!(address.hosts().unwrap(), ["127.0.0.1:9001"]);
        assert_eq!(local.grpc_outer_address.port, 9003);
        assert_eq!(local.grpc_inner_address.ip, "0.0.0.0");
        assert_eq!(local.infra_port(), 9553);
        assert_eq!(local.log_file.max_size_mb, 512);
        assert!(local.log_file.compress);
        assert_eq!(
            local.healthcheck_timeout(),
            crate::local::DEFAULT_HEALTHCHECK_TIMEOUT
        );
    }

    #[test]
    fn environment_overrides_with_and_without_prefix() {
        let dir = temp_dir("env");
        write(&dir, "config.yml", GO_SHAPED);
        let base =
            Environment::from_vars([("APP_CONFIG_PATH", "config.yml")]).with_current_dir(&dir);

        let env = base
            .clone()
            .with_var("MODULENAME", "from-env")
            .with_var("grpcInnerAddress.PORT", "9100")
            .with_var("metricsAutodiscovery.additionalLabels.zone", "a");
        let local: LocalConfig = LocalSource::load(&env).unwrap().read().unwrap();
        assert_eq!(local.module_name, "from-env");
        assert_eq!(local.grpc_inner_address.port, 9100);
        assert_eq!(local.grpc_inner_address.ip, "0.0.0.0", "siblings are kept");
        assert_eq!(local.metrics_autodiscovery.additional_labels["zone"], "a");

        let prefixed = base
            .with_var("APP_CONFIG_ENV_PREFIX", "ISP_")
            .with_var("ISP_MODULENAME", "prefixed")
            .with_var("INFRASERVERPORT", "1");
        let local: LocalConfig = LocalSource::load(&prefixed).unwrap().read().unwrap();
        assert_eq!(local.module_name, "prefixed");
        assert_eq!(local.infra_port(), 9553, "without the prefix, not a key");
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_origin_never_the_value() {
        let dir = temp_dir("errors");
        let env =
            Environment::from_vars([("APP_CONFIG_PATH", "config.yml")]).with_current_dir(&dir);

        let err = LocalSource::load(&env).unwrap_err().to_string();
        assert!(err.contains("config.yml: cannot be read"), "{err}");
        assert!(err.contains("APP_CONFIG_PATH"), "{err}");

        write(&dir, "config.yml", "moduleName: [unclosed\n");
        let err = LocalSource::load(&env).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");

        write(
            &dir,
            "config.yml",
            &GO_SHAPED.replace("port: 9003\nmoduleName", "port: s3cr3t-value\nmoduleName"),
        );
        let err = LocalSource::load(&env)
            .unwrap()
            .read::<LocalConfig>()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "grpcInnerAddress.port"),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(
            text.contains("expected an integer from 0 to 65535"),
            "{text}"
        );

        write(
            &dir,
            "config.yml",
            &GO_SHAPED.replace("moduleName: isp-test-service\n", ""),
        );
        let err = LocalSource::load(&env)
            .unwrap()
            .read::<LocalConfig>()
            .unwrap_err();
        assert!(err.to_string().ends_with("moduleName: missing"), "{err}");

        write(&dir, "config.yml", GO_SHAPED);
        let env = env.with_var("GRPCOUTERADDRESS.PORT", "hunter2");
        let err = LocalSource::load(&env)
            .unwrap()
            .read::<LocalConfig>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("grpcOuterAddress.port"), "{err}");
        assert!(
            err.contains("environment variable GRPCOUTERADDRESS.PORT"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn list_entries_from_the_environment() {
        let dir = temp_dir("list");
        write(&dir, "config.yml", "hosts:\n  - a\n  - b\n");
        let env = Environment::from_vars([("APP_CONFIG_PATH", "config.yml"), ("HOSTS.[1]", "c")])
            .with_current_dir(&dir);
        #[derive(serde::Deserialize)]
        struct Hosts {
            hosts: Vec<String>,
        }
        let hosts: Hosts = LocalSource::load(&env).unwrap().read().unwrap();
        assert_eq!(hosts.hosts, ["a", "c"]);
    }
}
