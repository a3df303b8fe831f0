//! The settings' tests: layering, refusals naming their key, the production example.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_embedded_defaults_are_valid() {
    let s = Settings::load(None, env(&[])).expect("defaults load");
    assert_eq!(s.server.bind, "127.0.0.1:8080");
    assert_eq!(s.queue.url.expose_secret(), "embedded");
    assert_eq!(s.retry.max_attempts, 12);
    assert_eq!(s.perimeter.excluded_categories.len(), 6);
    assert_eq!(s.merge.precedence, Precedence::default());
}

#[test]
fn environment_overrides_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "[agora]\nbase_url = \"https://relay.example:8443\"\ntoken = \"t\"\n[retry]\nmax_attempts = 3\n",
    )
    .expect("write");
    let s = Settings::load(
        Some(&file),
        env(&[
            ("PASSERELLE__RETRY__MAX_ATTEMPTS", "5"),
            ("PASSERELLE__PERIMETER__EXCLUDED_CATEGORIES", "PSAD,VAE"),
            ("OTHER__RETRY__MAX_ATTEMPTS", "9"),
        ]),
    )
    .expect("loads");
    assert_eq!(s.agora.base_url, "https://relay.example:8443");
    assert_eq!(s.retry.max_attempts, 5);
    assert_eq!(s.perimeter.excluded_categories, vec!["PSAD", "VAE"]);
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let e =
        Settings::load(None, env(&[("PASSERELLE__SERVER__BINDD", "x")])).expect_err("unknown key");
    assert!(e.to_string().contains("bindd"), "{e}");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "[agoar]\nbase_url = \"x\"\n").expect("write");
    let e = Settings::load(Some(&file), env(&[])).expect_err("unknown section");
    assert!(e.to_string().contains("agoar"), "{e}");
}

#[test]
fn invalid_values_name_the_key() {
    for (k, v, key) in [
        ("PASSERELLE__SERVER__BIND", "nowhere", "server.bind"),
        ("PASSERELLE__QUEUE__URL", "kafka://x", "queue.url"),
        ("PASSERELLE__LEDGER__URL", "mysql://x", "ledger.url"),
        ("PASSERELLE__AGORA__BASE_URL", "relay", "agora.base_url"),
        ("PASSERELLE__RETRY__MAX_ATTEMPTS", "0", "retry.max_attempts"),
        (
            "PASSERELLE__PERIMETER__BACKFILL_SINCE",
            "01/01/2017",
            "perimeter.backfill_since",
        ),
    ] {
        let e = Settings::load(None, env(&[(k, v)])).expect_err(k);
        assert!(e.to_string().contains(key), "{k}: {e}");
    }
}

#[test]
fn the_production_example_loads_and_points_at_postgresql_and_rabbitmq() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/production.example.toml");
    let s = Settings::load(Some(&file), env(&[])).expect("the production example loads");
    assert!(s.ledger.url.expose_secret().starts_with("postgres://"));
    assert!(s.queue.url.expose_secret().starts_with("amqp://"));
    assert!(
        s.agora.base_url.starts_with("https://"),
        "{}",
        s.agora.base_url
    );
    assert!(s.atexo_sem.returns_url.starts_with("https://"));
    assert!(s.bind_addr().expect("bind").ip().is_unspecified());
    assert_eq!(s.data.dir, Path::new("/var/lib/passerelle"));
    // Secrets only as files, none inline.
    let t = &s.auth.tokens;
    assert!(s.agora.token.is_none() && s.agora.token_file.is_some());
    let (o, o_file) = t.of(System::Ouiform);
    let (a, a_file) = t.of(System::AtexoSem);
    assert!(o.is_none() && a.is_none() && t.admin.is_none());
    assert!(o_file.is_some() && a_file.is_some() && t.admin_file.is_some());
    assert!(s.ouiform.hmac_secret.is_none() && s.ouiform.hmac_secret_file.is_some());

    // The URLs with their passwords come from the environment, over the file's.
    let s = Settings::load(
        Some(&file),
        env(&[
            (
                "PASSERELLE__LEDGER__URL",
                "postgres://passerelle:pw@postgres:5432/passerelle?sslmode=require",
            ),
            (
                "PASSERELLE__QUEUE__URL",
                "amqp://passerelle:pw@rabbitmq:5672/%2f",
            ),
        ]),
    )
    .expect("loads with the environment");
    assert_eq!(
        s.ledger.url.expose_secret(),
        "postgres://passerelle:pw@postgres:5432/passerelle?sslmode=require"
    );
    assert_eq!(
        s.queue.url.expose_secret(),
        "amqp://passerelle:pw@rabbitmq:5672/%2f"
    );
}

