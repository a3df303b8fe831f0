use crate::settings::Settings;
use secrecy::ExposeSecret;

fn load(pairs: &[(&str, &str)]) -> Result<Settings, crate::settings::SettingsError> {
    let mut env: Vec<(String, String)> = vec![(
        "PASSERELLE__AGORA__BASE_URL".to_string(),
        "https://relay.example.invalid/agora".to_string(),
    )];
    env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::load(None, env)
}

fn refused(pairs: &[(&str, &str)], key: &str, why: &str) {
    let e = load(pairs).expect_err(key).to_string();
    assert!(e.contains(key), "{key}: {e}");
    assert!(e.contains(why), "{key}: {e}");
}

#[test]
fn each_mode_is_checked_at_start_up_naming_the_key() {
    refused(&[], "agora.token", "is required");
    refused(
        &[("PASSERELLE__AGORA__TOKEN", " ")],
        "agora.token",
        "is empty",
    );
    load(&[("PASSERELLE__AGORA__TOKEN", "t0ken")]).expect("bearer");

    let command = ("PASSERELLE__AGORA__AUTH__MODE", "command");
    refused(&[command], "agora.auth.command", "is empty");
    let s = load(&[
        command,
        (
            "PASSERELLE__AGORA__AUTH__COMMAND",
            "/opt/mds/token,--profile,pdl",
        ),
    ])
    .expect("command");
    assert_eq!(s.agora.auth.command, ["/opt/mds/token", "--profile", "pdl"]);
    assert_eq!(s.agora.auth.command_timeout_ms, 10_000);
    refused(
        &[
            command,
            ("PASSERELLE__AGORA__AUTH__COMMAND", "/opt/mds/token"),
            ("PASSERELLE__AGORA__AUTH__COMMAND_TIMEOUT_MS", "0"),
        ],
        "agora.auth.command_timeout_ms",
        "more than 0",
    );

    let signed = ("PASSERELLE__AGORA__AUTH__MODE", "signed");
    refused(&[signed], "agora.auth.signing_key_file", "is required");
    let complete = [
        signed,
        (
            "PASSERELLE__AGORA__AUTH__SIGNING_KEY_FILE",
            "/run/secrets/key.pem",
        ),
        (
            "PASSERELLE__AGORA__AUTH__CERTIFICATE_FILE",
            "/etc/passerelle/chain.pem",
        ),
        ("PASSERELLE__AGORA__AUTH__ISSUER", "passerelle-pdl"),
        ("PASSERELLE__AGORA__AUTH__SUBJECT", "region-pdl"),
        ("PASSERELLE__AGORA__AUTH__AUDIENCE", "agora"),
    ];
    let s = load(&complete).expect("signed");
    assert_eq!(s.agora.auth.algorithm, super::SigningAlgorithm::ES256);
    assert_eq!(s.agora.auth.lifetime_s, 300);
    for (i, key) in [
        (2, "agora.auth.certificate_file"),
        (3, "agora.auth.issuer"),
        (4, "agora.auth.subject"),
        (5, "agora.auth.audience"),
    ] {
        let mut pairs = complete.to_vec();
        pairs.remove(i);
        refused(&pairs, key, "is required");
    }
    let mut pairs = complete.to_vec();
    pairs.push(("PASSERELLE__AGORA__AUTH__REUSE_S", "300"));
    refused(
        &pairs,
        "agora.auth.reuse_s",
        "less than agora.auth.lifetime_s",
    );
    let mut pairs = complete.to_vec();
    pairs.push(("PASSERELLE__AGORA__AUTH__ALGORITHM", "HS256"));
    assert!(load(&pairs).is_err(), "only RS256 and ES256");
    let mut pairs = complete.to_vec();
    pairs.push(("PASSERELLE__AGORA__AUTH__SIGNING_KEY", "inline"));
    refused(&pairs, "agora.auth.signing_key", "not both");

    refused(
        &[("PASSERELLE__AGORA__AUTH__MODE", "kerberos")],
        "mode",
        "kerberos",
    );
}

#[test]
fn mutual_tls_needs_the_certificate_and_its_key() {
    let token = ("PASSERELLE__AGORA__TOKEN", "t0ken");
    refused(
        &[
            token,
            ("PASSERELLE__AGORA__TLS_CLIENT_CERT_FILE", "/etc/c.pem"),
        ],
        "agora.tls_client_key_file",
        "is required",
    );
    refused(
        &[
            token,
            ("PASSERELLE__AGORA__TLS_CLIENT_KEY_FILE", "/etc/k.pem"),
        ],
        "agora.tls_client_cert_file",
        "is required",
    );
    let s = load(&[
        token,
        ("PASSERELLE__AGORA__TLS_CLIENT_CERT_FILE", "/etc/c.pem"),
        (
            "PASSERELLE__AGORA__TLS_CLIENT_KEY",
            "-----BEGIN PRIVATE KEY-----",
        ),
        ("PASSERELLE__AGORA__TLS_CA_FILE", "/etc/ca.pem"),
    ])
    .expect("mutual TLS");
    assert!(
        !format!("{s:?}").contains("BEGIN PRIVATE KEY"),
        "Debug masks the key"
    );
}

#[test]
fn the_built_in_sandbox_takes_only_bearer() {
    let e = Settings::load(
        None,
        vec![(
            "PASSERELLE__AGORA__AUTH__MODE".to_string(),
            "command".to_string(),
        )],
    )
    .expect_err("sandbox with a command");
    assert!(e.to_string().contains("agora.auth.mode"), "{e}");
}

#[test]
fn the_client_configuration_reads_the_secret_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("client-key.pem");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nabc\n").expect("write");
    let key = key.display().to_string();
    let s = load(&[
        ("PASSERELLE__AGORA__AUTH__MODE", "command"),
        ("PASSERELLE__AGORA__AUTH__COMMAND", "/opt/mds/token"),
        ("PASSERELLE__AGORA__AUTH__HEADER", "X-Interops-Token"),
        ("PASSERELLE__AGORA__AUTH__SCHEME", ""),
        ("PASSERELLE__AGORA__TLS_CLIENT_CERT_FILE", "/etc/c.pem"),
        ("PASSERELLE__AGORA__TLS_CLIENT_KEY_FILE", &key),
    ])
    .expect("loads");
    let c = s
        .agora
        .client_config(s.agora.base_url.clone(), None)
        .expect("config");
    assert!(matches!(c.auth, crate::clients::AuthConfig::Command { .. }));
    assert_eq!(c.placement.header, "X-Interops-Token");
    assert_eq!(c.placement.scheme, "");
    let identity = c.client_identity.expect("identity");
    assert!(identity
        .key
        .expose_secret()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(!format!("{identity:?}").contains("abc"));
}
