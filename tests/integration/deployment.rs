//! The deployment files against the code, without Docker: `docker/compose.yml` (its services, their
//! dependencies, the files it mounts, its `PASSERELLE__…` variables and the configuration they make
//! with `config/production.example.toml`, loaded by the real settings loader), and a light lint of
//! `docker/Dockerfile`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use passerelle::settings::Settings;
use secrecy::ExposeSecret;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Yaml {
    compose_file("docker/compose.yml")
}

fn compose_file(path: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{path} holds one document");
    docs.remove(0)
}

/// A mapping with compose's `<<` merge keys applied (yaml_rust2 resolves aliases, not merges):
/// the mapping's own keys win over the merged ones.
fn merged(y: &Yaml) -> Yaml {
    let Yaml::Hash(h) = y else {
        return y.clone();
    };
    let mut out = yaml_rust2::yaml::Hash::new();
    if let Some(Yaml::Hash(base)) = h.get(&Yaml::String("<<".into())) {
        for (k, v) in base {
            out.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in h {
        if scalar(k).as_deref() != Some("<<") {
            out.insert(k.clone(), v.clone());
        }
    }
    Yaml::Hash(out)
}

fn toml_file(path: &str) -> toml::Table {
    read(path)
        .parse()
        .unwrap_or_else(|e| panic!("{path} is not TOML: {e}"))
}

/// A scalar as compose reads it (ports, numbers and booleans included).
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The keys of a mapping, or the items of a list (`depends_on`, `secrets`… take either form).
fn names(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Hash(h) => h.keys().filter_map(scalar).collect(),
        Yaml::Array(a) => a
            .iter()
            .filter_map(|item| scalar(item).or_else(|| scalar(&item["source"])))
            .collect(),
        _ => Vec::new(),
    }
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let s = &compose["services"][name];
    assert!(
        matches!(s, Yaml::Hash(_)),
        "docker/compose.yml has no service {name}"
    );
    s
}

/// A service's `environment`, in either of compose's forms.
fn environment(service: &Yaml) -> Vec<(String, String)> {
    match &service["environment"] {
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| {
                (
                    scalar(k).expect("a variable name"),
                    scalar(v).unwrap_or_default(),
                )
            })
            .collect(),
        Yaml::Array(a) => a
            .iter()
            .filter_map(scalar)
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv, String::new()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Compose's interpolation with an empty environment: `${X:-default}` is its default, anything
/// else (`${X}`, `${X:?message}`) a stand-in value.
fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .unwrap_or_else(|| panic!("unclosed ${{ in {value:?}"));
        let expr = &rest[start + 2..end];
        match expr.split_once(":-") {
            Some((_, default)) => out.push_str(default),
            None => out.push_str("stand-in"),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Every key (`a.b.c`) and every table (`a`, `a.b`) of a TOML document.
fn flatten(
    table: &toml::Table,
    prefix: &str,
    keys: &mut BTreeSet<String>,
    tables: &mut BTreeSet<String>,
) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => {
                tables.insert(path.clone());
                flatten(t, &path, keys, tables);
            }
            _ => {
                keys.insert(path);
            }
        }
    }
}

#[test]
fn compose_has_the_four_services_and_what_they_depend_on() {
    let compose = compose();
    let services = names(&compose["services"]);
    for name in ["passerelle", "rabbitmq", "postgres", "sandbox"] {
        assert!(services.iter().any(|s| s == name), "no service {name}");
    }
    for name in &services {
        let s = service(&compose, name);
        for target in names(&s["depends_on"]) {
            let t = service(&compose, &target);
            // A health condition needs a health check: the service's own, or the image's.
            if scalar(&s["depends_on"][target.as_str()]["condition"]).as_deref()
                == Some("service_healthy")
            {
                let image_has_one = scalar(&t["build"]["dockerfile"]).as_deref()
                    == Some("docker/Dockerfile")
                    && read("docker/Dockerfile").contains("\nHEALTHCHECK ");
                assert!(
                    matches!(t["healthcheck"], Yaml::Hash(_)) || image_has_one,
                    "{name} waits for {target} to be healthy, but {target} has no health check"
                );
            }
        }
    }
    // The gateway and the simulators are the image this repository builds, with the simulators
    // in (the sandbox service runs them, the gateway's defaults point at them).
    for name in ["passerelle", "sandbox"] {
        let build = &service(&compose, name)["build"];
        assert_eq!(scalar(&build["context"]).as_deref(), Some(".."), "{name}");
        assert_eq!(
            scalar(&build["dockerfile"]).as_deref(),
            Some("docker/Dockerfile"),
            "{name}"
        );
        assert_eq!(
            scalar(&build["args"]["CARGO_FEATURES"]).as_deref(),
            Some("sandbox"),
            "{name}: built without the simulators, which this file runs"
        );
    }
}