#[test]
fn pole_emploi_polling_needs_its_credentials() {
    let on = [
        (
            "PASSERELLE__POLE_EMPLOI__API_URL",
            "https://api.example.invalid/partenaire",
        ),
        (
            "PASSERELLE__POLE_EMPLOI__AUTH_URL",
            "https://entreprise.example.invalid",
        ),
        ("PASSERELLE__POLE_EMPLOI__CLIENT_ID", "PAR_passerelle"),
        ("PASSERELLE__POLE_EMPLOI__CLIENT_SECRET", "s3cret"),
        ("PASSERELLE__POLE_EMPLOI__SCOPE", "api_inscriptionsv1"),
    ];
    let s = Settings::load(None, env(&on)).expect("polling on");
    assert_eq!(s.pole_emploi.concurrency, 4);
    assert_eq!(s.pole_emploi.poll_interval_s, 300);
    for (missing, key) in [
        (2, "pole_emploi.client_id"),
        (3, "pole_emploi.client_secret"),
        (4, "pole_emploi.scope"),
    ] {
        let mut pairs = on.to_vec();
        pairs.remove(missing);
        let e = Settings::load(None, env(&pairs)).expect_err(key);
        assert!(e.to_string().contains(key), "{e}");
    }
    for (k, key) in [
        (
            "PASSERELLE__POLE_EMPLOI__CONCURRENCY",
            "pole_emploi.concurrency",
        ),
        (
            "PASSERELLE__POLE_EMPLOI__POLL_INTERVAL_S",
            "pole_emploi.poll_interval_s",
        ),
    ] {
        let mut pairs = on.to_vec();
        pairs.push((k, "0"));
        let e = Settings::load(None, env(&pairs)).expect_err(key);
        assert!(e.to_string().contains(key), "{e}");
    }
    // Off (the default), nothing else is asked for.
    Settings::load(None, env(&[])).expect("polling off");
}

#[test]
fn secrets_come_inline_or_from_a_file_never_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("token");
    std::fs::write(&f, "s3cret\n").expect("write");
    let path = f.to_string_lossy().to_string();
    let s = Settings::load(None, env(&[("PASSERELLE__AGORA__TOKEN_FILE", &path)])).expect("loads");
    let t = resolve_secret("agora.token", &s.agora.token, &s.agora.token_file).expect("reads");
    assert_eq!(
        t.map(|t| t.expose_secret().to_string()).as_deref(),
        Some("s3cret")
    );
    assert!(!format!("{s:?}").contains("s3cret"));
    let e = Settings::load(
        None,
        env(&[
            ("PASSERELLE__AGORA__TOKEN_FILE", &path),
            ("PASSERELLE__AGORA__TOKEN", "x"),
        ]),
    )
    .expect_err("both");
    assert!(e.to_string().contains("agora.token"), "{e}");
}

#[test]
fn the_personal_data_token_is_optional_and_given_once() {
    let s = Settings::load(None, env(&[])).expect("loads");
    let t = &s.auth.tokens;
    assert!(t.admin_personal_data.is_none() && t.admin_personal_data_file.is_none());
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("pd");
    std::fs::write(&f, "pd-s3cret\n").expect("write");
    let path = f.to_string_lossy().to_string();
    let s = Settings::load(
        None,
        env(&[("PASSERELLE__AUTH__TOKENS__ADMIN_PERSONAL_DATA_FILE", &path)]),
    )
    .expect("loads");
    let t = &s.auth.tokens;
    let token = resolve_secret(
        "auth.tokens.admin_personal_data",
        &t.admin_personal_data,
        &t.admin_personal_data_file,
    )
    .expect("reads");
    assert_eq!(
        token.map(|t| t.expose_secret().to_string()).as_deref(),
        Some("pd-s3cret")
    );
    let e = Settings::load(
        None,
        env(&[
            ("PASSERELLE__AUTH__TOKENS__ADMIN_PERSONAL_DATA_FILE", &path),
            ("PASSERELLE__AUTH__TOKENS__ADMIN_PERSONAL_DATA", "x"),
        ]),
    )
    .expect_err("both");
    assert!(
        e.to_string().contains("auth.tokens.admin_personal_data"),
        "{e}"
    );
    assert!(!e.to_string().contains("pd-s3cret"));
}

