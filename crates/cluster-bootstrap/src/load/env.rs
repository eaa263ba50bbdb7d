//! [`Environment`]: what isp-kit's bootstrap reads from the process (its variables, the
//! binary's folder), taken once, so that a test can give its own.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// `APP_MODE`: `dev` for development (config `conf/config_dev.yml`, human-readable logs at
/// `debug`).
pub const APP_MODE: &str = "APP_MODE";
/// `APP_CONFIG_PATH`: the local config file, instead of the default.
pub const APP_CONFIG_PATH: &str = "APP_CONFIG_PATH";
/// `APP_CONFIG_ENV_PREFIX`: only variables with this prefix override config keys (the prefix
/// removed); unset, every variable does, as in isp-kit.
pub const APP_CONFIG_ENV_PREFIX: &str = "APP_CONFIG_ENV_PREFIX";
/// `CLUSTER_MODE`: `offline` runs the module without a config service, on its
/// `remoteConfigPath` file.
pub const CLUSTER_MODE: &str = "CLUSTER_MODE";

/// The process's environment as the bootstrap reads it: its variables, the folder of its
/// binary (where the production config files are), and the folder relative paths start from.
///
/// [`Environment::from_process`] is what a module uses; tests build their own with
/// [`Environment::from_vars`] so that they neither set process-wide variables nor change the
/// working directory.
///
/// # Examples
/// ```
/// use cluster_bootstrap::Environment;
///
/// let env = Environment::from_vars([("APP_MODE", "dev")]).with_current_dir("/srv/orders");
/// assert!(env.is_dev());
/// assert_eq!(env.config_path(), std::path::Path::new("/srv/orders/conf/config_dev.yml"));
/// ```
#[derive(Debug, Clone)]
pub struct Environment {
    vars: Vec<(String, String)>,
    binary_dir: Option<PathBuf>,
    current_dir: Option<PathBuf>,
}

impl Environment {
    /// This process's variables (those that are valid UTF-8) and its binary's folder.
    #[must_use]
    pub fn from_process() -> Self {
        Self::from_os_vars(std::env::vars_os())
    }

    fn from_os_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let vars = vars
            .into_iter()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self {
            vars,
            binary_dir: std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf)),
            current_dir: None,
        }
    }

    /// The given variables only (none of the process's), with this process's binary folder.
    #[must_use]
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            binary_dir: std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf)),
            current_dir: None,
        }
    }

    /// Relative paths (the dev config, the default remote config) start from `dir` instead
    /// of the working directory.
    #[must_use]
    pub fn with_current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// The folder the production files are looked for in ("beside the binary").
    #[must_use]
    pub fn with_binary_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.binary_dir = Some(dir.into());
        self
    }

    /// Sets (or replaces) a variable.
    #[must_use]
    pub fn with_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.vars.retain(|(k, _)| *k != name);
        self.vars.push((name, value.into()));
        self
    }

    /// A variable's value.
    #[must_use]
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every variable, as given.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `APP_MODE=dev` (any case).
    #[must_use]
    pub fn is_dev(&self) -> bool {
        self.var(APP_MODE)
            .is_some_and(|mode| mode.eq_ignore_ascii_case("dev"))
    }

    /// `CLUSTER_MODE=offline` (any case).
    #[must_use]
    pub fn is_offline(&self) -> bool {
        self.var(CLUSTER_MODE)
            .is_some_and(|mode| mode.eq_ignore_ascii_case("offline"))
    }

    /// `APP_CONFIG_ENV_PREFIX`, empty when unset.
    #[must_use]
    pub fn env_prefix(&self) -> &str {
        self.var(APP_CONFIG_ENV_PREFIX).unwrap_or("")
    }

    /// The local config file, as isp-kit finds it: `APP_CONFIG_PATH` when set, else
    /// `./conf/config_dev.yml` in dev mode, else `config.yml` beside the binary.
    #[must_use]
    pub fn config_path(&self) -> PathBuf {
        match self.var(APP_CONFIG_PATH).filter(|p| !p.is_empty()) {
            Some(path) => self.resolve(path),
            None if self.is_dev() => self.resolve("conf/config_dev.yml"),
            None => self.beside_binary("config.yml"),
        }
    }

    /// `path` as given when absolute, else from the current folder (the one given, else the
    /// process's), so that messages name the whole path.
    #[must_use]
    pub fn resolve(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        if path.is_absolute() {
            return path.to_path_buf();
        }
        match &self.current_dir {
            Some(dir) => dir.join(path),
            None => std::env::current_dir().map_or_else(|_| path.to_path_buf(), |d| d.join(path)),
        }
    }

    /// `part` in the binary's folder (relative to the current folder when that is unknown).
    #[must_use]
    pub fn beside_binary(&self, part: &str) -> PathBuf {
        match &self.binary_dir {
            Some(dir) => dir.join(part),
            None => self.resolve(part),
        }
    }

    /// A file isp-kit looks for at `dev_path` in dev mode and as `prod_name` beside the binary
    /// otherwise, unless the config gives it (`configured`).
    pub(crate) fn file(
        &self,
        configured: Option<&str>,
        dev_path: &str,
        prod_name: &str,
    ) -> PathBuf {
        match configured.filter(|p| !p.is_empty()) {
            Some(path) => self.resolve(path),
            None if self.is_dev() => self.resolve(dev_path),
            None => self.beside_binary(prod_name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_follows_isp_kits_rules() {
        let prod = Environment::from_vars::<&str, &str>([]).with_binary_dir("/opt/m");
        assert_eq!(prod.config_path(), Path::new("/opt/m/config.yml"));
        let dev = prod
            .clone()
            .with_var(APP_MODE, "DEV")
            .with_current_dir("/src/m");
        assert_eq!(dev.config_path(), Path::new("/src/m/conf/config_dev.yml"));
        let explicit = dev.with_var(APP_CONFIG_PATH, "other.yml");
        assert_eq!(explicit.config_path(), Path::new("/src/m/other.yml"));
        let absolute = prod.with_var(APP_CONFIG_PATH, "/etc/m.yml");
        assert_eq!(absolute.config_path(), Path::new("/etc/m.yml"));
    }

    #[test]
    fn modes_and_prefix() {
        let env = Environment::from_vars([("CLUSTER_MODE", "Offline"), ("APP_MODE", "prod")]);
        assert!(env.is_offline());
        assert!(!env.is_dev());
        assert_eq!(env.env_prefix(), "");
        assert_eq!(
            env.with_var(APP_CONFIG_ENV_PREFIX, "ISP_").env_prefix(),
            "ISP_"
        );
    }
}