#[test]
fn every_passerelle_variable_is_a_settings_key_and_the_result_loads() {
    let mut keys = BTreeSet::new();
    let mut tables = BTreeSet::new();
    flatten(
        &toml_file("config/default.toml"),
        "",
        &mut keys,
        &mut tables,
    );
    let compose = compose();
    let mut vars = Vec::new();
    for name in names(&compose["services"]) {
        for (var, value) in environment(service(&compose, &name)) {
            let Some(path) = var.strip_prefix("PASSERELLE__") else {
                continue;
            };
            assert_eq!(name, "passerelle", "{var} set on {name}");
            let key = path.to_ascii_lowercase().replace("__", ".");
            // A secret may be given as a file: `<key>_file`, in a section the defaults have.
            let secret_file = key
                .strip_suffix("_file")
                .and_then(|k| k.rsplit_once('.'))
                .is_some_and(|(table, _)| tables.contains(table));
            assert!(
                keys.contains(&key) || secret_file,
                "{var} is not a settings key: config/default.toml has no `{key}`"
            );
            vars.push((var, interpolate(&value)));
        }
    }
    assert!(
        !vars.is_empty(),
        "the gateway's service sets no PASSERELLE__ variable"
    );

    // What the container runs: the example configuration under these variables.
    let example = root().join("config/production.example.toml");
    let s = Settings::load(Some(&example), vars)
        .unwrap_or_else(|e| panic!("compose's configuration is refused: {e}"));
    assert!(
        s.ledger.url.expose_secret().starts_with("postgres://")
            && s.ledger.url.expose_secret().contains("@postgres:"),
        "the ledger is the postgres service"
    );
    assert!(
        s.queue.url.expose_secret().starts_with("amqp://")
            && s.queue.url.expose_secret().contains("@rabbitmq:5672/"),
        "the queue is the rabbitmq service"
    );
    let bind = s.bind_addr().expect("server.bind");
    assert!(
        bind.ip().is_unspecified(),
        "the gateway must listen on every interface in its container"
    );
    let published = names(&service(&compose, "passerelle")["ports"]);
    assert!(
        published
            .iter()
            .any(|p| p.ends_with(&format!(":{}", bind.port()))),
        "the gateway's port {} is not published: {published:?}",
        bind.port()
    );

    // By default AGORA and ATEXO SEM's returns are the sandbox service, on the port it listens on.
    let command: Vec<String> = match &service(&compose, "sandbox")["command"] {
        Yaml::Array(a) => a.iter().filter_map(scalar).collect(),
        other => panic!("the sandbox's command is a list, not {other:?}"),
    };
    let arg = |flag: &str| {
        command
            .iter()
            .position(|a| a == flag)
            .and_then(|i| command.get(i + 1))
            .cloned()
    };
    assert_eq!(command.first().map(String::as_str), Some("sandbox"));
    assert_eq!(
        arg("--bind").as_deref(),
        Some("0.0.0.0"),
        "the sandbox must be reachable from the gateway's container"
    );
    let sandbox = format!("http://sandbox:{}/", arg("--port").expect("--port"));
    assert!(
        s.agora.base_url.starts_with(&sandbox),
        "{}",
        s.agora.base_url
    );
    assert!(
        s.atexo_sem.returns_url.starts_with(&sandbox),
        "{}",
        s.atexo_sem.returns_url
    );
}