#[test]
fn a_remote_postgresql_ledger_needs_tls_unless_plaintext_is_allowed() {
    let url = |u: &str| env(&[("PASSERELLE__LEDGER__URL", u)]);
    for refused in [
        "postgres://p@db.example:5432/passerelle",
        "postgres://p@db.example/passerelle?sslmode=prefer",
        "postgresql://p@10.0.0.7/passerelle?sslmode=disable",
        "postgres://p@db.example/passerelle?sslmode=allow",
        "postgres://p@localhost.example/passerelle",
    ] {
        let e = Settings::load(None, url(refused)).expect_err(refused);
        let text = e.to_string();
        assert!(text.contains("ledger.url"), "{refused}: {text}");
        assert!(text.contains("ledger.allow_plaintext"), "{refused}: {text}");
        assert!(text.contains("sslmode=require"), "{refused}: {text}");
        let mut allowed = url(refused);
        allowed.push(("PASSERELLE__LEDGER__ALLOW_PLAINTEXT".into(), "true".into()));
        Settings::load(None, allowed).expect(refused);
    }
    for accepted in [
        "postgres://p@db.example:5432/passerelle?sslmode=require",
        "postgres://p@db.example/passerelle?sslmode=verify-full&sslrootcert=/ca.pem",
        "postgres://p@db.example/passerelle?sslmode=VERIFY-CA",
        "postgres://p@127.0.0.1:5432/passerelle",
        "postgres://p@localhost/passerelle?sslmode=disable",
        "postgres://p@[::1]:5432/passerelle",
        "postgres://p@/passerelle?host=/var/run/postgresql",
    ] {
        Settings::load(None, url(accepted)).expect(accepted);
    }
}

