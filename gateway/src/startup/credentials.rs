//! The API's credentials and the identity salt's offer: read from settings or `data.dir/credentials`,
//! generated on first start (mode 0600). The path is printed, the secrets never are.

#[allow(unused_imports)]
use super::*;

pub(super) fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "passerelle".into())
}

/// The API's secrets: from settings, else from `data.dir/credentials`, generated on first start
/// (mode 0600) — the path is printed, the secrets never are.
pub(super) fn load_credentials(
    settings: &Settings,
) -> Result<(Credentials, Option<std::path::PathBuf>), StartError> {
    let t = &settings.auth.tokens;
    let path = settings.data.dir.join("credentials");
    let mut stored = read_credentials_file(&path)?;
    let mut generated = false;
    // A secret given in the settings, else the one stored, else a new one (written below).
    let mut get = |key: &str, given: Option<SecretString>| -> SecretString {
        if let Some(s) = given {
            return s;
        }
        if let Some(v) = stored.get(key) {
            return SecretString::from(v.clone());
        }
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        let v = hex::encode(bytes);
        stored.insert(key.to_string(), v.clone());
        generated = true;
        SecretString::from(v)
    };
    let mut tokens = Vec::new();
    for p in crate::systems::POSTING {
        let key = crate::settings::token_key(p.system());
        let (inline, file) = t.of(p.system());
        tokens.push((p.system(), get(&key, resolve_secret(&key, inline, file)?)));
    }
    let mut secrets = std::collections::BTreeMap::new();
    for s in crate::systems::secrets(settings) {
        let given = resolve_secret(s.key, s.inline, s.file)?;
        secrets.insert(s.key, get(s.key, given));
    }
    let admin = get(
        "auth.tokens.admin",
        resolve_secret("auth.tokens.admin", &t.admin, &t.admin_file)?,
    );
    let creds = Credentials {
        tokens,
        admin,
        admin_personal_data: resolve_secret(
            "auth.tokens.admin_personal_data",
            &t.admin_personal_data,
            &t.admin_personal_data_file,
        )?,
        secrets,
        // Settled with the ledger by `Services::connect` (see `salt_offer`).
        dossier_salt: SecretString::from(String::new()),
    };
    // A token shared with another caller would make the personal-data scope ambiguous.
    if let Some(pd) = &creds.admin_personal_data {
        let taken = creds
            .tokens
            .iter()
            .map(|(_, t)| t)
            .chain([&creds.admin])
            .any(|other| other.expose_secret() == pd.expose_secret());
        if taken {
            return Err(StartError::Settings(
                crate::settings::SettingsError::Invalid {
                    key: "auth.tokens.admin_personal_data".into(),
                    problem: "must differ from every other token (auth.tokens.*)".into(),
                },
            ));
        }
    }
    if generated {
        write_credentials_file(&path, &stored)?;
        info!(path = %path.display(), "generated credentials were written (mode 0600)");
        eprintln!(
            "passerelle: credentials written to {} (mode 0600)",
            path.display()
        );
        return Ok((creds, Some(path)));
    }
    Ok((creds, None))
}

/// The salt of dossier ids this start offers the ledger: `identity.salt_file`; else the salt an
/// installation from before the ledger kept it wrote into its credentials file (its dossiers
/// were made with it); else a random one, which the ledger takes only if it has none and holds no
/// dossier.
pub(super) fn salt_offer(settings: &Settings) -> Result<ledger::SaltOffer, StartError> {
    if let Some(path) = settings
        .identity
        .salt_file
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty())
    {
        let salt = resolve_secret("identity.salt", &None, &Some(path.clone()))?
            .map(|s| s.expose_secret().to_string())
            .unwrap_or_default();
        return Ok(ledger::SaltOffer::Configured(salt));
    }
    let path = settings.data.dir.join("credentials");
    if let Some(salt) = read_credentials_file(&path)?.remove("identity.salt") {
        return Ok(ledger::SaltOffer::Configured(salt));
    }
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    Ok(ledger::SaltOffer::Generated(hex::encode(bytes)))
}

pub(super) fn read_credentials_file(
    path: &Path,
) -> Result<std::collections::BTreeMap<String, String>, StartError> {
    let err = |detail: String| StartError::Credentials {
        path: path.display().to_string(),
        detail,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(err(e.to_string())),
    }
}

pub(super) fn write_credentials_file(
    path: &Path,
    values: &std::collections::BTreeMap<String, String>,
) -> Result<(), StartError> {
    let err = |detail: String| StartError::Credentials {
        path: path.display().to_string(),
        detail,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let mut text =
        String::from("# passerelle credentials, generated on first start. Keep secret.\n");
    for (k, v) in values {
        text.push_str(&format!("{k} = \"{v}\"\n"));
    }
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| err(e.to_string()))?;
    f.write_all(text.as_bytes()).map_err(|e| err(e.to_string()))
}