#[test]
fn the_files_compose_mounts_exist_and_the_secrets_stay_out_of_git() {
    let compose = compose();
    let docker = root().join("docker");
    let Yaml::Hash(configs) = &compose["configs"] else {
        panic!("docker/compose.yml has no configs");
    };
    let mut mounted = Vec::new();
    for (name, config) in configs {
        if let Some(file) = scalar(&config["file"]) {
            let path = docker.join(&file);
            assert!(
                path.is_file(),
                "config {name:?}: {} does not exist",
                path.display()
            );
            mounted.push(path.canonicalize().expect("canonical path"));
        }
    }
    for expected in [
        "docker/rabbitmq/definitions.json",
        "docker/rabbitmq/rabbitmq.conf",
        "config/production.example.toml",
    ] {
        let path = root().join(expected).canonicalize().expect(expected);
        assert!(mounted.contains(&path), "compose does not mount {expected}");
    }

    // RabbitMQ imports the directory the definitions are mounted into.
    let conf = read("docker/rabbitmq/rabbitmq.conf");
    let dir = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("definitions.local.path"))
        .and_then(|l| l.trim().strip_prefix('='))
        .map(|d| d.trim().trim_end_matches('/').to_string())
        .expect("rabbitmq.conf sets definitions.local.path");
    let targets: Vec<String> = match &service(&compose, "rabbitmq")["configs"] {
        Yaml::Array(a) => a.iter().filter_map(|c| scalar(&c["target"])).collect(),
        _ => Vec::new(),
    };
    for definitions in ["rabbitmq_topology", "rabbitmq_users"] {
        let target = match &service(&compose, "rabbitmq")["configs"] {
            Yaml::Array(a) => a
                .iter()
                .find(|c| scalar(&c["source"]).as_deref() == Some(definitions))
                .and_then(|c| scalar(&c["target"])),
            _ => None,
        };
        let target = target.unwrap_or_else(|| panic!("rabbitmq does not mount {definitions}"));
        assert!(
            target.starts_with(&format!("{dir}/")) && target.ends_with(".json"),
            "{definitions} is mounted at {target}, outside {dir}"
        );
    }
    assert!(
        targets
            .iter()
            .any(|t| t.starts_with("/etc/rabbitmq/conf.d/")),
        "rabbitmq.conf is not mounted into /etc/rabbitmq/conf.d: {targets:?}"
    );

    // Secrets are the operator's files under docker/secrets, which git ignores; each one the
    // configuration reads from /run/secrets is given to the gateway.
    let Yaml::Hash(secrets) = &compose["secrets"] else {
        panic!("docker/compose.yml has no secrets");
    };
    for (name, secret) in secrets {
        let file = scalar(&secret["file"]).unwrap_or_default();
        assert!(
            file.starts_with("./secrets/"),
            "secret {name:?} is read from {file:?}"
        );
    }
    let gitignore = read(".gitignore");
    for ignored in ["/docker/secrets", "/docker/.env"] {
        assert!(
            gitignore
                .lines()
                .any(|l| l.trim_end_matches('/') == ignored),
            ".gitignore lacks {ignored}"
        );
    }
    let given = names(&service(&compose, "passerelle")["secrets"]);
    let example = read("config/production.example.toml");
    let wanted: BTreeSet<&str> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split("\"/run/secrets/").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(!wanted.is_empty(), "the example reads no secret file");
    for name in wanted {
        assert!(
            given.iter().any(|g| g == name),
            "the gateway is not given the secret {name}"
        );
    }
}

#[test]
fn the_production_example_covers_every_section_of_the_defaults() {
    let defaults = toml_file("config/default.toml");
    let example = toml_file("config/production.example.toml");
    for section in defaults.keys() {
        assert!(
            example.contains_key(section),
            "config/production.example.toml has no [{section}]"
        );
    }
}

/// A Dockerfile instruction: its keyword (upper case) and its arguments.
type Instruction = (String, String);

/// A build stage: its image, its name, its instructions.
struct Stage {
    image: String,
    name: String,
    instructions: Vec<Instruction>,
}

/// The Dockerfile's instructions, continuations joined.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comments (and parser directives) are whole lines, also inside a continuation.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                out.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    assert!(
        current.is_empty(),
        "the Dockerfile ends inside a continuation"
    );
    out
}

fn minor_version(v: &str) -> (u32, u32) {
    let mut parts = v
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or_else(|_| panic!("version {v:?}")));
    (parts.next().expect("major"), parts.next().unwrap_or(0))
}

