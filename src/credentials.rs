//! Per-user SIP passwords. Users without a password in the profile get a random one on
//! first start, kept in `<data_dir>/credentials.toml` (mode 0600) so it survives restarts.
//! There is no shared default secret a scanner could guess.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::distributions::{Alphanumeric, DistString};

use crate::config::{Password, User};

pub const FILE_NAME: &str = "credentials.toml";

/// A user with the password the switch will check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub extension: String,
    pub password: String,
}

/// The result of resolving passwords: every user's credential, and the extensions whose
/// password was generated just now (the operator must be told them once).
#[derive(Debug)]
pub struct Resolved {
    pub credentials: Vec<Credential>,
    pub generated: Vec<String>,
    pub file: PathBuf,
}

/// Gives every user a password, generating and storing those the profile leaves unset.
pub fn resolve(users: &[User], data_dir: &Path) -> anyhow::Result<Resolved> {
    let file = data_dir.join(FILE_NAME);
    let mut stored: BTreeMap<String, String> = match std::fs::read_to_string(&file) {
        Ok(text) => toml::from_str(&text).with_context(|| {
            format!(
                "{}: not a table of extension = \"password\"; fix or delete it to regenerate",
                file.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let mut generated = Vec::new();
    let mut credentials = Vec::new();
    for user in users {
        let password = match &user.password {
            Password::Given(p) => p.clone(),
            Password::Generated => stored
                .entry(user.extension.clone())
                .or_insert_with(|| {
                    generated.push(user.extension.clone());
                    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 20)
                })
                .clone(),
        };
        credentials.push(Credential {
            extension: user.extension.clone(),
            password,
        });
    }
    if !generated.is_empty() {
        write_private(&file, &toml::to_string(&stored)?)
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(Resolved {
        credentials,
        generated,
        file,
    })
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(b"# Generated SIP passwords, one per extension. Keep this file private.\n")?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(ext: &str, password: Password) -> User {
        User {
            extension: ext.to_string(),
            password,
        }
    }

    #[test]
    fn generated_passwords_are_random_private_and_stable_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let users = [
            user("1000", Password::Generated),
            user("1001", Password::Generated),
            user("1002", Password::Given("given-one".into())),
        ];
        let first = resolve(&users, dir.path()).unwrap();
        assert_eq!(first.generated, vec!["1000", "1001"]);
        let p0 = &first.credentials[0].password;
        let p1 = &first.credentials[1].password;
        assert_eq!(p0.len(), 20);
        assert_ne!(p0, p1);
        assert_eq!(first.credentials[2].password, "given-one");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "credentials readable by others: {mode:o}");
        }
        let second = resolve(&users, dir.path()).unwrap();
        assert!(second.generated.is_empty());
        assert_eq!(second.credentials, first.credentials);
    }

    #[test]
    fn damaged_credentials_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "1000 = [").unwrap();
        let err = resolve(&[user("1000", Password::Generated)], dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains(FILE_NAME), "{err:#}");
    }
}