#[test]
fn empty_tokens_and_secrets_are_refused_naming_the_key() {
    for (var, key) in [
        ("PASSERELLE__AUTH__TOKENS__OUIFORM", "auth.tokens.ouiform"),
        (
            "PASSERELLE__AUTH__TOKENS__ATEXO_SEM",
            "auth.tokens.atexo_sem",
        ),
        ("PASSERELLE__AUTH__TOKENS__ADMIN", "auth.tokens.admin"),
        (
            "PASSERELLE__AUTH__TOKENS__ADMIN_PERSONAL_DATA",
            "auth.tokens.admin_personal_data",
        ),
        ("PASSERELLE__OUIFORM__HMAC_SECRET", "ouiform.hmac_secret"),
        ("PASSERELLE__AGORA__TOKEN", "agora.token"),
    ] {
        for empty in ["", "  "] {
            let e = Settings::load(None, env(&[(var, empty)])).expect_err(key);
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
        Settings::load(None, env(&[(var, "t0ken")])).expect(key);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("empty");
    std::fs::write(&f, "\n").expect("write");
    let s = Settings::load(
        None,
        env(&[("PASSERELLE__AUTH__TOKENS__ADMIN_FILE", &f.to_string_lossy())]),
    )
    .expect("a file is read later");
    let t = &s.auth.tokens;
    let e = resolve_secret("auth.tokens.admin", &t.admin, &t.admin_file).expect_err("empty file");
    assert!(e.to_string().contains("auth.tokens.admin_file"), "{e}");
}

#[test]
fn the_listeners_keys_are_checked_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("x.pem");
    std::fs::write(&pem, "x").expect("write");
    let pem = pem.to_string_lossy().to_string();
    let missing = dir.path().join("missing.pem").to_string_lossy().to_string();
    for (pairs, key) in [
        (
            vec![("PASSERELLE__SERVER__ADMIN_BIND", "admin")],
            "server.admin_bind",
        ),
        (
            vec![("PASSERELLE__SERVER__ADMIN_BIND", "127.0.0.1:8080")],
            "server.admin_bind",
        ),
        (
            vec![("PASSERELLE__SERVER__TLS_CERT_FILE", pem.as_str())],
            "server.tls_key_file",
        ),
        (
            vec![("PASSERELLE__SERVER__TLS_KEY_FILE", pem.as_str())],
            "server.tls_cert_file",
        ),
        (
            vec![
                ("PASSERELLE__SERVER__TLS_CERT_FILE", pem.as_str()),
                ("PASSERELLE__SERVER__TLS_KEY_FILE", missing.as_str()),
            ],
            "server.tls_key_file",
        ),
        (
            vec![("PASSERELLE__SERVER__TLS_CLIENT_CA_FILE", pem.as_str())],
            "server.tls_client_ca_file",
        ),
    ] {
        let e = Settings::load(None, env(&pairs)).expect_err(key);
        assert!(e.to_string().contains(key), "{key}: {e}");
    }
    let s = Settings::load(
        None,
        env(&[("PASSERELLE__SERVER__ADMIN_BIND", "127.0.0.1:9090")]),
    )
    .expect("an admin listener");
    assert_eq!(
        s.admin_bind_addr().expect("parses"),
        Some("127.0.0.1:9090".parse().expect("addr"))
    );
    let file = dir.path().join("p.toml");
    for (names, ok) in [
        ("{ ouiform = [\"ouiform.example\"] }", true),
        ("{ agora = [\"agora.example\"] }", false),
        ("{ ouiform = [\"not a name\"] }", false),
    ] {
        std::fs::write(
            &file,
            format!(
                "[server]\ntls_cert_file = {pem:?}\ntls_key_file = {pem:?}\n\
                 tls_client_ca_file = {pem:?}\ntls_client_names = {names}\n"
            ),
        )
        .expect("write");
        let r = Settings::load(Some(&file), env(&[]));
        assert_eq!(r.is_ok(), ok, "{names}: {r:?}");
        if let Err(e) = r {
            assert!(e.to_string().contains("server.tls_client_names."), "{e}");
        }
    }
}

#[test]
fn production_services_refuse_the_built_in_sandbox_naming_agora_base_url() {
    let pg = ("PASSERELLE__LEDGER__URL", "postgres://p@127.0.0.1/db");
    let amqp = ("PASSERELLE__QUEUE__URL", "amqp://g:g@127.0.0.1:5672/v");
    let relay = (
        "PASSERELLE__AGORA__BASE_URL",
        "https://relay.example/agora/v2",
    );
    for vars in [vec![pg], vec![amqp], vec![pg, amqp]] {
        let s = Settings::load(None, env(&vars)).expect("loads");
        let e = s
            .check_production_agora()
            .expect_err("the sandbox is refused in production");
        assert!(e.to_string().contains("agora.base_url"), "{e}");
        let mut with_relay = vars.clone();
        with_relay.push(relay);
        with_relay.push(("PASSERELLE__AGORA__TOKEN", "t"));
        let s = Settings::load(None, env(&with_relay)).expect("loads");
        s.check_production_agora().expect("a relay is fine");
    }
    // Embedded: the sandbox is the default and stays allowed.
    let s = Settings::load(None, env(&[])).expect("defaults load");
    s.check_production_agora()
        .expect("embedded may use the sandbox");
}

#[test]
fn payload_retention_is_a_ledger_key_and_its_older_name_still_reads() {
    let s = Settings::load(None, env(&[])).expect("defaults load");
    assert_eq!(s.payload_retention_days(), 365, "the contract's default");
    let s = Settings::load(
        None,
        env(&[("PASSERELLE__LEDGER__PAYLOAD_RETENTION_DAYS", "90")]),
    )
    .expect("loads");
    assert_eq!(s.payload_retention_days(), 90);
    let s = Settings::load(
        None,
        env(&[
            ("PASSERELLE__LEDGER__PAYLOAD_RETENTION_DAYS", "90"),
            ("PASSERELLE__JOURNAL__PAYLOAD_RETENTION_DAYS", "30"),
        ]),
    )
    .expect("loads");
    assert_eq!(
        s.payload_retention_days(),
        30,
        "the older name, given, wins"
    );
    let e = Settings::load(
        None,
        env(&[("PASSERELLE__LEDGER__PAYLOAD_RETENTION_DAYS", "soon")]),
    )
    .expect_err("not a number");
    assert!(e.to_string().contains("payload_retention_days"), "{e}");
}

/// A key refused at 0 is documented as "integer > 0", and the reference's claim is true: each
/// such key set to 0 is refused by name (given what turns its section on). `server.decode_budget_ms`
/// was documented "≥ 0" while 0 was refused.
#[test]
fn keys_refused_at_zero_are_documented_more_than_zero() {
    let reference = crate::config_reference::keys();
    for key in Settings::MORE_THAN_ZERO {
        let k = reference
            .iter()
            .find(|k| k.key == key)
            .unwrap_or_else(|| panic!("{key} is not in the reference"));
        assert_eq!(k.kind, "integer > 0", "{key}");
    }
    let polling = [
        (
            "PASSERELLE__POLE_EMPLOI__API_URL",
            "https://api.example.invalid/p",
        ),
        (
            "PASSERELLE__POLE_EMPLOI__AUTH_URL",
            "https://auth.example.invalid",
        ),
        ("PASSERELLE__POLE_EMPLOI__CLIENT_ID", "PAR_passerelle"),
        ("PASSERELLE__POLE_EMPLOI__CLIENT_SECRET", "s3cret"),
        ("PASSERELLE__POLE_EMPLOI__SCOPE", "api_inscriptionsv1"),
    ];
    // The built-in sandbox takes only bearer tokens: the other modes need a relay.
    let relay = (
        "PASSERELLE__AGORA__BASE_URL",
        "https://relay.example.invalid/agora",
    );
    let command = [
        relay,
        ("PASSERELLE__AGORA__AUTH__MODE", "command"),
        ("PASSERELLE__AGORA__AUTH__COMMAND", "/bin/true"),
    ];
    // Only named: the files are read when the authenticator is built, not here.
    let signed = [
        relay,
        ("PASSERELLE__AGORA__AUTH__MODE", "signed"),
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
    for key in Settings::MORE_THAN_ZERO {
        let var = format!("PASSERELLE__{}", key.replace('.', "__").to_uppercase());
        let mut pairs: Vec<(&str, &str)> = match key.split('.').next() {
            Some("pole_emploi") => polling.to_vec(),
            Some("agora") if key.ends_with("command_timeout_ms") => command.to_vec(),
            Some("agora") => signed.to_vec(),
            _ => Vec::new(),
        };
        pairs.push((&var, "0"));
        let e = Settings::load(None, env(&pairs)).expect_err(key);
        assert!(e.to_string().contains(key), "{key}: {e}");
    }
    // Its message says why.
    let e = Settings::load(None, env(&[("PASSERELLE__SERVER__DECODE_BUDGET_MS", "0")]))
        .expect_err("a budget of 0");
    assert!(e.to_string().contains("more than 0"), "{e}");
}

/// `auth.tokens` takes each posting system's key from the registry (inline or `_file`) and the
/// operators'; a misspelt one is refused, naming it and what it could have been.
#[test]
fn token_keys_come_from_the_registry_and_a_misspelt_one_is_refused() {
    let s = Settings::load(
        None,
        env(&[
            ("PASSERELLE__AUTH__TOKENS__ATEXO_SEM", "t-atexo"),
            ("PASSERELLE__AUTH__TOKENS__OUIFORM_FILE", "/run/secrets/o"),
        ]),
    )
    .expect("loads");
    let (inline, file) = s.auth.tokens.of(System::AtexoSem);
    assert_eq!(inline.as_ref().map(|t| t.expose_secret()), Some("t-atexo"));
    assert!(file.is_none());
    let (inline, file) = s.auth.tokens.of(System::Ouiform);
    assert!(inline.is_none());
    assert_eq!(file.as_deref(), Some(Path::new("/run/secrets/o")));
    let (inline, file) = s.auth.tokens.of(System::PoleEmploi);
    assert!(inline.is_none() && file.is_none());

    let e = Settings::load(None, env(&[("PASSERELLE__AUTH__TOKENS__OUIFROM", "x")]))
        .expect_err("a misspelt system");
    let e = e.to_string();
    assert!(e.contains("ouifrom"), "{e}");
    assert!(
        e.contains("`ouiform`") && e.contains("`atexo_sem_file`"),
        "{e}"
    );
}