#[test]
fn the_dockerfile_passes_a_light_lint() {
    const KEYWORDS: [&str; 17] = [
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ];
    let all = instructions(&read("docker/Dockerfile"));
    for (keyword, args) in &all {
        assert!(
            KEYWORDS.contains(&keyword.as_str()),
            "unknown instruction {keyword} {args}"
        );
    }
    // Global ARGs (before the first FROM), for the images' tags.
    let args: Vec<(String, String)> = all
        .iter()
        .take_while(|(k, _)| k != "FROM")
        .filter(|(k, _)| k == "ARG")
        .filter_map(|(_, a)| {
            a.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let expand = |s: &str| {
        args.iter().fold(s.to_string(), |s, (k, v)| {
            s.replace(&format!("${{{k}}}"), v)
                .replace(&format!("${k}"), v)
        })
    };

    // Stages: `FROM image AS name`, each with its instructions.
    let mut stages: Vec<Stage> = Vec::new();
    for (keyword, args) in &all {
        if keyword == "FROM" {
            let words: Vec<&str> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            match words.as_slice() {
                [image, as_, name] if as_.eq_ignore_ascii_case("as") => stages.push(Stage {
                    image: expand(image),
                    name: name.to_string(),
                    instructions: Vec::new(),
                }),
                _ => panic!("FROM {args}: every stage is named (FROM image AS name)"),
            }
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((keyword.clone(), args.clone()));
        }
    }
    assert!(
        stages.len() >= 2,
        "a multi-stage build: {} stage(s)",
        stages.len()
    );
    let (builder_image, builder, build) =
        (&stages[0].image, &stages[0].name, &stages[0].instructions);
    let runtime = &stages.last().expect("a final stage").instructions;

    // The builder's Rust is at least the workspace's rust-version, and builds the binary.
    let tag = builder_image
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("the builder is a rust image, not {builder_image}"));
    let rust = tag.split('-').next().expect("a version");
    let workspace = toml_file("Cargo.toml");
    let required = workspace["workspace"]["package"]["rust-version"]
        .as_str()
        .expect("workspace.package.rust-version");
    assert!(
        minor_version(rust) >= minor_version(required),
        "the builder's Rust {rust} is older than the workspace's rust-version {required}"
    );
    assert!(
        build
            .iter()
            .any(|(k, a)| k == "RUN" && a.contains("cargo build --release --locked -p passerelle")),
        "the builder does not run `cargo build --release --locked -p passerelle`"
    );
    // By default the image is a production build: the simulators left out (the gateway's
    // `sandbox` feature off), and its label says which features it carries.
    assert!(
        build.iter().any(|(k, a)| k == "RUN"
            && a.contains("--no-default-features")
            && a.contains("$CARGO_FEATURES")),
        "the builder does not build without the default features, then with CARGO_FEATURES"
    );
    assert!(
        args.iter()
            .any(|(k, v)| k == "CARGO_FEATURES" && v.is_empty()),
        "CARGO_FEATURES is not a global ARG, empty by default: {args:?}"
    );
    assert!(
        runtime
            .iter()
            .any(|(k, a)| k == "LABEL" && a.contains("cargo-features=\"${CARGO_FEATURES:-none")),
        "the image does not say whether it carries the simulators"
    );

    // The final stage: the binary copied from the builder, a user that is not root, the entry.
    assert!(
        runtime.iter().any(|(k, a)| k == "COPY"
            && a.contains(&format!("--from={builder}"))
            && a.split_whitespace().any(|w| w.ends_with("/passerelle"))),
        "the final stage does not COPY --from={builder} the passerelle binary"
    );
    let user = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, a)| a.clone())
        .expect("the final stage sets a USER");
    let name = user.split(':').next().unwrap_or_default();
    assert!(
        name != "root" && name != "0",
        "the final stage runs as {user}"
    );
    let last = |keyword: &str| {
        runtime
            .iter()
            .rev()
            .find(|(k, _)| k == keyword)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("the final stage has no {keyword}"))
    };
    assert_eq!(last("ENTRYPOINT"), r#"["passerelle"]"#);
    assert!(last("EXPOSE").split_whitespace().any(|p| p == "8080"));
    // The configuration the image reads is the one compose mounts.
    let cmd = last("CMD");
    let compose = compose();
    let mounted = match &service(&compose, "passerelle")["configs"] {
        Yaml::Array(a) => a
            .iter()
            .filter_map(|c| scalar(&c["target"]))
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    assert!(
        mounted.iter().any(|t| cmd.contains(&format!("\"{t}\""))),
        "CMD {cmd} reads a configuration compose does not mount ({mounted:?})"
    );

    // The build context leaves out what is large or secret.
    let ignore = read("docker/Dockerfile.dockerignore");
    for excluded in ["**/target", "data", "docker/secrets", "docker/.env"] {
        assert!(
            ignore.lines().any(|l| l.trim() == excluded),
            "Dockerfile.dockerignore lacks {excluded}"
        );
    }
}

/// The high-availability file: two replicas sharing nothing but PostgreSQL and RabbitMQ, three
/// clustered RabbitMQ nodes, a load balancer in front of both (issue 17, point 10).
#[test]
fn compose_ha_runs_two_replicas_sharing_no_disk_behind_a_balancer_over_three_broker_nodes() {
    let compose = compose_file("docker/compose.ha.yml");
    let services = names(&compose["services"]);
    let get = |name: &str| {
        let s = merged(&compose["services"][name]);
        assert!(
            matches!(s, Yaml::Hash(_)),
            "docker/compose.ha.yml has no service {name}"
        );
        s
    };
    let replicas: Vec<&String> = services
        .iter()
        .filter(|s| s.starts_with("passerelle-"))
        .collect();
    let nodes: Vec<&String> = services
        .iter()
        .filter(|s| s.starts_with("rabbitmq-"))
        .collect();
    assert!(replicas.len() >= 2, "replicas: {replicas:?}");
    assert_eq!(nodes.len(), 3, "RabbitMQ nodes: {nodes:?}");
    for name in ["lb", "postgres", "sandbox"] {
        get(name);
    }

    // Every replica: the image this repository builds, the same configuration, no volume (no
    // shared disk, nothing of its own to lose), a configuration the real loader accepts.
    let example = root().join("config/production.example.toml");
    let mut environments = Vec::new();
    for name in &replicas {
        let s = get(name);
        assert_eq!(
            scalar(&s["build"]["dockerfile"]).as_deref(),
            Some("docker/Dockerfile"),
            "{name}"
        );
        assert_eq!(
            scalar(&s["build"]["args"]["CARGO_FEATURES"]).as_deref(),
            Some("sandbox"),
            "{name}: the file's AGORA is the sandbox service, the same image"
        );
        assert!(
            matches!(s["volumes"], Yaml::BadValue),
            "{name} mounts a volume: replicas share no disk"
        );
        let vars: Vec<(String, String)> = environment(&s)
            .into_iter()
            .map(|(k, v)| (k, interpolate(&v)))
            .collect();
        let settings = Settings::load(Some(&example), vars.clone())
            .unwrap_or_else(|e| panic!("{name}'s configuration is refused: {e}"));
        assert!(
            settings
                .ledger
                .url
                .expose_secret()
                .contains("@postgres:5432/"),
            "{name}'s ledger is the postgres service"
        );
        assert!(
            settings.queue.url.expose_secret().contains("@lb:5672/"),
            "{name} reaches the broker through the load balancer"
        );
        environments.push(vars);
    }
    assert!(
        environments.windows(2).all(|w| w[0] == w[1]),
        "the replicas are configured alike"
    );

    // The balancer: HTTP to every replica, checked on /readyz; AMQP to every node.
    let haproxy = scalar(&compose["configs"]["haproxy_cfg"]["content"]).expect("haproxy_cfg");
    assert!(haproxy.contains("option httpchk GET /readyz"), "{haproxy}");
    for name in &replicas {
        assert!(
            haproxy.contains(&format!("server {name} {name}:8080 check")),
            "the balancer does not send requests to {name}"
        );
    }
    for name in &nodes {
        assert!(
            haproxy.contains(&format!("server {name} {name}:5672 check")),
            "the balancer does not reach the broker node {name}"
        );
    }
    let mounts = |s: &Yaml| -> Vec<(String, String)> {
        match &s["configs"] {
            Yaml::Array(a) => a
                .iter()
                .filter_map(|c| Some((scalar(&c["source"])?, scalar(&c["target"])?)))
                .collect(),
            _ => Vec::new(),
        }
    };
    assert!(mounts(&get("lb"))
        .iter()
        .any(|(source, target)| source == "haproxy_cfg"
            && target == "/usr/local/etc/haproxy/haproxy.cfg"));

    // The cluster: each node names all three, its own stable hostname and data volume, and the
    // shared cookie.
    let cluster = read("docker/rabbitmq/cluster.conf");
    let mut volumes = BTreeSet::new();
    for name in &nodes {
        let s = get(name);
        let hostname = scalar(&s["hostname"]).unwrap_or_default();
        assert_eq!(&hostname, *name, "{name}'s node name must not change");
        assert!(
            cluster
                .lines()
                .any(|l| l.starts_with("cluster_formation.classic_config.nodes.")
                    && l.trim_end().ends_with(&format!("= rabbit@{hostname}"))),
            "cluster.conf does not name rabbit@{hostname}"
        );
        assert!(
            mounts(&s)
                .iter()
                .any(|(source, target)| source == "rabbitmq_cluster"
                    && target.starts_with("/etc/rabbitmq/conf.d/")),
            "{name} does not read cluster.conf"
        );
        assert!(
            environment(&s)
                .iter()
                .any(|(k, _)| k == "RABBITMQ_ERLANG_COOKIE"),
            "{name} has no Erlang cookie"
        );
        let volume = names(&s["volumes"]).join(",");
        assert!(volumes.insert(volume.clone()), "{name} shares {volume}");
    }
    let Yaml::Hash(configs) = &compose["configs"] else {
        panic!("docker/compose.ha.yml has no configs");
    };
    for (name, config) in configs {
        if let Some(file) = scalar(&config["file"]) {
            assert!(
                root().join("docker").join(&file).is_file(),
                "config {name:?}: docker/{file} does not exist"
            );
        }
    }
}

/// The files a newcomer reads for a command to run: the README, the configuration files' comments,
/// and every Rust source of the workspace (module docs name the bench that measures them).
fn files_naming_commands() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                // Build output and fuzz artefacts are no one's documentation.
                if !matches!(
                    name.to_str(),
                    Some("target" | "corpus" | "artifacts" | ".git")
                ) {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs" || e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![
        root().join("README.md"),
        root().join("config/default.toml"),
        root().join("config/production.example.toml"),
    ];
    for dir in ["adapters", "gateway", "schemas", "tests", "docs"] {
        walk(&root().join(dir), &mut files);
    }
    files
}

/// Every `cargo bench -p <package> --bench <name>` the sources or the README give names a bench
/// target that package has: a wrong package name fails only when someone copies the command.
#[test]
fn every_bench_command_named_in_the_sources_exists() {
    let workspace = toml_file("Cargo.toml");
    let mut benches: BTreeSet<(String, String)> = BTreeSet::new();
    let members = workspace["workspace"]["members"]
        .as_array()
        .expect("workspace members");
    for member in members.iter().filter_map(toml::Value::as_str) {
        let manifest = toml_file(&format!("{member}/Cargo.toml"));
        let package = manifest["package"]["name"]
            .as_str()
            .expect("package name")
            .to_string();
        for bench in manifest
            .get("bench")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = bench["name"].as_str().expect("bench name").to_string();
            benches.insert((package.clone(), name));
        }
    }
    let mut named = 0;
    for file in files_naming_commands() {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (at, _) in text.match_indices("cargo bench -p ") {
            let words: Vec<&str> = text[at..].split_whitespace().take(6).collect();
            let [_, _, _, package, flag, bench] = words[..] else {
                continue;
            };
            // A placeholder (`<package>`, `{package}`) is not a command.
            let is_name = |w: &str| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if flag != "--bench" || !is_name(package) {
                continue;
            }
            let bench = bench.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_');
            named += 1;
            assert!(
                benches.contains(&(package.to_string(), bench.to_string())),
                "{} names `cargo bench -p {package} --bench {bench}`, which does not exist; the \
                 bench targets are {benches:?}",
                file.display()
            );
        }
    }
    assert!(named >= 4, "only {named} bench commands found");
}

/// The code cites the interface contract by section ("contract §3"): every section it cites is
/// in the repository's copy, `docs/contract.md`, so a reader can follow the citation.
#[test]
fn every_contract_section_the_code_cites_is_in_docs_contract() {
    let contract = read("docs/contract.md");
    let headings: BTreeSet<String> = contract
        .lines()
        .filter(|l| l.starts_with("## ") || l.starts_with("### "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|n| n.trim_end_matches('.').to_string())
        .collect();
    assert!(
        headings.contains("1") && headings.contains("2.1"),
        "{headings:?}"
    );
    let mut cited = BTreeSet::new();
    for file in files_naming_commands() {
        if file.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (i, _) in text.match_indices("contract §") {
            let section: String = text[i + "contract §".len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let section = section.trim_end_matches('.').to_string();
            if section.is_empty() {
                // Not a citation: this test's own messages.
                continue;
            }
            assert!(
                headings.contains(&section),
                "{}: cites contract §{section}, which docs/contract.md does not have",
                file.display()
            );
            cited.insert(section);
        }
    }
    assert!(
        cited.len() >= 5,
        "the code's citations were not found: {cited:?}"
    );
}
